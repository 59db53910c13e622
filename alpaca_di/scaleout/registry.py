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

Nothing here imports ``redis`` until the Redis mode is used. Options not in
:class:`~alpaca_di.settings.AlpacaSettings` come from the environment
(:func:`sharing_options_from_env`): ``ALPACA_REDIS_PREFIX``,
``ALPACA_REDIS_ROLE`` (``candidate`` or ``follower``),
``ALPACA_REDIS_FALLBACK_LOCAL``, ``ALPACA_REDIS_LOCK_TTL``,
``ALPACA_REDIS_CONSUMER_ID``.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from alpaca_di.credentials import Credentials, mask_url
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

    from alpaca_di.scaleout.follower import RedisUpstream
    from alpaca_di.scaleout.gateway import Gateway
    from alpaca_di.scaleout.options import SharingOptions

__all__ = [
    "RedisConnectionRegistry",
    "check_redis",
    "redis_registry",
    "registry_for",
    "sharing_options_from_env",
]

_log = structlog.get_logger(__name__)
_ROLES = ("candidate", "follower")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_cache_lock = threading.Lock()
_cache: dict[tuple[int, str, str, bool], ConnectionRegistry] = {}


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

    Prefer :func:`redis_registry` (one per process, Redis checked first)::

        registry = RedisConnectionRegistry("redis://127.0.0.1:6379/0")
        hub = registry.acquire(creds, "stock", url).hub
        registry.health().connections[0].role      # "leader" or "follower"
    """

    def __init__(
        self,
        redis_url: str,
        *,
        sharing: SharingOptions | None = None,
        candidate: bool = True,
        runtime: Runtime | None = None,
        rest_url: str | None = None,
    ) -> None:
        _import_redis_modules()
        from alpaca_di.scaleout.gateway import Gateway
        from alpaca_di.scaleout.options import SharingOptions, new_identity

        self.redis_url = redis_url
        self.sharing = sharing or SharingOptions()
        self.identity = new_identity()
        self.gateway: Gateway | None = (
            Gateway(redis_url, sharing=self.sharing, identity=self.identity, rest_url=rest_url)
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
            redis_url=self.redis_url,
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
        return f"<RedisConnectionRegistry {mask_url(self.redis_url)} {role} {self.identity}>"


def check_redis(redis_url: str, timeout: float = 2.0) -> None:
    """Ping Redis once; raise a clear error naming ``ALPACA_REDIS_URL`` when it fails.

    Raises:
        RedisUnavailableError: no answer (the URL's password is masked).

    Example::

        check_redis("redis://127.0.0.1:6379/0")
    """
    _import_redis_modules()
    import redis

    from alpaca_di.errors import RedisUnavailableError

    try:
        client = redis.Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        raise RedisUnavailableError(
            f"sharing='redis' but Redis at {mask_url(redis_url)} (ALPACA_REDIS_URL) "
            f"is unavailable: {type(exc).__name__}: {str(exc).rstrip('.')}. Start Redis or fix "
            "ALPACA_REDIS_URL; set ALPACA_SHARING=local to share connections within one "
            "process only, or ALPACA_REDIS_FALLBACK_LOCAL=true to fall back automatically"
        ) from None


def sharing_options_from_env(
    environ: Mapping[str, str] | None = None,
) -> tuple[SharingOptions, bool, bool]:
    """``(SharingOptions, candidate, fallback_local)`` from ``ALPACA_REDIS_*`` variables.

    ``ALPACA_REDIS_PREFIX`` (default ``alpaca-di``), ``ALPACA_REDIS_ROLE``
    (``candidate``: this process may lead, the default; ``follower``: never),
    ``ALPACA_REDIS_FALLBACK_LOCAL`` (``true``: use local sharing when Redis is
    down at start), ``ALPACA_REDIS_LOCK_TTL`` (seconds; the renewal interval is a
    sixth of it) and ``ALPACA_REDIS_CONSUMER_ID`` (a stable trade-update reader id).

    Example::

        options, candidate, fallback = sharing_options_from_env({"ALPACA_REDIS_ROLE": "follower"})
    """
    _import_redis_modules()
    from alpaca_di.scaleout.options import SharingOptions

    source = os.environ if environ is None else environ
    env = {key.upper(): value for key, value in source.items()}
    values: dict[str, Any] = {}
    prefix = env.get("ALPACA_REDIS_PREFIX", "").strip()
    if prefix:
        values["prefix"] = prefix
    consumer = env.get("ALPACA_REDIS_CONSUMER_ID", "").strip()
    if consumer:
        values["consumer_id"] = consumer
    ttl_text = env.get("ALPACA_REDIS_LOCK_TTL", "").strip()
    if ttl_text:
        try:
            ttl = float(ttl_text)
        except ValueError:
            raise ConfigurationError(
                f"ALPACA_REDIS_LOCK_TTL={ttl_text!r} is not a number of seconds"
            ) from None
        values["lock_ttl"] = ttl
        values["renew_interval"] = ttl / 6
    role = env.get("ALPACA_REDIS_ROLE", "candidate").strip().lower() or "candidate"
    if role not in _ROLES:
        raise ConfigurationError(
            f"ALPACA_REDIS_ROLE={role!r} is invalid: use candidate (may lead) or follower"
        )
    fallback = env.get("ALPACA_REDIS_FALLBACK_LOCAL", "").strip().lower()
    if fallback not in _TRUE | _FALSE:
        raise ConfigurationError(
            f"ALPACA_REDIS_FALLBACK_LOCAL={fallback!r} is invalid: use true or false"
        )
    return SharingOptions(**values), role == "candidate", fallback in _TRUE


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
    from :func:`sharing_options_from_env`.

    Example::

        registry = redis_registry(AlpacaSettings(sharing="redis"))
        hub = registry.acquire(settings.credentials(), "stock", endpoint_for(settings, "stock")).hub
    """
    env_sharing, env_candidate, env_fallback = sharing_options_from_env()
    sharing = sharing or env_sharing
    candidate = env_candidate if candidate is None else candidate
    fallback_local = env_fallback if fallback_local is None else fallback_local
    key = (os.getpid(), settings.redis_url, sharing.prefix, candidate)
    with _cache_lock:
        registry = _cache.get(key)
        if registry is not None:
            return registry
        from alpaca_di.errors import RedisUnavailableError

        try:
            check_redis(settings.redis_url)
        except RedisUnavailableError as exc:
            if not fallback_local:
                raise
            _log.warning(
                "sharing.redis_fallback_local",
                redis_url=mask_url(settings.redis_url),
                error=str(exc),
            )
            # Cached too: a process never mixes local and Redis sharing.
            registry = _cache[key] = ConnectionRegistry.default()
            return registry
        registry = _cache[key] = RedisConnectionRegistry(
            settings.redis_url,
            sharing=sharing,
            candidate=candidate,
            rest_url=settings.resolved_api_url,
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
