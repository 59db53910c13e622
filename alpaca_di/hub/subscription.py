"""One consumer's view of a shared stream: its symbols, its inbox, its handler.

A :class:`Subscription` is created by :meth:`StreamHub.subscribe
<alpaca_di.hub.subscribing.Subscriber.subscribe>`. The hub's reader appends to its
bounded :class:`~alpaca_di.hub.inbox.Inbox` and never waits for it; the
consumer drains it with a handler (sync or async) or by iterating::

    sub = hub.subscribe(on_quote, quotes=["AAPL", "MSFT"])   # handler
    sub.add(quotes=["TSLA"]); sub.remove(quotes=["MSFT"])
    print(sub.stats)                                          # delivered, dropped ...
    sub.close()

    with hub.subscribe(trades=["AAPL"]) as sub:               # iterate, sync
        trade = sub.get(timeout=5)

    async with hub.subscribe(quotes=["AAPL"]) as sub:         # iterate, async
        async for quote in sub:
            ...

A subscription talks to whatever feeds it through the small :class:`Feed`
protocol (a hub, or the :class:`~alpaca_di.services.TradingService`), never
through their private members.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol

import structlog
from typing_extensions import TypeVar

from alpaca_di._aio import is_async_callable, running_loop
from alpaca_di.errors import ConnectionClosedError, describe_error
from alpaca_di.hub.delivery import AsyncDrains, HandlerPool
from alpaca_di.hub.inbox import Inbox, Item, MessageForm, Pair, SubscriptionStats
from alpaca_di.hub.latency import SAMPLE_EVERY, latency_observer, sample
from alpaca_di.protocol import StreamKind
from alpaca_di.transport.options import OverflowPolicy

if TYPE_CHECKING:
    from alpaca_di.protocol.models import ModelMessage

__all__ = ["Feed", "Handler", "ModelMessage", "Subscription", "SubscriptionStats"]

M = TypeVar("M", covariant=True, default=Any)
"""What a subscription delivers (``ModelMessage``, ``MarketStruct``, ``dict[str, Any]``)."""

Handler = Callable[[Any], None] | Callable[[Any], Awaitable[None]]
_BATCH = 256
_LOGGED_ERRORS = 10  # handler errors logged with a traceback, per subscription...
_LOG_EVERY = 1000  # ...then one in this many (all are counted)
_log = structlog.get_logger("alpaca_di.subscription")


class Feed(Protocol):
    """What a :class:`Subscription` needs from the source that routes to its inbox."""

    @property
    def kind(self) -> StreamKind:
        """The stream kind (for messages and logs)."""
        ...

    @property
    def endpoint(self) -> str:
        """The stream's URL (for logs)."""
        ...

    def pairs(self, channels: Mapping[str, Any]) -> set[Pair]:
        """Validate ``add()``/``remove()`` arguments; raises naming the bad one."""
        ...

    def change(self, inbox: Inbox, pairs: set[Pair], *, add: bool) -> None:
        """Route (or stop routing) ``pairs`` to ``inbox``; thread-safe, never blocks."""
        ...

    def detach(self, inbox: Inbox) -> None:
        """Stop routing to a closed ``inbox``; thread-safe, never blocks."""
        ...

    def abandon(self, inbox: Inbox) -> None:
        """Like :meth:`detach`, safe from a garbage-collection finalizer (never inline)."""
        ...

    def wait_confirmed(self, inbox: Inbox, timeout: float) -> None:
        """Block until the server acknowledged every pair of ``inbox``."""
        ...

    async def confirmed(self, inbox: Inbox, timeout: float) -> None:
        """Async :meth:`wait_confirmed`."""
        ...


