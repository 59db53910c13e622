"""AlpacaManager: the REST facade, with live prices and order updates injected.

It wraps alpaca-py's ``TradingClient`` (account, positions, orders) and uses
an injected :class:`~alpaca_di.services.interfaces.OrderUpdates` (the
:class:`~alpaca_di.services.trading.TradingService`, or a fake) and
:class:`~alpaca_di.services.interfaces.PriceSource` (the
:class:`~alpaca_di.services.pricing.PricingService`, or a fake) for the things
REST alone cannot do well: waiting for a fill, and pricing a marketable limit
order::

    manager = AlpacaManager(trading_client=client, trading_service=trading,
                            pricing_service=pricing)
    fill = manager.submit_and_wait(MarketOrderRequest(symbol="AAPL", qty=1, side="buy",
                                                      time_in_force="day"))
    limit = manager.marketable_limit_price("AAPL", "buy", offset_bps=10)

The container builds it with :meth:`AlpacaManager.deferred`: each dependency is
resolved when a method first needs it, so a component that only prices orders
is tested by overriding ``pricing_service`` alone, one that only submits by
overriding ``trading_client`` alone, and nothing else needs settings.

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
from alpaca_di.services.interfaces import (
    DEFAULT_FINAL_EVENTS,
    ListeningOrderUpdates,
    OrderUpdates,
    PriceSource,
)
from alpaca_di.services.rest import rest_call
from alpaca_di.services.trading.orders import event_names, order_key

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

__all__ = ["AlpacaManager"]

_CENT = Decimal("0.01")
_SUBPENNY = Decimal("0.0001")


class AlpacaManager:
    """Account, positions and orders through one ``TradingClient``.

    Args:
        trading_client: alpaca-py ``TradingClient`` (``url_override`` for the emulator),
            or anything with its methods (:class:`~alpaca_di.testing.FakeTradingClient`).
        trading_service: an :class:`~alpaca_di.services.interfaces.OrderUpdates`
            (needed by :meth:`submit_and_wait`): the
            :class:`~alpaca_di.services.trading.TradingService` or a
            :class:`~alpaca_di.testing.FakeOrderUpdates`. When it is a
            :class:`~alpaca_di.services.interfaces.ListeningOrderUpdates` it is
            told to listen before the order is submitted.
        pricing_service: a :class:`~alpaca_di.services.interfaces.PriceSource`
            (needed by :meth:`marketable_limit_price`).

    The manager creates no connection of its own; the container injects all
    three, lazily (:meth:`deferred`). Thread-safe as far as ``TradingClient`` is
    (its ``requests`` session is shared). The container closes it at shutdown;
    from then on every call raises :class:`~alpaca_di.errors.ServiceClosedError`.

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
        trading_service: OrderUpdates | None = None,
        pricing_service: PriceSource | None = None,
    ) -> None:
        _check_client(trading_client)
        self._client_of: Callable[[], TradingClient] = lambda: trading_client
        self._trading_of: Callable[[], OrderUpdates | None] = lambda: trading_service
        self._pricing_of: Callable[[], PriceSource | None] = lambda: pricing_service
        self._closed = False

    @classmethod
    def deferred(
        cls,
        trading_client: Callable[[], TradingClient],
        trading_service: Callable[[], OrderUpdates] | None = None,
        pricing_service: Callable[[], PriceSource] | None = None,
    ) -> AlpacaManager:
        """A manager that resolves each dependency when a method first needs it.

        Each argument is a zero-argument callable (a provider's ``.provider``),
        called at every use, so the manager always sees the provider's current
        value (an override, or the fresh service after a shutdown) and building
        it resolves nothing: ``account()`` never builds the pricing service,
        ``marketable_limit_price()`` never builds the client.

        Example::

            alpaca_manager = providers.Factory(
                AlpacaManager.deferred,
                trading_client=trading_client.provider,
                trading_service=trading_service.provider,
                pricing_service=pricing_service.provider,
            )
        """
        for name, source in (
            ("trading_client", trading_client),
            ("trading_service", trading_service),
            ("pricing_service", pricing_service),
        ):
            if source is not None and not callable(source):
                raise TypeError(
                    f"AlpacaManager.deferred: {name} must be a zero-argument callable "
                    f"(a provider), got {type(source).__name__}"
                )
        manager = cls.__new__(cls)
        manager._closed = False

        def client() -> TradingClient:
            value = trading_client()
            _check_client(value)
            return value

        manager._client_of = client
        manager._trading_of = trading_service if trading_service is not None else _none
        manager._pricing_of = pricing_service if pricing_service is not None else _none
        return manager

    @property
    def trading_client(self) -> TradingClient:
        """The injected alpaca-py ``TradingClient`` (resolved now when deferred)."""
        return self._client_of()

    @property
    def trading_service(self) -> OrderUpdates | None:
        """The injected order updates (a :class:`TradingService`), if any."""
        return self._trading_of()

    @property
    def pricing_service(self) -> PriceSource | None:
        """The injected price source, if any."""
        return self._pricing_of()

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
        return cast(TradeAccount, self._call(lambda client: client.get_account()))

    def positions(self) -> list[Position]:
        """``GET /v2/positions``: every open position."""
        return cast(list[Position], self._call(lambda client: client.get_all_positions()))

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
        return cast(Order, self._call(lambda client: client.submit_order(order_data=request)))

    def cancel_order(self, order_id: str | UUID) -> None:
        """``DELETE /v2/orders/{id}``; the ``canceled`` update follows on the stream."""
        key = order_key(order_id)
        self._call(lambda client: client.cancel_order_by_id(key))

    def get_order(self, order_id: str | UUID) -> Order:
        """``GET /v2/orders/{id}``."""
        key = order_key(order_id)
        return cast(Order, self._call(lambda client: client.get_order_by_id(key)))

    def submit_and_wait(
        self,
        request: OrderRequest,
        timeout: float = 30.0,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
    ) -> TradeUpdate:
        """Submit an order and block until it reaches one of ``events``; return that update.

        The trading stream is open and listening *before* the order goes out
        (when the service is a
        :class:`~alpaca_di.services.interfaces.ListeningOrderUpdates`), and the
        service remembers every update, so a fill faster than the REST reply is
        never missed; a fill during a disconnect is reconciled.

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
        if isinstance(service, ListeningOrderUpdates):
            service.listen(timeout)
            order = self.submit_order(request)
            remaining = max(deadline - time.monotonic(), 0.001)
            return service.wait_for_order(order.id, wanted, remaining, catch_up=False)
        order = self.submit_order(request)
        remaining = max(deadline - time.monotonic(), 0.001)
        return service.wait_for_order(order.id, wanted, remaining)

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
        buy = _is_buy(side)
        if (
            isinstance(offset_bps, bool)
            or not isinstance(offset_bps, (int, float))
            or not math.isfinite(offset_bps)
            or offset_bps < 0
            or offset_bps >= 10_000
        ):
            raise ValueError(f"offset_bps must be within [0, 10000), got {offset_bps!r}")
        pricing = self._pricing_of()
        if pricing is None:
            raise RuntimeError(
                "marketable_limit_price() needs a pricing_service; build AlpacaManager "
                "with pricing_service=..."
            )
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
        if isinstance(service, ListeningOrderUpdates):
            await service.listen_async(timeout)
            order = await self.submit_order_async(request)
            remaining = max(deadline - time.monotonic(), 0.001)
            return await service.wait_for_order_async(order.id, wanted, remaining, catch_up=False)
        order = await self.submit_order_async(request)
        remaining = max(deadline - time.monotonic(), 0.001)
        return await service.wait_for_order_async(order.id, wanted, remaining)

    def __repr__(self) -> str:
        # Resolves nothing: a repr must not build services (or need settings).
        return f"<AlpacaManager closed={self._closed}>"

    # -- internals -----------------------------------------------------------------------

    def _call(self, call: Callable[[TradingClient], Any]) -> Any:
        self._check_open()
        client = self._client_of()
        return rest_call(client, lambda: call(client))

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosedError("AlpacaManager", "alpaca_manager")

    def _require_trading(self) -> OrderUpdates:
        self._check_open()
        trading = self._trading_of()
        if trading is None:
            raise RuntimeError(
                "submit_and_wait() needs a trading_service; build AlpacaManager with "
                "trading_service=..."
            )
        return trading


def _none() -> None:
    return None


def _check_client(client: object) -> None:
    if client is None or not hasattr(client, "submit_order"):
        raise TypeError(
            f"trading_client must be an alpaca-py TradingClient, got {type(client).__name__}"
        )


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
