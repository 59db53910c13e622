"""FakeHistoricalDataClient answers bar requests from memory, as alpaca-py's clients do."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from alpaca.common.exceptions import APIError
from alpaca.data.requests import CryptoBarsRequest, OptionBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from alpaca_di.services.interfaces import CryptoBarsClient, OptionBarsClient, StockBarsClient
from alpaca_di.testing import FakeHistoricalDataClient

T0 = datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc)


def test_bars_in_the_window_in_time_order_per_timeframe() -> None:
    client = FakeHistoricalDataClient()
    for minute in (2, 0, 1, 3):
        client.add_bar("AAPL", T0 + timedelta(minutes=minute), close=100.0 + minute)
    client.add_bar("AAPL", "2024-03-04T00:00:00Z", close=99.0, timeframe="Day")
    request = StockBarsRequest(symbol_or_symbols=["AAPL", "MSFT"], timeframe=TimeFrame.Minute,
                               start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=2))
    bars = client.get_stock_bars(request)
    assert [(b.timestamp, b.close) for b in bars["AAPL"]] == [
        (T0 + timedelta(minutes=1), 101.0), (T0 + timedelta(minutes=2), 102.0)]
    assert "MSFT" not in bars.data
    daily = client.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame.Day, start=T0 - timedelta(days=1)))
    assert [b.close for b in daily["AAPL"]] == [99.0]
    assert client.requests[0] is request


def test_crypto_and_option_bars_and_the_limit() -> None:
    client = FakeHistoricalDataClient()
    for minute in range(3):
        client.add_bar("BTC/USD", T0 + timedelta(minutes=minute))
        client.add_bar("AAPL240315C00180000", T0 + timedelta(minutes=minute))
    crypto = client.get_crypto_bars(CryptoBarsRequest(
        symbol_or_symbols="BTC/USD", timeframe=TimeFrame.Minute, start=T0, limit=2))
    assert len(crypto["BTC/USD"]) == 2
    option = client.get_option_bars(OptionBarsRequest(
        symbol_or_symbols="AAPL240315C00180000", timeframe=TimeFrame.Minute, start=T0))
    assert len(option["AAPL240315C00180000"]) == 3


def test_failures_are_alpaca_py_errors_then_it_recovers() -> None:
    client = FakeHistoricalDataClient()
    client.fail_next(429, times=2)
    request = StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=T0)
    for _ in range(2):
        with pytest.raises(APIError) as info:
            client.get_stock_bars(request)
        assert info.value.status_code == 429
    assert client.get_stock_bars(request).data == {}
    client.fail_next(ConnectionError("refused"))
    with pytest.raises(ConnectionError):
        client.get_stock_bars(request)


def test_bad_input_is_refused_at_the_call() -> None:
    client = FakeHistoricalDataClient()
    with pytest.raises(ValueError, match="timeframe"):
        client.add_bar("AAPL", T0, timeframe="Hour")
    with pytest.raises(ValueError, match="serves 1Min and 1Day"):
        client.get_stock_bars(StockBarsRequest(
            symbol_or_symbols="AAPL", timeframe=TimeFrame(5, TimeFrameUnit.Minute), start=T0))


def test_it_satisfies_the_bar_client_protocols() -> None:
    client = FakeHistoricalDataClient()
    assert isinstance(client, StockBarsClient)
    assert isinstance(client, CryptoBarsClient)
    assert isinstance(client, OptionBarsClient)