class Subscription(Generic[M]):
    """A consumer's channels and symbols on one hub, with its own bounded queue.

    Typed by what it delivers (``Subscription[MarketStruct]`` for
    ``hub.subscribe(..., form="struct")``; see :meth:`StreamHub.subscribe
    <alpaca_di.hub.subscribing.Subscriber.subscribe>`).

    A handler that raises an ``Exception`` is counted and the subscription goes on; one
    that raises ``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit`` ends this
    subscription only (counted, logged once, kept as its error) and is not re-raised:
    to stop the process from a handler, signal it (``os.kill(os.getpid(), SIGTERM)``).

    Thread-safe: ``add``, ``remove`` and ``close`` may be called from any thread,
    from an async task, or from inside the handler itself. The handler never runs
    concurrently with itself and sees messages in wire order. An async handler
    runs on the loop that subscribed it; a sync handler runs on a worker thread.
    Without a handler, read with :meth:`get`, ``for``, or ``async for``.

    A subscription with a handler lives until it is closed (``hub.subscribe(handler,
    ...)`` with the result discarded is a normal idiom). One without a handler that
    nobody can reach any more (neither it nor an iterator over it) is reclaimed: its
    symbols leave the wire and its queue is freed.

    Example::

        with hub.subscribe(quotes=["AAPL"]) as sub:
            quote = sub.get(timeout=5)
    """

    def __init__(
        self,
        feed: Feed,
        handler: Handler | None,
        *,
        inbox: Inbox,
        consumer_loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._feed = feed
        self._inbox = inbox
        self._handler = handler
        self._loop = consumer_loop
        self._async_handler = handler is not None and is_async_callable(handler)
        self._drain_scheduled = False  # queued or being drained; guarded by the inbox's lock
        self._wakeup: _Wakeup | None = None
        self._pooled = handler is not None and not self._async_handler
        self._until_sample = 1  # messages until the next latency sample (when sampling)
        if handler is None:
            # Nothing but this handle (and its iterators) can read the inbox: once
            # they are unreachable, nobody ever will. The finalizer holds no
            # reference to the handle.
            weakref.finalize(self, _reclaim, feed, inbox)
            return
        if self._pooled:
            HandlerPool.shared().acquire()
        if self._async_handler:
            if consumer_loop.is_closed():
                inbox.close()
                raise ConnectionClosedError(f"the {feed.kind.value} stream's event loop is closed")
            self._drains = AsyncDrains.of(consumer_loop)
        inbox.listener = self

    # -- public API ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed, by the consumer or because the hub closed."""
        return self._inbox.closed

    @property
    def name(self) -> str | None:
        """The consumer's name given at subscribe (metrics group by it), or ``None``."""
        return self._inbox.name

    @property
    def raw(self) -> bool:
        """Whether messages are the decoded dicts (``form == "raw"``)."""
        return self._inbox.raw

    @property
    def form(self) -> MessageForm:
        """What messages are: ``"model"``, ``"struct"`` or ``"raw"``."""
        return self._inbox.form

    @property
    def maxsize(self) -> int | None:
        """The queue's bound (``None``: unbounded, as for trade updates)."""
        return self._inbox.maxsize

    @property
    def overflow(self) -> OverflowPolicy:
        """What a full queue does: ``drop_oldest``, ``drop_newest``, ``conflate`` or ``error``."""
        return self._inbox.overflow

    @property
    def stats(self) -> SubscriptionStats:
        """Delivered, dropped, queued and handler-error counts, as one snapshot."""
        return self._inbox.stats()

    @property
    def symbols(self) -> dict[str, frozenset[str]]:
        """The channels and symbols this subscription holds right now."""
        result: dict[str, set[str]] = {}
        for channel, symbol in list(self._inbox.pairs):
            result.setdefault(channel, set()).add(symbol)
        return {channel: frozenset(symbols) for channel, symbols in result.items()}

    def add(self, **channels: Any) -> None:
        """Add symbols, e.g. ``sub.add(quotes=["TSLA"], trades=["TSLA"])``.

        Validated at the call (``ValueError`` names a bad symbol or channel); the
        wire subscribe goes out with the next coalesced delta.
        """
        self._check_open()
        pairs = self._feed.pairs(channels)
        self._inbox.hold(pairs, add=True)
        self._feed.change(self._inbox, pairs, add=True)

    def remove(self, **channels: Any) -> None:
        """Remove symbols, e.g. ``sub.remove(quotes=["MSFT"])``. Unknown ones are ignored.

        Once it returns, no message of the removed symbols is delivered, even one
        that was queued already (a sync handler call that was already starting on
        its worker thread may still complete).
        """
        self._check_open()
        pairs = self._feed.pairs(channels)
        self._inbox.hold(pairs, add=False)
        self._feed.change(self._inbox, pairs, add=False)

    def close(self) -> None:
        """Stop receiving. Idempotent; queued messages are discarded, never delivered."""
        if self._inbox.close():
            self._feed.detach(self._inbox)

    def wait_confirmed(self, timeout: float = 10.0) -> None:
        """Block until the server acknowledged every symbol of this subscription.

        Raises :class:`~alpaca_di.errors.SymbolLimitError` when the server refused
        some (they were rolled back), ``TimeoutError`` when time runs out.
        """
        self._feed.wait_confirmed(self._inbox, timeout)

    async def confirmed(self, timeout: float = 10.0) -> None:
        """Async form of :meth:`wait_confirmed`."""
        await self._feed.confirmed(self._inbox, timeout)

    def get(self, timeout: float | None = None) -> M:
        """Return the next message, waiting up to ``timeout`` seconds.

        Raises ``TimeoutError`` when nothing came, :class:`ConnectionClosedError`
        once the subscription is closed and drained.
        """
        if self._handler is not None:
            raise TypeError("get() is for subscriptions without a handler")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise ValueError(f"timeout must be a number of seconds >= 0, or None; got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        inbox = self._inbox
        with inbox.ready:
            while True:
                item = inbox.pop()
                if item is not None:
                    inbox.delivered += 1
                    if latency_observer() is not None:
                        self._sample((item,))
                    message: M = item[2]
                    return message
                if inbox.error is not None:
                    raise inbox.error
                if inbox.closed:
                    raise ConnectionClosedError("subscription is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no message within {timeout} s")
                inbox.sleepers += 1
                try:
                    inbox.ready.wait(remaining)
                finally:
                    inbox.sleepers -= 1

    def __iter__(self) -> Iterator[M]:
        """Yield messages until the subscription is closed."""
        while True:
            try:
                yield self.get()
            except ConnectionClosedError:
                return

    def __aiter__(self) -> AsyncIterator[M]:
        if self._handler is not None:
            raise TypeError("async iteration is for subscriptions without a handler")
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[M]:
        inbox = self._inbox
        wakeup = self._wakeup
        if wakeup is None:
            self._wakeup = wakeup = _Wakeup(asyncio.get_running_loop(), self._feed, inbox)
            inbox.listener = wakeup
        event = wakeup.event
        while True:
            with inbox.lock:
                wakeup.pending = False
                item = inbox.pop()
                if item is not None:
                    inbox.delivered += 1
                    if latency_observer() is not None:
                        self._sample((item,))
                elif inbox.error is not None:
                    raise inbox.error
                elif inbox.closed:
                    return
                else:
                    event.clear()
            if item is not None:
                yield item[2]
            else:
                await event.wait()

    def __enter__(self) -> Subscription[M]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription[M]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        pairs = sorted(self._inbox.pairs)[:5]
        return f"<{type(self).__name__} {state} {self._feed.kind.value} {pairs!r}>"

    # -- the inbox's listener (handler subscriptions) -------------------------------

    def inbox_ready(self) -> None:
        """Items arrived: schedule a drain (called by the inbox, outside its lock)."""
        inbox = self._inbox
        with inbox.lock:
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        if not self._async_handler:
            HandlerPool.shared().submit(self._drain_sync)
            return
        self._drains.schedule(self, on_loop=running_loop() is self._loop)

    def loop_closed(self) -> None:
        """The consumer loop closed with messages queued: nobody will read them."""
        if self._inbox.close():
            self._feed.abandon(self._inbox)

    def inbox_closed(self, error: BaseException | None) -> None:
        """The inbox closed: release the worker pool (a drain in progress stops by itself)."""
        if error is not None:
            _log.error("subscription.failed", kind=self._feed.kind.value, error=str(error))
        if self._pooled:
            HandlerPool.shared().release()

    # -- drains --------------------------------------------------------------------

    def _drain_sync(self) -> None:
        handler = self._handler
        inbox = self._inbox
        assert handler is not None
        delivered = 0
        with inbox.lock:
            batch = inbox.take(_BATCH)
        try:  # whatever fails below, the finally re-arms the drain: never a stuck consumer
            if batch and latency_observer() is not None:
                self._sample(batch)
            for item in batch:
                if inbox.filtering:
                    if inbox.closed:
                        break
                    if not inbox.wants(item):
                        continue
                try:
                    handler(item[2])
                except Exception:
                    self._handler_failed()
                except BaseException as exc:  # sys.exit(), KeyboardInterrupt... in a handler
                    self._handler_exited(exc)
                    break
                delivered += 1
        finally:
            with inbox.lock:
                inbox.delivered += delivered
                more = not inbox.closed and inbox.queued > 0
                if not more:
                    self._drain_scheduled = False
        if more:  # yield the worker so other subscriptions get their turn
            HandlerPool.shared().submit(self._drain_sync)

    async def deliver_ready(self) -> None:
        """Deliver what is queued to the async handler, until the inbox is empty.

        Run by one of the loop's :class:`~alpaca_di.hub.delivery.AsyncDrains` tasks,
        never by two at once.
        """
        handler = self._handler
        inbox = self._inbox
        assert handler is not None
        while True:
            with inbox.lock:
                batch = inbox.take_all()
                if not batch:
                    self._drain_scheduled = False
                    return
            delivered = 0
            try:
                if latency_observer() is not None:
                    self._sample(batch)
                for item in batch:
                    if inbox.filtering:  # a pair was removed, or the inbox closed
                        if inbox.closed:
                            return
                        if not inbox.wants(item):
                            continue
                    try:
                        await handler(item[2])  # type: ignore[misc]
                    except Exception:
                        self._handler_failed()
                    except asyncio.CancelledError:
                        if _cancelled():
                            with inbox.lock:  # the loop shuts down: leave it drainable
                                self._drain_scheduled = False
                            raise
                        self._handler_failed()  # the handler's own, not the drain's
                    except BaseException as exc:  # sys.exit(), KeyboardInterrupt... in a handler
                        self._handler_exited(exc)
                        return
                    delivered += 1
            finally:
                with inbox.lock:
                    inbox.delivered += delivered

    def _sample(self, batch: Sequence[Item]) -> None:
        """Time the batch's first message, once every ``SAMPLE_EVERY`` messages."""
        self._until_sample -= len(batch)
        if self._until_sample <= 0:
            self._until_sample = SAMPLE_EVERY
            sample(self._feed.kind.value, self._feed.endpoint, batch[0][2])

    def _handler_failed(self) -> None:
        with self._inbox.lock:
            self._inbox.errors += 1
            errors = self._inbox.errors
        # Rendering a traceback costs far more than a message (milliseconds with
        # rich): a handler failing on every message must not flood the log and
        # starve every other consumer of the process. Count all, log a sample.
        if errors <= _LOGGED_ERRORS or errors % _LOG_EVERY == 0:
            _log.exception(
                "subscription.handler_failed",
                kind=self._feed.kind.value,
                endpoint=self._feed.endpoint,
                errors=errors,
                sampled=errors >= _LOGGED_ERRORS,
            )

    def _handler_exited(self, exc: BaseException) -> None:
        """A handler raised ``SystemExit``, ``KeyboardInterrupt`` or another BaseException.

        Only this subscription ends: the exception is counted as a handler error, logged
        once, and kept as the subscription's error. It is not re-raised: it would end a
        worker thread or the loop every other consumer shares, and it could not reach
        the application's main thread anyway. A handler that must stop the process
        signals it (``os.kill(os.getpid(), signal.SIGTERM)``) or calls ``os._exit``.
        """
        with self._inbox.lock:
            self._inbox.errors += 1
        _log.error(
            "subscription.handler_exited",
            kind=self._feed.kind.value,
            endpoint=self._feed.endpoint,
            error=describe_error(exc),
        )
        if self._inbox.close(exc):
            self._feed.detach(self._inbox)

    def _check_open(self) -> None:
        if self._inbox.closed:
            raise ConnectionClosedError("subscription is closed")


class _Wakeup:
    """Wakes an ``async for`` over an inbox; holds no reference to its subscription."""

    __slots__ = ("event", "feed", "inbox", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, feed: Feed, inbox: Inbox) -> None:
        self.loop = loop
        self.feed = feed
        self.inbox = inbox
        self.event = asyncio.Event()
        self.pending = False

    def inbox_ready(self) -> None:
        if not self.pending:
            self.pending = True
            if not _set_soon(self.loop, self.event) and self.inbox.close():
                self.feed.abandon(self.inbox)  # its loop is closed: nobody will read

    def inbox_closed(self, error: BaseException | None) -> None:
        _set_soon(self.loop, self.event)


def _cancelled() -> bool:
    """Whether the running task is being cancelled (not a handler's own CancelledError)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is None or cancelling() > 0


def _set_soon(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> bool:
    """Set ``event`` on its loop; ``False`` if that loop is closed."""
    if running_loop() is loop:
        event.set()
        return True
    try:
        loop.call_soon_threadsafe(event.set)
    except RuntimeError:
        return False
    return True


def _reclaim(feed: Feed, inbox: Inbox) -> None:
    """Finalizer of an iterator subscription nobody can reach: free its symbols and queue."""
    if inbox.close():
        feed.abandon(inbox)
        _log.debug("subscription.reclaimed", kind=feed.kind.value, pairs=len(inbox.pairs))
