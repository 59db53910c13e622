"""The leader's read-back and in-memory delivery, without Redis, sockets or REST.

``read_tail`` runs on a stub client with ``xrevrange``; ``missed_updates`` on a
stub trading client with ``get_orders``/``get_order_by_id``; ``UpdateReader``'s
local delivery and stream de-duplication on entries built by ``update_entry``.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from alpaca_di.protocol.models import ReconciledTradeUpdate, parse
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.recovery import StreamTail, missed_updates, read_tail
from alpaca_di.scaleout.updates import UpdateReader
from alpaca_di.scaleout.wire import SharingKeys, update_entry

KEYS = SharingKeys("test", "tag")
NOW = datetime(2026, 1, 5, 15, 0, tzinfo=timezone.utc)


def _order(status: str, *, at: datetime = NOW, filled: str = "0") -> dict[str, Any]:
    stamp = at.isoformat()
    return {
        "id": str(uuid.uuid4()), "client_order_id": str(uuid.uuid4()),
        "created_at": stamp, "updated_at": stamp, "submitted_at": stamp,
        "filled_at": stamp if status == "filled" else None, "expired_at": None,
        "expires_at": None, "canceled_at": stamp if status == "canceled" else None,
        "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
        "asset_id": str(uuid.uuid4()), "symbol": "AAPL", "asset_class": "us_equity",
        "notional": None, "qty": "1", "filled_qty": filled,
        "filled_avg_price": "10" if status == "filled" else None, "order_class": "simple",
        "order_type": "market", "type": "market", "side": "buy",
        "position_intent": "buy_to_open", "time_in_force": "day", "limit_price": None,
        "stop_price": None, "status": status, "extended_hours": False, "legs": None,
        "trail_percent": None, "trail_price": None, "hwm": None,
    }


def _update(event: str, order: dict[str, Any]) -> dict[str, Any]:
    return {"event": event, "timestamp": order["updated_at"], "order": order}


class _Rest:
    """A TradingClient stand-in: the orders REST knows, and the calls made."""

    def __init__(self, orders: list[dict[str, Any]]) -> None:
        self.orders = {o["id"]: o for o in orders}
        self.listed_after: list[datetime] = []
        self.looked_up: list[str] = []

    def get_orders(self, filter: Any) -> list[dict[str, Any]]:
        self.listed_after.append(filter.after)
        return [o for o in self.orders.values() if o["id"] not in self.looked_up_only]

    looked_up_only: frozenset[str] = frozenset()

    def get_order_by_id(self, order_id: str) -> dict[str, Any]:
        self.looked_up.append(order_id)
        return self.orders[order_id]


class _Redis:
    def __init__(self, entries: list[tuple[bytes, dict[Any, Any]]]) -> None:
        self._entries = entries  # oldest first

    async def xrevrange(self, name: str, count: int) -> list[Any]:
        newest_first = list(reversed(self._entries))[:count]
        return [(entry_id, {_b(k): _b(v) for k, v in f.items()}) for entry_id, f in newest_first]


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _fields(epoch: int, seq: int, raw: dict[str, Any]) -> dict[bytes, bytes]:
    return {_b(k): _b(v) for k, v in update_entry(epoch, seq, "trade_updates", "AAPL", raw).items()}


def _entry(ms: int, seq: int, update: dict[str, Any]) -> tuple[bytes, dict[Any, Any]]:
    return (f"{ms}-0".encode(), update_entry(7, seq, "trade_updates", "AAPL", update))


def test_an_empty_stream_means_the_whole_look_back_and_every_state_is_published() -> None:
    filled, canceled, resting = _order("filled", filled="1"), _order("canceled"), _order("new")
    rest = _Rest([filled, canceled, resting])
    since, count, messages = missed_updates(rest, StreamTail(), lookback=600.0, now=NOW)
    assert since == NOW - timedelta(seconds=600)
    assert rest.listed_after == [since]
    assert count == 3
    events = {raw["order"]["id"]: raw["event"] for _c, _s, raw in messages}
    assert events == {filled["id"]: "fill", canceled["id"]: "canceled", resting["id"]: "new"}
    for channel, symbol, raw in messages:
        assert (channel, symbol, raw["reconciled"]) == ("trade_updates", "AAPL", True)
        update = parse(channel, symbol, raw)
        assert isinstance(update, ReconciledTradeUpdate)


def test_what_the_stream_holds_is_not_published_again_and_open_orders_are_looked_up() -> None:
    old = NOW - timedelta(minutes=30)
    done = _order("filled", filled="1")
    moved = _order("filled", at=old, filled="1")  # submitted long ago, filled in the gap
    still = _order("new")
    moved_then = {**moved, "status": "new", "filled_qty": "0", "filled_at": None}
    last_ms = int((NOW - timedelta(seconds=3)).timestamp() * 1000)
    client = _Redis([
        _entry(last_ms - 20, 1, _update("new", moved_then)),
        _entry(last_ms - 10, 2, _update("new", still)),
        _entry(last_ms, 3, _update("fill", done)),
    ])
    tail = asyncio.run(read_tail(client, KEYS, count=100))
    assert tail.last_ms == last_ms
    assert tail.ended == {done["id"]}
    assert set(tail.last) == {done["id"], moved["id"], still["id"]}

    rest = _Rest([done, moved, still])
    rest.looked_up_only = frozenset({moved["id"]})  # the listing starts after its submission
    since, _count, messages = missed_updates(rest, tail, lookback=600.0, now=NOW)
    assert since == datetime.fromtimestamp(last_ms / 1000, timezone.utc) - timedelta(seconds=10)
    assert rest.looked_up == [moved["id"]]
    assert [(raw["order"]["id"], raw["event"]) for _c, _s, raw in messages] == [
        (moved["id"], "fill")
    ]


def test_the_leaders_own_process_gets_updates_from_memory_once() -> None:
    delivered: list[Any] = []
    reader = UpdateReader(
        KEYS, SharingOptions(), "me", deliver=delivered.extend, malformed=lambda reason: None
    )
    first, second = {"event": "new", "seq": 1}, {"event": "fill", "seq": 2}
    numbered = [(1, "trade_updates", "AAPL", first), (2, "trade_updates", "AAPL", second)]
    assert reader.take_local(7, numbered) == [
        ["trade_updates", "AAPL", first],
        ["trade_updates", "AAPL", second],
    ]
    assert reader.take_local(7, numbered[1:]) == []  # handed twice: once
    # The same entries read back from the stream are skipped; another term's are not.
    for seq, raw in ((1, first), (2, second)):
        assert reader._decode(_fields(7, seq, raw)) is None
    assert reader._decode(_fields(8, 1, first)) == ["trade_updates", "AAPL", first]
    assert (reader.from_memory, reader.duplicates) == (2, 0)
