"""``examples/order_app.py``: each component tested by overriding the ONE provider it uses.

No test here but the last opens a socket: the container has no settings at all,
so anything that tried to build a stream would raise ``ConfigurationError``.
The last test runs the same application against the emulator.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient

from alpaca_di import ConnectionRegistry
from alpaca_di.errors import AlpacaAPIError, ConfigurationError
from alpaca_di.testing import (
    AlpacaEmulator,
    FakeOrderUpdates,
    FakePriceSource,
    FakeTradingClient,
    register_secret,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_app.py"
NAME = "alpaca_di_order_app_example"

register_secret("example-secret-for-the-order-app")


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """The example imported as a module (wiring needs it in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(NAME, EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[NAME]


@pytest.fixture
def app(example: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh ``OrderApp`` with no settings (nothing in the environment either)."""
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    container = example.OrderApp()
    yield container
    container.unwire()
    container.shutdown_resources()
    container.alpaca.reset_override()


def _no_connection(app: Any) -> None:
    assert app.alpaca.health().connections == []


def test_the_app_has_no_settings(app: Any) -> None:
    with pytest.raises(ConfigurationError):
        app.alpaca.trading_client()


def test_executor_place_overrides_only_trading_client(app: Any) -> None:
    client = FakeTradingClient(fill_price=190.0)
    app.alpaca.trading_client.override(providers.Object(client))
    order = app.executor().place("AAPL", 2)
    assert str(order.status.value) == "filled"
    assert [r.symbol for r in client.submitted] == ["AAPL"]
    assert app.executor().cash() == pytest.approx(100_000 - 380)
    _no_connection(app)


def test_executor_place_surfaces_a_refused_order(app: Any) -> None:
    app.alpaca.trading_client.override(providers.Object(FakeTradingClient(outcome="refuse")))
    with pytest.raises(AlpacaAPIError) as info:
        app.executor().place("AAPL", 2)
    assert info.value.status_code == 403


def test_sizer_overrides_only_pricing_service(app: Any) -> None:
    app.alpaca.pricing_service.override(providers.Object(FakePriceSource({"AAPL": 50.0})))
    assert app.sizer().shares("AAPL", budget=1000) == 20
    _no_connection(app)


def test_executor_execute_overrides_the_two_providers_it_uses(app: Any) -> None:
    """``execute`` submits (``trading_client``) and waits (``trading_service``).

    The fake client reports its orders' updates to the fake order updates.
    """
    updates = FakeOrderUpdates()
    client = FakeTradingClient(updates, partial_fills=1)
    app.alpaca.trading_service.override(providers.Object(updates))
    app.alpaca.trading_client.override(providers.Object(client))
    fill = app.executor().execute("AAPL", 2, timeout=5)
    assert fill.event == "fill"
    assert updates.listens == 1
    events = [str(getattr(u.event, "value", u.event)) for u in updates.updates(fill.order.id)]
    assert events == ["new", "partial_fill", "fill"]
    _no_connection(app)


async def test_executor_execute_async_sees_a_rejection(app: Any) -> None:
    client = FakeTradingClient(outcome="reject")
    app.alpaca.trading_service.override(providers.Object(client.updates))
    app.alpaca.trading_client.override(providers.Object(client))
    update = await app.executor().execute_async("GME", 1, timeout=5)
    assert update.event == "rejected"


def test_routes_with_one_override_each(example: ModuleType, app: Any) -> None:
    http = TestClient(example.create_app(app))  # no ``with``: no lifespan, nothing inited
    app.alpaca.trading_client.override(providers.Object(FakeTradingClient()))
    placed = http.post("/orders/aapl", params={"qty": 3})
    assert placed.status_code == 200
    assert placed.json()["status"] == "filled"
    assert placed.json()["filled_qty"] == 3
    app.alpaca.pricing_service.override(providers.Object(FakePriceSource({"MSFT": 400.0})))
    sized = http.get("/size/msft", params={"budget": 1000})
    assert sized.json() == {"symbol": "msft", "budget": 1000.0, "shares": 2}
    _no_connection(app)


def test_the_same_app_against_the_emulator(example: ModuleType, app: Any) -> None:
    with AlpacaEmulator(rate=200, seed=11) as emulator:
        app.config.alpaca.from_dict(example.emulator_config(emulator))
        app.alpaca.registry.override(providers.Object(ConnectionRegistry()))
        app.init_resources()
        shares = app.sizer().shares("AAPL", budget=1000, timeout=10)
        assert shares > 0
        fill = app.executor().execute("AAPL", shares, timeout=10)
        assert fill.event == "fill"
        assert float(fill.order.filled_qty or 0) == shares
        http = TestClient(example.create_app(app))
        placed = http.post("/orders/MSFT", params={"qty": 1})
        assert placed.status_code == 200
        app.shutdown_resources()
