"""Fixtures of the Redis scale-out tests: a real Redis on 127.0.0.1:6379, a unique key prefix."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from _scaleout_support import REDIS_URL


def _redis_unavailable() -> str | None:
    try:
        import redis
    except ImportError:
        return "the redis package is not installed (pip install 'alpaca-di[redis]')"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"no Redis server answers on 127.0.0.1:6379 ({exc}); CI starts one"
    return None


_UNAVAILABLE = _redis_unavailable()


@pytest.fixture(autouse=True)
def _require_redis() -> None:
    if _UNAVAILABLE:
        pytest.skip(_UNAVAILABLE)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test alone; every key under it is deleted afterwards."""
    import redis

    prefix = f"alpaca-di-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
