"""FakeStreamHub: a real :class:`~alpaca_di.hub.StreamHub` that a test feeds by hand.

A fake hub is the production hub on a :class:`~alpaca_di.testing.memory.MemoryUpstream`
(the in-memory seam): subscriptions, reference counts, acks, routing, parsing,
queues, overflow policies and handlers are the real code. What it adds are the
controls a test needs. ``push_quote`` (and its siblings) feeds one wire-form
message through the upstream and returns once every matching handler has run::

    from alpaca_di.testing.fake_streams import FakeStreamHub

    hub = FakeStreamHub("stock")
    seen = []
    hub.subscribe(seen.append, quotes=["AAPL"])
    hub.push_quote("AAPL", bid=189.9, ask=190.1)
    assert seen[0].bid_price == 189.9              # an alpaca.data.models.Quote
    hub.close()

Sync handlers run on the hub's worker threads, async ones on the loop that
subscribed them (the hub's private loop thread when subscribed from sync code),
as in production. ``push`` waits for both, counting each handler call; it cannot
wait for async handlers of the loop it is called from, so there ``await
hub.drain()`` does.

:mod:`alpaca_di.testing.overrides` puts fake hubs in an ``AlpacaContainer``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import TradeUpdate

from alpaca_di._aio import is_async_callable, running_loop
from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConnectionClosedError
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.inbox import Inbox
from alpaca_di.hub.subscription import Handler, Subscription
from alpaca_di.protocol import StreamKind, validate_channel
from alpaca_di.protocol.models import parse
from alpaca_di.testing import messages
from alpaca_di.testing._signal import Signal
from alpaca_di.testing.memory import MemoryUpstream
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.states import ConnectionState

__all__ = ["FAKE_KEY_ID", "FAKE_SECRET", "FakeStreamHub", "FakeSubscription"]

FAKE_KEY_ID = "PKFAKE0000000000"
"""The key id of every fake hub and of :func:`~alpaca_di.testing.overrides.fake_container`."""
FAKE_SECRET = "fake-secret-not-a-real-key"  # noqa: S105 - a placeholder, not a credential
"""The secret of the fakes (a placeholder, never sent anywhere)."""

FakeSubscription = Subscription
"""What a fake hub's ``subscribe`` returns: a real :class:`~alpaca_di.hub.Subscription`."""

_T = TypeVar("_T")
_USE_DEFAULT: Any = object()
_in_handler = threading.local()  # the consumers whose sync handler this thread is running


class _Consumer:
    """A subscription made on a fake hub, and how far its handler has got.

    ``routed`` and ``target`` are written on the hub's loop when a push reaches
    the subscription; ``done`` by the handler wrapper, under the hub's signal.
    The subscription is held weakly: one without a handler that nobody can
    reach is reclaimed, as on any hub (the hub itself keeps handler ones).
    """

    __slots__ = ("_ref", "done", "handles", "loop", "routed", "target")

    def __init__(self, handles: bool, loop: asyncio.AbstractEventLoop | None) -> None:
        self._ref: weakref.ref[Subscription] | None = None
        self.handles = handles
        self.loop = loop  # where an async handler runs; None for sync handlers and iterators
        self.routed = 0  # messages routed to it
        self.target = 0  # handler calls that will have happened once it is idle
        self.done = 0  # handler calls finished

    @property
    def sub(self) -> Subscription | None:
        """The subscription, while it is open and reachable."""
        sub = self._ref() if self._ref is not None else None
        return None if sub is None or sub.closed else sub

    @sub.setter
    def sub(self, sub: Subscription) -> None:
        self._ref = weakref.ref(sub)

    def caught_up(self, target: int) -> bool:
        return self.sub is None or self.done >= target


