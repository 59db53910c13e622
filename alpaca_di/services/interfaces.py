"""Small typing ``Protocol``s that components depend on instead of concrete services.

A strategy that only needs prices asks for a :class:`PriceSource`; an executor
that waits for fills asks for :class:`OrderUpdates`. The real services
(:class:`~alpaca_di.services.pricing.PricingService`,
:class:`~alpaca_di.services.trading.TradingService`) satisfy them, and so does
any fake with the same methods, which mypy checks::

    from alpaca_di.services.interfaces import OrderUpdates, PriceSource

    class Strategy:
        def __init__(self, prices: PriceSource, orders: OrderUpdates) -> None:
            self.prices = prices
            self.orders = orders

        def fair_value(self) -> float:
            return self.prices.wait_for_price("AAPL", timeout=5.0)

Bar backfill (``docs/gaps-and-backfill.md``) needs no more of alpaca-py's historical
clients than :class:`StockBarsClient`, :class:`CryptoBarsClient` and
:class:`OptionBarsClient`: ``StockHistoricalDataClient`` & co. satisfy them, and
so do the in-memory :class:`~alpaca_di.testing.FakeHistoricalDataClient`.

The protocols are ``runtime_checkable``: ``isinstance(obj, PriceSource)`` checks
that the methods exist (not their signatures).

:class:`~alpaca_di.services.manager.AlpacaManager` needs no more than these:
an :class:`OrderUpdates` for ``submit_and_wait`` (a :class:`ListeningOrderUpdates`
is told to listen before the order goes out) and a :class:`PriceSource` for
``marketable_limit_price``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from uuid import UUID

from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import TradeUpdate

if TYPE_CHECKING:
    from alpaca.data.enums import CryptoFeed
    from alpaca.data.models import BarSet
    from alpaca.data.requests import CryptoBarsRequest, OptionBarsRequest, StockBarsRequest

__all__ = [
    "DEFAULT_FINAL_EVENTS",
    "BarsClient",
    "CryptoBarsClient",
    "ListeningOrderUpdates",
    "OptionBarsClient",
    "OrderUpdates",
    "PriceSource",
    "PriceTracker",
    "StockBarsClient",
]

DEFAULT_FINAL_EVENTS: tuple[str, ...] = ("fill", "canceled", "rejected", "expired")
"""The events :meth:`OrderUpdates.wait_for_order` waits for unless told otherwise."""


@runtime_checkable
class PriceSource(Protocol):
    """Something that knows the latest price of a symbol.

    Example::

        def spread_ok(prices: PriceSource) -> bool:
            return prices.price("AAPL", max_age=2.0) is not None
    """

    def price(self, symbol: str, max_age: float | None = None) -> float | None:
        """The latest price of ``symbol``, or ``None`` when unknown or older than ``max_age`` s."""
        ...

    def wait_for_price(self, symbol: str, timeout: float = 10.0) -> float:
        """Block until a price for ``symbol`` is known; ``TimeoutError`` after ``timeout`` s."""
        ...

    async def wait_for_price_async(self, symbol: str, timeout: float = 10.0) -> float:
        """Async :meth:`wait_for_price`: never blocks the running loop."""
        ...


@runtime_checkable
class PriceTracker(PriceSource, Protocol):
    """A :class:`PriceSource` whose symbols are chosen by reference-counted tracking.

    Example::

        def start(prices: PriceTracker) -> None:
            prices.track("AAPL", "MSFT", owner="momentum")
    """

    def track(self, *symbols: str, owner: Hashable = None) -> None:
        """Start receiving prices for ``symbols`` on behalf of ``owner``."""
        ...

    def untrack(self, *symbols: str, owner: Hashable = None) -> None:
        """Give back ``owner``'s claim on ``symbols``."""
        ...

    def untrack_all(self, owner: Hashable = None) -> None:
        """Give back every claim ``owner`` holds."""
        ...


