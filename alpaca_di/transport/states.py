"""Connection states and the record of their transitions."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

__all__ = ["ConnectionState", "StateChange", "StateHistory"]


class ConnectionState(str, Enum):
    """Where one connection is in its life.

    ``idle → connecting → authenticating → connected → reconnecting → connecting …``
    and finally ``closed`` (we asked) or ``failed`` (a fatal error such as 402).
    """

    IDLE = "idle"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """True for ``closed`` and ``failed``: the connection will not come back."""
        return self in (ConnectionState.CLOSED, ConnectionState.FAILED)


@dataclass(frozen=True)
class StateChange:
    """One transition: the new state, the wall-clock time, and the error behind it."""

    state: ConnectionState
    at: datetime
    error: str | None = None


class StateHistory:
    """The current state, when it began, and the last transitions (bounded).

    ``ever_connected`` stays true once the connection has reached ``connected``
    (the transitions kept are bounded; this flag is not)::

        history = StateHistory()
        history.record(ConnectionState.CONNECTING)
        assert not history.ever_connected
    """

    def __init__(self, keep: int = 50) -> None:
        self._changes: deque[StateChange] = deque(maxlen=keep)
        self.state = ConnectionState.IDLE
        self.ever_connected = False
        self.since = datetime.now(timezone.utc)
        self.since_monotonic = time.monotonic()

    def record(self, state: ConnectionState, error: str | None = None) -> ConnectionState:
        """Enter ``state``; return the previous one."""
        previous = self.state
        self.state = state
        if state is ConnectionState.CONNECTED:
            self.ever_connected = True
        self.since = datetime.now(timezone.utc)
        self.since_monotonic = time.monotonic()
        self._changes.append(StateChange(state, self.since, error))
        return previous

    @property
    def changes(self) -> tuple[StateChange, ...]:
        """The recorded transitions, oldest first."""
        return tuple(self._changes)
