"""PricingService: the latest quote and trade of every tracked symbol, over the shared streams.

Components say which symbols they care about (``track``) and read prices
(``price``, ``wait_for_price``); the service keeps **one** subscription per hub
(quotes and trades, ``overflow="conflate"``, so a burst never queues more than
the latest quote and trade per symbol) and grows or shrinks it as tracking
changes. Crypto pairs (``"BTC/USD"``, anything with a ``/``) go to the crypto
hub, everything else to the stock hub::

    pricing = PricingService(stock_stream=stock_hub, crypto_stream=crypto_hub)
    pricing.track("AAPL", "MSFT", owner="momentum")
    pricing.track("AAPL", owner="risk")
    price = pricing.wait_for_price("AAPL", timeout=5.0)   # mid of the first quote
    pricing.untrack("AAPL", owner="momentum")            # "risk" still tracks AAPL

    with pricing.tracking("TSLA"):                       # scoped tracking
        print(pricing.price("TSLA", max_age=2.0))

Tracking is reference-counted per **owner** (any hashable naming the
component). ``owner=None`` is the *anonymous owner*: its claims are plain
reference counts, so two anonymous ``track("AAPL")`` calls need two
``untrack("AAPL")`` calls. Give each component its own owner to make the
bookkeeping explicit and to release everything at once with ``untrack_all``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import structlog
from alpaca.data.models import Quote, Trade

from alpaca_di._aio import running_loop, settle
from alpaca_di._check import check_seconds
from alpaca_di.errors import ConnectionClosedError, ServiceClosedError, describe_error
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.subscription import Subscription
from alpaca_di.protocol import StreamKind, validate_symbol
from alpaca_di.transport.states import ConnectionState

__all__ = ["PriceListener", "PriceSnapshot", "PricingService", "Tracking"]

PriceListener = Callable[[str, float], None]
"""``listener(symbol, price)``: called after every quote or trade that yields a price."""

_log = structlog.get_logger(__name__)
_STOCK_KINDS = (StreamKind.STOCK, StreamKind.OPTION)
_FAILED = object()


@dataclass(frozen=True)
class PriceSnapshot:
    """What the service knows about one tracked symbol, at one instant.

    Attributes:
        symbol: the symbol.
        price: what :meth:`PricingService.price` returns (mid, else last trade), or ``None``.
        bid / ask: the latest quote's sides (``None`` before the first quote).
        last: the latest trade's price (``None`` before the first trade).
        quote / trade: the latest alpaca-py ``Quote`` / ``Trade`` models.
        received_at: wall-clock time the latest quote or trade was received.
        age: seconds since then (``None`` before any data).

    Example::

        snap = pricing.snapshot()["AAPL"]
        if snap.age is not None and snap.age < 2.0:
            print(snap.bid, snap.ask, snap.price)
    """

    symbol: str
    price: float | None
    bid: float | None
    ask: float | None
    last: float | None
    quote: Quote | None
    trade: Trade | None
    received_at: datetime | None
    age: float | None


class _Book:
    """Latest data of one symbol. Guarded by the service lock."""

    __slots__ = ("quote", "quote_at", "received_at", "trade", "trade_at")

    def __init__(self) -> None:
        self.quote: Quote | None = None
        self.trade: Trade | None = None
        self.quote_at = 0.0  # monotonic receive times
        self.trade_at = 0.0
        self.received_at: datetime | None = None


class PricingService:
    """Latest quotes and trades of tracked symbols; thread-safe.

    Args:
        stock_stream: the stock (or option) :class:`~alpaca_di.services.StreamHub`.
        crypto_stream: the crypto hub; symbols containing ``/`` need it.

    The service never opens connections itself: the hubs come from the
    container (``PricingService(stock_stream=..., crypto_stream=...)``). Its
    one subscription per hub runs a sync handler on alpaca-di's worker
    threads, so it works the same in sync and async applications. Once closed
    (``shutdown_resources()`` closes it), every call raises
    :class:`~alpaca_di.errors.ServiceClosedError`: resolve a new one from the container.

    Example::

        pricing = PricingService(stock_stream=container.stock_stream())
        pricing.track("AAPL", owner="strategy-1")
        mid = pricing.wait_for_price("AAPL", timeout=10.0)
        remove = pricing.add_listener(lambda symbol, price: print(symbol, price))
        ...
        remove()
        pricing.untrack_all(owner="strategy-1")
    """

    def __init__(self, stock_stream: StreamHub, crypto_stream: StreamHub | None = None) -> None:
        _check_hub("stock_stream", stock_stream, _STOCK_KINDS)
        if crypto_stream is not None:
            _check_hub("crypto_stream", crypto_stream, (StreamKind.CRYPTO,))
        self._stock = stock_stream
        self._crypto = crypto_stream
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._owners: dict[str, dict[Hashable, int]] = {}
        self._books: dict[str, _Book] = {}
        self._subs: dict[int, Subscription] = {}
        self._state_removers: dict[int, Callable[[], None]] = {}
        self._listeners: list[PriceListener] = []
        self._async_waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]]
        self._async_waiters = {}
        self._closed = False

    # -- tracking ---------------------------------------------------------------------------

    def track(self, *symbols: str, owner: Hashable = None) -> None:
        """Start receiving quotes and trades for ``symbols`` on behalf of ``owner``.

        Each call adds one claim per distinct symbol for ``owner``; the wire
        subscribe goes out only for symbols nobody tracked before. Symbols are
        validated here (``ValueError`` naming the bad one; ``"*"`` is refused).

        Raises:
            ValueError: an invalid symbol, or a crypto pair without a crypto stream.
            ServiceClosedError: the service is closed.
            ConnectionClosedError: its hub is closed.

        Example::

            pricing.track("AAPL", "BTC/USD", owner="arb")
        """
        resolved = self._resolve_all(symbols)
        with self._lock:
            self._check_open()
            fresh: dict[int, list[str]] = {}
            for symbol, hub in resolved.items():
                if not self._owners.get(symbol):
                    fresh.setdefault(id(hub), []).append(symbol)
            for hub_id, added in fresh.items():
                self._wire_add(self._hub_by_id(hub_id), added)
            for symbol in resolved:
                owners = self._owners.setdefault(symbol, {})
                owners[owner] = owners.get(owner, 0) + 1
                if symbol not in self._books:
                    self._books[symbol] = _Book()

    def untrack(self, *symbols: str, owner: Hashable = None) -> None:
        """Give back one of ``owner``'s claims on each of ``symbols``.

        A symbol stays subscribed while any owner still tracks it; when the last
        claim goes, the wire unsubscribe is sent and its cached data is dropped.

        Raises:
            ValueError: a symbol that ``owner`` does not track (nothing is changed).

        Example::

            pricing.untrack("AAPL", owner="arb")
        """
        resolved = self._resolve_all(symbols)
        with self._lock:
            self._check_open()
            for symbol in resolved:
                if self._owners.get(symbol, {}).get(owner, 0) <= 0:
                    raise ValueError(
                        f"{symbol!r} is not tracked by owner {owner!r}; tracked by: "
                        f"{sorted(map(repr, self._owners.get(symbol, {})))!r}"
                    )
            self._release(resolved, owner)

    def untrack_all(self, owner: Hashable = None) -> None:
        """Give back every claim ``owner`` holds (a component shutting down).

        Example::

            pricing.untrack_all(owner="arb")
        """
        with self._lock:
            self._check_open()
            held = {
                symbol: self._hub_for(symbol)
                for symbol, owners in self._owners.items()
                if owners.get(owner, 0) > 0
            }
            self._release(held, owner, every_claim=True)

    def tracking(self, *symbols: str, owner: Hashable = None) -> Tracking:
        """Track ``symbols`` for the duration of a ``with`` or ``async with`` block.

        Symbols are validated at the call; tracking starts on entering the block.

        Example::

            with pricing.tracking("AAPL", "MSFT", owner="report"):
                prices = {s: pricing.wait_for_price(s, timeout=5) for s in ("AAPL", "MSFT")}

            async with pricing.tracking("TSLA"):
                price = await pricing.wait_for_price_async("TSLA", timeout=5)
        """
        self._check_open()
        self._resolve_all(symbols)
        return Tracking(self, tuple(symbols), owner)

    def tracked(self) -> frozenset[str]:
        """Every symbol somebody tracks right now."""
        with self._lock:
            self._check_open()
            return frozenset(symbol for symbol, owners in self._owners.items() if owners)

    def owners(self, symbol: str) -> dict[Hashable, int]:
        """Who tracks ``symbol`` and how many claims each holds (a copy)."""
        with self._lock:
            self._check_open()
            return dict(self._owners.get(symbol, {}))

    # -- reading ------------------------------------------------------------------------------

    def latest_quote(self, symbol: str) -> Quote | None:
        """The latest alpaca-py ``Quote`` of ``symbol``, or ``None``."""
        with self._lock:
            self._check_open()
            book = self._books.get(symbol)
            if book is None:
                self._resolve(symbol)
                return None
            return book.quote

    def latest_trade(self, symbol: str) -> Trade | None:
        """The latest alpaca-py ``Trade`` of ``symbol``, or ``None``."""
        with self._lock:
            self._check_open()
            book = self._books.get(symbol)
            if book is None:
                self._resolve(symbol)
                return None
            return book.trade

    def price(self, symbol: str, max_age: float | None = None) -> float | None:
        """The mid of the latest two-sided quote, else the latest trade price.

        ``max_age`` (seconds) ignores data received longer ago than that (age is
        measured from when the message was received, so it is immune to clock
        skew); ``None`` when nothing fresh enough is known or the symbol is not
        tracked.

        Example::

            mid = pricing.price("AAPL", max_age=5.0)
            if mid is None:
                ...  # no fresh price: skip this cycle
        """
        if max_age is not None:
            check_seconds("max_age", max_age)
        with self._lock:
            self._check_open()
            book = self._books.get(symbol)
            if book is None:
                self._resolve(symbol)
                return None
            return _price_of(book, max_age, time.monotonic())

    def snapshot(self) -> dict[str, PriceSnapshot]:
        """A :class:`PriceSnapshot` of every tracked symbol (price ``None`` before data).

        Example::

            for symbol, snap in pricing.snapshot().items():
                print(symbol, snap.price, snap.age)
        """
        now = time.monotonic()
        with self._lock:
            self._check_open()
            result: dict[str, PriceSnapshot] = {}
            for symbol, owners in self._owners.items():
                if not owners:
                    continue
                book = self._books.get(symbol) or _Book()
                quote, trade = book.quote, book.trade
                latest = max(book.quote_at, book.trade_at)
                result[symbol] = PriceSnapshot(
                    symbol=symbol,
                    price=_price_of(book, None, now),
                    bid=quote.bid_price if quote is not None else None,
                    ask=quote.ask_price if quote is not None else None,
                    last=trade.price if trade is not None else None,
                    quote=quote,
                    trade=trade,
                    received_at=book.received_at,
                    age=now - latest if latest else None,
                )
            return result

    def wait_for_price(self, symbol: str, timeout: float = 10.0) -> float:
        """Return the price of ``symbol`` as soon as one is known (at once if it already is).

        A symbol nobody tracks is tracked for the duration of the call only.
        Must not be called on the hub's own event loop (use
        :meth:`wait_for_price_async` there).

        Raises:
            ValueError: an invalid symbol, or ``timeout`` not a positive number.
            TimeoutError: no quote or trade within ``timeout`` s (names the symbol, the
                stream's state and its last error, as ``wait_ready`` does).
            AuthenticationError, InsufficientSubscriptionError, ...: the stream failed.

        Example::

            mid = pricing.wait_for_price("AAPL", timeout=5.0)
        """
        check_seconds("timeout", timeout)
        symbol, hub = self._resolve(symbol)
        if running_loop() is not None:
            raise RuntimeError(
                "wait_for_price() would block the running event loop; "
                "use 'await pricing.wait_for_price_async(...)'"
            )
        deadline = time.monotonic() + timeout
        with self._lock:
            self._check_open()
            found = self._current(symbol)
            if found is not None:
                return found
            temporary = self._track_temporarily(symbol)
        try:
            while True:
                with self._changed:
                    found = self._current(symbol)
                    if found is not None:
                        return found
                    remaining = deadline - time.monotonic()
                    if remaining > 0 and not self._down(hub):
                        self._changed.wait(remaining)
                        continue
                if remaining <= 0:
                    raise TimeoutError(_timeout_text(symbol, timeout, hub))
                self._raise_down(hub)
        finally:
            self._forget_temporary(symbol, hub, temporary)

    async def wait_for_price_async(self, symbol: str, timeout: float = 10.0) -> float:
        """Async :meth:`wait_for_price`: never blocks the running loop.

        Example::

            mid = await pricing.wait_for_price_async("AAPL", timeout=5.0)
        """
        check_seconds("timeout", timeout)
        symbol, hub = self._resolve(symbol)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._check_open()
            found = self._current(symbol)
            if found is not None:
                return found
            temporary = self._track_temporarily(symbol)
            self._async_waiters.setdefault(symbol, []).append((loop, future))
            if self._down(hub):
                future.set_result(_FAILED)
        try:
            try:
                result = await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(_timeout_text(symbol, timeout, hub)) from None
            if result is _FAILED:
                if hub.state is ConnectionState.FAILED and not self._closed:
                    await hub.ready(timeout=0.01)  # raises the named error of the failure
                self._raise_down(hub)
            return float(result)
        finally:
            with self._lock:
                waiters = self._async_waiters.get(symbol, [])
                if (loop, future) in waiters:
                    waiters.remove((loop, future))
                if not waiters:
                    self._async_waiters.pop(symbol, None)
            self._forget_temporary(symbol, hub, temporary)

    # -- listeners -------------------------------------------------------------------------

    def add_listener(self, listener: PriceListener) -> Callable[[], None]:
        """Call ``listener(symbol, price)`` after every update that yields a price.

        Listeners run on an alpaca-di worker thread (one hub's updates in order,
        never concurrently with themselves per hub); keep them short. To hand a
        price to asyncio, use ``loop.call_soon_threadsafe``. Exceptions are
        logged and swallowed. Returns a function that removes the listener.

        Example::

            remove = pricing.add_listener(lambda symbol, price: print(symbol, price))
            ...
            remove()
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        if inspect.iscoroutinefunction(listener):
            raise TypeError("listener must be a plain function, not 'async def'")
        with self._lock:
            self._check_open()
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def close(self) -> None:
        """Close the service's subscriptions and wake every waiter. Idempotent.

        The hubs themselves stay open: they belong to the container.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs, self._subs = list(self._subs.values()), {}
            removers, self._state_removers = list(self._state_removers.values()), {}
            waiters, self._async_waiters = self._async_waiters, {}
            self._owners.clear()
            self._books.clear()
            self._changed.notify_all()
        for sub in subs:
            sub.close()
        for remover in removers:
            remover()
        for pending in waiters.values():
            for loop, future in pending:
                settle(loop, future, _FAILED)

    def __repr__(self) -> str:
        with self._lock:
            tracking = sum(1 for owners in self._owners.values() if owners)
        return f"<PricingService tracking={tracking} closed={self._closed}>"

    # -- internals ---------------------------------------------------------------------------

    def _hub_for(self, symbol: str) -> StreamHub:
        if "/" in symbol:
            if self._crypto is None:
                raise ValueError(
                    f"{symbol!r} is a crypto pair but this PricingService has no crypto_stream"
                )
            return self._crypto
        return self._stock

    def _hub_by_id(self, hub_id: int) -> StreamHub:
        if id(self._stock) == hub_id:
            return self._stock
        assert self._crypto is not None
        return self._crypto

    def _resolve(self, symbol: str) -> tuple[str, StreamHub]:
        if isinstance(symbol, str) and symbol == "*":
            raise ValueError("PricingService takes concrete symbols, not '*'")
        hub = self._hub_for(symbol) if isinstance(symbol, str) else self._stock
        return validate_symbol(hub.kind, symbol), hub

    def _resolve_all(self, symbols: Iterable[str]) -> dict[str, StreamHub]:
        resolved: dict[str, StreamHub] = {}
        for symbol in symbols:
            name, hub = self._resolve(symbol)
            resolved[name] = hub
        if not resolved:
            raise ValueError("pass at least one symbol")
        return resolved

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceClosedError("PricingService", "pricing_service")

    def _wire_add(self, hub: StreamHub, symbols: list[str]) -> None:
        key = id(hub)
        sub = self._subs.get(key)
        if sub is not None and not sub.closed:
            sub.add(quotes=symbols, trades=symbols)
            return
        # first use of this hub, or its subscription died (hub failed): resubscribe all
        current = [s for s, owners in self._owners.items() if owners and self._hub_for(s) is hub]
        wanted = list(dict.fromkeys([*current, *symbols]))
        self._subs[key] = hub.subscribe(
            self._on_message,
            quotes=wanted,
            trades=wanted,
            overflow="conflate",
            name="alpaca_di.pricing_service",
        )
        if key not in self._state_removers:
            self._state_removers[key] = hub.add_state_listener(
                lambda state, _previous: self._on_state(hub, state)
            )

    def _release(
        self, symbols: dict[str, StreamHub], owner: Hashable, *, every_claim: bool = False
    ) -> None:
        gone: dict[int, list[str]] = {}
        for symbol, hub in symbols.items():
            owners = self._owners.get(symbol)
            if not owners or owners.get(owner, 0) <= 0:
                continue
            owners[owner] = 0 if every_claim else owners[owner] - 1
            if owners[owner] == 0:
                del owners[owner]
            if not owners:
                del self._owners[symbol]
                self._books.pop(symbol, None)
                gone.setdefault(id(hub), []).append(symbol)
        for hub_id, removed in gone.items():
            sub = self._subs.get(hub_id)
            if sub is not None and not sub.closed:
                sub.remove(quotes=removed, trades=removed)

    def _track_temporarily(self, symbol: str) -> object | None:
        if self._owners.get(symbol):
            return None
        token = _Temporary(symbol)
        self.track(symbol, owner=token)
        return token

    def _current(self, symbol: str) -> float | None:
        book = self._books.get(symbol)
        return None if book is None else _price_of(book, None, 0.0)

    def _forget_temporary(self, symbol: str, hub: StreamHub, token: object | None) -> None:
        if token is not None:
            with self._lock:
                self._release({symbol: hub}, token)

    def _down(self, hub: StreamHub) -> bool:
        return self._closed or hub.closed or hub.state is ConnectionState.FAILED

    def _raise_down(self, hub: StreamHub) -> None:
        """Raise why ``hub`` (or the service) can deliver no price; call off the lock."""
        self._check_open()
        state = hub.state
        if state is ConnectionState.FAILED:
            hub.wait_ready(timeout=0.01)  # raises the named error of the failure
        raise ConnectionClosedError(f"the {hub.kind.value} stream is {state.value}")

    def _on_state(self, hub: StreamHub, state: ConnectionState) -> None:
        # Runs on the hub's loop: wake the waiters so they notice a dead stream.
        if state is not ConnectionState.FAILED and state is not ConnectionState.CLOSED:
            return
        with self._lock:
            self._changed.notify_all()
            failed = [
                waiter
                for symbol, waiters in list(self._async_waiters.items())
                if self._hub_for(symbol) is hub
                for waiter in waiters
            ]
        for loop, future in failed:
            settle(loop, future, _FAILED)

    def _on_message(self, message: Any) -> None:
        # Runs on a worker thread, one message at a time per hub.
        if isinstance(message, Quote):
            is_quote = True
        elif isinstance(message, Trade):
            is_quote = False
        else:
            return
        symbol = message.symbol
        now = time.monotonic()
        with self._lock:
            book = self._books.get(symbol)
            if book is None or not self._owners.get(symbol):
                return  # untracked while the message was in flight
            if is_quote:
                book.quote, book.quote_at = message, now
            else:
                book.trade, book.trade_at = message, now
            book.received_at = datetime.now(timezone.utc)
            price = _price_of(book, None, now)
            if price is None:
                return
            self._changed.notify_all()
            waiters = self._async_waiters.pop(symbol, None)
            listeners = list(self._listeners)
        if waiters:
            for loop, future in waiters:
                settle(loop, future, price)
        for listener in listeners:
            try:
                listener(symbol, price)
            except Exception:
                _log.exception("pricing.listener_failed", symbol=symbol)


class _Temporary:
    """The owner of a symbol tracked only for one ``wait_for_price`` call."""

    __slots__ = ("symbol",)

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol

    def __repr__(self) -> str:
        return f"<wait_for_price {self.symbol}>"


class Tracking:
    """Sync and async context manager returned by :meth:`PricingService.tracking`.

    Example::

        with pricing.tracking("AAPL", owner="report") as prices:
            print(prices.wait_for_price("AAPL", timeout=5))
    """

    def __init__(self, service: PricingService, symbols: tuple[str, ...], owner: Hashable) -> None:
        self._service = service
        self._symbols = symbols
        self._owner = owner

    def __enter__(self) -> PricingService:
        self._service.track(*self._symbols, owner=self._owner)
        return self._service

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._service.closed:
            self._service.untrack(*self._symbols, owner=self._owner)

    async def __aenter__(self) -> PricingService:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _price_of(book: _Book, max_age: float | None, now: float) -> float | None:
    quote = book.quote
    if quote is not None and (max_age is None or now - book.quote_at <= max_age):
        bid, ask = quote.bid_price, quote.ask_price
        if bid > 0 and ask > 0:
            return (bid + ask) / 2.0
    trade = book.trade
    fresh = trade is not None and (max_age is None or now - book.trade_at <= max_age)
    if trade is not None and fresh and trade.price > 0:
        return float(trade.price)
    return None


def _check_hub(name: str, hub: object, kinds: tuple[StreamKind, ...]) -> None:
    kind = getattr(hub, "kind", None)
    if kind is None or not hasattr(hub, "subscribe"):
        raise TypeError(f"{name} must be a StreamHub, got {type(hub).__name__}")
    if kind not in kinds:
        valid = " or ".join(k.value for k in kinds)
        raise ValueError(f"{name} must be a {valid} stream, got a {StreamKind(kind).value} one")


def _timeout_text(symbol: str, timeout: float, hub: StreamHub) -> str:
    """Names the symbol and, like ``wait_ready``, the stream's state and last error."""
    error = describe_error(getattr(hub, "last_error", None))
    cause = f"; last error: {error}" if error else ""
    return (
        f"no price for {symbol!r} within {timeout:g} s "
        f"({hub.kind.value} stream {hub.state.value}{cause})"
    )
