"""The hub: one shared connection, its consumers, their queues and the registry."""

from alpaca_di.hub.gaps import BarSource, GapNotice
from alpaca_di.hub.health import ConnectionHealth, HealthReport, StateTransition
from alpaca_di.hub.hub import StateListener, StreamHub
from alpaca_di.hub.registry import ConnectionRegistry, Lease
from alpaca_di.hub.subscription import Handler, Subscription, SubscriptionStats

__all__ = [
    "BarSource",
    "ConnectionHealth",
    "ConnectionRegistry",
    "GapNotice",
    "Handler",
    "HealthReport",
    "Lease",
    "StateListener",
    "StateTransition",
    "StreamHub",
    "Subscription",
    "SubscriptionStats",
]
