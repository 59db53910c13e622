"""Bar backfill over real sockets: bars paced by the emulator's clock, a stream cut for a
window spanning several bars, then restored.

During the window the emulator refuses the client's reconnects, and its clock
publishes (and records) bars nobody receives. Once it lets the client back in,
every ``backfill=True`` subscriber gets a gap notice, then exactly the bars the
emulator published meanwhile, in time order, marked, then live bars, none twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from _integration_support import wait_until
from alpaca.data.models import Bar
from dependency_injector import providers

from alpaca_di import AlpacaContainer, BackfilledBar, ConnectionRegistry, GapNotice, StreamHub
from alpaca_di.credentials import Credentials
from alpaca_di.protocol import structs
from alpaca_di.testing import AlpacaEmulator, FakeHistoricalDataClient, Recorder
from alpaca_di.transport import ConnectionOptions

IEX = "/v2/iex"
DEADLINE = 15.0
SYMBOLS = ["AAPL", "MSFT"]




def outage(
    emu: AlpacaEmulator,
    *,
    close_frame: bool,
    path: str = IEX,
    before_restore: Callable[[], object] = lambda: None,
    **advance: Any,
) -> list[dict[str, Any]]:
    """Cut the stream, publish bars while the client cannot get back in, let it back."""
    refused = emu.stats().refused_handshakes
    emu.refuse_handshake(503, times=1_000_000, path=path)
    assert emu.drop_connections(path, close_frame=close_frame) == 1
    wait_until(lambda: emu.stats().refused_handshakes > refused, DEADLINE, "a refused reconnect")
    missed = emu.advance(**advance)
    before_restore()
    emu.accept_handshakes(path)
    return missed


def subscribed_with_a_bar(
    emu: AlpacaEmulator, hub: StreamHub, symbols: list[str], **channels: Any
) -> Recorder:
    """A backfill=True subscription to ``channels`` that has received one live bar."""
    got = Recorder()
    hub.subscribe(got, **channels, backfill=True).wait_confirmed(DEADLINE)
    emu.advance(minutes=1, symbols=symbols)
    got.wait_for(1, DEADLINE)
    return got


def key(message: Any) -> tuple[str, datetime]:
    if isinstance(message, dict):
        return message["S"], message["t"].to_datetime()
    return message.symbol, message.timestamp


def wire_key(bar: dict[str, Any]) -> tuple[str, datetime]:
    return bar["S"], bar["t"].to_datetime()


@pytest.mark.parametrize("close_frame", [True, False], ids=["clean", "abrupt"])
def test_subscribers_get_a_notice_then_exactly_the_missed_bars_then_live_ones(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer, close_frame: bool
) -> None:
    hub = clocked_container.stock_stream()
    models, raws, plain = Recorder(), Recorder(), Recorder()
    subs = [
        hub.subscribe(models, bars=SYMBOLS, quotes=["AAPL"], backfill=True),
        hub.subscribe(raws, bars=["AAPL"], backfill=True, raw=True),
        hub.subscribe(plain, bars=SYMBOLS),
    ]
    for sub in subs:
        sub.wait_confirmed(DEADLINE)
    before = clocked_emu.advance(minutes=2, symbols=SYMBOLS)
    models.wait_for(4, DEADLINE)
    raws.wait_for(2, DEADLINE)
    plain.wait_for(4, DEADLINE)

    missed = outage(clocked_emu, close_frame=close_frame, minutes=3, symbols=SYMBOLS)
    assert len(missed) == 6
    got = models.wait_for(4 + 1 + 6, DEADLINE)
    after = clocked_emu.advance(minutes=1, symbols=SYMBOLS)
    got = models.wait_for(4 + 1 + 6 + 2, DEADLINE)
    raw_got = raws.wait_for(2 + 1 + 3 + 1, DEADLINE)
    plain_got = plain.wait_for(4 + 2, DEADLINE)

    notice = got[4]
    assert isinstance(notice, GapNotice)
    assert notice.backfill
    assert notice.backfill_error is None
    assert notice.symbols == {"bars": frozenset(SYMBOLS), "quotes": frozenset({"AAPL"})}
    assert notice.last_message_at == before[-1]["t"].to_datetime()
    backfilled = got[5:11]
    assert all(isinstance(bar, BackfilledBar) and bar.backfilled for bar in backfilled)
    assert sorted(map(key, backfilled)) == sorted(map(wire_key, missed))
    stamps = [bar.timestamp for bar in backfilled]
    assert stamps == sorted(stamps)  # in time order across symbols
    assert [bar.close for bar in backfilled if bar.symbol == "AAPL"] == [
        bar["c"] for bar in missed if bar["S"] == "AAPL"]
    live = got[11:]
    assert all(type(bar) is Bar for bar in live + got[:4])
    assert sorted(map(key, live)) == sorted(map(wire_key, after))
    keys = [key(bar) for bar in got if not isinstance(bar, GapNotice)]
    assert len(keys) == len(set(keys)) == 12  # never a bar twice

    assert isinstance(raw_got[2], GapNotice)
    assert [(m["c"], m.get("backfilled")) for m in raw_got[3:6]] == [
        (bar["c"], True) for bar in missed if bar["S"] == "AAPL"]
    assert "backfilled" not in raw_got[6]

    # did not opt in: exactly the live bars, nothing else
    assert [key(bar) for bar in plain_got] == [wire_key(bar) for bar in before + after]
    assert [sub.stats.backfilled for sub in subs] == [6, 3, 0]
    assert [sub.stats.gaps for sub in subs] == [1, 1, 0]
    assert clocked_container.health().connections[0].backfilled == 9


@pytest.mark.parametrize("refuse", [False, True], ids=["503", "connection-refused"])
def test_a_failed_backfill_is_a_notice_saying_so_and_live_bars_resume(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer, refuse: bool
) -> None:
    hub = clocked_container.stock_stream()
    got = subscribed_with_a_bar(clocked_emu, hub, ["AAPL"], bars=["AAPL"])
    def rest_down() -> None:
        clocked_emu.fail_history(503, times=None, refuse=refuse)

    outage(clocked_emu, close_frame=True, minutes=2, symbols=["AAPL"], before_restore=rest_down)
    [_, first, failed] = got.wait_for(3, DEADLINE)
    after = clocked_emu.advance(minutes=1, symbols=["AAPL"])
    live = got.wait_for(4, DEADLINE)[3]

    assert isinstance(first, GapNotice)
    assert first.backfill
    assert isinstance(failed, GapNotice)
    assert not failed.backfill
    assert failed.not_backfilled == {"bars": frozenset({"AAPL"})}
    assert failed.backfill_error
    assert ("503" in failed.backfill_error) is not refuse
    assert (failed.lost_at, failed.confirmed_at) == (first.lost_at, first.confirmed_at)
    assert key(live) == wire_key(after[0])
    assert not isinstance(live, BackfilledBar)


def test_a_rate_limited_backfill_backs_off_and_succeeds(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    fake = FakeHistoricalDataClient()
    clocked_container.stock_history_client.override(providers.Object(fake))
    hub = clocked_container.stock_stream()
    got = subscribed_with_a_bar(clocked_emu, hub, ["AAPL"], bars=["AAPL"])
    fake.fail_next(429, times=2)
    missed = outage(clocked_emu, close_frame=False, minutes=2, symbols=["AAPL"])
    for bar in missed:
        fake.add_bar("AAPL", bar["t"].to_datetime(), open=bar["o"], close=bar["c"])
    bars = got.wait_for(1 + 1 + 2, DEADLINE)[2:]
    assert [bar.close for bar in bars] == [bar["c"] for bar in missed]
    assert len(fake.requests) == 3  # two 429s, then the answer


def test_a_star_subscription_backfills_the_symbols_it_had_and_says_what_it_did_not(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    got = subscribed_with_a_bar(clocked_emu, hub, ["AAPL"], bars="*")
    missed = outage(clocked_emu, close_frame=True, minutes=2, symbols=["AAPL", "TSLA"])
    messages = got.wait_for(1 + 1 + 2, DEADLINE)
    notice = messages[1]
    assert isinstance(notice, GapNotice)
    assert notice.not_backfilled == {"bars": frozenset({"*"})}  # TSLA was never seen
    assert [key(bar) for bar in messages[2:]] == [wire_key(b) for b in missed if b["S"] == "AAPL"]


def test_daily_bars_are_backfilled_and_updated_bars_are_not(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    got = Recorder()
    hub.subscribe(got, daily_bars=["AAPL"], updated_bars=["AAPL"], backfill=True
                  ).wait_confirmed(DEADLINE)
    clocked_emu.advance(days=1, symbols=["AAPL"])
    got.wait_for(1, DEADLINE)
    missed = outage(clocked_emu, close_frame=False, days=2, symbols=["AAPL"])
    messages = got.wait_for(1 + 1 + 2, DEADLINE)
    assert isinstance(messages[1], GapNotice)
    assert messages[1].not_backfilled == {}
    assert [key(bar) for bar in messages[2:]] == [wire_key(bar) for bar in missed]
    assert all(isinstance(bar, BackfilledBar) for bar in messages[2:])


def test_backfill_needs_a_source(
    clocked_emu: AlpacaEmulator, creds: Credentials, registry: ConnectionRegistry
) -> None:
    lease = registry.acquire(creds, "stock", clocked_emu.data_url(IEX), ConnectionOptions())
    with pytest.raises(ValueError, match="needs a historical client"):
        lease.hub.subscribe(bars=["AAPL"], backfill=True)
    lease.release()


class GatedHistory(FakeHistoricalDataClient):
    """Answers only once the test opens the gate (a backfill still under way)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = threading.Event()
        self.gate = threading.Event()

    def get_stock_bars(self, request_params: Any) -> Any:
        self.asked.set()
        assert self.gate.wait(DEADLINE)
        return super().get_stock_bars(request_params)


