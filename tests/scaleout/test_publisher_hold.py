"""A leader's outbox holds what its new session read until the status announcing the gap is out.

Real Redis: a subscriber of the group's data channel sees what was queued after
the hold only after the status (published by hand here, while the hold is on),
although the outbox's task had its turns in between.
"""

from __future__ import annotations

import asyncio

import pytest
import structlog
from _scaleout_support import REDIS_URL
from redis.asyncio import Redis

from alpaca_di.protocol import StreamKind
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.publisher import Publisher
from alpaca_di.scaleout.wire import SharingKeys, decode_batch

pytestmark = pytest.mark.redis


def _quote(n: int) -> tuple[str, str, dict[str, int]]:
    return ("quotes", "AAPL", {"n": n})


async def _sequence(prefix: str) -> list[object]:
    keys = SharingKeys(prefix, "holdtest")
    client = Redis.from_url(REDIS_URL)
    listener = Redis.from_url(REDIS_URL)
    pubsub = listener.pubsub()
    await pubsub.subscribe(keys.data_channel, keys.status_channel)
    publisher = Publisher(
        StreamKind.STOCK, keys, SharingOptions(prefix=prefix), client=lambda: client,
        log=structlog.get_logger("test"),
    )
    publisher.start(1)
    seen: list[object] = []

    async def receive(count: int) -> None:
        while len(seen) < count:
            message = await asyncio.wait_for(pubsub.get_message(True, timeout=None), 10)
            if not message or message["type"] != "message":
                continue
            if message["channel"] == keys.status_channel.encode():
                seen.append("status")
            else:
                seen.extend(raw["n"] for _c, _s, raw in decode_batch(message["data"])[2])

    try:
        publisher.enqueue([_quote(1)])  # the last message before the gap
        await receive(1)
        publisher.hold()  # the restore's ack
        publisher.enqueue([_quote(2)])  # the new session's first messages
        publisher.enqueue([_quote(3)])
        await client.ping()  # the outbox's task has had its turns: it held them
        assert publisher.held == 2
        await client.publish(keys.status_channel, b"gap 1")
        publisher.release()
        await receive(4)
    finally:
        await publisher.close(1.0)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await client.aclose()
    return seen


def test_what_is_queued_during_a_hold_follows_the_status(redis_prefix: str) -> None:
    assert asyncio.run(_sequence(redis_prefix)) == [1, "status", 2, 3]