class FakeStreamHub(StreamHub):
    """A :class:`~alpaca_di.hub.StreamHub` on a :class:`~alpaca_di.testing.memory.MemoryUpstream`.

    Args:
        kind: ``stock``, ``crypto``, ``option``, ``news`` or ``trading``.
        endpoint: reported in ``health()`` (default ``fake://<kind>``).
        fingerprint: the masked key id reported in ``health()``.
        state: the upstream's initial :class:`~alpaca_di.transport.ConnectionState`
            (``connected``; ``idle`` connects at the first subscription). Use
            :meth:`set_state` to simulate drops and failures.
        raise_handler_errors: re-raise a handler's exception from ``push`` (it is
            counted like on any hub, and kept in :attr:`handler_errors`, either way).
        handler_timeout: how long ``push`` waits for the handlers, in seconds.

    The hub runs on a private event loop thread (:attr:`loop`), stopped by :meth:`close`.

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
        kind = StreamKind(kind)
        initial = ConnectionState(state)
        self.raise_handler_errors = raise_handler_errors
        self.handler_timeout = handler_timeout
        self.handler_errors: list[BaseException] = []
        """Every exception a handler raised, oldest first."""
        self.pushed = 0
        self._fake_signal = Signal()
        self._fake_consumers: list[_Consumer] = []
        self._fake_stopped = False
        loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(
            target=_serve, args=(loop, started), name=f"alpaca-di-fake-{kind.value}", daemon=True
        )
        self._thread.start()
        started.wait()
        built: list[MemoryUpstream] = []

        def factory(url: str, **kwargs: Any) -> MemoryUpstream:
            built.append(MemoryUpstream(url, state=initial, **kwargs))
            return built[-1]

        try:
            super().__init__(
                kind=kind,
                endpoint=endpoint or f"fake://{kind.value}",
                credentials=Credentials(FAKE_KEY_ID, FAKE_SECRET),
                options=options or ConnectionOptions(),
                loop=loop,
                connection_factory=factory,
            )
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join()
            raise
        self.fingerprint = fingerprint
        self.upstream: MemoryUpstream = built[0]
        """The in-memory upstream: what is on the wire (``upstream.wire()``, ``upstream.sent``)."""

    # -- the StreamHub API, with handlers the fake can wait for ----------------------------

    def _wrap_handler(
        self, handler: Handler | None
    ) -> tuple[Handler | None, Callable[[Subscription[Any]], None] | None]:
        """Subscribe exactly as on any hub, with handlers the fake can wait for."""
        consumer = _Consumer(handles=handler is not None, loop=None)
        wrapped = self._fake_wrap(handler, consumer) if callable(handler) else handler

        def subscribed(sub: Subscription[Any]) -> None:
            self._fake_track(consumer, sub)
            self._fake_ship()

        return wrapped, subscribed

    def attach(self, inbox: Inbox, **channels: Any) -> Subscription[Any]:
        """Route ``channels`` to an inbox drained by its own listener, as on any hub.

        Counted in what ``push`` returns; its listener runs inside the push (on the
        hub's loop), so there is nothing to wait for.
        """
        sub = super().attach(inbox, **channels)
        self._fake_track(_Consumer(handles=False, loop=None), sub)
        self._fake_ship()
        return sub

    def close(self, timeout: float = 2.0) -> None:
        """Close every subscription, the upstream, and the private loop. Idempotent."""
        if running_loop() is self.loop:  # from an async handler: finish on the loop
            super().close(timeout)
            if not self._fake_stopped:
                self._fake_stopped = True
                self.loop.create_task(self._fake_stop_after_close())
            return
        super().close(timeout)
        self._fake_stop_loop(timeout)

    async def aclose(self) -> None:
        """Async :meth:`close` (on the hub's own loop the loop thread stays: ``close()`` there)."""
        await super().aclose()  # also what close() runs on the loop
        if running_loop() is not self.loop:
            self._fake_stop_loop(2.0)

    def __repr__(self) -> str:
        return (
            f"<FakeStreamHub {self.kind.value} {self.state.value} "
            f"consumers={len(self.subscriptions)} pushed={self.pushed}>"
        )

    # -- test controls ---------------------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        """The open subscriptions made on this hub, oldest first."""
        with self._fake_signal.cond:
            consumers = list(self._fake_consumers)
        return [sub for sub in (c.sub for c in consumers) if sub is not None]

    def wanted(self, channel: str) -> frozenset[str]:
        """The symbols at least one open subscription holds on ``channel``.

        Example::

            pricing.track("AAPL")
            assert hub.wanted("quotes") == {"AAPL"}
        """

        def held() -> frozenset[str]:
            return frozenset(s for sub in self.subscriptions for s in sub.symbols.get(channel, ()))

        return self._fake_call(held)  # after the changes already handed to the loop

    def set_state(self, state: ConnectionState | str, error: BaseException | None = None) -> None:
        """Make the upstream report ``state``; the hub and its listeners react before it returns.

        ``failed`` fails every subscription with ``error`` (as a real failure
        does); ``reconnecting`` then ``connected`` re-sends the subscriptions and
        counts a reconnect.

        Example::

            hub.set_state("failed", AuthenticationError(402, "auth failed"))
        """
        self._fake_call(self.upstream.set_state, ConnectionState(state), error)

    def fail(self, error: BaseException) -> None:
        """Shortcut for ``set_state("failed", error)``."""
        self.set_state(ConnectionState.FAILED, error)

    def push(self, channel: str, raw: dict[str, Any], symbol: str | None = None) -> int:
        """Feed one wire-form message on ``channel``; returns the subscriptions it reached.

        The hub parses it once into the alpaca-py model (``raw=True`` subscriptions
        get the dict). ``symbol`` defaults to ``raw["S"]`` (news: ``""``; trade
        updates: the order's symbol). Returns once every matching handler ran.

        Example::

            hub.push("quotes", messages.quote("AAPL", bid=10.0))
        """
        if self.closed:
            raise ConnectionClosedError(f"the fake {self.kind.value} hub is closed")
        validate_channel(self.kind, channel)
        if symbol is None:
            symbol = _symbol_of(channel, raw)
        errors = len(self.handler_errors)
        reached, waits = self._fake_call(self._fake_feed, channel, symbol, raw)
        if running_loop() is not self.loop:
            self._fake_wait(waits)
        if self.raise_handler_errors and len(self.handler_errors) > errors:
            raise self.handler_errors[errors]
        return reached

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
        """Push a trade update built by :func:`~alpaca_di.testing.messages.trade_update`.

        Returns its model. Example::

            update = hub.push_trade_update("fill", symbol="AAPL", qty=10, price=190.0)
            trading.wait_for_order(update.order.id)      # resolves at once
        """
        raw = messages.trade_update(event, **fields)
        self.push("trade_updates", raw)
        update = parse("trade_updates", raw["order"]["symbol"], raw)
        assert isinstance(update, TradeUpdate)
        return update

    async def drain(self, timeout: float = 10.0) -> None:
        """Await every handler call that pushes so far started, from any loop.

        For async handlers of the loop that pushed: ``push`` cannot wait for them.
        """
        with self._fake_signal.cond:
            consumers = [c for c in self._fake_consumers if c.handles]
        targets = [(c, c.target) for c in consumers]
        if not await self._fake_signal.wait_for(lambda: _all_caught_up(targets), timeout):
            raise TimeoutError(
                f"handlers of the fake {self.kind.value} hub still busy after {timeout} s"
            )

    # -- internals -------------------------------------------------------------------------

    def _fake_track(self, consumer: _Consumer, sub: Subscription[Any]) -> None:
        consumer.sub = sub
        with self._fake_signal.cond:
            consumers = [c for c in self._fake_consumers if c.sub is not None]
            consumers.append(consumer)
            self._fake_consumers = consumers

    def _fake_wrap(self, handler: Handler, consumer: _Consumer) -> Handler:
        """The handler, counting its calls (and keeping its errors) so ``push`` can wait."""
        if is_async_callable(handler):
            consumer.loop = running_loop() or self.loop  # where the hub will run it
            call_async = cast(Callable[[Any], Awaitable[None]], handler)

            async def counted_async(message: Any) -> None:
                try:
                    await call_async(message)
                except Exception as exc:
                    self.handler_errors.append(exc)
                    raise
                finally:
                    # At the drain's next step: it has counted this message by then.
                    asyncio.get_running_loop().call_soon(self._fake_handled, consumer)

            return counted_async
        call = cast(Callable[[Any], None], handler)

        def counted(message: Any) -> None:
            running = _running_here()
            running.add(consumer)
            try:
                call(message)
            except Exception as exc:
                self.handler_errors.append(exc)
                raise
            finally:
                running.discard(consumer)
                self._fake_handled(consumer)

        return counted

    def _fake_handled(self, consumer: _Consumer) -> None:
        with self._fake_signal.cond:
            consumer.done += 1
            self._fake_signal.notify()

    def _fake_feed(self, channel: str, symbol: str, raw: dict[str, Any]) -> tuple[int, list[Any]]:
        """On the loop: feed the upstream; which consumers it reached, how many calls to await."""
        self.pushed += 1
        with self._fake_signal.cond:
            consumers = list(self._fake_consumers)
        reached = [
            (c, sub)
            for c in consumers
            if (sub := c.sub) is not None and _reaches(sub.symbols, channel, symbol, raw)
        ]
        malformed = self.upstream.malformed
        self.upstream.feed([(channel, symbol, raw)])
        if self.upstream.malformed > malformed:  # no model: only raw subscriptions got it
            reached = [(c, sub) for c, sub in reached if sub.raw]
        waits: list[tuple[_Consumer, int]] = []
        for consumer, sub in reached:
            if consumer.handles:
                consumer.routed += 1
                # Dropped only ever changes on this loop: the rest reaches the handler.
                consumer.target = consumer.routed - sub.stats.dropped
                waits.append((consumer, consumer.target))
        return len(reached), waits

    def _fake_wait(self, waits: list[tuple[_Consumer, int]]) -> None:
        here, running = running_loop(), _running_here()
        # Not the handlers this thread must return to first, nor this loop's own.
        pending = [
            (c, n) for c, n in waits if c not in running and (c.loop is None or c.loop is not here)
        ]
        if not pending:
            return
        with self._fake_signal.cond:
            if not self._fake_signal.cond.wait_for(
                lambda: _all_caught_up(pending), self.handler_timeout
            ):
                raise TimeoutError(
                    f"handlers of the fake {self.kind.value} hub still busy after "
                    f"{self.handler_timeout} s"
                )

    def _fake_call(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function`` on the hub's loop after everything handed to it so far."""
        if running_loop() is self.loop:
            return function(*args)
        self._fake_ship()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as exc:
                future.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(run)
        except RuntimeError:
            raise ConnectionClosedError(f"the fake {self.kind.value} hub is closed") from None
        return future.result(self.handler_timeout)

    def _fake_ship(self) -> None:
        """Hand the subscription changes of this task step to the hub's loop now.

        From an application's loop, ``StreamHub`` ships a task step's changes at
        the step's end (one delta); a test that subscribes and pushes in the same
        step expects the subscription to be in place, as it would be on a server.
        """
        caller = running_loop()
        if caller is not None and caller is not self.loop:
            self._ship(caller)

    def _fake_stop_loop(self, timeout: float) -> None:
        """Off the loop: stop it (once) and join its thread."""
        if not self._fake_stopped:
            self._fake_stopped = True
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed already
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    async def _fake_stop_after_close(self) -> None:
        await super().aclose()
        self.loop.stop()


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    """The fake hub's loop thread: run until stopped, then cancel what is left and close."""
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _running_here() -> set[_Consumer]:
    running: set[_Consumer] | None = getattr(_in_handler, "consumers", None)
    if running is None:
        running = _in_handler.consumers = set()
    return running


def _all_caught_up(targets: list[tuple[_Consumer, int]]) -> bool:
    return all(consumer.caught_up(target) for consumer, target in targets)


def _reaches(held: Mapping[str, frozenset[str]], channel: str, symbol: str, raw: Any) -> bool:
    """Whether a subscription holding ``held`` receives the message (the hub's routing rule)."""
    symbols = held.get(channel)
    if not symbols:
        return False
    if "*" in symbols:
        return True
    if channel == "news":
        return any(isinstance(s, str) and s in symbols for s in raw.get("symbols") or ())
    return symbol in symbols


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
