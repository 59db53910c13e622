"""The container's historical data clients: built from the settings, reach the emulator, closed.

``stock_history_client``, ``crypto_history_client``, ``option_history_client`` and
``news_client`` are alpaca-py's own clients on ``data_url`` (the emulator's REST
port here); the bars they fetch are the bars the emulator's streams published.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from alpaca.data.requests import CryptoBarsRequest, OptionBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from dependency_injector import providers

from alpaca_di import AlpacaContainer, ConnectionRegistry
from alpaca_di.emulator.market import OPTION_UNIVERSE
from alpaca_di.services.interfaces import CryptoBarsClient, OptionBarsClient, StockBarsClient
from alpaca_di.testing import AlpacaEmulator, FakeHistoricalDataClient

KEY, SECRET = "PKHISTCLIENT01", "history-client-secret"
T0 = datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc)


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(seed=5, clock=T0) as emulator:
        yield emulator


@pytest.fixture
def container(emu: AlpacaEmulator) -> Iterator[AlpacaContainer]:
    container = AlpacaContainer()
    container.config.from_dict(
        {"api_key": KEY, "secret_key": SECRET, "data_stream_url": emu.ws_url,
         "api_url": emu.api_url, "data_url": emu.api_url}
    )
    registry = ConnectionRegistry()
    container.registry.override(registry)
    yield container
    container.shutdown_resources()
    registry.close_all()


def _open_pools(client: Any) -> int:
    return sum(len(adapter.poolmanager.pools) for adapter in client._session.adapters.values())


def test_history_clients_fetch_what_the_emulator_published_and_close_at_shutdown(
    emu: AlpacaEmulator, container: AlpacaContainer
) -> None:
    option = next(iter(OPTION_UNIVERSE))
    published = emu.advance(minutes=3, symbols=["AAPL", "BTC/USD", option])
    stocks = container.stock_history_client()
    coins = container.crypto_history_client()
    options = container.option_history_client()
    news = container.news_client()
    assert isinstance(stocks, StockBarsClient)
    assert isinstance(coins, CryptoBarsClient)
    assert isinstance(options, OptionBarsClient)
    assert container.stock_history_client() is stocks  # one client per container

    aapl = stocks.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=T0))["AAPL"]
    btc = coins.get_crypto_bars(CryptoBarsRequest(
        symbol_or_symbols="BTC/USD", timeframe=TimeFrame.Minute, start=T0))["BTC/USD"]
    contract = options.get_option_bars(OptionBarsRequest(
        symbol_or_symbols=option, timeframe=TimeFrame.Minute, start=T0))[option]
    for fetched, symbol in ((aapl, "AAPL"), (btc, "BTC/USD"), (contract, option)):
        sent = [bar for bar in published if bar["S"] == symbol]
        assert [bar.close for bar in fetched] == [bar["c"] for bar in sent]
    assert news._base_url == emu.api_url

    assert _open_pools(stocks) == 1
    container.shutdown_resources()
    assert _open_pools(stocks) == _open_pools(coins) == _open_pools(options) == 0
    assert container.stock_history_client() is not stocks  # a fresh one after a re-init


def test_a_fake_history_client_overrides_the_provider(container: AlpacaContainer) -> None:
    fake = FakeHistoricalDataClient()
    fake.add_bar("MSFT", T0, close=401.5)
    container.stock_history_client.override(providers.Object(fake))
    client: StockBarsClient = container.stock_history_client()
    bars = client.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="MSFT", timeframe=TimeFrame.Minute, start=T0))
    assert [bar.close for bar in bars["MSFT"]] == [401.5]
