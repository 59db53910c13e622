"""Services on top of the shared connections: the hub, subscriptions and health."""

from alpaca_di.services.health import ConnectionHealth, HealthReport, StateTransition
from alpaca_di.services.hub import StateListener, StreamHub
from alpaca_di.services.subscription import (
    Handler,
    Subscription,
    SubscriptionOverflowError,
    SubscriptionStats,
)

__all__ = [
    "ConnectionHealth",
    "Handler",
    "HealthReport",
    "StateListener",
    "StateTransition",
    "StreamHub",
    "Subscription",
    "SubscriptionOverflowError",
    "SubscriptionStats",
]
