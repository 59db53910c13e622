"""One consumer's view of a shared stream: its symbols, its queue, its handler.

A :class:`Subscription` is created by :meth:`StreamHub.subscribe
<alpaca_di.services.StreamHub.subscribe>`. The hub's reader appends to its
bounded queue and never waits for it; the consumer drains the queue with a
handler (sync or async) or by iterating::

    sub = hub.subscribe(on_quote, quotes=["AAPL", "MSFT"])   # handler
    sub.add(quotes=["TSLA"]); sub.remove(quotes=["MSFT"])
    print(sub.stats)                                          # delivered, dropped ...
    sub.close()

    with hub.subscribe(trades=["AAPL"]) as sub:               # iterate, sync
        trade = sub.get(timeout=5)

    async with hub.subscribe(quotes=["AAPL"]) as sub:         # iterate, async
        async for quote in sub:
            ...
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

from alpaca_di._aio import is_async_callable
from alpaca_di.errors import ConnectionClosedError, SubscriptionOverflowError, describe_error
from alpaca_di.hub.delivery import HandlerPool
from alpaca_di.transport.options import OverflowPolicy

if TYPE_CHECKING:
    from alpaca_di.hub.hub import StreamHub

__all__ = ["Handler", "Subscription", "SubscriptionStats"]

Handler = Callable[[Any], None] | Callable[[Any], Awaitable[None]]
_Item = tuple[str, str, Any]
_BATCH = 256
_LOGGED_ERRORS = 10  # handler errors logged with a traceback, per subscription...
_LOG_EVERY = 1000  # ...then one in this many (all are counted)
_log = structlog.get_logger("alpaca_di.subscription")



@dataclass(frozen=True)
class SubscriptionStats:
    """Counters of one subscription (an immutable snapshot).

    Attributes:
        delivered: messages handed to the handler or the iterator.
        dropped: messages discarded by the overflow policy (or conflated away).
        queued: messages waiting in the queue now.
        errors: exceptions raised by the handler (all counted; the first ten of a
            subscription are logged with their traceback, then one in a thousand).
    """

    delivered: int
    dropped: int
    queued: int
    errors: int


class Subscription:
    """A consumer's channels and symbols on one hub, with its own bounded queue.

    A handler that raises an ``Exception`` is counted and the subscription goes on; one
    that raises ``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit`` ends this
    subscription only (counted, logged once, kept as its error) and is not re-raised:
    to stop the process from a handler, signal it (``os.kill(os.getpid(), SIGTERM)``).

    Thread-safe: ``add``, ``remove`` and ``close`` may be called from any thread,
    from an async task, or from inside the handler itself. The handler never runs
    concurrently with itself and sees messages in wire order. An async handler
    runs on the loop that subscribed it; a sync handler runs on a worker thread.
    Without a handler, read with :meth:`get`, ``for``, or ``async for``.
    """

    def __init__(
        self,
        hub: StreamHub,
        handler: Handler | None,
        *,
        maxsize: int | None,
        overflow: OverflowPolicy,
        raw: bool,
        consumer_loop: asyncio.AbstractEventLoop,
        never_drop: bool = False,
    ) -> None:
        self.hub = hub
        self.raw = raw
        self.maxsize = None if never_drop else maxsize
        self.overflow: OverflowPolicy = overflow
        self._handler = handler
        self._loop = consumer_loop
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[_Item] = deque()
        self._latest: dict[tuple[str, str], _Item] = {}  # the queue under "conflate"
        self._conflate = overflow == "conflate" and not never_drop
        self._closed = False
        self._overflowed = False
        self._error: BaseException | None = None
        self._delivered = 0
        self._dropped = 0
        self._errors = 0
        # Owned by the hub's loop:
        self.pairs: set[tuple[str, str]] = set()
        self.unconfirmed: set[tuple[str, str]] = set()
        self.rejection: BaseException | None = None
        self._pending_changes = 0
        # The consumer's own view of its pairs, changed at once by add() and remove()
        # (the hub applies changes later, on its loop). Once a pair was removed,
        # deliveries are checked against it: nothing of a removed pair reaches the
        # consumer after remove() returned, even if it was queued already.
        self._held: frozenset[tuple[str, str]] = frozenset()
        self._filtering = False
        # Wake-up plumbing, by mode:
        self._async_handler = handler is not None and is_async_callable(handler)
        self._drain_scheduled = False
        self._wake_pending = False
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        if handler is not None and not self._async_handler:
            HandlerPool.shared().acquire()

    def _start(self) -> None:
        """Start the async handler's drain task (called on the consumer loop)."""
        if self._async_handler:
            self._event = asyncio.Event()
            self._task = self._loop.create_task(self._drain_async())

    # -- public API ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed, by the consumer or because the hub closed."""
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
        """Add symbols, e.g. ``sub.add(quotes=["TSLA"], trades=["TSLA"])``.

        Validated at the call (``ValueError`` names a bad symbol or channel); the
        wire subscribe goes out with the next coalesced delta.
        """
        self._check_open()
        pairs = self.hub._pairs(channels)
        with self._lock:
            self._held = self._held | pairs
        self.hub._change(self, pairs, add=True)

    def remove(self, **channels: Any) -> None:
        """Remove symbols, e.g. ``sub.remove(quotes=["MSFT"])``. Unknown ones are ignored.

        Once it returns, no message of the removed symbols is delivered, even one
        that was queued already (a sync handler call that was already starting on
        its worker thread may still complete).
        """
        self._check_open()
        pairs = self.hub._pairs(channels)
        with self._lock:
            self._held = self._held - pairs
            self._filtering = True
        self.hub._change(self, pairs, add=False)

    def close(self) -> None:
        """Stop receiving. Idempotent; queued messages are discarded, never delivered."""
        if not self._mark_closed(None):
            return
        self.hub._detach(self)

    def wait_confirmed(self, timeout: float = 10.0) -> None:
        """Block until the server acknowledged every symbol of this subscription.

        Raises :class:`~alpaca_di.errors.SymbolLimitError` when the server refused
        some (they were rolled back), ``TimeoutError`` when time runs out.
        """
        self.hub._wait_confirmed(self, timeout)

    async def confirmed(self, timeout: float = 10.0) -> None:
        """Async form of :meth:`wait_confirmed`."""
        await self.hub._await_confirmed(self, timeout)

    def get(self, timeout: float | None = None) -> Any:
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
        with self._ready:
            while True:
                item = self._pop_one()
                if item is not None:
                    if self._filtering and not self._wants(item):
                        continue
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
        if self._event is None:
            self._loop, self._event = loop, event
        while True:
            with self._lock:
                self._wake_pending = False
                item = self._pop_one()
                while item is not None and self._filtering and not self._wants(item):
                    item = self._pop_one()
                if item is not None:
                    self._delivered += 1
                elif self._error is not None:
                    raise self._error
                elif self._closed:
                    return
                else:
                    self._event.clear()
            if item is not None:
                yield item[2]
            else:
                await self._event.wait()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
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
        return f"<Subscription {state} {self.hub.kind.value} {sorted(self.pairs)[:5]!r}>"

    # -- producer side (the hub's loop) -----------------------------------------

    def _push(self, items: list[_Item]) -> None:
        with self._lock:
            if self._closed:
                return
            if self._conflate:
                self._push_conflated(items)
            elif self.maxsize is None:
                self._queue.extend(items)
            else:
                self._push_bounded(items)
            overflowed = self._overflowed
            if self._handler is None:
                self._ready.notify()
            schedule = not self._drain_scheduled and self._handler is not None
            if schedule and not self._async_handler:
                self._drain_scheduled = True
            wake = self._event is not None and not self._wake_pending
            if wake:
                self._wake_pending = True
        if overflowed:
            self._fail(
                SubscriptionOverflowError(
                    f"queue of {self.maxsize} messages is full (overflow='error'); "
                    "the subscription was closed"
                )
            )
        elif schedule and not self._async_handler:
            HandlerPool.shared().submit(self._drain_sync)
        elif wake:
            self._wake()

    def _push_bounded(self, items: list[_Item]) -> None:
        queue, maxsize = self._queue, self.maxsize
        assert maxsize is not None
        room = maxsize - len(queue)
        if len(items) <= room:
            queue.extend(items)
            return
        policy = self.overflow
        if policy == "drop_oldest":
            overflow = len(items) - room
            if overflow >= len(queue):
                self._dropped += len(queue) + len(items) - maxsize
                queue.clear()
                queue.extend(items[-maxsize:])
            else:
                for _ in range(overflow):
                    queue.popleft()
                queue.extend(items)
                self._dropped += overflow
        elif policy == "drop_newest":
            queue.extend(items[: max(room, 0)])
            self._dropped += len(items) - max(room, 0)
        else:  # "error"
            queue.extend(items[: max(room, 0)])
            self._dropped += len(items) - max(room, 0)
            self._overflowed = True

    def _push_conflated(self, items: list[_Item]) -> None:
        latest, maxsize = self._latest, self.maxsize
        for item in items:
            key = (item[0], item[1])
            if key in latest:
                self._dropped += 1
            elif maxsize is not None and len(latest) >= maxsize:
                del latest[next(iter(latest))]
                self._dropped += 1
            latest[key] = item

    def _wants(self, item: _Item) -> bool:
        """Whether the consumer still holds the pair of ``item`` (see ``remove()``)."""
        channel = item[0]
        held = self._held
        if (channel, item[1]) in held or (channel, "*") in held:
            return True
        if channel == "news":  # routed by the article's symbols, not item[1]
            message = item[2]
            if isinstance(message, dict):
                symbols = message.get("symbols")
            else:
                symbols = getattr(message, "symbols", None)
            if not isinstance(symbols, (list, tuple)):
                return False
            # The server's list may hold anything: only strings can name a symbol.
            return any(isinstance(s, str) and (channel, s) in held for s in symbols)
        return False

    def _pop_one(self) -> _Item | None:
        if self._conflate:
            if not self._latest:
                return None
            key = next(iter(self._latest))
            return self._latest.pop(key)
        return self._queue.popleft() if self._queue else None

    def _take(self) -> list[_Item]:
        with self._lock:
            if self._closed:
                return []
            if self._conflate:
                keys = list(self._latest)[:_BATCH]
                return [self._latest.pop(key) for key in keys]
            queue = self._queue
            if len(queue) <= _BATCH:
                batch = list(queue)
                queue.clear()
                return batch
            return [queue.popleft() for _ in range(_BATCH)]

    def _take_all(self) -> deque[_Item] | list[_Item]:
        """Everything queued, in order; call with the lock held.

        For the async drain, which never yields between the messages of a batch
        unless the handler does: a batch limit buys no fairness there, and
        swapping the deque out costs O(1) instead of a ``popleft`` per message.
        """
        if self._closed:
            return []
        if self._conflate:
            items = list(self._latest.values())
            self._latest.clear()
            return items
        queue = self._queue
        if not queue:
            return []
        self._queue = deque()
        return queue

    def _wake(self) -> None:
        event, loop = self._event, self._loop
        assert event is not None
        if self.hub._loop is loop and self.hub._on_loop():
            event.set()
        else:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the consumer's loop is closed: nobody will read
                self._mark_closed(None)

    # -- consumer side -----------------------------------------------------------

    def _drain_sync(self) -> None:
        handler = self._handler
        assert handler is not None
        delivered = 0
        try:
            for item in self._take():
                if self._closed:
                    break
                if self._filtering and not self._wants(item):
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
            # Only this drain writes the counter: no lock needed per message.
            self._delivered += delivered
        with self._lock:
            more = not self._closed and bool(self._latest if self._conflate else self._queue)
            if not more:
                self._drain_scheduled = False
        if more:  # yield the worker so other subscriptions get their turn
            HandlerPool.shared().submit(self._drain_sync)

    async def _drain_async(self) -> None:
        handler = self._handler
        event = self._event
        assert handler is not None
        assert event is not None
        while not self._closed:
            with self._lock:
                self._wake_pending = False
                event.clear()
                batch = self._take_all()
            if not batch:
                if not self._closed:
                    await event.wait()
                continue
            delivered = 0
            try:
                for item in batch:
                    if self._closed:
                        return
                    if self._filtering and not self._wants(item):
                        continue
                    try:
                        await handler(item[2])  # type: ignore[misc]
                    except Exception:
                        self._handler_failed()
                    except asyncio.CancelledError:
                        raise  # the drain itself is being cancelled (close, loop shutdown)
                    except BaseException as exc:  # sys.exit(), KeyboardInterrupt... in a handler
                        self._handler_exited(exc)
                        return
                    delivered += 1
            finally:
                self._delivered += delivered

    def _handler_failed(self) -> None:
        with self._lock:
            self._errors += 1
            errors = self._errors
        # Rendering a traceback costs far more than a message (milliseconds with
        # rich): a handler failing on every message must not flood the log and
        # starve every other consumer of the process. Count all, log a sample.
        if errors <= _LOGGED_ERRORS or errors % _LOG_EVERY == 0:
            _log.exception(
                "subscription.handler_failed",
                kind=self.hub.kind.value,
                endpoint=self.hub.endpoint,
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
        with self._lock:
            self._errors += 1
        _log.error(
            "subscription.handler_exited",
            kind=self.hub.kind.value,
            endpoint=self.hub.endpoint,
            error=describe_error(exc),
        )
        self._fail(exc)

    def _mark_closed(self, error: BaseException | None) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._error = error
            self._queue.clear()
            self._latest.clear()
            self._ready.notify_all()
            event = self._event
        if event is not None:
            try:
                self._loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the consumer's loop is already closed
                pass
        if self._handler is not None and not self._async_handler:
            HandlerPool.shared().release()
        return True

    def _fail(self, error: BaseException) -> None:
        """Close because of ``error``, which readers then see."""
        if self._mark_closed(error):
            _log.error("subscription.failed", kind=self.hub.kind.value, error=str(error))
            self.hub._detach(self)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosedError("subscription is closed")