def test_live_bars_wait_for_the_backfill_of_their_symbol_other_channels_do_not(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    history = GatedHistory()
    clocked_container.stock_history_client.override(providers.Object(history))
    hub = clocked_container.stock_stream()
    got = subscribed_with_a_bar(clocked_emu, hub, ["AAPL"], bars=["AAPL"], trades=["AAPL"])
    missed = outage(clocked_emu, close_frame=True, minutes=2, symbols=["AAPL"])
    for bar in missed:
        history.add_bar("AAPL", bar["t"].to_datetime(), open=bar["o"], close=bar["c"])
    assert history.asked.wait(DEADLINE)
    live = clocked_emu.advance(minutes=1, symbols=["AAPL"])  # arrives while the backfill runs
    clocked_emu.publish(IEX, [{"T": "t", "S": "AAPL", "i": 9, "x": "V", "p": 190.0, "s": 1,
                       "c": ["@"], "z": "C", "t": clocked_emu.clock.now()}])
    [_, notice, trade] = got.wait_for(3, DEADLINE)  # the trade is not held back
    assert isinstance(notice, GapNotice)
    assert trade.price == 190.0
    history.gate.set()
    messages = got.wait_for(3 + 2 + 1, DEADLINE)
    assert [key(bar) for bar in messages[3:]] == [wire_key(bar) for bar in missed + live]
    assert [type(bar).__name__ for bar in messages[3:]] == ["BackfilledBar"] * 2 + ["Bar"]


def test_the_emulators_429_is_waited_out_and_the_backfill_completes(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    got = subscribed_with_a_bar(clocked_emu, hub, ["AAPL"], bars=["AAPL"])
    throttled = clocked_emu.stats().market_data_requests
    missed = outage(clocked_emu, close_frame=False, minutes=2, symbols=["AAPL"],
                    before_restore=lambda: clocked_emu.throttle_history(1, retry_after=0.1))
    # alpaca-py waits 3 s after the 429, then asks again
    messages = got.wait_for(1 + 1 + 2, DEADLINE)
    assert [key(bar) for bar in messages[2:]] == [wire_key(bar) for bar in missed]
    assert messages[1].backfill_error is None
    assert clocked_emu.stats().market_data_requests - throttled == 2  # the 429, then the bars


def test_crypto_bars_are_backfilled_from_the_crypto_client(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    path, symbol = "/v1beta3/crypto/us", "BTC/USD"
    hub = clocked_container.crypto_stream()
    got = subscribed_with_a_bar(clocked_emu, hub, [symbol], bars=[symbol])
    missed = outage(clocked_emu, close_frame=False, path=path, minutes=2, symbols=[symbol])
    messages = got.wait_for(1 + 1 + 2, DEADLINE)
    assert isinstance(messages[1], GapNotice)
    assert [key(bar) for bar in messages[2:]] == [wire_key(bar) for bar in missed]
    assert all(isinstance(bar, BackfilledBar) for bar in messages[2:])


class NonsenseSource:
    """A BarSource that answers a list where bars per symbol belong."""

    def fetch_bars(self, channel: str, symbols: Any, start: datetime, limit: int) -> Any:
        return ["not", "bars"]


def test_a_source_answering_nonsense_is_a_notice_and_holds_nothing_back(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    remove = hub.use_history(NonsenseSource())
    got = subscribed_with_a_bar(clocked_emu, hub, ["AAPL"], bars=["AAPL"])
    outage(clocked_emu, close_frame=True, minutes=2, symbols=["AAPL"])
    got.wait_for(3, DEADLINE)  # the notice and the failure: reconnected, nothing held
    after = clocked_emu.advance(minutes=1, symbols=["AAPL"])
    [_, first, failed, live] = got.wait_for(4, DEADLINE)
    assert isinstance(first, GapNotice)
    assert isinstance(failed, GapNotice)
    assert failed.backfill_error
    assert failed.not_backfilled == {"bars": frozenset({"AAPL"})}
    assert key(live) == wire_key(after[0])
    remove()
    with pytest.raises(TypeError, match="fetch_bars"):
        hub.use_history(object())  # type: ignore[arg-type]


def test_struct_subscribers_get_marked_bar_structs_in_order_then_live_ones(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    got = Recorder()
    hub.subscribe(got, bars=SYMBOLS, daily_bars=["AAPL"], backfill=True, form="struct"
                  ).wait_confirmed(DEADLINE)
    clocked_emu.advance(minutes=1, symbols=SYMBOLS)
    got.wait_for(2, DEADLINE)
    missed = outage(clocked_emu, close_frame=False, minutes=3, symbols=SYMBOLS)
    messages = got.wait_for(2 + 1 + 6, DEADLINE)
    after = clocked_emu.advance(minutes=1, symbols=SYMBOLS)
    messages = got.wait_for(2 + 1 + 6 + 2, DEADLINE)

    assert all(type(bar) is structs.Bar for bar in messages[:2])
    notice = messages[2]
    assert isinstance(notice, GapNotice)
    assert notice.backfill
    filled = messages[3:9]
    assert all(type(bar) is structs.BackfilledBar and bar.backfilled for bar in filled)
    assert all(isinstance(bar, structs.Bar) for bar in filled)
    assert all(structs.channel_of(bar) == "bars" for bar in filled)
    assert sorted(map(key, filled)) == sorted(map(wire_key, missed))
    assert [bar.timestamp for bar in filled] == sorted(bar.timestamp for bar in filled)
    assert {(bar.symbol, bar.close) for bar in filled} == {(b["S"], b["c"]) for b in missed}
    live = messages[9:]
    assert all(type(bar) is structs.Bar for bar in live)
    assert sorted(map(key, live)) == sorted(map(wire_key, after))
    keys = [key(bar) for bar in messages if not isinstance(bar, GapNotice)]
    assert len(keys) == len(set(keys))


def test_struct_daily_bars_are_backfilled_as_marked_daily_bar_structs(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    hub = clocked_container.stock_stream()
    got = Recorder()
    hub.subscribe(got, daily_bars=["AAPL"], backfill=True, form="struct").wait_confirmed(DEADLINE)
    clocked_emu.advance(days=1, symbols=["AAPL"])
    got.wait_for(1, DEADLINE)
    missed = outage(clocked_emu, close_frame=True, days=2, symbols=["AAPL"])
    messages = got.wait_for(1 + 1 + 2, DEADLINE)
    assert type(messages[0]) is structs.DailyBar
    assert isinstance(messages[1], GapNotice)
    assert [key(bar) for bar in messages[2:]] == [wire_key(bar) for bar in missed]
    assert all(type(bar) is structs.BackfilledDailyBar for bar in messages[2:])
    assert all(isinstance(bar, structs.DailyBar) and bar.backfilled for bar in messages[2:])
