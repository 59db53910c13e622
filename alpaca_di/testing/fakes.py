"""In-memory fakes of the streams and services, for fast tests without sockets.

:class:`FakeStreamHub` has the public API of :class:`~alpaca_di.services.StreamHub`
(``subscribe``, ``wait_ready``, ``ready``, ``health``, ``add_state_listener``,
``state``, ``close``) and delivers **synchronously**: ``push_quote`` (and its
siblings) builds the real alpaca-py model from a wire dict, and every matching
sync handler has run, and every matching iterator holds the item, before it
returns::

    from alpaca_di.testing.fakes import FakeStreamHub

    hub = FakeStreamHub("stock")
    seen = []
    hub.subscribe(seen.append, quotes=["AAPL"])
    hub.push_quote("AAPL", bid=189.9, ask=190.1)
    assert seen[0].bid_price == 189.9              # an alpaca.data.models.Quote

The real services work on top of it, so a container whose stream providers are
fakes runs its real ``PricingService`` and ``TradingService`` in memory::

    from alpaca_di.testing.fakes import fake_container, fake_streams, reset_fake_container

    container = fake_container()                  # an AlpacaContainer; streams are fakes
    prices = container.pricing_service()
    prices.track("AAPL")
    fake_streams(container).stock.push_quote("AAPL", bid=10.0, ask=10.2)
    assert prices.price("AAPL") == 10.1
    reset_fake_container(container)               # shutdown, close the fakes, drop overrides

:class:`FakePriceSource` and :class:`FakeOrderUpdates` satisfy the
:class:`~alpaca_di.services.interfaces.PriceTracker` and
:class:`~alpaca_di.services.interfaces.OrderUpdates` protocols, for components that
depend on those rather than on the concrete services.

Async handlers run on the loop that subscribed them (a private loop thread of
the fake when subscribed from sync code). ``push`` waits for them when it is
called from another thread; when it is called from that very loop it cannot,
so it schedules them: ``await hub.drain()`` then waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal, TypeVar, cast, overload
from uuid import UUID

import structlog
from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import TradeUpdate
from dependency_injector import containers, providers

from alpaca_di._aio import is_async_callable, running_loop, settle
from alpaca_di.containers import AlpacaContainer
from alpaca_di.errors import ConnectionClosedError, SubscriptionOverflowError, describe_error
from alpaca_di.hub.health import ConnectionHealth, StateTransition
from alpaca_di.hub.inbox import Inbox
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.hub.subscription import Handler, SubscriptionStats
from alpaca_di.protocol import StreamKind, validate_channel, validate_symbol
from alpaca_di.protocol.models import parse
from alpaca_di.services.interfaces import DEFAULT_FINAL_EVENTS
from alpaca_di.testing import messages
from alpaca_di.transport.options import ConnectionOptions, OverflowPolicy
from alpaca_di.transport.states import ConnectionState

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

FAKE_KEY_ID = "PKFAKE0000000000"
"""The key id :func:`fake_container` configures."""
FAKE_SECRET = "fake-secret-not-a-real-key"  # noqa: S105 - a placeholder, not a credential
"""The secret :func:`fake_container` configures (a placeholder, never sent anywhere)."""

_log = structlog.get_logger(__name__)
_C = TypeVar("_C", bound=containers.Container)
_D = TypeVar("_D")
AnyContainer = containers.Container | providers.Container[Any]
"""An ``AlpacaContainer``, or the ``providers.Container`` embedding one (``app.alpaca``)."""
_Pair = tuple[str, str]
_Item = tuple[str, str, Any]
_STREAM_PROVIDERS: dict[StreamKind, str] = {
    StreamKind.STOCK: "stock_stream",
    StreamKind.CRYPTO: "crypto_stream",
    StreamKind.OPTION: "option_stream",
    StreamKind.NEWS: "news_stream",
    StreamKind.TRADING: "trading_stream",
}
_CHANNEL_ARGS = (
    "trades",
    "quotes",
    "bars",
    "updated_bars",
    "daily_bars",
    "statuses",
    "lulds",
    "corrections",
    "cancel_errors",
    "orderbooks",
    "news",
)
_POLICIES = ("drop_oldest", "drop_newest", "conflate", "error")
_USE_DEFAULT: Any = object()


# -- subscriptions --------------------------------------------------------------------------


class FakeSubscription:
    """What :meth:`FakeStreamHub.subscribe` returns: the public API of a ``Subscription``.

    ``add``/``remove``/``close``, ``stats``, ``symbols``, ``wait_confirmed`` (returns
    at once while the hub is up), ``get``/``for``/``async for`` when there is no
    handler, and the sync and async context managers.

    Example::

        with hub.subscribe(trades=["AAPL"]) as sub:
            hub.push_trade("AAPL", price=190.0)
            trade = sub.get(timeout=1)
    """

    def __init__(
        self,
        hub: FakeStreamHub,
        handler: Handler | None,
        *,
        maxsize: int | None,
        overflow: OverflowPolicy,
        raw: bool,
        consumer_loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.hub = hub
        self.raw = raw
        self.maxsize = maxsize
        self.overflow: OverflowPolicy = overflow
        self.pairs: set[_Pair] = set()
        self._handler = handler
        self._async_handler = handler is not None and is_async_callable(handler)
        self._loop = consumer_loop
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[_Item] = deque()
        self._latest: dict[_Pair, _Item] = {}
        self._conflate = overflow == "conflate"
        self._closed = False
        self._error: BaseException | None = None
        self._delivered = 0
        self._dropped = 0
        self._errors = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    # -- public API ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed, by the consumer or because the hub closed or failed."""
        return self._closed

    @property
    def stats(self) -> SubscriptionStats:
        """Delivered, dropped, queued and handler-error counts, as one snapshot."""
        with self._lock:
            queued = len(self._latest) if self._conflate else len(self._queue)
            return SubscriptionStats(self._delivered, self._dropped, queued, self._errors)

    @property
    def symbols(self) -> dict[str, frozenset[str]]:
        """The channels and symbols this subscription holds right now."""
        result: dict[str, set[str]] = {}
        for channel, symbol in list(self.pairs):
            result.setdefault(channel, set()).add(symbol)
        return {channel: frozenset(symbols) for channel, symbols in result.items()}

    def add(self, **channels: Any) -> None:
        """Add symbols, e.g. ``sub.add(quotes=["TSLA"])``; validated like the real hub."""
        self._check_open()
        self.pairs |= self.hub._pairs(channels)

    def remove(self, **channels: Any) -> None:
        """Remove symbols, e.g. ``sub.remove(quotes=["MSFT"])``; unknown ones are ignored."""
        self._check_open()
        self.pairs -= self.hub._pairs(channels)

    def close(self) -> None:
        """Stop receiving. Idempotent; queued messages are discarded."""
        if self._mark_closed(None):
            self.hub._forget(self)

    def wait_confirmed(self, timeout: float = 10.0) -> None:
        """Return at once while the hub is up; raise its error when it failed."""
        self._check_confirmable()

    async def confirmed(self, timeout: float = 10.0) -> None:
        """Async :meth:`wait_confirmed`."""
        self._check_confirmable()

    def get(self, timeout: float | None = None) -> Any:
        """Return the next message; ``TimeoutError`` when none came within ``timeout`` s."""
        if self._handler is not None:
            raise TypeError("get() is for subscriptions without a handler")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while True:
                item = self._pop_one()
                if item is not None:
                    self._delivered += 1
                    return item[2]
                if self._error is not None:
                    raise self._error
                if self._closed:
                    raise ConnectionClosedError("subscription is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no message within {timeout} s")
                self._ready.wait(remaining)

    def __iter__(self) -> Iterator[Any]:
        """Yield messages until the subscription is closed."""
        while True:
            try:
                yield self.get()
            except ConnectionClosedError:
                return

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._handler is not None:
            raise TypeError("async iteration is for subscriptions without a handler")
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._waiters.append(waiter)
        try:
            while True:
                with self._lock:
                    item = self._pop_one()
                    if item is not None:
                        self._delivered += 1
                    elif self._error is not None:
                        raise self._error
                    elif self._closed:
                        return
                    else:
                        event.clear()
                if item is not None:
                    yield item[2]
                else:
                    await event.wait()
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def __enter__(self) -> FakeSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> FakeSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<FakeSubscription {state} {self.hub.kind.value} {sorted(self.pairs)[:5]!r}>"

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosedError("subscription is closed")

    def _check_confirmable(self) -> None:
        if self._error is not None:
            raise self._error
        self._check_open()
        self.hub._raise_if_down()

    def _wants(self, channel: str, symbol: str, raw: Any) -> bool:
        pairs = self.pairs
        if (channel, "*") in pairs:
            return True
        if channel == "news":
            symbols = raw.get("symbols") if isinstance(raw, dict) else None
            return any((channel, s) in pairs for s in symbols or ())
        return (channel, symbol) in pairs

    def _mark_closed(self, error: BaseException | None) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._error = error
            self._queue.clear()
            self._latest.clear()
            self._ready.notify_all()
            waiters = list(self._waiters)
        self._wake(waiters)
        return True

    def _deliver(self, item: _Item) -> None:
        """Hand one item to the handler (now) or to the queue (iterators)."""
        if self._closed:
            return
        handler = self._handler
        if handler is None:
            self._enqueue(item)
            return
        try:
            if self._async_handler:
                self._run_async(cast(Callable[[Any], Coroutine[Any, Any, None]], handler), item[2])
            else:
                handler(item[2])
        except Exception as exc:
            with self._lock:
                self._errors += 1
            self.hub.handler_errors.append(exc)
            if self.hub.raise_handler_errors:
                raise
        finally:
            with self._lock:
                self._delivered += 1

    def _run_async(self, handler: Callable[[Any], Coroutine[Any, Any, None]], message: Any) -> None:
        loop = self._loop or self.hub.loop
        if running_loop() is loop:
            task = loop.create_task(handler(message))
            self.hub._track(task, self)
            return
        future = asyncio.run_coroutine_threadsafe(handler(message), loop)
        future.result(timeout=self.hub.handler_timeout)

    def _enqueue(self, item: _Item) -> None:
        overflowed = False
        with self._lock:
            if self._conflate:
                key = (item[0], item[1])
                if key in self._latest:
                    self._dropped += 1
                    del self._latest[key]
                elif self.maxsize is not None and len(self._latest) >= self.maxsize:
                    del self._latest[next(iter(self._latest))]
                    self._dropped += 1
                self._latest[key] = item
            elif self.maxsize is None or len(self._queue) < self.maxsize:
                self._queue.append(item)
            elif self.overflow == "drop_oldest":
                self._queue.popleft()
                self._queue.append(item)
                self._dropped += 1
            elif self.overflow == "drop_newest":
                self._dropped += 1
            else:  # "error"
                self._dropped += 1
                overflowed = True
            self._ready.notify_all()
            waiters = list(self._waiters)
        if overflowed:
            self._mark_closed(
                SubscriptionOverflowError(
                    f"queue of {self.maxsize} messages is full (overflow='error'); "
                    "the subscription was closed"
                )
            )
            self.hub._forget(self)
            return
        self._wake(waiters)

    def _pop_one(self) -> _Item | None:
        if self._conflate:
            if not self._latest:
                return None
            return self._latest.pop(next(iter(self._latest)))
        return self._queue.popleft() if self._queue else None

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        current = running_loop()
        for loop, event in waiters:
            if loop is current:
                event.set()
            else:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # that loop is closed: nobody is iterating any more
                    pass


