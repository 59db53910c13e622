"""Fakes of the service protocols, and the names of the fake streams.

:class:`FakePriceSource` and :class:`FakeOrderUpdates` are pure fakes: they
satisfy the :class:`~alpaca_di.services.interfaces.PriceTracker` and
:class:`~alpaca_di.services.interfaces.OrderUpdates` protocols, for components
that depend on those rather than on the concrete services::

    prices = FakePriceSource({"AAPL": 190.0})
    strategy = Strategy(prices=prices)          # typed against PriceSource
    orders = FakeOrderUpdates()
    update = orders.push("fill", symbol="AAPL")
    assert orders.wait_for_order(update.order.id, timeout=1) is update

The stream fakes are not fakes of the hub any more but the real hub on an
in-memory upstream (:mod:`alpaca_di.testing.memory`). They live in
:mod:`alpaca_di.testing.fake_streams` (:class:`FakeStreamHub`) and
:mod:`alpaca_di.testing.overrides` (:func:`fake_container` ...), and are
importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any
from uuid import UUID

from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import TradeUpdate

from alpaca_di.protocol.models import parse
from alpaca_di.services.interfaces import DEFAULT_FINAL_EVENTS
from alpaca_di.testing import messages
from alpaca_di.testing._signal import Signal
from alpaca_di.testing.fake_streams import FAKE_KEY_ID, FAKE_SECRET, FakeStreamHub, FakeSubscription
from alpaca_di.testing.messages import trade_update as trade_update_message
from alpaca_di.testing.overrides import (
    AnyContainer,
    FakeStreams,
    fake_container,
    fake_streams,
    override_streams,
    reset_fake_container,
)

__all__ = [
    "FAKE_KEY_ID",
    "FAKE_SECRET",
    "AnyContainer",
    "FakeOrderUpdates",
    "FakePriceSource",
    "FakeStreamHub",
    "FakeStreams",
    "FakeSubscription",
    "fake_container",
    "fake_streams",
    "override_streams",
    "reset_fake_container",
    "trade_update_message",
]


class FakePriceSource:
    """A :class:`~alpaca_di.services.interfaces.PriceTracker` you set prices on by hand.

    Example::

        prices = FakePriceSource({"AAPL": 190.0})
        strategy = Strategy(prices=prices)          # typed against PriceSource
        prices.set_price("AAPL", 191.0)
        assert prices.tracked() == frozenset()
        price = await prices.wait_for_price_async("AAPL")   # in an async route
    """

    def __init__(self, prices: dict[str, float] | None = None) -> None:
        self._signal = Signal()
        self._cond = self._signal.cond
        self._prices: dict[str, float] = dict(prices or {})
        self._owners: dict[str, dict[Hashable, int]] = {}

    def set_price(self, symbol: str, price: float) -> None:
        """Set (or replace) the price of ``symbol``; wakes ``wait_for_price`` callers."""
        with self._cond:
            self._prices[symbol] = float(price)
            self._signal.notify()

    def clear(self, symbol: str) -> None:
        """Forget the price of ``symbol``."""
        with self._cond:
            self._prices.pop(symbol, None)

    def price(self, symbol: str, max_age: float | None = None) -> float | None:
        """The price set for ``symbol``, or ``None`` (``max_age`` is ignored)."""
        with self._cond:
            return self._prices.get(symbol)

    def wait_for_price(self, symbol: str, timeout: float = 10.0) -> float:
        """The price of ``symbol``, waiting up to ``timeout`` s for :meth:`set_price`."""
        with self._cond:
            if not self._cond.wait_for(lambda: symbol in self._prices, timeout):
                raise TimeoutError(f"no price for {symbol!r} within {timeout:g} s")
            return self._prices[symbol]

    async def wait_for_price_async(self, symbol: str, timeout: float = 10.0) -> float:
        """Async :meth:`wait_for_price`: never blocks the running loop."""
        if not await self._signal.wait_for(lambda: symbol in self._prices, timeout):
            raise TimeoutError(f"no price for {symbol!r} within {timeout:g} s")
        with self._cond:
            return self._prices[symbol]

    def track(self, *symbols: str, owner: Hashable = None) -> None:
        """Record ``owner``'s claim on ``symbols`` (see :meth:`tracked`)."""
        with self._cond:
            for symbol in symbols:
                owners = self._owners.setdefault(symbol, {})
                owners[owner] = owners.get(owner, 0) + 1

    def untrack(self, *symbols: str, owner: Hashable = None) -> None:
        """Give back one of ``owner``'s claims on ``symbols``."""
        with self._cond:
            for symbol in symbols:
                owners = self._owners.get(symbol, {})
                if owners.get(owner, 0) > 1:
                    owners[owner] -= 1
                else:
                    owners.pop(owner, None)
                if not owners:
                    self._owners.pop(symbol, None)

    def untrack_all(self, owner: Hashable = None) -> None:
        """Give back every claim ``owner`` holds."""
        with self._cond:
            for symbol in [s for s, owners in self._owners.items() if owner in owners]:
                del self._owners[symbol][owner]
                if not self._owners[symbol]:
                    del self._owners[symbol]

    def tracked(self) -> frozenset[str]:
        """The symbols somebody tracks now."""
        with self._cond:
            return frozenset(self._owners)


