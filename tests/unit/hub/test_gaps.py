"""GapTracker over a real inbox, without sockets: where a backfill window starts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack

from alpaca_di.hub.gaps import GapNotice, GapTracker
from alpaca_di.hub.inbox import Inbox

URL = "wss://stream.data.alpaca.markets/v2/iex"
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc)
PAIR = ("bars", "AAPL")


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def live_bar(n: int) -> tuple[str, str, dict[str, Any]]:
    stamp = msgpack.Timestamp.from_datetime(minute(n))
    raw = {"T": "b", "S": "AAPL", "t": stamp, "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 10}
    return ("bars", "AAPL", {**raw, "n": 1, "vw": 1.0})


class Server:
    """Answers for the bars it published: minutes 1 to 4."""

    def __init__(self) -> None:
        self.starts: list[datetime] = []

    def fetch_bars(
        self, channel: str, symbols: Sequence[str], start: datetime, limit: int
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        self.starts.append(start)
        rows = [
            {"t": minute(n), "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 10, "n": 1, "vw": 1.0}
            for n in range(1, 5)
            if minute(n) >= start
        ]
        return {"AAPL": rows}


def test_a_bar_that_arrives_after_the_loss_was_noticed_is_not_backfilled_again() -> None:
    """Behind the Redis scale-out the status of a loss can overtake bars read before it."""
    loop = asyncio.new_event_loop()
    try:
        tracker = GapTracker("stock", URL, loop, on_overflow=lambda inbox: None)
        server = Server()
        tracker.use(server)
        inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=True, backfill=True, held=[PAIR])
        inbox.pairs = frozenset({PAIR})
        inbox.push([live_bar(0)])
        tracker.lost([inbox])
        inbox.push([live_bar(1)])  # read before the loss, here after its notice was due
        tracker.restored([inbox])
        loop.run_until_complete(asyncio.gather(*tracker._tasks))
        with inbox.lock:
            delivered = [item[2] for item in inbox.take_all()]
    finally:
        loop.close()

    notices = [m for m in delivered if isinstance(m, GapNotice)]
    bars = [m for m in delivered if not isinstance(m, GapNotice)]
    assert len(notices) == 1
    assert notices[0].backfill
    assert len(server.starts) == 1
    assert server.starts[0] > minute(1)
    times = [m["t"].to_datetime() for m in bars]
    assert times == [minute(n) for n in range(5)]  # each minute once, in order
    assert [bool(m.get("backfilled")) for m in bars] == [False, False, True, True, True]
