"""The asyncio shell: one self-healing WebSocket per (credentials, endpoint)."""

from alpaca_di.transport.backoff import Backoff, ExponentialBackoff
from alpaca_di.transport.connection import Connection, ConnectionListener, check_url
from alpaca_di.transport.options import ConnectionOptions, OverflowPolicy
from alpaca_di.transport.runtime import Runtime
from alpaca_di.transport.states import ConnectionState, StateChange, StateHistory

__all__ = [
    "Backoff",
    "Connection",
    "ConnectionListener",
    "ConnectionOptions",
    "ConnectionState",
    "ExponentialBackoff",
    "OverflowPolicy",
    "Runtime",
    "StateChange",
    "StateHistory",
    "check_url",
]
