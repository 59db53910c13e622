"""SharingOptions: the prefix and timings every process of a deployment shares.

Also :func:`new_identity`, the ``host:pid:random`` name a process uses for
leadership and health. Nothing here imports ``redis``::

    SharingOptions(prefix="myapp", lock_ttl=5.0, renew_interval=0.5)
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from alpaca_di.errors import ConfigurationError

__all__ = ["SharingOptions", "new_identity"]


@dataclass(frozen=True)
class SharingOptions:
    """Timing and naming of the Redis scale-out, shared by every process of a deployment.

    Every process of one deployment must use the same ``prefix`` and compatible
    timings. Defaults give a failover of about ``lock_ttl`` + one renewal after a
    leader dies without a word (SIGKILL, power loss); a leader that stops cleanly
    hands over at once.

    Attributes:
        prefix: first part of every Redis key and channel (``ALPACA_REDIS_PREFIX``).
        lock_ttl: seconds the leader lock lives without renewal.
        renew_interval: seconds between renewals (and leader status heartbeats);
            must be well below ``lock_ttl``.
        heartbeat_interval: seconds between a member's demand refreshes.
        heartbeat_ttl: seconds a member's demand survives without a refresh; then
            the leader drops the symbols only that member wanted.
        stream_maxlen: approximate length bound of the trade-update stream.
        cursor_ttl: seconds a reader's saved stream position is kept.
        consumer_id: a stable reader id (``ALPACA_REDIS_CONSUMER_ID``): with it a
            restarted process resumes trade updates where it stopped; without it
            each process starts at the end of the stream.
        command_timeout: how long one Redis command may take (seconds) before the
            link counts as lost.
        reconcile_lookback: seconds a new trading leader reads orders back through
            REST when the trade-update stream holds nothing to start from (Redis
            restarted empty, or a first leader).

    Example::

        SharingOptions(prefix="myapp", lock_ttl=5.0, renew_interval=0.5)
    """

    prefix: str = "alpaca-di"
    lock_ttl: float = 3.0
    renew_interval: float = 0.5
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0
    stream_maxlen: int = 10_000
    cursor_ttl: float = 86_400.0
    consumer_id: str | None = None
    command_timeout: float = 2.0
    reconcile_lookback: float = 600.0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.prefix, str)
            or not self.prefix
            or any(c.isspace() for c in self.prefix)
        ):
            raise ConfigurationError(
                f"Redis key prefix must be a non-empty word without spaces, got {self.prefix!r} "
                "(ALPACA_REDIS_PREFIX)"
            )
        for name in (
            "lock_ttl",
            "renew_interval",
            "heartbeat_interval",
            "heartbeat_ttl",
            "cursor_ttl",
            "command_timeout",
            "reconcile_lookback",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.renew_interval * 3 > self.lock_ttl:
            raise ConfigurationError(
                f"renew_interval ({self.renew_interval}) must be at most a third of lock_ttl "
                f"({self.lock_ttl}): a leader must renew several times per TTL"
            )
        if self.heartbeat_interval * 2 > self.heartbeat_ttl:
            raise ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be at most half of "
                f"heartbeat_ttl ({self.heartbeat_ttl})"
            )
        if not isinstance(self.stream_maxlen, int) or self.stream_maxlen < 100:
            raise ConfigurationError("stream_maxlen must be an int >= 100")
        if self.consumer_id is not None and (
            not self.consumer_id or any(c.isspace() for c in self.consumer_id)
        ):
            raise ConfigurationError(
                "consumer_id must be a non-empty word without spaces (ALPACA_REDIS_CONSUMER_ID)"
            )


def new_identity() -> str:
    """A process identity for leadership and health: ``host:pid:random``.

    Example::

        new_identity()     # 'web-1:4242:9f3a1c'
    """
    host = socket.gethostname().replace(" ", "_") or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
