"""HistoricalBarSource: alpaca-py's bar clients (here the in-memory fake) as a hub's BarSource."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from alpaca.common.exceptions import APIError

from alpaca_di.services.history import HistoricalBarSource
from alpaca_di.testing import FakeHistoricalDataClient
from alpaca_di.transport.backoff import ExponentialBackoff

T0 = datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc)


def test_bars_come_back_in_the_streams_keys_per_symbol() -> None:
    client = FakeHistoricalDataClient()
    client.add_bar("AAPL", T0, open=1.0, close=2.0, volume=5, trade_count=3, vwap=1.5)
    client.add_bar("AAPL", T0 + timedelta(days=1), close=3.0, timeframe="Day")
    source = HistoricalBarSource("stock", lambda: client, feed="sip")
    rows = source.fetch_bars("bars", ["AAPL", "MSFT"], T0, 100)
    assert rows == {"AAPL": [{"t": T0, "o": 1.0, "h": 2.0, "l": 1.0, "c": 2.0, "v": 5.0,
                              "n": 3.0, "vw": 1.5}]}
    assert client.requests[0].feed.value == "sip"
    daily = source.fetch_bars("daily_bars", ["AAPL"], T0, 100)
    assert [row["c"] for row in daily["AAPL"]] == [3.0]
    crypto = HistoricalBarSource("crypto", lambda: client, feed="us")
    assert crypto.fetch_bars("bars", ["BTC/USD"], T0, 10) == {}


def test_429_is_retried_with_backoff_other_errors_are_raised() -> None:
    client = FakeHistoricalDataClient()
    client.add_bar("AAPL", T0)
    slept: list[float] = []
    backoff = ExponentialBackoff(initial=0.2, maximum=1.0, rng=random.Random(3))
    source = HistoricalBarSource("option", lambda: client, attempts=3, backoff=backoff,
                                 sleep=slept.append)
    client.fail_next(429, times=2)
    assert len(source.fetch_bars("bars", ["AAPL"], T0, 10)["AAPL"]) == 1
    assert len(slept) == 2
    assert slept[0] < slept[1]
    assert source.throttled == 2
    client.fail_next(429, times=3)
    with pytest.raises(APIError):
        source.fetch_bars("bars", ["AAPL"], T0, 10)
    client.fail_next(500)
    with pytest.raises(APIError):
        source.fetch_bars("bars", ["AAPL"], T0, 10)
    assert len(slept) == 4  # the 500 was not retried


def test_bad_arguments_are_named() -> None:
    client = FakeHistoricalDataClient()
    with pytest.raises(ValueError, match="the news stream has no bars"):
        HistoricalBarSource("news", lambda: client)
    with pytest.raises(TypeError, match="zero-argument callable"):
        HistoricalBarSource("stock", client)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts"):
        HistoricalBarSource("stock", lambda: client, attempts=0)
    with pytest.raises(ValueError, match="not 'updated_bars'"):
        HistoricalBarSource("stock", lambda: client).fetch_bars("updated_bars", ["A"], T0, 1)
