"""redis_client: the Redis client of the scale-out, failing fast instead of retrying."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["redis_client"]


def redis_client(url: str, *, timeout: float, name: str | None = None) -> Redis:
    """An asyncio Redis client that fails fast instead of retrying inside commands.

    The scale-out handles reconnection itself (and a leader must notice a lost
    Redis at once to fence itself), so redis-py's own retries are off. There is
    no *socket* timeout: with one, redis-py wraps every write in
    ``asyncio.wait_for``, and on Python < 3.12 cancelling such a command can
    leave the task hanging forever. Callers bound each command themselves
    (``command_timeout``); ``timeout`` bounds the connect::

        client = redis_client("redis://127.0.0.1:6379/0", timeout=2.0)
    """
    return Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
    )
