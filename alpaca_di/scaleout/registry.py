"""Connection sharing across processes: the Redis-backed registry and the sharing switch.

``sharing="local"`` (the default) keeps one socket per (credentials, endpoint)
*per process*: :meth:`ConnectionRegistry.default`. ``sharing="redis"``
(``ALPACA_SHARING=redis``, ``ALPACA_REDIS_URL``) keeps one socket per
(credentials, endpoint) *per deployment*: every process gets a
:class:`RedisConnectionRegistry` whose hubs read through Redis
(:class:`~alpaca_di.scaleout.follower.RedisUpstream`) while one elected
process holds the real socket (:class:`~alpaca_di.scaleout.gateway.Gateway`).
Hubs, services and containers are unchanged::

    from alpaca_di.scaleout.registry import registry_for

    registry = registry_for(AlpacaSettings())      # local or redis, from the settings
    lease = registry.acquire(creds, "stock", url)
    lease.hub.subscribe(print, quotes=["AAPL"])

In a container::

    registry = providers.Callable(registry_for, settings)

Nothing here imports ``redis`` until the Redis mode is used. Every option is an
:class:`~alpaca_di.settings.AlpacaSettings` field (``ALPACA_REDIS_*``):
:func:`redis_connection` turns the connection ones (URL, ACL user, TLS,
Sentinel) into a :class:`~alpaca_di.scaleout.options.RedisConnection`,
:func:`sharing_options` the sharing ones (prefix, role, fallback, lock TTL,
reader id) into :class:`~alpaca_di.scaleout.options.SharingOptions`.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

import structlog

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConfigurationError
from alpaca_di.hub.health import ConnectionHealth, HealthReport
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.registry import ConnectionRegistry, Lease
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.settings import AlpacaSettings
from alpaca_di.transport.backoff import Backoff
from alpaca_di.transport.connection import ConnectionListener, Upstream
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.runtime import Runtime

if TYPE_CHECKING:
    import asyncio

    from alpaca_di.scaleout.client import RedisTarget
    from alpaca_di.scaleout.follower import RedisUpstream
    from alpaca_di.scaleout.gateway import Gateway
    from alpaca_di.scaleout.options import RedisConnection, SharingOptions

__all__ = [
    "RedisConnectionRegistry",
    "check_redis",
    "redis_connection",
    "redis_registry",
    "registry_for",
    "sharing_options",
]

_log = structlog.get_logger(__name__)
_cache_lock = threading.Lock()
_cache: dict[tuple[int, str, str | None, str, bool], ConnectionRegistry] = {}


def _import_redis_modules() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "sharing='redis' (ALPACA_SHARING=redis) needs the redis package: "
            "pip install 'alpaca-di[redis]'"
        ) from None


class RedisConnectionRegistry(ConnectionRegistry):
    """A :class:`ConnectionRegistry` whose hubs share one socket per deployment via Redis.

    Each hub's upstream is a
    :class:`~alpaca_di.scaleout.follower.RedisUpstream`; unless built
    follower-only (``candidate=False``), the process's
    :class:`~alpaca_di.scaleout.gateway.Gateway` is a leader candidate for every
    (credentials, endpoint) one of its hubs uses. :meth:`health` adds the
    sharing fields (``role``, ``leader``, ``redis``, ``lag_ms``).

    ``redis_url`` is a URL or a :class:`~alpaca_di.scaleout.options.RedisConnection`
    (ACL user, TLS, Sentinel). Prefer :func:`redis_registry` (one per process,
    Redis checked first)::

        registry = RedisConnectionRegistry("redis://127.0.0.1:6379/0")
        hub = registry.acquire(creds, "stock", url).hub
        registry.health().connections[0].role      # "leader" or "follower"
    """

    def __init__(
        self,
        redis_url: RedisTarget,
        *,
        sharing: SharingOptions | None = None,
        candidate: bool = True,
        runtime: Runtime | None = None,
        rest_url: str | None = None,
        data_url: str | None = None,
    ) -> None:
        _import_redis_modules()
        from alpaca_di.scaleout.gateway import Gateway
        from alpaca_di.scaleout.options import RedisConnection, SharingOptions, new_identity

        self.redis = (
            redis_url if isinstance(redis_url, RedisConnection) else RedisConnection(redis_url)
        )
        self.redis_url = self.redis.url
        self.sharing = sharing or SharingOptions()
        self.identity = new_identity()
        self.gateway: Gateway | None = (
            Gateway(
                self.redis,
                sharing=self.sharing,
                identity=self.identity,
                rest_url=rest_url,
                data_url=data_url,
            )
            if candidate
            else None
        )
        self._members = 0
        self._members_lock = threading.Lock()
        # hub -> its upstream, both weak: the hub owns the upstream, which points back.
        self._upstreams: weakref.WeakKeyDictionary[Any, weakref.ref[RedisUpstream]] = (
            weakref.WeakKeyDictionary()
        )
        super().__init__(runtime, connection_factory=self._build_upstream)

    def acquire(
        self,
        credentials: Credentials,
        kind: StreamKind | str,
        endpoint: str,
        options: ConnectionOptions | None = None,
        *,
        backoff: Backoff | None = None,
    ) -> Lease:
        """Lease the hub of (credentials, endpoint), as :meth:`ConnectionRegistry.acquire`.

        Raises:
            ConfigurationError: ``lock_ttl`` leaves a leader no time to close its
                socket before its lock expires (it must be at least
                ``close_timeout`` + 2 x ``renew_interval``).
        """
        close_timeout = (options or ConnectionOptions()).close_timeout
        sharing = self.sharing
        if self.gateway is not None and (
            sharing.lock_ttl < close_timeout + 2 * sharing.renew_interval
        ):
            raise ConfigurationError(
                f"lock_ttl ({sharing.lock_ttl} s) must be at least close_timeout "
                f"({close_timeout} s) + 2 x renew_interval ({sharing.renew_interval} s): "
                "a leader must be able to close its socket before its lock expires"
            )
        return super().acquire(credentials, kind, endpoint, options, backoff=backoff)

    def _build_upstream(
        self,
        url: str,
        *,
        kind: StreamKind,
        credentials: Credentials,
        options: ConnectionOptions,
        subscriptions: SubscriptionState,
        listener: ConnectionListener,
        loop: asyncio.AbstractEventLoop,
        backoff: Backoff | None = None,
    ) -> Upstream:
        from alpaca_di.scaleout.follower import RedisUpstream

        gateway = self.gateway
        with self._members_lock:
            self._members += 1
            member = f"{self.identity}/{self._members}"
        tag: str | None = None
        if gateway is not None:
            tag = gateway.register(credentials, kind, url, options)

        def role() -> str:
            leading = gateway is not None and tag is not None and gateway.is_leader(tag)
            return "leader" if leading else "follower"

        async def on_close() -> None:
            if gateway is not None and tag is not None:
                gateway.detach(tag, member)
                await gateway.aunregister(tag)

        def held() -> int:
            return gateway.held(tag) if gateway is not None and tag is not None else 0

        upstream = RedisUpstream(
            url,
            kind=kind,
            credentials=credentials,
            options=options,
            subscriptions=subscriptions,
            listener=listener,
            loop=loop,
            backoff=backoff,
            redis_url=self.redis,
            sharing=self.sharing,
            member=member,
            role=role,
            on_close=on_close,
            held=held,
        )
        if gateway is not None and tag is not None:
            # As leader, this process hands its own consumers trade updates from memory.
            gateway.attach(tag, member, upstream.local_updates)
        self._upstreams[listener] = weakref.ref(upstream)
        return upstream

    def sharing_health(self, hub: StreamHub) -> ConnectionHealth:
        """``hub.health()`` with the sharing fields filled in.

        Example::

            registry.sharing_health(hub).lag_ms
        """
        health = hub.health()
        ref = self._upstreams.get(hub)
        upstream = ref() if ref is not None else None
        if upstream is None:
            return health
        return health.model_copy(update=upstream.health_fields())

    def health(self) -> HealthReport:
        """A report on every live connection, with role, leader, Redis state and lag."""
        return HealthReport.of([self.sharing_health(hub) for hub in self.hubs()])

    def close_all(self, timeout: float = 2.0) -> None:
        """Close every hub, then step down everywhere and stop the gateway thread."""
        try:
            super().close_all(timeout)
        finally:
            if self.gateway is not None:
                self.gateway.close(timeout)

    def __repr__(self) -> str:
        role = "candidate" if self.gateway is not None else "follower"
        return f"<RedisConnectionRegistry {self.redis.describe()} {role} {self.identity}>"


def check_redis(redis_url: RedisTarget, timeout: float = 2.0) -> None:
    """Ping Redis once; raise a clear error naming ``ALPACA_REDIS_URL`` when it fails.

    ``redis_url`` is a URL or a :class:`~alpaca_di.scaleout.options.RedisConnection`.

    Raises:
        RedisUnavailableError: no answer (passwords masked or left out).

    Example::

        check_redis("redis://127.0.0.1:6379/0")
    """
    _import_redis_modules()
    import redis

    from alpaca_di.errors import RedisUnavailableError
    from alpaca_di.scaleout.client import sync_redis_client
    from alpaca_di.scaleout.options import RedisConnection

    conn = redis_url if isinstance(redis_url, RedisConnection) else RedisConnection(redis_url)
    where = "ALPACA_REDIS_SENTINELS" if conn.sentinels else "ALPACA_REDIS_URL"
    try:
        client = sync_redis_client(conn, timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        detail = _redact(f"{type(exc).__name__}: {str(exc).rstrip('.')}", conn)
        raise RedisUnavailableError(
            f"sharing='redis' but Redis at {conn.describe()} ({where}) "
            f"is unavailable: {detail}. Start Redis or fix "
            f"{where}; set ALPACA_SHARING=local to share connections within one "
            "process only, or ALPACA_REDIS_FALLBACK_LOCAL=true to fall back automatically"
        ) from None


def _redact(text: str, conn: RedisConnection) -> str:
    """``text`` with every password of ``conn`` replaced (redis-py quotes none; to be sure)."""
    from urllib.parse import urlsplit

    try:
        url_password = urlsplit(conn.url).password
    except ValueError:
        url_password = None
    secrets = [s.get_secret_value() for s in (conn.password, conn.sentinel_password) if s]
    for secret in [*secrets, url_password]:
        if secret:
            text = text.replace(secret, "***")
    return text


def redis_connection(settings: AlpacaSettings) -> RedisConnection:
    """The :class:`~alpaca_di.scaleout.options.RedisConnection` the ``redis_*`` settings describe.

    Example::

        redis_connection(AlpacaSettings(redis_url="rediss://cache:6380/0", redis_password="pw"))
    """
    from alpaca_di.scaleout.options import RedisConnection

    return RedisConnection(
        settings.redis_url,
        username=settings.redis_username,
        password=settings.redis_password,
        tls_ca_file=settings.redis_tls_ca_file,
        tls_cert_file=settings.redis_tls_cert_file,
        tls_key_file=settings.redis_tls_key_file,
        tls_verify=settings.redis_tls_verify,
        sentinels=settings.redis_sentinel_addresses,
        sentinel_master=settings.redis_sentinel_master,
        sentinel_username=settings.redis_sentinel_username,
        sentinel_password=settings.redis_sentinel_password,
    )


def sharing_options(settings: AlpacaSettings) -> tuple[SharingOptions, bool, bool]:
    """``(SharingOptions, candidate, fallback_local)`` from the ``redis_*`` settings.

    ``redis_prefix``, ``redis_lock_ttl`` (renewals every sixth of it) and
    ``redis_consumer_id`` make the :class:`~alpaca_di.scaleout.options.SharingOptions`;
    ``redis_role == "candidate"`` and ``redis_fallback_local`` the two flags.

    Example::

        options, candidate, fallback = sharing_options(AlpacaSettings(redis_role="follower"))
    """
    from alpaca_di.scaleout.options import SharingOptions

    options = SharingOptions(
        prefix=settings.redis_prefix,
        lock_ttl=settings.redis_lock_ttl,
        renew_interval=settings.redis_lock_ttl / 6,
        consumer_id=settings.redis_consumer_id,
    )
    return options, settings.redis_role == "candidate", settings.redis_fallback_local


def redis_registry(
    settings: AlpacaSettings,
    *,
    sharing: SharingOptions | None = None,
    candidate: bool | None = None,
    fallback_local: bool | None = None,
) -> ConnectionRegistry:
    """This process's Redis-shared registry for ``settings.redis_url`` (created once).

    Redis is pinged first: when it does not answer, a
    :class:`~alpaca_di.errors.RedisUnavailableError` names
    ``ALPACA_REDIS_URL``, or, with ``fallback_local=True``
    (``ALPACA_REDIS_FALLBACK_LOCAL=true``), a warning is logged and
    :meth:`ConnectionRegistry.default` is returned. Arguments left ``None`` come
    from the settings (:func:`sharing_options`); the connection from
    :func:`redis_connection`.

    Example::

        registry = redis_registry(AlpacaSettings(sharing="redis"))
        hub = registry.acquire(settings.credentials(), "stock", endpoint_for(settings, "stock")).hub
    """
    _import_redis_modules()
    own_sharing, own_candidate, own_fallback = sharing_options(settings)
    sharing = sharing or own_sharing
    candidate = own_candidate if candidate is None else candidate
    fallback_local = own_fallback if fallback_local is None else fallback_local
    connection = redis_connection(settings)
    key = (os.getpid(), connection.describe(), connection.username, sharing.prefix, candidate)
    with _cache_lock:
        registry = _cache.get(key)
        if registry is not None:
            return registry
        from alpaca_di.errors import RedisUnavailableError

        try:
            check_redis(connection)
        except RedisUnavailableError as exc:
            if not fallback_local:
                raise
            _log.warning(
                "sharing.redis_fallback_local",
                redis_url=connection.describe(),
                error=str(exc),
            )
            # Cached too: a process never mixes local and Redis sharing.
            registry = _cache[key] = ConnectionRegistry.default()
            return registry
        registry = _cache[key] = RedisConnectionRegistry(
            connection,
            sharing=sharing,
            candidate=candidate,
            rest_url=settings.resolved_api_url,
            data_url=settings.resolved_data_url,
        )
        return registry


def registry_for(settings: AlpacaSettings) -> ConnectionRegistry:
    """The registry ``settings.sharing`` asks for: local (per process) or Redis (per deployment).

    Use it as the container's ``registry`` provider::

        registry = providers.Callable(registry_for, settings)
    """
    if settings.sharing == "redis":
        return redis_registry(settings)
    return ConnectionRegistry.default()