class FakeOrderUpdates:
    """A :class:`~alpaca_di.services.interfaces.OrderUpdates` fed with :meth:`push`.

    Updates pushed before a ``wait_for_order`` call still resolve it, as with
    the real service. It is also a
    :class:`~alpaca_di.services.interfaces.ListeningOrderUpdates`: :meth:`listen`
    only counts its calls (:attr:`listens`), so ``AlpacaManager.submit_and_wait``
    runs on it as on the real service. Override ``trading_service`` with it, and
    let a :class:`~alpaca_di.testing.FakeTradingClient` push the updates of the
    orders it is given.

    Example::

        orders = FakeOrderUpdates()
        update = orders.push("fill", symbol="AAPL", price=190.0)
        assert orders.wait_for_order(update.order.id, timeout=0.1) is update
        assert await orders.wait_for_order_async(update.order.id) is update
    """

    def __init__(self) -> None:
        self._signal = Signal()
        self._cond = self._signal.cond
        self._updates: dict[str, list[TradeUpdate]] = {}
        self._all: list[TradeUpdate] = []
        self._listens = 0

    @property
    def listens(self) -> int:
        """How many times :meth:`listen` / :meth:`listen_async` were called."""
        with self._cond:
            return self._listens

    def listen(self, timeout: float = 10.0) -> None:
        """Nothing to open: always listening. Counted in :attr:`listens`."""
        with self._cond:
            self._listens += 1

    async def listen_async(self, timeout: float = 10.0) -> None:
        """Async :meth:`listen`."""
        self.listen(timeout)

    def updates(self, order_id: str | UUID | None = None) -> list[TradeUpdate]:
        """Every update pushed so far (of ``order_id`` only, when given), oldest first."""
        with self._cond:
            if order_id is not None:
                return list(self._updates.get(str(order_id), []))
            return list(self._all)

    def push(self, event: str | TradeEvent = "fill", /, **fields: Any) -> TradeUpdate:
        """Record a trade update built by :func:`~alpaca_di.testing.messages.trade_update`.

        Returns its model.
        """
        raw = messages.trade_update(event, **fields)
        update = parse("trade_updates", raw["order"]["symbol"], raw)
        assert isinstance(update, TradeUpdate)
        self.push_update(update)
        return update

    def push_update(self, update: TradeUpdate) -> None:
        """Record an alpaca-py ``TradeUpdate`` you built yourself."""
        with self._cond:
            self._updates.setdefault(str(update.order.id), []).append(update)
            self._all.append(update)
            self._signal.notify()

    def wait_for_order(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
        *,
        catch_up: bool = True,
    ) -> TradeUpdate:
        """The latest pushed update of ``order_id`` with one of ``events``.

        ``catch_up`` is accepted for the real service's signature and ignored.
        """
        match, describe = self._matcher(order_id, events)
        with self._cond:
            if not self._cond.wait_for(lambda: match() is not None, timeout):
                raise TimeoutError(describe(timeout))
            found = match()
            assert found is not None
            return found

    async def wait_for_order_async(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
        *,
        catch_up: bool = True,
    ) -> TradeUpdate:
        """Async :meth:`wait_for_order`: never blocks the running loop."""
        match, describe = self._matcher(order_id, events)
        if not await self._signal.wait_for(lambda: match() is not None, timeout):
            raise TimeoutError(describe(timeout))
        with self._cond:
            found = match()
            assert found is not None
            return found

    def _matcher(
        self, order_id: str | UUID, events: Iterable[str | TradeEvent]
    ) -> tuple[Callable[[], TradeUpdate | None], Callable[[float], str]]:
        if isinstance(events, (str, TradeEvent)):
            events = [events]
        wanted = {e.value if isinstance(e, TradeEvent) else str(e) for e in events}
        key = str(order_id)

        def match() -> TradeUpdate | None:
            for update in reversed(self._updates.get(key, [])):
                event = update.event
                name = event.value if isinstance(event, TradeEvent) else str(event)
                if name in wanted:
                    return update
            return None

        def describe(timeout: float) -> str:
            return f"order {key} reached none of {', '.join(sorted(wanted))} within {timeout:g} s"

        return match, describe