# -- the hub ----------------------------------------------------------------------------------


class FakeStreamHub:
    """An in-memory :class:`~alpaca_di.services.StreamHub` that you feed by hand.

    Args:
        kind: ``stock``, ``crypto``, ``option``, ``news`` or ``trading``.
        endpoint: reported in ``health()`` (default ``fake://<kind>``).
        fingerprint: the masked key id reported in ``health()``.
        state: the initial :class:`~alpaca_di.transport.ConnectionState`
            (``connected``; use :meth:`set_state` to simulate drops and failures).
        raise_handler_errors: re-raise a sync handler's exception from ``push``
            (by default it is counted, like the real hub, and kept in
            :attr:`handler_errors`).

    Pushing delivers synchronously to every open subscription holding the
    channel and symbol (or ``"*"``; news by any of its symbols), as the
    alpaca-py model (``raw=True`` subscriptions get the dict). Returns how many
    subscriptions received it.

    Example::

        hub = FakeStreamHub("crypto")
        sub = hub.subscribe(quotes="BTC/USD")          # iterate
        hub.push_quote("BTC/USD", bid=60_000.0)
        assert sub.get(timeout=0).symbol == "BTC/USD"
        hub.set_state("reconnecting")                    # listeners are called
    """

    def __init__(
        self,
        kind: StreamKind | str = StreamKind.STOCK,
        *,
        endpoint: str | None = None,
        fingerprint: str = "PK**********0000",
        state: ConnectionState | str = ConnectionState.CONNECTED,
        options: ConnectionOptions | None = None,
        raise_handler_errors: bool = False,
        handler_timeout: float = 10.0,
    ) -> None:
        self.kind = StreamKind(kind)
        self.endpoint = endpoint or f"fake://{self.kind.value}"
        self.fingerprint = fingerprint
        self.options = options or ConnectionOptions()
        self.raise_handler_errors = raise_handler_errors
        self.handler_timeout = handler_timeout
        self.handler_errors: list[BaseException] = []
        self.pushed = 0
        self._lock = threading.RLock()
        self._state = ConnectionState(state)
        self._since = datetime.now(timezone.utc)
        self._transitions: list[StateTransition] = []
        self._last_error: BaseException | None = None
        self._subs: list[FakeSubscription] = []
        self._listeners: list[Callable[[ConnectionState, ConnectionState], None]] = []
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._delivered = 0
        self._dropped = 0
        self._errors = 0

    # -- the StreamHub API ---------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The simulated connection state."""
        return self._state

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """A private event loop on a daemon thread (started on first use, stopped by close).

        It plays the runtime loop: async handlers subscribed from sync code run there.
        """
        with self._lock:
            if self._loop is None:
                if self._closed:
                    raise ConnectionClosedError(f"the fake {self.kind.value} hub is closed")
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()
                    loop.close()

                thread = threading.Thread(
                    target=run, name=f"alpaca-di-fake-{self.kind.value}", daemon=True
                )
                thread.start()
                started.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def subscribe(
        self,
        handler: Handler | None = None,
        *,
        trades: Iterable[str] | str = (),
        quotes: Iterable[str] | str = (),
        bars: Iterable[str] | str = (),
        updated_bars: Iterable[str] | str = (),
        daily_bars: Iterable[str] | str = (),
        statuses: Iterable[str] | str = (),
        lulds: Iterable[str] | str = (),
        corrections: Iterable[str] | str = (),
        cancel_errors: Iterable[str] | str = (),
        orderbooks: Iterable[str] | str = (),
        news: Iterable[str] | str = (),
        trade_updates: bool = False,
        maxsize: int | None = _USE_DEFAULT,
        overflow: OverflowPolicy | None = None,
        raw: bool = False,
    ) -> FakeSubscription:
        """Subscribe like :meth:`StreamHub.subscribe <alpaca_di.services.StreamHub.subscribe>`.

        Channels and symbols are validated exactly as by the real hub.

        Example::

            sub = hub.subscribe(print, quotes=["AAPL"], trades="*")
        """
        if self._closed:
            raise ConnectionClosedError(f"the fake {self.kind.value} hub is closed")
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable or None, got {type(handler).__name__}")
        values = (
            trades,
            quotes,
            bars,
            updated_bars,
            daily_bars,
            statuses,
            lulds,
            corrections,
            cancel_errors,
            orderbooks,
            news,
        )
        channels: dict[str, Any] = {
            name: value for name, value in zip(_CHANNEL_ARGS, values, strict=True) if value
        }
        if trade_updates:
            channels["trade_updates"] = True
        pairs = self._pairs(channels)
        size = self.options.queue_maxsize if maxsize is _USE_DEFAULT else maxsize
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(f"maxsize must be a positive int or None, got {maxsize!r}")
        policy = self.options.overflow if overflow is None else overflow
        if policy not in _POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(_POLICIES)}; got {overflow!r}")
        if self.kind is StreamKind.TRADING:
            size = None  # trade updates are never dropped
        sub = FakeSubscription(
            self, handler, maxsize=size, overflow=policy, raw=raw, consumer_loop=running_loop()
        )
        sub.pairs = pairs
        with self._lock:
            self._subs.append(sub)
        return sub

    def attach(self, inbox: Inbox, **channels: Any) -> FakeSubscription:
        """Like :meth:`StreamHub.attach`: route ``channels`` to an inbox its listener drains."""

        def feed(message: Any) -> None:
            inbox.push([("", "", message)])

        return self.subscribe(feed, **channels)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return at once when the simulated state is up; raise like the real hub otherwise."""
        self._raise_if_down()

    async def ready(self, timeout: float = 10.0) -> None:
        """Async :meth:`wait_ready`."""
        self._raise_if_down()

    def add_state_listener(
        self, listener: Callable[[ConnectionState, ConnectionState], None]
    ) -> Callable[[], None]:
        """Call ``listener(state, previous)`` on every :meth:`set_state`; returns a remover."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def health(self) -> ConnectionHealth:
        """A :class:`~alpaca_di.hub.health.ConnectionHealth` of the fake."""
        with self._lock:
            subs = list(self._subs)
            transitions = list(self._transitions[-10:])
        stats = [sub.stats for sub in subs]
        per_channel: dict[str, set[str]] = {}
        for sub in subs:
            for channel, symbol in sub.pairs:
                per_channel.setdefault(channel, set()).add(symbol)
        state = self._state
        return ConnectionHealth(
            kind=self.kind.value,
            endpoint=self.endpoint,
            fingerprint=self.fingerprint,
            state=state.value,
            state_since=self._since,
            healthy=state
            in (
                ConnectionState.IDLE,
                ConnectionState.CONNECTING,
                ConnectionState.AUTHENTICATING,
                ConnectionState.CONNECTED,
            ),
            consumers=len(subs),
            subscriptions={channel: len(symbols) for channel, symbols in per_channel.items()},
            messages_received=self.pushed,
            messages_delivered=self._delivered + sum(s.delivered for s in stats),
            messages_dropped=self._dropped + sum(s.dropped for s in stats),
            malformed=0,
            handler_errors=self._errors + sum(s.errors for s in stats),
            reconnects=sum(1 for t in transitions if t.state == "reconnecting"),
            last_message_at=None,
            last_error=describe_error(self._last_error),
            transitions=transitions,
        )

    def close(self, timeout: float = 2.0) -> None:
        """Close every subscription and the private loop (if it was started). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs, self._subs = list(self._subs), []
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        for sub in subs:
            sub._mark_closed(None)
        previous, self._state = self._state, ConnectionState.CLOSED
        if previous is not ConnectionState.CLOSED:
            self._notify(ConnectionState.CLOSED, previous)
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            if threading.current_thread() is not thread:
                thread.join(timeout)

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        self.close()

    def __repr__(self) -> str:
        return (
            f"<FakeStreamHub {self.kind.value} {self.state.value} "
            f"consumers={len(self._subs)} pushed={self.pushed}>"
        )

    # -- test controls -------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[FakeSubscription]:
        """The open subscriptions, oldest first."""
        with self._lock:
            return list(self._subs)

    def wanted(self, channel: str) -> frozenset[str]:
        """The symbols at least one open subscription holds on ``channel``.

        Example::

            pricing.track("AAPL")
            assert hub.wanted("quotes") == {"AAPL"}
        """
        with self._lock:
            subs = list(self._subs)
        return frozenset(s for sub in subs for c, s in list(sub.pairs) if c == channel)

    def set_state(self, state: ConnectionState | str, error: BaseException | None = None) -> None:
        """Simulate a transition; state listeners run in this thread before it returns.

        ``failed`` fails every subscription with ``error`` (as the real hub does);
        ``closed`` closes them.

        Example::

            hub.set_state("failed", AuthenticationError(402, "auth failed"))
        """
        new = ConnectionState(state)
        with self._lock:
            previous, self._state = self._state, new
            self._since = datetime.now(timezone.utc)
            if error is not None:
                self._last_error = error
            self._transitions.append(
                StateTransition(state=new.value, at=self._since, error=describe_error(error))
            )
            subs = list(self._subs) if new.is_final else []
            if new.is_final:
                self._subs = []
        final_error = error or ConnectionClosedError("connection failed")
        for sub in subs:
            sub._mark_closed(final_error if new is ConnectionState.FAILED else None)
        self._notify(new, previous)

    def fail(self, error: BaseException) -> None:
        """Shortcut for ``set_state("failed", error)``."""
        self.set_state(ConnectionState.FAILED, error)

    def push(self, channel: str, raw: dict[str, Any], symbol: str | None = None) -> int:
        """Deliver one wire-form message on ``channel``; returns the subscriptions reached.

        The model is built once with :func:`alpaca_di.protocol.models.parse`, exactly
        as the real hub does. ``symbol`` defaults to ``raw["S"]`` (news: ``""``;
        trade updates: the order's symbol).

        Example::

            hub.push("quotes", messages.quote("AAPL", bid=10.0))
        """
        if self._closed:
            raise ConnectionClosedError(f"the fake {self.kind.value} hub is closed")
        validate_channel(self.kind, channel)
        if symbol is None:
            symbol = _symbol_of(channel, raw)
        with self._lock:
            self.pushed += 1
            targets = [sub for sub in self._subs if sub._wants(channel, symbol, raw)]
        if not targets:
            return 0
        model: Any = None
        if any(not sub.raw for sub in targets):
            model = parse(channel, symbol, raw)
        for sub in targets:
            sub._deliver((channel, symbol, raw if sub.raw else model))
        return len(targets)

    def push_quote(self, symbol: str, **fields: Any) -> int:
        """Push a quote built by :func:`alpaca_di.testing.messages.quote` (``bid``, ``ask``...)."""
        return self.push("quotes", messages.quote(symbol, **fields))

    def push_trade(self, symbol: str, **fields: Any) -> int:
        """Push a trade built by :func:`alpaca_di.testing.messages.trade` (``price``...)."""
        return self.push("trades", messages.trade(symbol, **fields))

    def push_bar(self, symbol: str, **fields: Any) -> int:
        """Push a minute bar built by :func:`alpaca_di.testing.messages.bar`."""
        return self.push("bars", messages.bar(symbol, **fields))

    def push_news(self, headline: str, symbols: Iterable[str], **fields: Any) -> int:
        """Push a news article built by :func:`alpaca_di.testing.messages.news`."""
        return self.push("news", messages.news(headline, list(symbols), **fields))

    def push_trade_update(self, event: str | TradeEvent = "fill", /, **fields: Any) -> TradeUpdate:
        """Push a trade update built by :func:`trade_update_message`; returns its model.

        Example::

            update = hub.push_trade_update("fill", symbol="AAPL", qty=10, price=190.0)
            trading.wait_for_order(update.order.id)      # resolves at once
        """
        raw = trade_update_message(event, **fields)
        self.push("trade_updates", raw)
        update = parse("trade_updates", raw["order"]["symbol"], raw)
        assert isinstance(update, TradeUpdate)
        return update

    async def drain(self, timeout: float = 10.0) -> None:
        """Await the async handlers that ``push`` scheduled on the running loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._lock:
                pending = [task for task in self._pending if task.get_loop() is loop]
            if not pending:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(pending)} async handlers still running after {timeout} s")
            await asyncio.wait(pending, timeout=remaining)

    # -- internals (also what services built on a real hub expect) -----------------------

    def _pairs(self, channels: dict[str, Any]) -> set[_Pair]:
        pairs: set[_Pair] = set()
        for channel, symbols in channels.items():
            validate_channel(self.kind, channel)
            if channel == "trade_updates":
                if symbols is not True:
                    raise ValueError("trade_updates takes True, not symbols")
                pairs.add(("trade_updates", "*"))
                continue
            if isinstance(symbols, str):
                symbols = [symbols]
            elif not isinstance(symbols, Iterable):
                raise TypeError(
                    f"{channel} must be a symbol or an iterable of symbols, "
                    f"got {type(symbols).__name__}"
                )
            for symbol in symbols:
                pairs.add((channel, validate_symbol(self.kind, symbol)))
        return pairs

    def _forget(self, sub: FakeSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
                stats = sub.stats
                self._delivered += stats.delivered
                self._dropped += stats.dropped
                self._errors += stats.errors

    def _detach(self, sub: object) -> None:
        """Called by real ``Subscription`` objects built on this hub (TradingService)."""

    def _on_loop(self) -> bool:
        loop = self._loop
        return loop is not None and running_loop() is loop

    def _track(self, task: asyncio.Task[None], sub: FakeSubscription) -> None:
        with self._lock:
            self._pending.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            with self._lock:
                self._pending.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                with sub._lock:
                    sub._errors += 1
                error = finished.exception()
                assert error is not None
                self.handler_errors.append(error)

        task.add_done_callback(done)

    def _raise_if_down(self) -> None:
        state = self._state
        if state is ConnectionState.FAILED:
            raise self._last_error or ConnectionClosedError("connection failed")
        if state is ConnectionState.CLOSED or self._closed:
            raise ConnectionClosedError(f"the fake {self.kind.value} hub is closed")

    def _notify(self, state: ConnectionState, previous: ConnectionState) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(state, previous)
            except Exception:
                _log.exception("fake_hub.state_listener_failed")


def _symbol_of(channel: str, raw: dict[str, Any]) -> str:
    if channel == "news":
        return ""
    if channel == "trade_updates":
        order = raw.get("order")
        symbol = order.get("symbol") if isinstance(order, dict) else None
        return symbol if isinstance(symbol, str) else ""
    symbol = raw.get("S")
    if not isinstance(symbol, str):
        raise ValueError(f"a {channel} message needs a string 'S' (symbol); got {symbol!r}")
    return symbol


# -- wire builders ----------------------------------------------------------------------------


def trade_update_message(
    event: str | TradeEvent = "fill",
    /,
    *,
    symbol: str = "AAPL",
    order_id: str | UUID | None = None,
    client_order_id: str | None = None,
    side: Literal["buy", "sell"] = "buy",
    qty: float = 1,
    price: float = 100.0,
    order_type: str = "market",
    time_in_force: str = "day",
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A trading-stream ``trade_updates`` payload (``data``), as Alpaca sends it.

    ``fill`` and ``partial_fill`` carry ``price``/``qty`` and a filled order;
    other events carry an order in the matching status.

    Example::

        emulator.push_trade_update("PKTEST", trade_update_message("fill", symbol="MSFT"))
    """
    name = event.value if isinstance(event, TradeEvent) else str(event)
    at = (timestamp or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")
    status = {
        "fill": "filled",
        "partial_fill": "partially_filled",
        "new": "new",
        "canceled": "canceled",
        "expired": "expired",
        "rejected": "rejected",
        "replaced": "replaced",
        "pending_new": "pending_new",
        "accepted": "accepted",
    }.get(name, name)
    filled = name in ("fill", "partial_fill")
    filled_qty = qty if name == "fill" else (qty / 2 if name == "partial_fill" else 0)
    order: dict[str, Any] = {
        "id": str(order_id or uuid.uuid4()),
        "client_order_id": client_order_id or str(uuid.uuid4()),
        "created_at": at,
        "updated_at": at,
        "submitted_at": at,
        "filled_at": at if name == "fill" else None,
        "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-di:{symbol}")),
        "symbol": symbol,
        "asset_class": "crypto" if "/" in symbol else "us_equity",
        "qty": f"{qty:g}",
        "filled_qty": f"{filled_qty:g}",
        "filled_avg_price": f"{price:g}" if filled else None,
        "order_class": "simple",
        "order_type": order_type,
        "type": order_type,
        "side": side,
        "time_in_force": time_in_force,
        "status": status,
        "extended_hours": False,
    }
    data: dict[str, Any] = {
        "event": name,
        "execution_id": str(uuid.uuid4()),
        "order": order,
        "timestamp": at,
    }
    if filled:
        data.update(price=f"{price:g}", qty=f"{filled_qty:g}", position_qty=f"{filled_qty:g}")
    return data


# -- fakes of the service protocols -------------------------------------------------------------


class _Signal:
    """A condition that threads wait on with ``cond.wait_for`` and coroutines with
    :meth:`wait_for`, without tying up a thread. Notify with ``cond`` held."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def notify(self) -> None:
        self.cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            settle(loop, future, None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.cond:
                if predicate():
                    return True
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                pass


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
        self._signal = _Signal()
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
    the real service.

    Example::

        orders = FakeOrderUpdates()
        update = orders.push("fill", symbol="AAPL", price=190.0)
        assert orders.wait_for_order(update.order.id, timeout=0.1) is update
        assert await orders.wait_for_order_async(update.order.id) is update
    """

    def __init__(self) -> None:
        self._signal = _Signal()
        self._cond = self._signal.cond
        self._updates: dict[str, list[TradeUpdate]] = {}

    def push(self, event: str | TradeEvent = "fill", /, **fields: Any) -> TradeUpdate:
        """Record a trade update built by :func:`trade_update_message`; returns it."""
        raw = trade_update_message(event, **fields)
        update = parse("trade_updates", raw["order"]["symbol"], raw)
        assert isinstance(update, TradeUpdate)
        self.push_update(update)
        return update

    def push_update(self, update: TradeUpdate) -> None:
        """Record an alpaca-py ``TradeUpdate`` you built yourself."""
        with self._cond:
            self._updates.setdefault(str(update.order.id), []).append(update)
            self._signal.notify()

    def wait_for_order(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
    ) -> TradeUpdate:
        """The latest pushed update of ``order_id`` with one of ``events``."""
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


# -- containers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeStreams:
    """The five fakes overriding a container's stream providers.

    Example::

        fakes = override_streams(container)
        fakes.stock.push_quote("AAPL")
        fakes[StreamKind.TRADING].push_trade_update("fill")
    """

    stock: FakeStreamHub
    crypto: FakeStreamHub
    option: FakeStreamHub
    news: FakeStreamHub
    trading: FakeStreamHub

    def __getitem__(self, kind: StreamKind | str) -> FakeStreamHub:
        hub: FakeStreamHub = getattr(self, StreamKind(kind).value)
        return hub

    def __iter__(self) -> Iterator[FakeStreamHub]:
        return iter((self.stock, self.crypto, self.option, self.news, self.trading))

    def close(self) -> None:
        """Close every fake (idempotent)."""
        for hub in self:
            hub.close()


def override_streams(container: AnyContainer) -> FakeStreams:
    """Override the five stream providers of an ``AlpacaContainer`` with new fakes.

    Everything built on the streams (``pricing_service``, ``trading_service``,
    ``shared_*_stream``, ``health``) then runs on the fakes. Undo with
    :func:`reset_fake_container`.

    Example::

        container = App().alpaca()                 # or an AlpacaContainer
        fakes = override_streams(container)
        fakes.stock.push_quote("AAPL", bid=1.0)
    """
    hubs = {kind: FakeStreamHub(kind) for kind in _STREAM_PROVIDERS}
    for kind, name in _STREAM_PROVIDERS.items():
        provider = getattr(container, name)
        provider.override(providers.Object(hubs[kind]))
    return FakeStreams(
        stock=hubs[StreamKind.STOCK],
        crypto=hubs[StreamKind.CRYPTO],
        option=hubs[StreamKind.OPTION],
        news=hubs[StreamKind.NEWS],
        trading=hubs[StreamKind.TRADING],
    )


def fake_streams(container: AnyContainer) -> FakeStreams:
    """The fakes currently overriding ``container``'s stream providers.

    Raises ``LookupError`` when a stream provider is not overridden by a fake.

    Example::

        fake_streams(container).trading.push_trade_update("fill", symbol="AAPL")
    """
    found: dict[StreamKind, FakeStreamHub] = {}
    for kind, name in _STREAM_PROVIDERS.items():
        hub = _fake_of(getattr(container, name))
        if hub is None:
            raise LookupError(f"{name} is not overridden by a FakeStreamHub")
        found[kind] = hub
    return FakeStreams(
        stock=found[StreamKind.STOCK],
        crypto=found[StreamKind.CRYPTO],
        option=found[StreamKind.OPTION],
        news=found[StreamKind.NEWS],
        trading=found[StreamKind.TRADING],
    )


@overload
def fake_container(container: None = None, **config: Any) -> AlpacaContainer: ...


@overload
def fake_container(container: _C, **config: Any) -> _C: ...


@overload
def fake_container(
    container: providers.Container[_D], **config: Any
) -> providers.Container[_D]: ...


def fake_container(container: Any = None, **config: Any) -> Any:
    """An ``AlpacaContainer`` whose five streams are :class:`FakeStreamHub` objects.

    Without ``container`` a new ``AlpacaContainer`` is built and configured
    with placeholder keys (:data:`FAKE_KEY_ID`), URLs on a closed loopback port
    and a private registry (never used), with ``config`` entries on top. Given a
    ``container`` (yours, or ``app.alpaca`` of a host container), its streams are
    overridden in place, and its configuration is set only when ``config`` is
    given or the container has none. Pair with :func:`reset_fake_container`.

    Example::

        container = fake_container(feed="sip")
        try:
            prices = container.pricing_service()
            prices.track("AAPL")
            fake_streams(container).stock.push_quote("AAPL", bid=10.0, ask=10.2)
            assert prices.price("AAPL") == 10.1
        finally:
            reset_fake_container(container)
    """
    if container is None:
        container = AlpacaContainer()
    if config or not container.config():
        values: dict[str, Any] = {
            "api_key": FAKE_KEY_ID,
            "secret_key": FAKE_SECRET,
            "data_stream_url": "ws://127.0.0.1:9",
            "trading_stream_url": "ws://127.0.0.1:9/stream",
            "api_url": "http://127.0.0.1:9",
        }
        values.update(config)
        container.config.from_dict(values)
        container.registry.override(providers.Object(ConnectionRegistry()))
    override_streams(container)
    return container


def reset_fake_container(container: AnyContainer) -> None:
    """Shut ``container`` down, close its fakes and remove their overrides. Idempotent.

    Example::

        container = fake_container()
        ...
        reset_fake_container(container)
    """
    if running_loop() is None:
        container.shutdown_resources()
    else:
        # On a loop thread shutdown_resources() would return a coroutine; the
        # cleanups are synchronous, so run the sync path on a helper thread.
        errors: list[BaseException] = []

        def shutdown() -> None:
            try:
                container.shutdown_resources()
            except BaseException as exc:  # pragma: no cover - re-raised below
                errors.append(exc)

        thread = threading.Thread(target=shutdown, name="alpaca-di-fake-shutdown")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
    for name in _STREAM_PROVIDERS.values():
        provider = getattr(container, name)
        while True:
            hub = _fake_of(provider)
            if hub is None:
                break
            hub.close()
            provider.reset_last_overriding()


def _fake_of(provider: providers.Provider[Any]) -> FakeStreamHub | None:
    overriding = provider.last_overriding if provider.overridden else None
    if isinstance(overriding, providers.Object):
        value = overriding()
        if isinstance(value, FakeStreamHub):
            return value
    return None
