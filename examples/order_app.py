"""An order-placing application built the dependency-injector way, and how to test it.

What it shows:

* ``OrderApp`` -- the application's own ``DeclarativeContainer``; it embeds
  :class:`~alpaca_di.AlpacaContainer` with ``providers.Container``.
* ``Sizer`` -- a strategy that depends on the small
  :class:`~alpaca_di.services.interfaces.PriceSource` protocol only.
* ``Executor`` -- an order executor over :class:`~alpaca_di.AlpacaManager`.
* a FastAPI router whose routes get both with ``@inject`` and
  ``Depends(Provide[...])``.

Each component is tested by overriding the ONE provider it uses, with no
socket and no settings for the rest (``tests/examples/test_order_app.py``)::

    app = OrderApp()
    app.alpaca.trading_client.override(providers.Object(FakeTradingClient()))
    order = app.executor().place("AAPL", 2)            # filled by the fake

    app.alpaca.pricing_service.override(providers.Object(FakePriceSource({"AAPL": 50.0})))
    assert app.sizer().shares("AAPL", budget=1000) == 20

Run it against the in-process emulator (no account needed)::

    python examples/order_app.py
"""

from __future__ import annotations

import math
import sys
from typing import Any

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import MarketOrderRequest
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from alpaca_di import AlpacaContainer, AlpacaManager
from alpaca_di.services.interfaces import PriceSource
from alpaca_di.testing import AlpacaEmulator

KEY_ID = "PKEXAMPLEORDERS01"
SECRET = "example-secret-for-the-order-app"


class Sizer:
    """How many shares a budget buys at the live price (a strategy: prices only)."""

    def __init__(self, prices: PriceSource, max_age: float | None = None) -> None:
        self._prices = prices
        self._max_age = max_age

    def shares(self, symbol: str, budget: float, timeout: float = 5.0) -> int:
        """Whole shares of ``symbol`` that ``budget`` dollars buy now."""
        price = self._prices.price(symbol, max_age=self._max_age)
        if price is None:
            price = self._prices.wait_for_price(symbol, timeout=timeout)
        return math.floor(budget / price)


class Executor:
    """Places market orders through :class:`AlpacaManager` (an order executor)."""

    def __init__(self, manager: AlpacaManager) -> None:
        self._manager = manager

    @staticmethod
    def request(symbol: str, qty: float, side: OrderSide = OrderSide.BUY) -> MarketOrderRequest:
        """The market order ``place`` and ``execute`` send."""
        return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY)

    def place(self, symbol: str, qty: float, side: OrderSide = OrderSide.BUY) -> Order:
        """Submit and return the order as REST reports it (needs ``trading_client`` only)."""
        return self._manager.submit_order(self.request(symbol, qty, side))

    def execute(
        self, symbol: str, qty: float, side: OrderSide = OrderSide.BUY, timeout: float = 10.0
    ) -> TradeUpdate:
        """Submit and wait for the fill (``trading_client`` and ``trading_service``)."""
        return self._manager.submit_and_wait(self.request(symbol, qty, side), timeout=timeout)

    async def execute_async(
        self, symbol: str, qty: float, side: OrderSide = OrderSide.BUY, timeout: float = 10.0
    ) -> TradeUpdate:
        """Async :meth:`execute`."""
        request = self.request(symbol, qty, side)
        return await self._manager.submit_and_wait_async(request, timeout=timeout)

    def cash(self) -> float:
        """The account's cash."""
        return float(self._manager.account().cash or 0)


class OrderApp(containers.DeclarativeContainer):
    """The application's container: Alpaca embedded, the components built from it."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
    sizer = providers.Factory(Sizer, prices=alpaca.pricing_service)
    executor = providers.Factory(Executor, manager=alpaca.alpaca_manager)


class PlacedOrder(BaseModel):
    """What ``POST /orders/{symbol}`` answers."""

    id: str
    symbol: str
    status: str
    filled_qty: float


class Sizing(BaseModel):
    """What ``GET /size/{symbol}`` answers."""

    symbol: str
    budget: float
    shares: int


router = APIRouter()


@router.post("/orders/{symbol}", response_model=PlacedOrder)
@inject
def place_order(
    symbol: str,
    qty: float = 1,
    executor: Executor = Depends(Provide[OrderApp.executor]),  # noqa: B008
) -> PlacedOrder:
    """Place a market buy of ``qty`` shares."""
    order = executor.place(symbol.upper(), qty)
    return PlacedOrder(
        id=str(order.id),
        symbol=order.symbol or symbol,
        status=str(getattr(order.status, "value", order.status)),
        filled_qty=float(order.filled_qty or 0),
    )


@router.get("/size/{symbol}", response_model=Sizing)
@inject
def size(
    symbol: str,
    budget: float,
    sizer: Sizer = Depends(Provide[OrderApp.sizer]),  # noqa: B008
) -> Sizing:
    """How many shares ``budget`` buys now."""
    return Sizing(symbol=symbol, budget=budget, shares=sizer.shares(symbol.upper(), budget))


def create_app(container: OrderApp | None = None) -> FastAPI:
    """The FastAPI application over ``container`` (a new ``OrderApp`` by default), wired."""
    container = container or OrderApp()
    container.wire(modules=[sys.modules[__name__]])
    app = FastAPI(title="alpaca-di order app")
    app.state.container = container
    app.include_router(router)
    return app


def emulator_config(emulator: AlpacaEmulator) -> dict[str, Any]:
    """``OrderApp.config.alpaca`` pointing every URL at ``emulator``."""
    return {
        "api_key": KEY_ID,
        "secret_key": SECRET,
        "data_stream_url": emulator.ws_url,
        "trading_stream_url": emulator.trading_stream_url,
        "api_url": emulator.api_url,
    }


def main() -> int:
    """Buy what $1000 buys of AAPL on the emulator and print the fill."""
    with AlpacaEmulator(rate=200, seed=7) as emulator:
        container = OrderApp()
        container.config.alpaca.from_dict(emulator_config(emulator))
        container.init_resources()
        try:
            shares = container.sizer().shares("AAPL", budget=1000)
            fill = container.executor().execute("AAPL", shares)
            print(f"bought {fill.qty:g} AAPL at {fill.price:g} ({fill.event})")
        finally:
            container.shutdown_resources()
    return 0


if __name__ == "__main__":
    sys.exit(main())
