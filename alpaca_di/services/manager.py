"""AlpacaManager: the REST facade, with live prices and order updates injected.

It wraps alpaca-py's ``TradingClient`` (account, positions, orders) and uses
the injected :class:`~alpaca_di.services.trading.TradingService` and
:class:`~alpaca_di.services.pricing.PricingService` for the things REST alone
cannot do well: waiting for a fill, and pricing a marketable limit order::

    manager = AlpacaManager(trading_client=client, trading_service=trading,
                            pricing_service=pricing)
    fill = manager.submit_and_wait(MarketOrderRequest(symbol="AAPL", qty=1, side="buy",
                                                      time_in_force="day"))
    limit = manager.marketable_limit_price("AAPL", "buy", offset_bps=10)

REST errors from alpaca-py surface as :class:`~alpaca_di.errors.AlpacaAPIError`
with the API's own message and the HTTP status (never the secret key). Every
blocking call has an ``*_async`` twin that runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from alpaca.trading.enums import OrderSide, TradeEvent
from alpaca.trading.models import Order, Position, TradeAccount, TradeUpdate
from alpaca.trading.requests import OrderRequest

from alpaca_di._check import check_seconds
from alpaca_di.errors import ServiceClosedError
from alpaca_di.services.interfaces import DEFAULT_FINAL_EVENTS, PriceSource
from alpaca_di.services.rest import rest_call
from alpaca_di.services.trading import TradingService
from alpaca_di.services.trading.orders import event_names, order_key

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

__all__ = ["AlpacaManager"]

_CENT = Decimal("0.01")
_SUBPENNY = Decimal("0.0001")


class AlpacaManager:
    """Account, positions and orders through one ``TradingClient``.

    Args:
        trading_client: alpaca-py ``TradingClient`` (``url_override`` for the emulator).
        trading_service: the :class:`TradingService` (needed by :meth:`submit_and_wait`).
        pricing_service: a :class:`~alpaca_di.services.interfaces.PriceSource`
            (needed by :meth:`marketable_limit_price`).

    The manager creates no connection of its own; the container injects all
    three. Thread-safe as far as ``TradingClient`` is (its ``requests``
    session is shared). The container closes it at shutdown; from then on
    every call raises :class:`~alpaca_di.errors.ServiceClosedError`.

    Example::

        manager = container.alpaca_manager()
        print(manager.account().buying_power)
        order = manager.submit_order(LimitOrderRequest(
            symbol="AAPL", qty=1, side="buy", time_in_force="day",
            limit_price=manager.marketable_limit_price("AAPL", "buy")))
        update = container.trading_service().wait_for_order(order.id)
    """

    def __init__(
        self,
        trading_client: TradingClient,
        trading_service: TradingService | None = None,
        pricing_service: PriceSource | None = None,
    ) -> None:
        if trading_client is None or not hasattr(trading_client, "submit_order"):
            raise TypeError(
                "trading_client must be an alpaca-py TradingClient, "
                f"got {type(trading_client).__name__}"
            )
        self._client = trading_client
        self._trading = trading_service
        self._pricing = pricing_service
        self._closed = False

    @property
    def trading_client(self) -> TradingClient:
        """The injected alpaca-py ``TradingClient``."""
        return self._client

    @property
    def trading_service(self) -> TradingService | None:
        """The injected :class:`TradingService`, if any."""
        return self._trading

    @property
    def pricing_service(self) -> PriceSource | None:
        """The injected price source, if any."""
        return self._pricing

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the container closes it at shutdown)."""
        return self._closed

    def close(self) -> None:
        """Mark the manager closed: every later call raises ``ServiceClosedError``. Idempotent.

        The client and services are not closed here: they belong to the container.
        """
        self._closed = True

    # -- REST ----------------------------------------------------------------------------

    def account(self) -> TradeAccount:
        """``GET /v2/account``.

        Example::

            print(manager.account().buying_power)
        """
        return cast(TradeAccount, self._call(self._client.get_account))

    def positions(self) -> list[Position]:
        """``GET /v2/positions``: every open position."""
        return cast(list[Position], self._call(self._client.get_all_positions))

    def submit_order(self, request: OrderRequest) -> Order:
        """``POST /v2/orders``. ``request`` is an alpaca-py ``OrderRequest`` subclass.

        Raises:
            TypeError: ``request`` is not an ``OrderRequest``.
            AlpacaAPIError: the API refused it (message and HTTP status of the API).

        Example::

            order = manager.submit_order(MarketOrderRequest(
                symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
        """
        _check_request(request)
        return cast(Order, self._call(lambda: self._client.submit_order(order_data=request)))

    def cancel_order(self, order_id: str | UUID) -> None:
        """``DELETE /v2/orders/{id}``; the ``canceled`` update follows on the stream."""
        key = order_key(order_id)
        self._call(lambda: self._client.cancel_order_by_id(key))

    def get_order(self, order_id: str | UUID) -> Order:
        """``GET /v2/orders/{id}``."""
        key = order_key(order_id)
        return cast(Order, self._call(lambda: self._client.get_order_by_id(key)))

    def submit_and_wait(
        self,
        request: OrderRequest,
        timeout: float = 30.0,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
    ) -> TradeUpdate:
        """Submit an order and block until it reaches one of ``events``; return that update.

        The trading stream is open and listening *before* the order goes out,
        and the service remembers every update, so a fill faster than the REST
        reply is never missed; a fill during a disconnect is reconciled.

        Raises:
            TimeoutError: the order reached none of ``events`` within ``timeout`` s
                (it is still live: cancel it if you must).
            AlpacaAPIError: the order was refused.

        Example::

            update = manager.submit_and_wait(MarketOrderRequest(
                symbol="AAPL", qty=1, side="buy", time_in_force="day"), timeout=10)
            assert update.event == "fill"
        """
        service = self._require_trading()
        check_seconds("timeout", timeout)
        wanted = event_names(events)  # validated before anything is submitted
        _check_request(request)
        deadline = time.monotonic() + timeout
        service.listen(timeout)
        order = self.submit_order(request)
        remaining = max(deadline - time.monotonic(), 0.001)
        return service.wait_for_order(order.id, wanted, remaining, catch_up=False)

    def marketable_limit_price(
        self,
        symbol: str,
        side: OrderSide | str,
        offset_bps: float = 10.0,
        *,
        max_age: float | None = None,
        timeout: float = 5.0,
    ) -> float:
        """A limit price that crosses the spread: the live mid moved by ``offset_bps``.

        Buy: ``mid * (1 + bps / 10_000)`` rounded **up**; sell: ``mid * (1 - bps /
        10_000)`` rounded **down** (so rounding never makes it less marketable), to
        cents at or above $1 and to 4 decimals below, as Alpaca requires. When
        no price (fresher than ``max_age`` s) is known, waits up to ``timeout``
        s for one (tracking the symbol meanwhile).

        Raises:
            ValueError: bad side or offset; TimeoutError: no price in time.

        Example::

            limit = manager.marketable_limit_price("AAPL", "buy", offset_bps=5)
        """
        self._check_open()
        pricing = self._pricing
        if pricing is None:
            raise RuntimeError(
                "marketable_limit_price() needs a pricing_service; build AlpacaManager "
                "with pricing_service=..."
            )
        buy = _is_buy(side)
        if (
            isinstance(offset_bps, bool)
            or not isinstance(offset_bps, (int, float))
            or not math.isfinite(offset_bps)
            or offset_bps < 0
            or offset_bps >= 10_000
        ):
            raise ValueError(f"offset_bps must be within [0, 10000), got {offset_bps!r}")
        mid = pricing.price(symbol, max_age=max_age)
        if mid is None:
            mid = pricing.wait_for_price(symbol, timeout=timeout)
        return _limit_price(mid, buy, offset_bps)

    # -- async twins ---------------------------------------------------------------------

    async def account_async(self) -> TradeAccount:
        """Async :meth:`account` (runs in a worker thread)."""
        return await asyncio.to_thread(self.account)

    async def positions_async(self) -> list[Position]:
        """Async :meth:`positions` (runs in a worker thread)."""
        return await asyncio.to_thread(self.positions)

    async def submit_order_async(self, request: OrderRequest) -> Order:
        """Async :meth:`submit_order` (runs in a worker thread)."""
        return await asyncio.to_thread(self.submit_order, request)

    async def cancel_order_async(self, order_id: str | UUID) -> None:
        """Async :meth:`cancel_order` (runs in a worker thread)."""
        await asyncio.to_thread(self.cancel_order, order_id)

    async def get_order_async(self, order_id: str | UUID) -> Order:
        """Async :meth:`get_order` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get_order, order_id)

    async def submit_and_wait_async(
        self,
        request: OrderRequest,
        timeout: float = 30.0,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
    ) -> TradeUpdate:
        """Async :meth:`submit_and_wait`; never blocks the running loop.

        Example::

            update = await manager.submit_and_wait_async(request, timeout=10)
        """
        service = self._require_trading()
        check_seconds("timeout", timeout)
        wanted = event_names(events)  # validated before anything is submitted
        _check_request(request)
        deadline = time.monotonic() + timeout
        await service.listen_async(timeout)
        order = await self.submit_order_async(request)
        remaining = max(deadline - time.monotonic(), 0.001)
        return await service.wait_for_order_async(order.id, wanted, remaining, catch_up=False)

    def __repr__(self) -> str:
        return (
            f"<AlpacaManager trading_service={self._trading is not None} "
            f"pricing_service={self._pricing is not None} closed={self._closed}>"
        )

    # -- internals -----------------------------------------------------------------------

    def _call(self, call: Callable[[], Any]) -> Any:
        self._check_open()
        return rest_call(self._client, call)

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosedError("AlpacaManager", "alpaca_manager")

    def _require_trading(self) -> TradingService:
        self._check_open()
        if self._trading is None:
            raise RuntimeError(
                "submit_and_wait() needs a trading_service; build AlpacaManager with "
                "trading_service=..."
            )
        return self._trading


def _check_request(request: object) -> None:
    if not isinstance(request, OrderRequest):
        raise TypeError(
            "request must be an alpaca-py OrderRequest (MarketOrderRequest, "
            f"LimitOrderRequest, ...), got {type(request).__name__}"
        )


def _is_buy(side: Any) -> bool:
    value = getattr(side, "value", side)
    if isinstance(value, str) and value.lower() in ("buy", "sell"):
        return value.lower() == "buy"
    raise ValueError(f"side must be 'buy' or 'sell' (or an OrderSide), got {side!r}")


def _limit_price(mid: float, buy: bool, offset_bps: float) -> float:
    if not mid > 0 or not math.isfinite(mid):
        raise ValueError(f"cannot price from a non-positive mid {mid!r}")
    factor = Decimal(1) + (Decimal(repr(float(offset_bps))) / Decimal(10_000)) * (1 if buy else -1)
    raw = Decimal(repr(float(mid))) * factor
    quantum = _CENT if raw >= 1 else _SUBPENNY
    price = raw.quantize(quantum, rounding=ROUND_CEILING if buy else ROUND_FLOOR)
    if price <= 0:
        raise ValueError(f"a limit price below {quantum} cannot be expressed (mid {mid!r})")
    return float(price)
