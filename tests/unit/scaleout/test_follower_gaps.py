"""How a follower learns of its leader's gaps, and where its hub's backfill reads from."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest

from alpaca_di.scaleout.backfill import BackfillUnavailableError, SharedBarSource
from alpaca_di.scaleout.follower import RedisUpstream
from alpaca_di.scaleout.wire import GapRecord, LeaderStatus, decode_wants, encode_wants
from alpaca_di.transport.states import ConnectionState

from ._upstream_support import RecordingListener, live_upstream

ACK = {"bars": ("AAPL",)}
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc)


@pytest.fixture
def mirror() -> Iterator[tuple[RedisUpstream, RecordingListener]]:
    loop = asyncio.new_event_loop()
    listener = RecordingListener()
    yield live_upstream(loop, listener, "PKGAPS000001"), listener
    loop.close()


def _status(
    upstream: RedisUpstream, state: str, *, gap: int = 0, ack: Any = None, epoch: int = 5
) -> LeaderStatus:
    return LeaderStatus(
        "host:1:abc", epoch, state, ACK if ack is None else ack,
        seen={upstream.member: 0}, gap=gap,
    )


def test_a_drop_no_status_showed_is_a_loss_and_a_restore_of_that_gap(
    mirror: tuple[RedisUpstream, RecordingListener],
) -> None:
    upstream, listener = mirror
    upstream._apply_status(_status(upstream, "connected"))
    upstream._apply_status(_status(upstream, "connected", gap=1))  # the count grew, nothing else
    assert listener.states == [
        ConnectionState.CONNECTED, ConnectionState.RECONNECTING, ConnectionState.CONNECTED
    ]
    assert listener.acks == [ACK, ACK]  # the second restores the hub (its gap notices)
    assert upstream.restored_gap() == (5, 1)


def test_after_the_leaders_loss_the_restore_waits_for_the_status_counting_the_gap(
    mirror: tuple[RedisUpstream, RecordingListener],
) -> None:
    upstream, listener = mirror
    upstream._apply_status(_status(upstream, "connected"))
    upstream._apply_status(_status(upstream, "reconnecting", ack={}))
    upstream._apply_status(_status(upstream, "connected", ack={}))  # socket up, not confirmed
    assert upstream.state is ConnectionState.CONNECTED
    assert listener.acks == [ACK]  # no restore on the empty ack
    upstream._apply_status(_status(upstream, "connected", gap=1))
    assert listener.acks == [ACK, ACK]
    assert upstream.restored_gap() == (5, 1)


def test_a_loss_of_this_process_alone_or_a_new_term_is_not_the_leaders_gap(
    mirror: tuple[RedisUpstream, RecordingListener],
) -> None:
    upstream, listener = mirror
    upstream._apply_status(_status(upstream, "connected"))
    upstream._redis_up = False  # this process's Redis link went down
    upstream._evaluate()
    upstream._redis_up = True
    upstream._apply_status(_status(upstream, "connected"))
    assert listener.acks == [ACK, ACK]
    assert upstream.restored_gap() is None
    upstream._apply_status(_status(upstream, "connected", epoch=6, gap=0))  # a new leader
    assert listener.states[-2:] == [ConnectionState.RECONNECTING, ConnectionState.CONNECTED]
    assert upstream.restored_gap() is None


def test_an_older_leader_that_counts_no_gaps_still_restores_on_its_ack(
    mirror: tuple[RedisUpstream, RecordingListener],
) -> None:
    upstream, listener = mirror
    upstream._apply_status(_status(upstream, "connected"))
    upstream._apply_status(_status(upstream, "reconnecting", ack={}))
    upstream._apply_status(_status(upstream, "connected"))  # gap stays 0, the ack is back
    assert listener.acks == [ACK, ACK]
    assert upstream.restored_gap() is None  # its own REST source backfills


class _Records:
    def __init__(self, record: GapRecord | None, gap: tuple[int, int] | None = (5, 1)) -> None:
        self.record = record
        self.gap = gap

    def restored_gap(self) -> tuple[int, int] | None:
        return self.gap

    def gap_record(self, gap: tuple[int, int]) -> GapRecord | None:
        return self.record


class _Own:
    def __init__(self) -> None:
        self.asked: list[tuple[str, list[str], datetime]] = []

    def fetch_bars(self, channel: str, symbols: Any, start: datetime, limit: int) -> Any:
        self.asked.append((channel, list(symbols), start))
        return {symbol: [{"t": start, "c": 9.0}] for symbol in symbols}


def _bar(minute: int) -> dict[str, Any]:
    return {"t": msgpack.Timestamp.from_datetime(T0 + timedelta(minutes=minute)), "c": 1.0}


def test_the_leaders_record_serves_what_it_covers_and_the_own_source_the_rest() -> None:
    start = msgpack.Timestamp.from_datetime(T0 + timedelta(seconds=1))
    record = GapRecord(
        {("bars", "AAPL"): (start, [_bar(1), _bar(2)]),
         ("bars", "TSLA"): (msgpack.Timestamp.from_datetime(T0 + timedelta(minutes=5)), [])},
        truncated=frozenset({("bars", "AAPL")}),
    )
    own = _Own()
    source = SharedBarSource(_Records(record), own)
    asked = T0 + timedelta(seconds=1)
    rows = source.fetch_bars("bars", ["AAPL", "MSFT", "TSLA"], asked, 10_000)
    assert rows["AAPL"] == [_bar(1), _bar(2)]
    # MSFT: not in the record; TSLA: the leader's window starts after ours (we missed more)
    assert own.asked == [("bars", ["MSFT", "TSLA"], asked)]
    assert set(rows) == {"AAPL", "MSFT", "TSLA"}
    assert getattr(rows, "truncated", False)  # the notice will say so
    assert (source.shared, source.own) == (1, 1)


def test_without_a_leader_gap_the_own_source_fetches_and_a_leader_error_is_raised() -> None:
    own = _Own()
    SharedBarSource(_Records(None, gap=None), own).fetch_bars("bars", ["AAPL"], T0, 10)
    assert own.asked == [("bars", ["AAPL"], T0)]
    failed = GapRecord(errors={("bars", "AAPL"): "ServerError: 503 internal server error"})
    with pytest.raises(BackfillUnavailableError, match=r"could not backfill bars AAPL: .*503"):
        SharedBarSource(_Records(failed), own).fetch_bars("bars", ["AAPL"], T0, 10)


def test_gap_records_wants_and_the_status_counts_round_trip() -> None:
    record = GapRecord(
        {("bars", "AAPL"): (msgpack.Timestamp.from_datetime(T0), [_bar(0)])},
        {("daily_bars", "MSFT"): "timeout"},
        frozenset({("bars", "AAPL")}),
    )
    assert GapRecord.decode(record.encode()) == record
    assert decode_wants(encode_wants([("bars", "AAPL"), ("bars", "*")])) == {
        ("bars", "AAPL"), ("bars", "*")}
    status = LeaderStatus("l", 3, "connected", gap=4, filled=3)
    assert LeaderStatus.decode(status.encode()) == status
    older = msgpack.packb({"leader": "l", "epoch": 3, "state": "connected", "ack": {}})
    assert (LeaderStatus.decode(older).gap, LeaderStatus.decode(older).filled) == (0, 0)
    with pytest.raises(Exception, match="undecodable gap record"):
        GapRecord.decode(b"\x01")
