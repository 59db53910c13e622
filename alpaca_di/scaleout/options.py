"""SharingOptions and RedisConnection: what every process of a deployment shares.

:class:`SharingOptions` holds the key prefix and the timings;
:class:`RedisConnection` says how to reach Redis (URL, ACL user, TLS files,
Sentinel) and keeps its passwords out of every repr and pickle. Also
:func:`new_identity`, the ``host:pid:random`` name a process uses for
leadership and health. Nothing here imports ``redis``::

    SharingOptions(prefix="myapp", lock_ttl=5.0, renew_interval=0.5)
    RedisConnection("rediss://cache:6380/0", username="app", password=SecretStr("pw"))
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import get_args

from pydantic import SecretStr

from alpaca_di._check import is_seconds, is_word
from alpaca_di.credentials import mask_url
from alpaca_di.errors import ConfigurationError
from alpaca_di.settings import RedisTlsVerify

__all__ = ["RedisConnection", "SharingOptions", "new_identity"]


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
        backfill_timeout: seconds a follower waits for the leader's backfill of a
            gap (the leader fetches the missed bars once, through REST, with
            backoff on ``429``) before its subscriptions get a notice saying so.

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
    backfill_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not is_word(self.prefix):
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
            "backfill_timeout",
        ):
            if not is_seconds(getattr(self, name)):
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
        if self.consumer_id is not None and not is_word(self.consumer_id):
            raise ConfigurationError(
                "consumer_id must be a non-empty word without spaces (ALPACA_REDIS_CONSUMER_ID)"
            )


@dataclass(frozen=True)
class RedisConnection:
    """How the processes of a deployment reach their Redis: one server or a Sentinel set.

    Built from the ``redis_*`` settings by
    :func:`alpaca_di.scaleout.registry.redis_connection`; turned into a client by
    :func:`alpaca_di.scaleout.client.redis_client`, the one place that does.
    The passwords are :class:`~pydantic.SecretStr` and appear in no ``repr``
    (the URL is shown through :func:`~alpaca_di.credentials.mask_url`); a
    ``RedisConnection`` refuses to be pickled.

    Attributes:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://``. With ``sentinels``
            its host and port are not used; its scheme (``rediss://``: TLS to the
            sentinels and the primary), database number and credentials are.
        username: ACL user (``None``: the one in the URL, or ``default``).
        password: password of that user (``None``: the one in the URL, if any).
        tls_ca_file: PEM file of the CA(s) that sign the server's certificate
            (``None``: the system's trust store).
        tls_cert_file, tls_key_file: client certificate and key, for servers that
            authenticate clients by certificate (``tls-auth-clients yes``).
        tls_verify: ``required`` (chain and host name checked), ``optional``
            (chain checked when one is presented, host name not) or ``none``.
        sentinels: ``(host, port)`` of each Sentinel; empty: ``url`` names the server.
        sentinel_master: the name the Sentinels monitor the primary under.
        sentinel_username, sentinel_password: credentials of the Sentinels
            themselves (``requirepass`` / ACL on the Sentinel processes).

    Example::

        RedisConnection("redis://", sentinels=(("10.0.0.1", 26379),), sentinel_master="mymaster")
    """

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: RedisTlsVerify = "required"
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tls_verify not in get_args(RedisTlsVerify):
            raise ConfigurationError(
                f"tls_verify must be one of {', '.join(get_args(RedisTlsVerify))}, got "
                f"{self.tls_verify!r} (ALPACA_REDIS_TLS_VERIFY)"
            )
        for name in ("password", "sentinel_password"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, SecretStr):
                object.__setattr__(self, name, SecretStr(str(value)))

    @property
    def tls(self) -> bool:
        """True when the URL is ``rediss://``: every connection is TLS."""
        return self.url.lower().startswith("rediss://")

    def describe(self) -> str:
        """Where this points, safe to log: the masked URL, or the sentinels and master."""
        if self.sentinels:
            hosts = ",".join(
                f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                for host, port in self.sentinels
            )
            return f"sentinel://{hosts}/{self.sentinel_master}"
        return mask_url(self.url)

    def __repr__(self) -> str:
        user = f" user={self.username}" if self.username else ""
        return f"RedisConnection({self.describe()}{user})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("RedisConnection cannot be pickled: that would write the password out")


def new_identity() -> str:
    """A process identity for leadership and health: ``host:pid:random``.

    Example::

        new_identity()     # 'web-1:4242:9f3a1c'
    """
    host = socket.gethostname().replace(" ", "_") or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
