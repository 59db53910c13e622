"""After ``shutdown_resources()`` every call on a closed service or hub raises one error.

``ServiceClosedError`` (a ``ConnectionClosedError``) names the service and says to
resolve it again from the container; iterators still end quietly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alpaca.trading.requests import MarketOrderRequest

from alpaca_di import (
    AlpacaContainer,
    ConnectionClosedError,
    ConnectionRegistry,
    ServiceClosedError,
)
from alpaca_di.testing import AlpacaEmulator

KEY = "PKCLOSEDSERVICE1"
SECRET = "closed-service-secret-do-not-leak"
DEADLINE = 10.0
ORDER_ID = "7f1c4d3e-0000-4000-8000-000000000001"


@pytest.fixture
def container() -> Iterator[AlpacaContainer]:
    registry = ConnectionRegistry()
    with AlpacaEmulator() as emu:
        container = AlpacaContainer()
        container.config.from_dict(
            {
                "api_key": KEY,
                "secret_key": SECRET,
                "data_stream_url": emu.ws_url,
                "trading_stream_url": emu.trading_stream_url,
                "api_url": emu.api_url,
                "backoff_initial": 0.01,
                "backoff_max": 0.05,
                "open_timeout": 5.0,
            }
        )
        container.registry.override(registry)
        try:
            yield container
        finally:
            container.shutdown_resources()
            registry.close_all()


def _assert_closed(call: Callable[[], Any], service: str, provider: str) -> None:
    with pytest.raises(ServiceClosedError) as caught:
        call()
    error = caught.value
    assert isinstance(error, ConnectionClosedError)
    assert error.service == service
    text = str(error)
    assert service in text
    assert "resolve it again from the container" in text
    assert f"container.{provider}()" in text


def test_every_call_on_a_closed_service_raises_service_closed_error(
    container: AlpacaContainer,
) -> None:
    pricing = container.pricing_service()
    trading = container.trading_service()
    manager = container.alpaca_manager()
    hub = container.stock_stream()
    pricing.track("AAPL")
    hub.wait_ready(DEADLINE)
    manager.account()  # works while the container is up
    iterator = hub.subscribe(quotes=["MSFT"])

    container.shutdown_resources()

    assert list(iterator) == []  # iterators end quietly, as documented
    order = MarketOrderRequest(symbol="AAPL", qty=1, side="buy", time_in_force="day")
    calls: list[tuple[Callable[[], Any], str, str]] = [
        (lambda: pricing.price("AAPL"), "PricingService", "pricing_service"),
        (lambda: pricing.track("MSFT"), "PricingService", "pricing_service"),
        (lambda: pricing.untrack("AAPL"), "PricingService", "pricing_service"),
        (lambda: pricing.latest_quote("AAPL"), "PricingService", "pricing_service"),
        (lambda: pricing.snapshot(), "PricingService", "pricing_service"),
        (lambda: pricing.wait_for_price("AAPL", 1.0), "PricingService", "pricing_service"),
        (
            lambda: asyncio.run(pricing.wait_for_price_async("AAPL", 1.0)),
            "PricingService",
            "pricing_service",
        ),
        (lambda: trading.subscribe(), "TradingService", "trading_service"),
        (lambda: trading.listen(1.0), "TradingService", "trading_service"),
        (lambda: trading.last_update(ORDER_ID), "TradingService", "trading_service"),
        (
            lambda: trading.wait_for_order(ORDER_ID, timeout=1.0),
            "TradingService",
            "trading_service",
        ),
        (
            lambda: asyncio.run(trading.wait_for_order_async(ORDER_ID, timeout=1.0)),
            "TradingService",
            "trading_service",
        ),
        (lambda: manager.account(), "AlpacaManager", "alpaca_manager"),
        (lambda: manager.positions(), "AlpacaManager", "alpaca_manager"),
        (lambda: manager.submit_order(order), "AlpacaManager", "alpaca_manager"),
        (lambda: manager.submit_and_wait(order, 1.0), "AlpacaManager", "alpaca_manager"),
        (lambda: manager.marketable_limit_price("AAPL", "buy"), "AlpacaManager", "alpaca_manager"),
        (lambda: asyncio.run(manager.account_async()), "AlpacaManager", "alpaca_manager"),
        (lambda: hub.subscribe(quotes=["AAPL"]), "stock StreamHub", "stock_stream"),
        (lambda: hub.wait_ready(1.0), "stock StreamHub", "stock_stream"),
        (lambda: asyncio.run(hub.ready(1.0)), "stock StreamHub", "stock_stream"),
    ]
    for call, service, provider in calls:
        _assert_closed(call, service, provider)


def test_services_resolved_again_after_a_shutdown_work(container: AlpacaContainer) -> None:
    container.alpaca_manager().account()
    container.shutdown_resources()
    manager = container.alpaca_manager()
    assert not manager.closed
    manager.account()
    container.pricing_service().track("AAPL")
