"""Drop-in replacements for alpaca-py's stream classes, running on one shared connection.

Code written against ``StockDataStream``, ``CryptoDataStream``,
``OptionDataStream``, ``NewsDataStream`` or ``TradingStream`` keeps working:
build the shared class from a hub instead of keys, and every object shares the
hub's single socket::

    stream = SharedStockDataStream(container.stock_stream())   # was StockDataStream(key, secret)

    async def on_quote(quote):
        print(quote.symbol, quote.bid_price)

    stream.subscribe_quotes(on_quote, "AAPL", "MSFT")
    stream.run()            # blocks until stream.stop(); opens no socket of its own

Differences from alpaca-py, all deliberate:

* **Fan-out.** Two objects with a handler for AAPL quotes both receive every AAPL
  quote (alpaca-py keeps one handler per symbol per process-wide stream).
  *Within one object* alpaca-py's rule is kept: a second ``subscribe_quotes(h2,
  "AAPL")`` on the same object replaces that object's handler for AAPL; a
  handler for a symbol wins over the object's ``"*"`` handler.
* Handlers must be ``async def`` (``ValueError`` otherwise, like alpaca-py) and
  run on the loop of :meth:`run` / ``_run_forever`` (as in alpaca-py), after the
  hub's reader has moved on: a slow handler delays only this object's
  handlers. Each channel of an object has its own queue (the hub's default
  bound and overflow policy; see the backpressure docs).
* Nothing is received before :meth:`run` (or ``await _run_forever()``) starts,
  as in alpaca-py; subscribing while running, from any thread or from inside a
  handler, never blocks.
* :meth:`stop` releases only this object's subscriptions, wakes ``run()``
  within one loop tick, and is safe from any thread and from inside a handler.
  A ``stop()`` issued before ``run()`` started makes that ``run()`` return at
  once (so a racing start/stop pair never hangs).
* ``unsubscribe_*`` of a symbol this object does not hold is ignored (alpaca-py
  raises ``KeyError``). News matching several of an object's symbols reaches
  each distinct handler once.
* ``raw_data=True`` delivers the decoded dicts (shared; do not mutate). Trading
  updates come as ``{"stream": "trade_updates", "data": {...}}`` as in alpaca-py.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

import structlog

from alpaca_di._aio import running_loop
from alpaca_di.errors import ConnectionClosedError
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.subscription import Subscription
from alpaca_di.protocol import StreamKind, validate_symbol
from alpaca_di.transport.states import ConnectionState

__all__ = [
    "AsyncHandler",
    "SharedCryptoDataStream",
    "SharedNewsDataStream",
    "SharedOptionDataStream",
    "SharedStockDataStream",
    "SharedTradingStream",
]

AsyncHandler = Callable[[Any], Awaitable[None]]
"""An ``async def handler(message)``, as alpaca-py's stream classes take."""

_log = structlog.get_logger(__name__)
# corrections and cancel errors follow the object's trades symbols (Alpaca sends
# them with trades), so they never widen the wire subscription.
_FOLLOWS_TRADES = ("corrections", "cancel_errors")


def _ensure_coroutine(handler: Any) -> None:
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    if not (
        inspect.iscoroutinefunction(target)
        or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - instances with async __call__
        )
    ):
        raise ValueError("handler must be a coroutine function")


