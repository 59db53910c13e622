"""The emulator's clock and its bar history: pure objects, no sockets."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import msgpack
import pytest

from alpaca_di.emulator.bars import BarHistory, Timeframe, new_york_midnight_ns, rest_form
from alpaca_di.emulator.clock import EmulatorClock, to_datetime, to_ns

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
NS = 1_000_000_000


def bar(symbol: str, minute: int, close: float, *, type_code: str = "b", volume: int = 100,
        base: dt.datetime = T0) -> dict[str, Any]:
    start = base + dt.timedelta(minutes=minute)
    return {
        "T": type_code, "S": symbol, "o": close - 1, "h": close + 1, "l": close - 2,
        "c": close, "v": volume, "n": 2, "vw": close, "t": msgpack.Timestamp.from_unix_nano(
            to_ns(start)),
    }


# ----------------------------------------------------------------------------- clock


def test_a_clock_given_a_start_is_frozen_there_and_moves_only_when_told() -> None:
    clock = EmulatorClock(T0)
    assert clock.frozen
    assert clock.now() == T0
    assert clock.advance(minutes=1, seconds=30) == T0 + dt.timedelta(seconds=90)
    clock.set("2024-03-01T00:00:00Z")
    assert clock.now() == dt.datetime(2024, 3, 1, tzinfo=UTC)
    assert clock.now_ns() == to_ns(dt.datetime(2024, 3, 1, tzinfo=UTC))
    before, after = clock.advance_ns(5)
    assert after - before == 5
    assert clock.now_ns() == after


def test_a_default_clock_follows_the_wall_clock_until_frozen() -> None:
    clock = EmulatorClock()
    assert not clock.frozen
    wall = dt.datetime.now(UTC)
    assert abs((clock.now() - wall).total_seconds()) < 60
    clock.freeze()
    frozen_at = clock.now_ns()
    assert clock.now_ns() == frozen_at
    clock.resume()
    assert not clock.frozen
    assert clock.now_ns() >= frozen_at


def test_clock_refuses_going_back_by_advance_and_bad_times() -> None:
    clock = EmulatorClock(T0)
    with pytest.raises(ValueError, match="forward only"):
        clock.advance(seconds=-1)
    with pytest.raises(ValueError, match="forward only"):
        clock.advance_ns(-1)
    with pytest.raises(ValueError, match="not an ISO 8601"):
        clock.set("yesterday")
    with pytest.raises(TypeError, match="datetime or ISO 8601"):
        to_datetime(12)  # type: ignore[arg-type]
    assert to_datetime(dt.datetime(2024, 1, 2)) == dt.datetime(2024, 1, 2, tzinfo=UTC)


def test_clock_listeners_hear_every_jump_and_can_leave() -> None:
    clock = EmulatorClock(T0)
    heard = threading.Semaphore(0)
    remove = clock.on_change(heard.release)
    clock.advance(seconds=1)
    clock.set(T0)
    clock.resume()
    assert all(heard.acquire(timeout=0) for _ in range(3))
    remove()
    clock.advance(seconds=1)
    assert not heard.acquire(timeout=0)


# ----------------------------------------------------------------------------- timeframes


@pytest.mark.parametrize(
    ("text", "amount", "unit"),
    [("1Min", 1, "Min"), ("15Min", 15, "Min"), ("1T", 1, "Min"), ("4Hour", 4, "Hour"),
     ("1Day", 1, "Day"), ("1D", 1, "Day"), ("1Week", 1, "Week"), ("3Month", 3, "Month")],
)
def test_timeframes_parse_as_alpaca_spells_them(text: str, amount: int, unit: str) -> None:
    assert Timeframe.parse(text) == Timeframe(amount, unit)


@pytest.mark.parametrize("text", ["", "Min", "0Min", "60Min", "24Hour", "2Day", "5Month", "1Sec"])
def test_bad_timeframes_are_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid timeframe .*\[1-59\]Min"):
        Timeframe.parse(text)


def test_day_buckets_start_at_new_york_midnight_across_dst() -> None:
    summer = to_ns(dt.datetime(2024, 7, 1, 15, 0, tzinfo=UTC))
    winter = to_ns(dt.datetime(2024, 1, 2, 15, 0, tzinfo=UTC))
    assert new_york_midnight_ns(summer) == to_ns(dt.datetime(2024, 7, 1, 4, 0, tzinfo=UTC))
    assert new_york_midnight_ns(winter) == to_ns(dt.datetime(2024, 1, 2, 5, 0, tzinfo=UTC))
    week = Timeframe.parse("1Week").bucket(winter)  # Tuesday -> Monday
    assert week == to_ns(dt.datetime(2024, 1, 1, 5, 0, tzinfo=UTC))


# ----------------------------------------------------------------------------- history


def test_minute_bars_aggregate_into_larger_timeframes() -> None:
    history = BarHistory()
    for minute, close in enumerate([10.0, 11.0, 9.0, 12.0, 13.0, 14.0]):
        assert history.record("stock", bar("AAPL", minute, close, volume=100 + minute))
    page, token = history.query(
        "stock", ["AAPL"], Timeframe.parse("5Min"), start_ns=to_ns(T0), end_ns=to_ns(T0) * 2
    )
    assert token is None
    first, second = page["AAPL"]
    assert first["t"] == "2024-01-02T14:30:00Z"
    assert second["t"] == "2024-01-02T14:35:00Z"
    assert (first["o"], first["h"], first["l"], first["c"]) == (9.0, 14.0, 7.0, 13.0)
    assert first["v"] == sum(range(100, 105))
    assert first["n"] == 10
    assert first["vw"] == round(sum(c * (100 + i) for i, c in enumerate(
        [10.0, 11.0, 9.0, 12.0, 13.0])) / first["v"], 4)
    assert second["c"] == 14.0
    assert second["v"] == 105


def test_an_updated_bar_replaces_the_bar_of_its_minute() -> None:
    history = BarHistory()
    history.record("stock", bar("AAPL", 0, 10.0))
    history.record("stock", bar("AAPL", 0, 10.5, type_code="u"))
    page, _ = history.query("stock", ["AAPL"], Timeframe.parse("1Min"),
                            start_ns=0, end_ns=to_ns(T0) * 2)
    assert [b["c"] for b in page["AAPL"]] == [10.5]
    assert history.latest("stock", "b", "AAPL") is not None


def test_pages_run_across_symbols_in_order_and_resume_from_the_token() -> None:
    history = BarHistory()
    for symbol in ("MSFT", "AAPL"):
        for minute in range(3):
            history.record("stock", bar(symbol, minute, 100.0 + minute))
    seen: list[tuple[str, str]] = []
    token: str | None = None
    pages = 0
    while True:
        page, token = history.query("stock", ["MSFT", "AAPL", "NONE"], Timeframe.parse("1Min"),
                                    start_ns=0, end_ns=to_ns(T0) * 2, limit=4, page_token=token)
        pages += 1
        seen.extend((symbol, b["t"][11:16]) for symbol, bars in page.items() for b in bars)
        if token is None:
            break
    assert pages == 2
    assert seen == [("AAPL", "14:30"), ("AAPL", "14:31"), ("AAPL", "14:32"),
                    ("MSFT", "14:30"), ("MSFT", "14:31"), ("MSFT", "14:32")]
    page, _ = history.query("stock", ["AAPL"], Timeframe.parse("1Min"), start_ns=0,
                            end_ns=to_ns(T0) * 2, descending=True)
    assert [b["t"][11:16] for b in page["AAPL"]] == ["14:32", "14:31", "14:30"]
    with pytest.raises(ValueError, match="invalid page_token"):
        history.query("stock", ["AAPL"], Timeframe.parse("1Min"), start_ns=0, end_ns=1,
                      page_token="not-a-token")


def test_the_window_is_inclusive_and_kinds_are_kept_apart() -> None:
    history = BarHistory()
    for minute in range(5):
        history.record("stock", bar("AAPL", minute, 1.0 + minute))
    history.record("crypto", bar("BTC/USD", 0, 60_000.0))
    start = to_ns(T0 + dt.timedelta(minutes=1))
    end = to_ns(T0 + dt.timedelta(minutes=3))
    page, _ = history.query("stock", ["AAPL", "BTC/USD"], Timeframe.parse("1Min"),
                            start_ns=start, end_ns=end)
    assert list(page) == ["AAPL"]
    assert [b["c"] for b in page["AAPL"]] == [2.0, 3.0, 4.0]


def test_what_is_not_a_bar_quote_or_trade_is_not_recorded() -> None:
    history = BarHistory()
    assert not history.record("stock", {"T": "s", "S": "AAPL"})
    assert not history.record("stock", {"T": "b", "S": "AAPL", "t": "not a timestamp"})
    assert not history.record("stock", {"T": "b", "t": msgpack.Timestamp(0, 0)})
    assert not history.record("stock", {"T": "b", "S": "AAPL", "t": msgpack.Timestamp(0, 0)})
    quote = {"T": "q", "S": "AAPL", "bp": 1.0, "seq": 4, "t": msgpack.Timestamp(1, 500_000_000)}
    assert history.record("stock", quote)
    assert history.latest("stock", "q", "AAPL") == {"bp": 1.0, "t": "1970-01-01T00:00:01.5Z"}
    assert history.latest("stock", "t", "AAPL") is None
    assert rest_form({"T": "t", "S": "X", "p": 2.0}) == {"p": 2.0}
