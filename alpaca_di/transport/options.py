"""Tuning knobs of one connection, shared by every consumer of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from alpaca_di._check import check_seconds

__all__ = ["OVERFLOW_POLICIES", "ConnectionOptions", "OverflowPolicy", "check_overflow"]

OverflowPolicy = Literal["drop_oldest", "drop_newest", "conflate", "error"]
OVERFLOW_POLICIES: tuple[OverflowPolicy, ...] = get_args(OverflowPolicy)


def check_overflow(policy: object) -> None:
    """Raise ``ValueError`` unless ``policy`` is one of :data:`OVERFLOW_POLICIES`."""
    if policy not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; got {policy!r}")


@dataclass(frozen=True)
class ConnectionOptions:
    """How a connection reconnects, keeps alive and buffers.

    The defaults suit a production app; tests shorten them::

        from alpaca_di.transport import ConnectionOptions

        fast = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, data_timeout=1.0)

    Attributes:
        backoff_initial: first reconnect delay in seconds (jittered, doubles each try).
        backoff_max: longest reconnect delay in seconds.
        connection_limit_grace: how long ``406 connection limit exceeded`` is retried
            before :class:`~alpaca_di.errors.ConnectionLimitError` is raised (Alpaca
            reaps a dead socket after about 90 s). ``None``: a 406 is never final,
            it is retried with backoff for as long as the connection is wanted (the
            scale-out leader's socket: a previous leader's socket holds the slot
            until that process is fenced or the server reaps it).
        ping_interval: seconds between keepalive pings; ``None`` disables them.
        ping_timeout: seconds to wait for a pong before the socket counts as dead.
        data_timeout: opt-in: recycle a connected socket that has subscriptions but
            delivered nothing for this many seconds. ``None`` disables it.
        open_timeout: seconds allowed for the TCP + WebSocket handshake and auth.
        close_timeout: seconds to wait for the server's close frame at shutdown.
        allow_insecure: allow plain ``ws://`` to a host that is not loopback (the
            secret would travel unencrypted). Off by default.
        feed: the data feed name (``iex``, ``sip``...), used in error messages.
        queue_maxsize: default per-subscription queue bound (``None``: unbounded).
        overflow: default overflow policy of a full subscription queue.
    """

    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    connection_limit_grace: float | None = 90.0
    ping_interval: float | None = 10.0
    ping_timeout: float | None = 20.0
    data_timeout: float | None = None
    open_timeout: float = 10.0
    close_timeout: float = 1.0
    allow_insecure: bool = False
    feed: str | None = None
    queue_maxsize: int | None = 10_000
    overflow: OverflowPolicy = "drop_oldest"

    def __post_init__(self) -> None:
        if not isinstance(self.allow_insecure, bool):
            raise TypeError(f"allow_insecure must be True or False, got {self.allow_insecure!r}")
        if self.feed is not None and not isinstance(self.feed, str):
            raise TypeError(f"feed must be a feed name or None, got {type(self.feed).__name__}")
        check_seconds("backoff_initial", self.backoff_initial)
        check_seconds("backoff_max", self.backoff_max)
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max}) must be >= backoff_initial "
                f"({self.backoff_initial})"
            )
        grace = self.connection_limit_grace
        if grace is not None and (
            isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0
        ):
            raise ValueError(
                f"connection_limit_grace must be >= 0 or None, got {self.connection_limit_grace!r}"
            )
        for name in ("ping_interval", "ping_timeout", "data_timeout"):
            value = getattr(self, name)
            if value is not None:
                check_seconds(name, value)
        check_seconds("open_timeout", self.open_timeout)
        check_seconds("close_timeout", self.close_timeout)
        size = self.queue_maxsize
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(
                f"queue_maxsize must be a positive int or None, got {self.queue_maxsize!r}"
            )
        check_overflow(self.overflow)