@runtime_checkable
class OrderUpdates(Protocol):
    """Something that can wait for an order to reach a state.

    Example::

        def settle(orders: OrderUpdates, order_id: str) -> float | None:
            update = orders.wait_for_order(order_id, timeout=30.0)
            return update.price
    """

    def wait_for_order(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
    ) -> TradeUpdate:
        """Block until the order's update with one of ``events`` is known, and return it."""
        ...

    async def wait_for_order_async(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
    ) -> TradeUpdate:
        """Async :meth:`wait_for_order`: never blocks the running loop."""
        ...


@runtime_checkable
class ListeningOrderUpdates(OrderUpdates, Protocol):
    """:class:`OrderUpdates` that can start listening *before* an order is submitted.

    :meth:`AlpacaManager.submit_and_wait <alpaca_di.services.manager.AlpacaManager.submit_and_wait>`
    calls :meth:`listen` first when its ``trading_service`` has it, then waits
    with ``catch_up=False`` (nothing can have been missed). Plain
    :class:`OrderUpdates` are waited on as they are: they must remember updates
    that arrive before the wait (``FakeOrderUpdates`` does).
    :class:`~alpaca_di.services.trading.TradingService` and
    :class:`~alpaca_di.testing.FakeOrderUpdates` satisfy it.

    Example::

        def submit(orders: ListeningOrderUpdates, client: TradingClient, request) -> TradeUpdate:
            orders.listen(timeout=10)
            order = client.submit_order(request)
            return orders.wait_for_order(order.id, timeout=30, catch_up=False)
    """

    def listen(self, timeout: float = 10.0) -> None:
        """Block until updates of orders submitted from now on will be seen."""
        ...

    async def listen_async(self, timeout: float = 10.0) -> None:
        """Async :meth:`listen`."""
        ...

    def wait_for_order(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
        *,
        catch_up: bool = True,
    ) -> TradeUpdate:
        """:meth:`OrderUpdates.wait_for_order`; ``catch_up=False`` skips any REST look-up."""
        ...

    async def wait_for_order_async(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
        *,
        catch_up: bool = True,
    ) -> TradeUpdate:
        """Async :meth:`wait_for_order`."""
        ...


@runtime_checkable
class StockBarsClient(Protocol):
    """What bar backfill needs of alpaca-py's ``StockHistoricalDataClient``.

    Example::

        def minute_bars(client: StockBarsClient) -> BarSet | dict[str, Any]:
            return client.get_stock_bars(StockBarsRequest(
                symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=start))
    """

    def get_stock_bars(self, request_params: StockBarsRequest) -> BarSet | dict[str, Any]:
        """Bars of the request's symbols, timeframe and window (all pages)."""
        ...


@runtime_checkable
class CryptoBarsClient(Protocol):
    """What bar backfill needs of alpaca-py's ``CryptoHistoricalDataClient``.

    Example::

        bars = client.get_crypto_bars(CryptoBarsRequest(
            symbol_or_symbols="BTC/USD", timeframe=TimeFrame.Minute, start=start))
    """

    def get_crypto_bars(
        self, request_params: CryptoBarsRequest, feed: CryptoFeed = ...
    ) -> BarSet | dict[str, Any]:
        """Bars of the request's pairs from the ``feed`` location (all pages)."""
        ...


@runtime_checkable
class OptionBarsClient(Protocol):
    """What bar backfill needs of alpaca-py's ``OptionHistoricalDataClient``.

    Example::

        bars = client.get_option_bars(OptionBarsRequest(
            symbol_or_symbols="AAPL240315C00180000", timeframe=TimeFrame.Minute, start=start))
    """

    def get_option_bars(self, request_params: OptionBarsRequest) -> BarSet | dict[str, Any]:
        """Bars of the request's contracts (all pages)."""
        ...


BarsClient = StockBarsClient | CryptoBarsClient | OptionBarsClient
"""The historical client of a stream kind: what bar backfill calls."""
