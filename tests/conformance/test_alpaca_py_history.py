"""alpaca-py 0.44's real historical data clients against the emulator's market-data REST API.

The emulator publishes bars on its streams as its (frozen) clock advances; alpaca-py's
stream clients receive them and its historical clients (``url_override=emu.api_url``)
fetch them back. Both sides must see the very same bars.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import requests
from _conformance_support import Collector, StreamRunner
from alpaca.common.exceptions import APIError
from alpaca.data.historical import (
    CryptoHistoricalDataClient,
    OptionHistoricalDataClient,
    StockHistoricalDataClient,
)
from alpaca.data.live import CryptoDataStream, StockDataStream
from alpaca.data.models import Bar
from alpaca.data.requests import (
    CryptoBarsRequest,
    CryptoLatestQuoteRequest,
    OptionBarsRequest,
    OptionLatestQuoteRequest,
    StockBarsRequest,
    StockLatestBarRequest,
    StockLatestTradeRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.emulator.market import OPTION_UNIVERSE

KEY, SECRET = "PKCONFHIST01", "conf-history-secret"
IEX, CRYPTO = "/v2/iex", "/v1beta3/crypto/us"
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc)


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(seed=21, clock=T0) as emulator:
        yield emulator


def fields(bar: Bar) -> tuple[object, ...]:
    return (bar.symbol, bar.timestamp, bar.open, bar.high, bar.low, bar.close, bar.volume,
            bar.trade_count, bar.vwap)


def test_bars_fetched_with_alpaca_py_are_the_bars_its_streams_received(
    emu: AlpacaEmulator, runner: StreamRunner
) -> None:
    stock_got, crypto_got = Collector(), Collector()
    stock = StockDataStream(KEY, SECRET, url_override=emu.data_url(IEX))
    stock.subscribe_bars(stock_got.handler, "AAPL", "MSFT")
    stock.subscribe_daily_bars(stock_got.handler, "AAPL")
    crypto = CryptoDataStream(KEY, SECRET, url_override=emu.data_url(CRYPTO))
    crypto.subscribe_bars(crypto_got.handler, "BTC/USD")
    runner.start(stock, IEX, KEY)
    runner.start(crypto, CRYPTO, KEY)
    emu.wait_until(lambda: emu.subscriptions(KEY, IEX)["dailyBars"] == {"AAPL"})
    emu.wait_until(lambda: emu.subscriptions(KEY, CRYPTO)["bars"] == {"BTC/USD"})

    emu.advance(minutes=5)
    emu.advance(days=1)
    streamed = stock_got.wait_count(5 * 2 + 1)
    crypto_streamed = crypto_got.wait_count(5)

    stocks = StockHistoricalDataClient(KEY, SECRET, url_override=emu.api_url)
    minute = stocks.get_stock_bars(StockBarsRequest(
        symbol_or_symbols=["AAPL", "MSFT"], timeframe=TimeFrame.Minute, start=T0))
    daily = stocks.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame.Day, start=T0 - timedelta(days=1)))
    fetched = [*minute["AAPL"], *minute["MSFT"], *daily["AAPL"]]
    assert sorted(map(fields, fetched)) == sorted(map(fields, streamed))
    assert [b.timestamp for b in minute["AAPL"]] == [T0 + timedelta(minutes=i) for i in range(5)]

    coins = CryptoHistoricalDataClient(url_override=emu.api_url)  # crypto data needs no key
    btc = coins.get_crypto_bars(CryptoBarsRequest(
        symbol_or_symbols="BTC/USD", timeframe=TimeFrame.Minute, start=T0))
    assert list(map(fields, btc["BTC/USD"])) == list(map(fields, crypto_streamed))

    five = stocks.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame(5, TimeFrameUnit.Minute), start=T0))
    (whole,) = five["AAPL"]
    parts = minute["AAPL"]
    assert (whole.open, whole.close, whole.volume) == (
        parts[0].open, parts[-1].close, sum(p.volume for p in parts))
    latest = stocks.get_stock_latest_bar(StockLatestBarRequest(symbol_or_symbols="MSFT"))
    assert fields(latest["MSFT"]) == fields(minute["MSFT"][-1])


def test_alpaca_py_follows_next_page_tokens(emu: AlpacaEmulator) -> None:
    emu.advance(minutes=10_001, symbols=["SPY"])  # alpaca-py asks for 10,000 bars a page
    client = StockHistoricalDataClient(KEY, SECRET, url_override=emu.api_url)
    before = emu.stats().market_data_requests
    bars = client.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="SPY", timeframe=TimeFrame.Minute, start=T0,
        end=T0 + timedelta(days=8)))
    assert len(bars["SPY"]) == 10_001
    assert emu.stats().market_data_requests - before == 2
    stamps = [b.timestamp for b in bars["SPY"]]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def test_options_and_latest_quotes_trades(emu: AlpacaEmulator) -> None:
    option = next(iter(OPTION_UNIVERSE))
    emu.advance(minutes=2, symbols=[option])
    emu.publish("/v1beta1/opra", [{"T": "q", "S": option, "t": T0, "bx": "C", "bp": 1.5,
                                   "bs": 3, "ax": "C", "ap": 1.6, "as": 4, "c": "A"}])
    emu.publish(IEX, [{"T": "t", "S": "AAPL", "i": 42, "x": "V", "p": 180.25, "s": 7,
                       "c": ["@"], "z": "C", "t": T0}])
    emu.publish(CRYPTO, [{"T": "q", "S": "ETH/USD", "bp": 3000.0, "bs": 0.5, "ap": 3001.0,
                          "as": 0.25, "t": T0}])
    options = OptionHistoricalDataClient(KEY, SECRET, url_override=emu.api_url)
    bars = options.get_option_bars(OptionBarsRequest(
        symbol_or_symbols=option, timeframe=TimeFrame.Minute, start=T0))
    assert [b.timestamp for b in bars[option]] == [T0, T0 + timedelta(minutes=1)]
    quote = options.get_option_latest_quote(OptionLatestQuoteRequest(symbol_or_symbols=option))
    assert (quote[option].bid_price, quote[option].ask_size) == (1.5, 4)
    stocks = StockHistoricalDataClient(KEY, SECRET, url_override=emu.api_url)
    trade = stocks.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols="AAPL"))
    assert (trade["AAPL"].price, trade["AAPL"].id, trade["AAPL"].timestamp) == (180.25, 42, T0)
    coins = CryptoHistoricalDataClient(url_override=emu.api_url)
    eth = coins.get_crypto_latest_quote(CryptoLatestQuoteRequest(symbol_or_symbols="ETH/USD"))
    assert (eth["ETH/USD"].bid_price, eth["ETH/USD"].ask_size) == (3000.0, 0.25)


def test_a_failing_history_reaches_alpaca_py_as_its_own_errors(emu: AlpacaEmulator) -> None:
    emu.advance(minutes=1, symbols=["AAPL"])
    client = StockHistoricalDataClient(KEY, SECRET, url_override=emu.api_url)
    request = StockBarsRequest(symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=T0)
    emu.fail_history(500)
    with pytest.raises(APIError) as info:
        client.get_stock_bars(request)
    assert info.value.status_code == 500
    emu.fail_history(refuse=True)
    with pytest.raises(requests.ConnectionError):
        client.get_stock_bars(request)
    assert len(client.get_stock_bars(request)["AAPL"]) == 1
    emu.add_account(KEY, SECRET, feeds={"iex"})
    with pytest.raises(APIError, match="recent SIP data"):
        client.get_stock_bars(StockBarsRequest(
            symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=T0, feed="sip"))
