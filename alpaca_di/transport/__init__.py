"""The asyncio shell: one self-healing WebSocket per (credentials, endpoint)."""

from typing import TYPE_CHECKING

from alpaca_di._lazy import lazy_exports
from alpaca_di.transport.backoff import Backoff, ExponentialBackoff
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

if TYPE_CHECKING:
    from alpaca_di.transport.connection import Connection, ConnectionListener, check_url

# The connection (and websockets with it) loads when first used, not with the options.
__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        name: "alpaca_di.transport.connection"
        for name in ("Connection", "ConnectionListener", "check_url")
    },
)
