"""redis_client: the one place a Redis client of the scale-out is built.

From a URL or a :class:`~alpaca_di.scaleout.options.RedisConnection` (ACL user,
TLS files, Sentinel), failing fast instead of retrying. :func:`sync_redis_client`
is the blocking twin used by the start-up check::

    client = redis_client(RedisConnection("rediss://cache:6380/0", password=pw), timeout=2.0)
"""

from __future__ import annotations

import ssl
from typing import Any

import redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel as SyncSentinel

from alpaca_di.scaleout.options import RedisConnection

__all__ = ["RedisTarget", "redis_client", "sync_redis_client"]

RedisTarget = str | RedisConnection
"""What the scale-out accepts as "the Redis": a URL, or a full :class:`RedisConnection`."""

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def _connection(target: RedisTarget) -> RedisConnection:
    return target if isinstance(target, RedisConnection) else RedisConnection(target)


def _tls_kwargs(conn: RedisConnection) -> dict[str, Any]:
    if not conn.tls:
        return {}
    return {
        "ssl_ca_certs": conn.tls_ca_file,
        "ssl_certfile": conn.tls_cert_file,
        "ssl_keyfile": conn.tls_key_file,
        "ssl_cert_reqs": _CERT_REQS[conn.tls_verify],
        "ssl_check_hostname": conn.tls_verify == "required",
    }


def _auth_kwargs(conn: RedisConnection) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if conn.username is not None:
        kwargs["username"] = conn.username
    if conn.password is not None:
        kwargs["password"] = conn.password.get_secret_value()
    return kwargs


def _sentinel_kwargs(conn: RedisConnection, timeout: float) -> dict[str, Any]:
    """Options of the connections to the sentinels themselves."""
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if conn.sentinel_username is not None:
        kwargs["username"] = conn.sentinel_username
    if conn.sentinel_password is not None:
        kwargs["password"] = conn.sentinel_password.get_secret_value()
    if conn.tls:
        kwargs["ssl"] = True
        kwargs.update(_tls_kwargs(conn))
    return kwargs


def _primary_kwargs(conn: RedisConnection) -> dict[str, Any]:
    """Options of the connections to the primary a sentinel names (from the URL)."""
    # The URL's path, credentials and query still apply; its host and port do not.
    options: dict[str, Any] = redis.connection.parse_url(conn.url)  # type: ignore[no-untyped-call]
    kwargs: dict[str, Any] = {
        key: options[key] for key in ("db", "username", "password") if key in options
    }
    kwargs.update(_auth_kwargs(conn))
    if conn.tls:
        kwargs["ssl"] = True
        kwargs.update(_tls_kwargs(conn))
    return kwargs


def redis_client(target: RedisTarget, *, timeout: float, name: str | None = None) -> Redis:
    """An asyncio Redis client that fails fast instead of retrying inside commands.

    The scale-out handles reconnection itself (and a leader must notice a lost
    Redis at once to fence itself), so redis-py's own retries are off. There is
    no *socket* timeout: with one, redis-py wraps every write in
    ``asyncio.wait_for``, and on Python < 3.12 cancelling such a command can
    leave the task hanging forever. Callers bound each command themselves
    (``command_timeout``); ``timeout`` bounds the connect.

    With ``sentinels``, the client asks them for the current primary on every new
    connection, so after a failover the next reconnect reaches the promoted
    replica::

        client = redis_client("redis://127.0.0.1:6379/0", timeout=2.0)
    """
    conn = _connection(target)
    common: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "client_name": name,
    }
    if conn.sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(conn.sentinels),
            sentinel_kwargs=_sentinel_kwargs(conn, timeout),
            **common,
            **_primary_kwargs(conn),
        )
        primary: Redis = sentinel.master_for(conn.sentinel_master)
        return primary
    return Redis.from_url(conn.url, **common, **_auth_kwargs(conn), **_tls_kwargs(conn))


def sync_redis_client(target: RedisTarget, *, timeout: float) -> redis.Redis:
    """A blocking client to the same Redis, every call bounded by ``timeout``.

    Example::

        sync_redis_client(connection, timeout=2.0).ping()
    """
    conn = _connection(target)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": SyncRetry(NoBackoff(), 0),
    }
    if conn.sentinels:
        sentinel = SyncSentinel(  # type: ignore[no-untyped-call]
            list(conn.sentinels),
            sentinel_kwargs=_sentinel_kwargs(conn, timeout),
            **common,
            **_primary_kwargs(conn),
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            conn.sentinel_master
        )
        return client
    return redis.Redis.from_url(conn.url, **common, **_auth_kwargs(conn), **_tls_kwargs(conn))
