"""The container's historical data clients: built from the settings, reach the emulator, closed.

``stock_history_client``, ``crypto_history_client``, ``option_history_client`` and
``news_client`` are alpaca-py's own clients on ``data_url`` (the emulator's REST
port here); the bars they fetch are the bars the emulator's streams published.
"""

from __future__ import annotations

from typing import Any

from _integration_support import CLOCK_START
from alpaca.data.requests import CryptoBarsRequest, OptionBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from dependency_injector import providers

from alpaca_di import AlpacaContainer
from alpaca_di.emulator.market import OPTION_UNIVERSE
from alpaca_di.services.interfaces import CryptoBarsClient, OptionBarsClient, StockBarsClient
from alpaca_di.testing import AlpacaEmulator, FakeHistoricalDataClient


def _open_pools(client: Any) -> int:
    return sum(len(adapter.poolmanager.pools) for adapter in client._session.adapters.values())


def test_history_clients_fetch_what_the_emulator_published_and_close_at_shutdown(
    clocked_emu: AlpacaEmulator, clocked_container: AlpacaContainer
) -> None:
    option = next(iter(OPTION_UNIVERSE))
    published = clocked_emu.advance(minutes=3, symbols=["AAPL", "BTC/USD", option])
    stocks = clocked_container.stock_history_client()
    coins = clocked_container.crypto_history_client()
    options = clocked_container.option_history_client()
    news = clocked_container.news_client()
    assert isinstance(stocks, StockBarsClient)
    assert isinstance(coins, CryptoBarsClient)
    assert isinstance(options, OptionBarsClient)
    assert clocked_container.stock_history_client() is stocks  # one client per container

    aapl = stocks.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=CLOCK_START))["AAPL"]
    btc = coins.get_crypto_bars(CryptoBarsRequest(
        symbol_or_symbols="BTC/USD", timeframe=TimeFrame.Minute, start=CLOCK_START))["BTC/USD"]
    contract = options.get_option_bars(OptionBarsRequest(
        symbol_or_symbols=option, timeframe=TimeFrame.Minute, start=CLOCK_START))[option]
    for fetched, symbol in ((aapl, "AAPL"), (btc, "BTC/USD"), (contract, option)):
        sent = [bar for bar in published if bar["S"] == symbol]
        assert [bar.close for bar in fetched] == [bar["c"] for bar in sent]
    assert news._base_url == clocked_emu.api_url

    assert _open_pools(stocks) == 1
    clocked_container.shutdown_resources()
    assert _open_pools(stocks) == _open_pools(coins) == _open_pools(options) == 0
    assert clocked_container.stock_history_client() is not stocks  # a fresh one after a re-init


def test_a_fake_history_client_overrides_the_provider(clocked_container: AlpacaContainer) -> None:
    fake = FakeHistoricalDataClient()
    fake.add_bar("MSFT", CLOCK_START, close=401.5)
    clocked_container.stock_history_client.override(providers.Object(fake))
    client: StockBarsClient = clocked_container.stock_history_client()
    bars = client.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="MSFT", timeframe=TimeFrame.Minute, start=CLOCK_START))
    assert [bar.close for bar in bars["MSFT"]] == [401.5]