class _SharedStream:
    """The run/stop machinery and per-object handler tables shared by every class."""

    _kind: ClassVar[StreamKind]

    def __init__(self, hub: StreamHub, raw_data: bool = False) -> None:
        kind = getattr(hub, "kind", None)
        if kind is None or not hasattr(hub, "subscribe"):
            raise TypeError(f"hub must be a StreamHub, got {type(hub).__name__}")
        if kind is not self._kind:
            raise ValueError(
                f"{type(self).__name__} needs a {self._kind.value} hub, got a "
                f"{StreamKind(kind).value} one"
            )
        if not isinstance(raw_data, bool):
            raise TypeError("raw_data must be True or False")
        self._hub = hub
        self._raw_data = raw_data
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._handlers: dict[str, dict[str, AsyncHandler]] = {}
        self._followers: dict[str, AsyncHandler] = {}  # corrections / cancel_errors
        self._subs: dict[str, Subscription] = {}
        self._wired: dict[str, frozenset[str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._running = False
        self._stop_requested = False

    # -- public lifecycle ----------------------------------------------------------------

    @property
    def hub(self) -> StreamHub:
        """The shared hub this object subscribes on."""
        return self._hub

    @property
    def running(self) -> bool:
        """True between the start of :meth:`run` / ``_run_forever`` and its return."""
        return self._running

    def run(self) -> None:
        """Receive until :meth:`stop`; blocks the calling thread.

        Runs the handlers on a fresh event loop in this thread (any thread will
        do); opens no socket of its own. In a running event loop use ``await
        stream._run_forever()`` instead.
        """
        if running_loop() is not None:
            raise RuntimeError(
                "run() cannot be called from a running event loop; "
                "use 'await stream._run_forever()'"
            )
        try:
            asyncio.run(self._run_forever())
        except KeyboardInterrupt:
            pass

    async def _run_forever(self) -> None:
        """Receive on the running loop until :meth:`stop` (alpaca-py's coroutine name)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._running:
                raise RuntimeError(f"{type(self).__name__} is already running")
            if self._stop_requested:
                self._stop_requested = False
                return
            self._loop = loop
            self._stop_event = stop_event = asyncio.Event()
            self._running = True
            self._wired = {}
            self._changed.notify_all()
        remove_listener = self._hub.add_state_listener(self._on_hub_state)
        try:
            if self._hub.closed or self._hub.state.is_final:
                _log.warning("shared_stream.hub_down", state=self._hub.state.value)
                return
            for channel in self._channels():
                self._apply(channel)
            await stop_event.wait()
        finally:
            remove_listener()
            with self._lock:
                self._running = False
                self._loop = self._stop_event = None
                subs, self._subs, self._wired = list(self._subs.values()), {}, {}
                self._changed.notify_all()
            for sub in subs:
                sub.close()

    def stop(self) -> None:
        """Release this object's subscriptions and make :meth:`run` return.

        Callable from any thread and from inside a handler; never blocks.
        """
        with self._lock:
            if not self._running:
                self._stop_requested = True
                return
        self._end_run()

    def _end_run(self) -> None:
        with self._lock:
            if not self._running:
                return
            loop, event = self._loop, self._stop_event
            subs, self._subs, self._wired = list(self._subs.values()), {}, {}
            self._running = False
            self._changed.notify_all()
        for sub in subs:
            sub.close()
        if loop is None or event is None:
            return
        if running_loop() is loop:
            event.set()
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the run loop is already gone
            pass

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Block until :meth:`run` is running and the server confirmed this object's symbols.

        Not in alpaca-py: it replaces the ``sleep()`` that code usually puts after
        starting ``run()`` in a thread. Raises ``TimeoutError`` (or the stream's
        named error, such as ``SymbolLimitError``). Not on the run loop: ``await
        stream.subscribed()`` there.

        Example::

            threading.Thread(target=stream.run, daemon=True).start()
            stream.wait_subscribed(timeout=10)
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if self._loop is not None and running_loop() is self._loop:
            raise RuntimeError(
                "wait_subscribed() would block the run loop; use 'await subscribed()'"
            )
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self._running and self._in_sync()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    state = "subscribing" if self._running else "not running"
                    raise TimeoutError(f"{type(self).__name__} {state} after {timeout:g} s")
                self._changed.wait(remaining)
            subs = list(self._subs.values())
        for sub in subs:
            sub.wait_confirmed(max(deadline - time.monotonic(), 0.001))

    async def subscribed(self, timeout: float = 10.0) -> None:
        """Async :meth:`wait_subscribed` (safe on the run loop)."""
        await asyncio.to_thread(self.wait_subscribed, timeout)

    def _in_sync(self) -> bool:
        return all(
            self._wired.get(channel, frozenset()) == self._desired(channel)
            for channel in self._channels()
        )

    def _on_hub_state(self, state: ConnectionState, previous: ConnectionState) -> None:
        # On the hub's loop: a closed or failed hub ends run() instead of leaving it hanging.
        if state.is_final:
            _log.warning("shared_stream.hub_ended", state=state.value, stream=type(self).__name__)
            self._end_run()

    async def stop_ws(self) -> None:
        """Async :meth:`stop` (alpaca-py's name)."""
        self.stop()

    async def close(self) -> None:
        """Release this object's subscriptions (the shared socket stays up for others)."""
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        channels = {c: sorted(t)[:5] for c, t in self._handlers.items() if t}
        return f"<{type(self).__name__} {state} {channels!r}>"

    # -- subscriptions ---------------------------------------------------------------------

    def _subscribe(self, channel: str, handler: AsyncHandler, symbols: Iterable[str]) -> None:
        _ensure_coroutine(handler)
        checked = [validate_symbol(self._kind, symbol) for symbol in symbols]
        with self._lock:
            table = self._handlers.setdefault(channel, {})
            for symbol in checked:
                table[symbol] = handler
        self._schedule(channel)

    def _unsubscribe(self, channel: str, symbols: Iterable[str]) -> None:
        with self._lock:
            table = self._handlers.get(channel, {})
            for symbol in symbols:
                table.pop(symbol, None)
        self._schedule(channel)

    def _register_follower(self, channel: str, handler: AsyncHandler) -> None:
        _ensure_coroutine(handler)
        with self._lock:
            self._followers[channel] = handler
        self._schedule(channel)

    def _channels(self) -> list[str]:
        with self._lock:
            return [*self._handlers, *self._followers]

    def _desired(self, channel: str) -> frozenset[str]:
        if channel in _FOLLOWS_TRADES:
            if channel not in self._followers:
                return frozenset()
            return frozenset(self._handlers.get("trades", {}))
        return frozenset(self._handlers.get(channel, {}))

    def _schedule(self, channel: str) -> None:
        """Bring the hub subscription of ``channel`` in line with the handlers (on the run loop)."""
        channels = [channel, *_FOLLOWS_TRADES] if channel == "trades" else [channel]
        with self._lock:
            loop = self._loop if self._running else None
        if loop is None:
            return  # applied when run() starts
        for name in channels:
            if running_loop() is loop:
                self._apply(name)
            else:
                try:
                    loop.call_soon_threadsafe(self._apply, name)
                except RuntimeError:  # the run loop closed meanwhile
                    return

    def _apply(self, channel: str) -> None:
        # On the run loop, so a new subscription's async handler runs there.
        with self._lock:
            if not self._running:
                return
            desired = self._desired(channel)
            wired = self._wired.get(channel, frozenset())
            if desired == wired:
                return
            sub = self._subs.get(channel)
            try:
                if sub is None or sub.closed:
                    if desired:
                        self._subs[channel] = self._open(channel, desired)
                else:
                    added, removed = desired - wired, wired - desired
                    if added:
                        sub.add(**{channel: sorted(added)})
                    if removed:
                        sub.remove(**{channel: sorted(removed)})
            except ConnectionClosedError as exc:
                _log.warning("shared_stream.subscribe_failed", channel=channel, error=str(exc))
                return
            self._wired[channel] = desired
            self._changed.notify_all()

    def _open(self, channel: str, symbols: frozenset[str]) -> Subscription:
        channels: dict[str, Any] = {channel: sorted(symbols)}
        return self._hub.subscribe(self._dispatcher(channel), raw=self._raw_data, **channels)

    def _dispatcher(self, channel: str) -> AsyncHandler:
        if channel in _FOLLOWS_TRADES:

            async def follow(message: Any) -> None:
                handler = self._followers.get(channel)
                if handler is not None:
                    await handler(message)

            return follow
        if channel == "news":
            return self._dispatch_news

        async def dispatch(message: Any) -> None:
            symbol = str(message.get("S") if isinstance(message, dict) else message.symbol)
            with self._lock:
                table = self._handlers.get(channel, {})
                handler = table.get(symbol) or table.get("*")
            if handler is not None:
                await handler(message)

        return dispatch

    async def _dispatch_news(self, message: Any) -> None:
        symbols = message.get("symbols") if isinstance(message, dict) else message.symbols
        with self._lock:
            table = self._handlers.get("news", {})
            handlers = {id(h): h for s in symbols or () if (h := table.get(s)) is not None}
            if not handlers and "*" in table:
                handlers = {0: table["*"]}
        for handler in handlers.values():
            await handler(message)


class SharedStockDataStream(_SharedStream):
    """alpaca-py ``StockDataStream`` API on a shared stock hub.

    Example::

        stream = SharedStockDataStream(container.stock_stream())

        async def on_trade(trade):
            print(trade.symbol, trade.price)

        stream.subscribe_trades(on_trade, "AAPL")
        threading.Thread(target=stream.run, daemon=True).start()
        ...
        stream.stop()
    """

    _kind = StreamKind.STOCK

    def subscribe_trades(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to trades of ``symbols`` (``"*"`` for all)."""
        self._subscribe("trades", handler, symbols)

    def subscribe_quotes(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to quotes of ``symbols``."""
        self._subscribe("quotes", handler, symbols)

    def subscribe_bars(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to minute bars of ``symbols``."""
        self._subscribe("bars", handler, symbols)

    def subscribe_updated_bars(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to updated minute bars of ``symbols``."""
        self._subscribe("updated_bars", handler, symbols)

    def subscribe_daily_bars(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to daily bars of ``symbols``."""
        self._subscribe("daily_bars", handler, symbols)

    def subscribe_trading_statuses(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to trading statuses (halts, resumes) of ``symbols``."""
        self._subscribe("statuses", handler, symbols)

    def register_trade_corrections(self, handler: AsyncHandler) -> None:
        """Receive corrections of the trades this object subscribes to."""
        self._register_follower("corrections", handler)

    def register_trade_cancels(self, handler: AsyncHandler) -> None:
        """Receive cancels/errors of the trades this object subscribes to."""
        self._register_follower("cancel_errors", handler)

    def unsubscribe_trades(self, *symbols: str) -> None:
        """Stop this object's trades of ``symbols``."""
        self._unsubscribe("trades", symbols)

    def unsubscribe_quotes(self, *symbols: str) -> None:
        """Stop this object's quotes of ``symbols``."""
        self._unsubscribe("quotes", symbols)

    def unsubscribe_bars(self, *symbols: str) -> None:
        """Stop this object's minute bars of ``symbols``."""
        self._unsubscribe("bars", symbols)

    def unsubscribe_updated_bars(self, *symbols: str) -> None:
        """Stop this object's updated bars of ``symbols``."""
        self._unsubscribe("updated_bars", symbols)

    def unsubscribe_daily_bars(self, *symbols: str) -> None:
        """Stop this object's daily bars of ``symbols``."""
        self._unsubscribe("daily_bars", symbols)

    def unsubscribe_trading_statuses(self, *symbols: str) -> None:
        """Stop this object's trading statuses of ``symbols``."""
        self._unsubscribe("statuses", symbols)


class SharedCryptoDataStream(_SharedStream):
    """alpaca-py ``CryptoDataStream`` API on a shared crypto hub.

    Example::

        stream = SharedCryptoDataStream(container.crypto_stream())
        stream.subscribe_orderbooks(on_book, "BTC/USD")
        stream.run()
    """

    _kind = StreamKind.CRYPTO

    def subscribe_trades(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to trades of ``symbols`` (``"BTC/USD"``, ``"*"``)."""
        self._subscribe("trades", handler, symbols)

    def subscribe_quotes(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to quotes of ``symbols``."""
        self._subscribe("quotes", handler, symbols)

    def subscribe_bars(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to minute bars of ``symbols``."""
        self._subscribe("bars", handler, symbols)

    def subscribe_updated_bars(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to updated minute bars of ``symbols``."""
        self._subscribe("updated_bars", handler, symbols)

    def subscribe_daily_bars(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to daily bars of ``symbols``."""
        self._subscribe("daily_bars", handler, symbols)

    def subscribe_orderbooks(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to order books of ``symbols``."""
        self._subscribe("orderbooks", handler, symbols)

    def unsubscribe_trades(self, *symbols: str) -> None:
        """Stop this object's trades of ``symbols``."""
        self._unsubscribe("trades", symbols)

    def unsubscribe_quotes(self, *symbols: str) -> None:
        """Stop this object's quotes of ``symbols``."""
        self._unsubscribe("quotes", symbols)

    def unsubscribe_bars(self, *symbols: str) -> None:
        """Stop this object's minute bars of ``symbols``."""
        self._unsubscribe("bars", symbols)

    def unsubscribe_updated_bars(self, *symbols: str) -> None:
        """Stop this object's updated bars of ``symbols``."""
        self._unsubscribe("updated_bars", symbols)

    def unsubscribe_daily_bars(self, *symbols: str) -> None:
        """Stop this object's daily bars of ``symbols``."""
        self._unsubscribe("daily_bars", symbols)

    def unsubscribe_orderbooks(self, *symbols: str) -> None:
        """Stop this object's order books of ``symbols``."""
        self._unsubscribe("orderbooks", symbols)


class SharedOptionDataStream(_SharedStream):
    """alpaca-py ``OptionDataStream`` API on a shared option hub.

    Example::

        stream = SharedOptionDataStream(container.option_stream())
        stream.subscribe_quotes(on_quote, "AAPL250117C00150000")
        stream.run()
    """

    _kind = StreamKind.OPTION

    def subscribe_trades(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to trades of OCC ``symbols``."""
        self._subscribe("trades", handler, symbols)

    def subscribe_quotes(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to quotes of OCC ``symbols``."""
        self._subscribe("quotes", handler, symbols)

    def unsubscribe_trades(self, *symbols: str) -> None:
        """Stop this object's trades of ``symbols``."""
        self._unsubscribe("trades", symbols)

    def unsubscribe_quotes(self, *symbols: str) -> None:
        """Stop this object's quotes of ``symbols``."""
        self._unsubscribe("quotes", symbols)


class SharedNewsDataStream(_SharedStream):
    """alpaca-py ``NewsDataStream`` API on a shared news hub.

    Example::

        stream = SharedNewsDataStream(container.news_stream())
        stream.subscribe_news(on_news, "AAPL", "TSLA")      # or "*"
        stream.run()
    """

    _kind = StreamKind.NEWS

    def subscribe_news(self, handler: AsyncHandler, *symbols: str) -> None:
        """Subscribe ``handler`` to news mentioning ``symbols`` (``"*"`` for all)."""
        self._subscribe("news", handler, symbols)

    def unsubscribe_news(self, *symbols: str) -> None:
        """Stop this object's news of ``symbols``."""
        self._unsubscribe("news", symbols)


class SharedTradingStream(_SharedStream):
    """alpaca-py ``TradingStream`` API on the shared trading hub.

    One handler per object (a second ``subscribe_trade_updates`` replaces it);
    every object receives every update. For order waits that survive
    reconnects, prefer :class:`~alpaca_di.services.trading.TradingService`.

    Example::

        stream = SharedTradingStream(container.trading_stream())

        async def on_update(update):
            print(update.event, update.order.symbol)

        stream.subscribe_trade_updates(on_update)
        stream.run()
    """

    _kind = StreamKind.TRADING

    def subscribe_trade_updates(self, handler: AsyncHandler) -> None:
        """Receive every trade update of the account with ``handler``."""
        _ensure_coroutine(handler)
        with self._lock:
            self._handlers["trade_updates"] = {"*": handler}
        self._schedule("trade_updates")

    def unsubscribe_trade_updates(self) -> None:
        """Stop receiving trade updates on this object (not in alpaca-py)."""
        with self._lock:
            self._handlers.pop("trade_updates", None)
        self._schedule("trade_updates")

    def _open(self, channel: str, symbols: frozenset[str]) -> Subscription:
        return self._hub.subscribe(self._dispatch_update, trade_updates=True, raw=self._raw_data)

    def _desired(self, channel: str) -> frozenset[str]:
        return frozenset({"*"}) if self._handlers.get("trade_updates") else frozenset()

    def _apply(self, channel: str) -> None:
        with self._lock:
            if not self._running:
                return
            wanted = bool(self._handlers.get("trade_updates"))
            sub = self._subs.get(channel)
            if wanted and (sub is None or sub.closed):
                try:
                    self._subs[channel] = self._open(channel, frozenset({"*"}))
                except ConnectionClosedError as exc:
                    _log.warning("shared_stream.subscribe_failed", channel=channel, error=str(exc))
            elif not wanted and sub is not None:
                del self._subs[channel]
                sub.close()
            self._wired[channel] = self._desired(channel) if channel in self._subs else frozenset()
            self._changed.notify_all()

    async def _dispatch_update(self, message: Any) -> None:
        with self._lock:
            handler = self._handlers.get("trade_updates", {}).get("*")
        if handler is None:
            return
        if self._raw_data:
            message = {"stream": "trade_updates", "data": message}
        await handler(message)
