"""A follower's RedisUpstream on a loop that never runs, fed leader statuses by hand."""

from __future__ import annotations

import asyncio
from typing import Any

from alpaca_di.credentials import Credentials
from alpaca_di.protocol import StreamKind, SubscriptionState
from alpaca_di.scaleout.follower import RedisUpstream
from alpaca_di.transport import ConnectionOptions
from alpaca_di.transport.states import ConnectionState

URL = "wss://stream.data.alpaca.markets/v2/iex"


class RecordingListener:
    """The hub's side of the upstream: the states it was told and the acks."""

    def __init__(self) -> None:
        self.states: list[ConnectionState] = []
        self.acks: list[Any] = []

    def on_state(self, state: ConnectionState, previous: Any, error: Any) -> None:
        self.states.append(state)

    def on_ack(self, channels: Any) -> None:
        self.acks.append(dict(channels))

    def on_batch(self, messages: Any, structs: Any = None, sources: Any = None) -> None: ...
    def on_rejected(self, pairs: Any, error: Any) -> None: ...
    def on_malformed(self, reason: str) -> None: ...
    def on_unsubscribing(self, channels: Any) -> None: ...


def live_upstream(
    loop: asyncio.AbstractEventLoop, listener: RecordingListener, key_id: str
) -> RedisUpstream:
    """An upstream as inside a live Redis session (nothing connects: the port is 1)."""
    upstream = RedisUpstream(
        URL,
        kind=StreamKind.STOCK,
        credentials=Credentials(key_id, "unit-secret"),
        options=ConnectionOptions(),
        subscriptions=SubscriptionState(),
        listener=listener,
        loop=loop,
        redis_url="redis://127.0.0.1:1/0",
    )
    upstream._redis_up = True
    return upstream
