"""The order app of ``examples/order_app.py`` as mypy --strict sees it.

Checked by mypy (``assert_type``) and run by pytest. What dependency-injector's
stubs allow, precisely:

* the application's own providers are concrete: ``app.executor()`` is an
  ``Executor``, ``OrderApp.executor`` a ``Factory[Executor]``;
* providers of an ``AlpacaContainer`` used directly are concrete
  (``container.alpaca_manager()`` is an ``AlpacaManager``);
* providers reached through ``providers.Container`` by attribute
  (``app.alpaca.alpaca_manager``) are ``Provider[Any]``: the stubs type that
  attribute access with ``__getattr__``. Calling the embedded container first,
  ``app.alpaca().alpaca_manager()``, is concrete again (the call returns the
  same embedded container, typed ``AlpacaContainer``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from alpaca.trading.client import TradingClient
from alpaca.trading.models import Order, TradeUpdate
from dependency_injector import providers
from typing_extensions import assert_type

from alpaca_di import (
    AlpacaContainer,
    AlpacaManager,
    PricingService,
    StreamResource,
    TradingService,
)
from alpaca_di.services.interfaces import (
    ListeningOrderUpdates,
    OrderUpdates,
    PriceSource,
)
from alpaca_di.testing import FakeOrderUpdates, FakePriceSource, FakeTradingClient

# examples/ is on mypy's path (pyproject ``files``); at run time, append it.
sys.path.append(str(Path(__file__).resolve().parents[2] / "examples"))
from order_app import Executor, OrderApp, Sizer


def test_app_providers_are_concrete() -> None:
    app = OrderApp()
    assert_type(OrderApp.executor, providers.Factory[Executor])
    assert_type(OrderApp.sizer, providers.Factory[Sizer])
    assert_type(app.alpaca, providers.Container[AlpacaContainer])
    alpaca = app.alpaca()
    assert_type(alpaca, AlpacaContainer)
    assert alpaca.trading_client is app.alpaca.trading_client  # the same providers
    assert_type(alpaca.alpaca_manager(), AlpacaManager)
    assert_type(alpaca.trading_client, StreamResource[TradingClient])
    assert_type(alpaca.pricing_service, StreamResource[PricingService])


def test_embedded_providers_through_the_call_are_concrete() -> None:
    app = OrderApp()
    client = FakeTradingClient()
    alpaca = app.alpaca()
    alpaca.trading_client.override(providers.Object(client))
    alpaca.pricing_service.override(providers.Object(FakePriceSource({"AAPL": 10.0})))
    try:
        assert_type(alpaca.alpaca_manager(), AlpacaManager)
        executor = app.executor()
        assert_type(executor, Executor)
        assert_type(executor.place("AAPL", 1), Order)
        assert_type(app.sizer().shares("AAPL", 100), int)
        assert app.sizer().shares("AAPL", 100) == 10
    finally:
        alpaca.reset_override()


def test_embedded_providers_by_attribute_are_any() -> None:
    app = OrderApp()
    assert_type(app.alpaca.alpaca_manager, providers.Provider[Any])


def _service_types(container: AlpacaContainer) -> None:
    """Checked by mypy, never run (it would need settings)."""
    assert_type(container.trading_client(), TradingClient)
    assert_type(container.pricing_service(), PricingService)
    assert_type(container.trading_service(), TradingService)
    listening: ListeningOrderUpdates = container.trading_service()  # the real service fits
    assert listening is not None
    manager = container.alpaca_manager()
    assert_type(manager, AlpacaManager)
    assert_type(manager.trading_service, OrderUpdates | None)
    assert_type(manager.pricing_service, PriceSource | None)
    assert_type(manager.submit_and_wait(Executor.request("AAPL", 1)), TradeUpdate)


def test_fakes_satisfy_what_the_manager_needs() -> None:
    updates: ListeningOrderUpdates = FakeOrderUpdates()
    client = FakeTradingClient(FakeOrderUpdates())
    assert_type(client.updates, FakeOrderUpdates)
    assert_type(client.submit_order(Executor.request("AAPL", 1)), Order)
    prices: PriceSource = FakePriceSource()
    manager = AlpacaManager.deferred(
        trading_client=lambda: TradingClient("PKTYPING", "typing-secret-placeholder"),
        trading_service=lambda: updates,
        pricing_service=lambda: prices,
    )
    assert_type(manager, AlpacaManager)
    assert callable(_service_types)
    # A FakeTradingClient is a TradingClient: no cast where one is typed.
    typed: TradingClient = client
    assert AlpacaManager(typed, trading_service=updates).trading_client is client
