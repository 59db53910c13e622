"""TradingService: order updates from the shared trading stream, with nothing lost.

The service keeps one subscription on the trading hub, remembers recent
updates per order, fans them out to its own subscribers, and answers
``wait_for_order`` even for updates that arrived *before* the call::

    trading = TradingService(trading_stream=trading_hub, trading_client=client)
    order = client.submit_order(request)
    fill = trading.wait_for_order(order.id, timeout=30.0)      # fill, canceled, ...

    with trading.subscribe(on_update):                          # sync or async handler
        ...

The trading socket opens at the first :meth:`TradingService.subscribe`,
:meth:`~TradingService.wait_for_order` or :meth:`~TradingService.listen`, not
at construction.

**Reconciliation.** After the trading stream reconnects, the service asks the
REST API (``trading_client.get_orders``, in a worker thread, never on the
stream's loop) for the orders submitted since shortly before the disconnect
and for every order it knows to be open, and emits each transition it missed as
a :class:`ReconciledTradeUpdate` (a ``TradeUpdate`` whose ``reconciled`` is
``True``). So a fill that happened while the socket was down still reaches
waiters and subscribers. A final state (``fill``, ``canceled``, ``rejected``,
``expired``, ``replaced``) is never delivered twice for the same order. A
reconciled ``fill`` carries the order's cumulative ``filled_qty`` as ``qty``
and its ``filled_avg_price`` as ``price``; ``execution_id`` and
``position_qty`` are ``None``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any
from uuid import UUID

import structlog
from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import Order, TradeUpdate

from alpaca_di._aio import running_loop, settle
from alpaca_di._check import check_seconds
from alpaca_di.errors import AlpacaAPIError, ConnectionClosedError, ServiceClosedError
from alpaca_di.hub.consumers import check_consumer_name
from alpaca_di.hub.delivery import InlineDrain
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.inbox import Inbox
from alpaca_di.hub.subscription import Handler, Subscription
from alpaca_di.protocol import StreamKind
from alpaca_di.services.interfaces import DEFAULT_FINAL_EVENTS
from alpaca_di.services.rest import rest_call
from alpaca_di.services.trading.orders import (
    FINAL_EVENTS,
    STATUS_EVENT,
    ReconciledTradeUpdate,
    as_order,
    event_name,
    event_names,
    order_key,
    reconciled_update,
)
from alpaca_di.services.trading.reconcile import fetch_orders_since, missed_update
from alpaca_di.services.trading.subscription import TradeUpdateFeed, TradeUpdateSubscription
from alpaca_di.transport.states import ConnectionState

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

__all__ = ["TradingService", "TradingStats"]

_FAILED = object()
_NAME = "alpaca_di.trading_service"  # the service's own consumer of the trading hub
_CATCH_UP_GRACE = 0.25  # seconds the stream may lag behind a catch-up REST reply
_log = structlog.get_logger("alpaca_di.services.trading")


@dataclass(frozen=True)
class TradingStats:
    """Counters of a :class:`TradingService` (an immutable snapshot).

    Attributes:
        updates: updates delivered (from the stream or reconciled).
        reconciled: updates rebuilt from REST after a reconnect.
        duplicates: final updates dropped because that state was already delivered.
        reconcile_runs: completed reconciliation passes.
        reconcile_errors: passes whose REST calls failed.
        orders: orders remembered now.

    Example::

        stats = trading.stats()
        print(stats.reconciled, stats.duplicates)
    """

    updates: int
    reconciled: int
    duplicates: int
    reconcile_runs: int
    reconcile_errors: int
    orders: int


class _Record:
    """What the service remembers about one order. Guarded by the service lock."""

    __slots__ = ("by_event", "finals", "last")

    def __init__(self) -> None:
        self.by_event: dict[str, tuple[int, TradeUpdate]] = {}
        self.finals: set[str] = set()
        self.last: TradeUpdate | None = None


class TradingService:
    """Trade updates of one account: fan-out, per-order memory and reconciliation.

    Args:
        trading_stream: the trading :class:`~alpaca_di.services.StreamHub`.
        trading_client: alpaca-py ``TradingClient`` used for reconciliation and
            the catch-up check of :meth:`wait_for_order`; without it updates
            missed during a disconnect cannot be recovered.
        remember: how many orders to remember (least recently updated go first).
        reconcile_margin: seconds subtracted from the disconnect time when asking
            REST for orders submitted since (clock skew, in-flight submits).

    Thread-safe. Waiters block only their own thread; nothing runs on the
    stream's loop but O(1) bookkeeping. Once closed (``shutdown_resources()``
    closes it), every call raises :class:`~alpaca_di.errors.ServiceClosedError`;
    iterators over its subscriptions end quietly.

    Example::

        trading = TradingService(trading_stream=hub, trading_client=client)
        order = client.submit_order(MarketOrderRequest(symbol="AAPL", qty=1, side="buy",
                                                       time_in_force="day"))
        update = trading.wait_for_order(order.id, events=("fill",), timeout=30)
        print(update.price, update.qty)
    """

    def __init__(
        self,
        trading_stream: StreamHub,
        trading_client: TradingClient | None = None,
        *,
        remember: int = 10_000,
        reconcile_margin: float = 10.0,
    ) -> None:
        kind = getattr(trading_stream, "kind", None)
        if kind is None or not hasattr(trading_stream, "subscribe"):
            raise TypeError(
                f"trading_stream must be a StreamHub, got {type(trading_stream).__name__}"
            )
        if kind is not StreamKind.TRADING:
            raise ValueError(f"trading_stream must be a trading stream, got a {kind.value} one")
        if isinstance(remember, bool) or not isinstance(remember, int) or remember < 1:
            raise ValueError(f"remember must be a positive int, got {remember!r}")
        if (
            isinstance(reconcile_margin, bool)
            or not isinstance(reconcile_margin, (int, float))
            or reconcile_margin < 0
        ):
            raise ValueError(f"reconcile_margin must be >= 0 seconds, got {reconcile_margin!r}")
        self._hub = trading_stream
        self._client = trading_client
        self._remember = remember
        self._margin = timedelta(seconds=reconcile_margin)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._orders: OrderedDict[str, _Record] = OrderedDict()
        self._seq = 0
        self._sub: Subscription | None = None
        self._subs: set[Inbox] = set()
        self._feed = TradeUpdateFeed(
            endpoint=trading_stream.endpoint,
            listen=self.listen,
            listen_async=self.listen_async,
            discard=self._discard,
        )
        self._remove_listener: Callable[[], None] | None = None
        self._async_waiters: dict[
            str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], frozenset[str]]]
        ] = {}
        self._waiting: Counter[str] = Counter()
        self._down_since: datetime | None = None
        self._reconcile_since: datetime | None = None
        self._reconciling = False
        self._stop = threading.Event()
        self._closed = False
        self._counts = {"updates": 0, "reconciled": 0, "duplicates": 0, "runs": 0, "errors": 0}

    # -- public API -------------------------------------------------------------------------

    @property
    def hub(self) -> StreamHub:
        """The trading hub this service listens on."""
        return self._hub

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def subscribe(
        self, handler: Handler | None = None, *, name: str | None = None
    ) -> TradeUpdateSubscription:
        """Receive every trade update of the account (opens the trading socket).

        ``handler`` may be sync (runs on a worker thread) or ``async def`` (runs
        on the loop that subscribed); without one, iterate the subscription.
        Updates are never dropped; reconciled ones arrive like the others.
        ``name`` names the consumer in metrics, as on ``StreamHub.subscribe``.

        Example::

            sub = trading.subscribe(lambda update: print(update.event, update.order.symbol))
            ...
            sub.close()

            async with trading.subscribe() as updates:
                async for update in updates:
                    ...
        """
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable or None, got {type(handler).__name__}")
        name = check_consumer_name(name)
        self._check_open()
        self._listen()
        loop = running_loop()
        inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=False, never_drop=True, name=name)
        sub = TradeUpdateSubscription(
            self._feed, handler, inbox=inbox, consumer_loop=loop or self._hub.loop
        )
        with self._lock:
            if self._closed:
                inbox.close()
                raise _closed_error()
            self._subs.add(inbox)
        self._hub.consumers.track(inbox)
        return sub

    def listen(self, timeout: float = 10.0) -> None:
        """Open the trading socket if needed and block until the server streams our updates.

        Raises the stream's named error (``AuthenticationError``...) or
        ``TimeoutError``. Not on the stream's own loop: use :meth:`listen_async`.

        Example::

            trading.listen(timeout=10)      # orders submitted from now on are seen
        """
        check_seconds("timeout", timeout)
        self._check_open()
        self._check_off_loop("listen", "listen_async")
        self._listen().wait_confirmed(timeout)

    async def listen_async(self, timeout: float = 10.0) -> None:
        """Async :meth:`listen`."""
        check_seconds("timeout", timeout)
        self._check_open()
        await self._listen().confirmed(timeout)

    def last_update(self, order_id: str | UUID) -> TradeUpdate | None:
        """The latest update remembered for ``order_id``, or ``None``.

        Example::

            update = trading.last_update(order.id)
            if update is not None and update.event == "fill":
                ...
        """
        key = order_key(order_id)
        with self._lock:
            self._check_open()
            record = self._orders.get(key)
            return record.last if record is not None else None

    def wait_for_order(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
        *,
        catch_up: bool = True,
    ) -> TradeUpdate:
        """Block until ``order_id`` has an update with one of ``events``; return it.

        Resolves at once when such an update arrived before the call (the most
        recent matching one is returned). With ``catch_up`` and a
        ``trading_client``, an order the service has not heard of is also
        looked up once through REST after the stream is listening, so an order
        that reached the state before the trading socket was open is found
        too (returned as a :class:`ReconciledTradeUpdate`; the stream's own
        update wins when it follows the REST reply within 0.25 s). Pass
        ``catch_up=False`` when the stream was listening before the order was
        submitted (``AlpacaManager.submit_and_wait`` does).

        Args:
            order_id: the order's id (``UUID`` or its string form).
            events: event names or alpaca-py ``TradeEvent`` values.
            timeout: seconds (positive).
            catch_up: allow the one REST lookup described above.

        Raises:
            ValueError: a bad order id, an unknown event, a non-positive timeout.
            TimeoutError: no such update in time (names the order and the events, and
                notes when the catch-up lookup found no such order).
            AuthenticationError, ...: the trading stream failed.

        Example::

            update = trading.wait_for_order(order.id, events=("fill", "canceled"), timeout=10)
        """
        key = order_key(order_id)
        wanted = event_names(events)
        check_seconds("timeout", timeout)
        self._check_open()
        self._check_off_loop("wait_for_order", "wait_for_order_async")
        deadline = time.monotonic() + timeout
        with self._lock:
            found = self._match(key, wanted)
            if found is not None:
                return found
        self._listen()
        catch: concurrent.futures.Future[TradeUpdate | str | None] | None = None
        note: str | None = None
        finished = threading.Event()  # tells a still-running catch-up to skip its REST call
        if catch_up and self._client is not None:
            catch = concurrent.futures.Future()
            _spawn(self._run_catch_up, catch, key, wanted, deadline, finished)
        with self._lock:
            self._waiting[key] += 1
        try:
            while True:
                with self._changed:
                    found = self._match(key, wanted)
                    if found is not None:
                        return found
                    remaining = deadline - time.monotonic()
                    caught = catch is not None and catch.done()
                    if remaining > 0 and not caught and not self._down():
                        self._changed.wait(remaining)
                        continue
                if catch is not None and catch.done():
                    result = catch.result()
                    if isinstance(result, TradeUpdate):
                        return result
                    note, catch = result, None
                    continue
                if remaining <= 0:
                    raise TimeoutError(self._timeout_text(key, wanted, timeout, note))
                self._raise_down()
        finally:
            finished.set()
            with self._lock:
                self._waiting[key] -= 1
                if self._waiting[key] <= 0:
                    del self._waiting[key]

    async def wait_for_order_async(
        self,
        order_id: str | UUID,
        events: Iterable[str | TradeEvent] = DEFAULT_FINAL_EVENTS,
        timeout: float = 30.0,
        *,
        catch_up: bool = True,
    ) -> TradeUpdate:
        """Async :meth:`wait_for_order`: never blocks the running loop.

        Example::

            update = await trading.wait_for_order_async(order.id, timeout=30)
        """
        key = order_key(order_id)
        wanted = event_names(events)
        check_seconds("timeout", timeout)
        self._check_open()
        deadline = time.monotonic() + timeout
        with self._lock:
            found = self._match(key, wanted)
            if found is not None:
                return found
        self._listen()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        entry = (loop, future, wanted)
        with self._lock:
            found = self._match(key, wanted)
            if found is not None:
                return found
            if self._down():
                settle(loop, future, _FAILED)
            self._async_waiters.setdefault(key, []).append(entry)
            self._waiting[key] += 1
        catch: asyncio.Future[TradeUpdate | str | None] | None = None
        note: str | None = None
        finished = threading.Event()
        if catch_up and self._client is not None:
            catch = asyncio.ensure_future(
                asyncio.to_thread(self._catch_up, key, wanted, deadline, finished)
            )
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_text(key, wanted, timeout, note))
                waiting: set[asyncio.Future[Any]] = {future}
                if catch is not None:
                    waiting.add(catch)
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if future.done():
                    result = future.result()
                    if result is _FAILED:
                        await self._araise_down()
                    return result  # type: ignore[no-any-return]
                if catch is not None and catch.done():
                    caught = catch.result()
                    if isinstance(caught, TradeUpdate):
                        return caught
                    note, catch = caught, None
        finally:
            finished.set()
            if catch is not None:
                if catch.done():
                    if not catch.cancelled():
                        catch.exception()  # retrieved: no "never retrieved" warning
                else:
                    catch.cancel()
            with self._lock:
                waiters = self._async_waiters.get(key, [])
                if entry in waiters:
                    waiters.remove(entry)
                if not waiters:
                    self._async_waiters.pop(key, None)
                self._waiting[key] -= 1
                if self._waiting[key] <= 0:
                    del self._waiting[key]

    def stats(self) -> TradingStats:
        """Delivery and reconciliation counters, as one snapshot."""
        with self._lock:
            c = self._counts
            return TradingStats(
                updates=c["updates"],
                reconciled=c["reconciled"],
                duplicates=c["duplicates"],
                reconcile_runs=c["runs"],
                reconcile_errors=c["errors"],
                orders=len(self._orders),
            )

    def close(self) -> None:
        """Close the service's subscriptions and wake every waiter. Idempotent.

        The trading hub stays open: it belongs to the container.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            sub, self._sub = self._sub, None
            subs, self._subs = list(self._subs), set()
            remover, self._remove_listener = self._remove_listener, None
            waiters, self._async_waiters = self._async_waiters, {}
            self._changed.notify_all()
        if sub is not None:
            sub.close()
        for inbox in subs:
            inbox.close()
        if remover is not None:
            remover()
        for pending in waiters.values():
            for loop, future, _events in pending:
                settle(loop, future, _FAILED)

    def __repr__(self) -> str:
        return (
            f"<TradingService orders={len(self._orders)} subscribers={len(self._subs)} "
            f"closed={self._closed}>"
        )

    # -- the stream side ---------------------------------------------------------------------

    def _listen(self) -> Subscription:
        with self._lock:
            if self._closed:
                raise _closed_error()
            sub = self._sub
            if sub is None or sub.closed:
                if self._remove_listener is None:
                    self._remove_listener = self._hub.add_state_listener(self._on_state)
                inbox = Inbox(
                    maxsize=None, overflow="drop_oldest", raw=False, never_drop=True, name=_NAME
                )
                inbox.listener = InlineDrain(inbox, self._on_update)
                sub = self._sub = self._hub.attach(inbox, trade_updates=True)
            return sub

    def _on_update(self, update: Any) -> None:
        # Runs on the hub's loop, one update at a time, in wire order: never on the
        # handler pool, so blocked user handlers cannot delay a fill.
        if isinstance(update, TradeUpdate):
            self._deliver(update)

    def _deliver(self, update: TradeUpdate) -> bool:
        key = str(update.order.id)
        event = event_name(update.event)
        reconciled = isinstance(update, ReconciledTradeUpdate)
        with self._lock:
            if self._closed:
                return False
            record = self._orders.get(key)
            if record is None:
                record = self._orders[key] = _Record()
                if len(self._orders) > self._remember:
                    self._orders.popitem(last=False)
            else:
                self._orders.move_to_end(key)
            if event in FINAL_EVENTS:
                if event in record.finals:
                    self._counts["duplicates"] += 1
                    return False
                record.finals.add(event)
            self._seq += 1
            record.by_event[event] = (self._seq, update)
            if event in FINAL_EVENTS or not record.finals:  # a late `new` never unsettles it
                record.last = update
            self._counts["updates"] += 1
            if reconciled:
                self._counts["reconciled"] += 1
            self._changed.notify_all()
            waiters = self._async_waiters.get(key)
            if waiters:
                for loop, future, wanted in list(waiters):
                    if event in wanted:
                        waiters.remove((loop, future, wanted))
                        settle(loop, future, update)
            item = [("trade_updates", update.order.symbol or "", update)]
            for inbox in list(self._subs):
                if inbox.closed:
                    self._subs.discard(inbox)
                else:
                    inbox.push(item)
        return True

    def _discard(self, inbox: Inbox) -> None:
        with self._lock:
            self._subs.discard(inbox)

    def _on_state(self, state: ConnectionState, previous: ConnectionState) -> None:
        # Runs on the hub's loop: O(1) bookkeeping only; REST work goes to a thread.
        # Any drop after we asked for updates may hide transitions (even when the
        # hub was already connected by someone else before we subscribed).
        if state is ConnectionState.RECONNECTING:
            if self._sub is not None and self._down_since is None:
                self._down_since = datetime.now(timezone.utc)
        elif state is ConnectionState.CONNECTED:
            since, self._down_since = self._down_since, None
            if since is not None:
                if self._client is None:
                    _log.warning(
                        "trading.reconcile_skipped",
                        reason="no trading_client: updates missed while disconnected are lost",
                    )
                else:
                    self._schedule_reconcile(since)
        elif state is ConnectionState.FAILED or state is ConnectionState.CLOSED:
            self._stream_ended(state)

    def _stream_ended(self, state: ConnectionState) -> None:
        with self._lock:
            subs = list(self._subs)
            self._subs.clear()
            waiters = [w for pending in self._async_waiters.values() for w in pending]
            self._changed.notify_all()
        if state is ConnectionState.FAILED:
            error = ConnectionClosedError(
                f"the trading stream failed: {self._hub.health().last_error or 'unknown error'}"
            )
            for inbox in subs:
                inbox.close(error)
        else:
            for inbox in subs:
                inbox.close()
        for loop, future, _events in waiters:
            settle(loop, future, _FAILED)

    # -- waiting ------------------------------------------------------------------------------

    def _match(self, key: str, wanted: frozenset[str]) -> TradeUpdate | None:
        record = self._orders.get(key)
        if record is None:
            return None
        best: tuple[int, TradeUpdate] | None = None
        for event in wanted:
            found = record.by_event.get(event)
            if found is not None and (best is None or found[0] > best[0]):
                best = found
        return best[1] if best is not None else None

    def _down(self) -> bool:
        hub = self._hub
        return self._closed or hub.closed or hub.state is ConnectionState.FAILED

    def _raise_down(self) -> None:
        if self._closed:
            raise _closed_error()
        state = self._hub.state
        if state is ConnectionState.FAILED:
            self._hub.wait_ready(timeout=0.01)  # raises the named error of the failure
        raise ConnectionClosedError(f"the trading stream is {state.value}")

    async def _araise_down(self) -> None:
        if not self._closed and self._hub.state is ConnectionState.FAILED:
            await self._hub.ready(timeout=0.01)  # raises the named error of the failure
        self._raise_down()

    def _check_open(self) -> None:
        if self._closed:
            raise _closed_error()

    def _check_off_loop(self, name: str, alternative: str) -> None:
        if running_loop() is not None:
            raise RuntimeError(
                f"{name}() would block the running event loop; "
                f"use 'await trading.{alternative}(...)'"
            )

    def _timeout_text(
        self, key: str, wanted: frozenset[str], timeout: float, note: str | None = None
    ) -> str:
        with self._lock:
            record = self._orders.get(key)
            last = record.last if record is not None else None
        seen = event_name(last.event) if last is not None else "none"
        return (
            f"order {key} reached none of {', '.join(sorted(wanted))} within {timeout:g} s "
            f"(last event seen: {seen}; trading stream {self._hub.state.value}"
            f"{'; ' + note if note else ''})"
        )

    def _run_catch_up(
        self,
        future: concurrent.futures.Future[TradeUpdate | str | None],
        key: str,
        wanted: frozenset[str],
        deadline: float,
        finished: threading.Event,
    ) -> None:
        try:
            future.set_result(self._catch_up(key, wanted, deadline, finished))
        except BaseException as exc:
            future.set_exception(exc)
        with self._changed:
            self._changed.notify_all()

    def _catch_up(
        self, key: str, wanted: frozenset[str], deadline: float, finished: threading.Event
    ) -> TradeUpdate | str | None:
        """Look the order up once, after the stream listens (runs in a worker thread).

        Returns the reconciled update, or a note for the timeout message, or ``None``.
        """
        client = self._client
        assert client is not None
        try:
            self._listen().wait_confirmed(max(deadline - time.monotonic(), 0.001))
        except Exception:
            return None  # not listening (yet): the waiter keeps waiting on the stream
        with self._lock:
            if finished.is_set() or self._match(key, wanted) is not None:
                return None  # the stream was faster: no REST call needed
        try:
            order = as_order(rest_call(client, lambda: client.get_order_by_id(key)))
        except AlpacaAPIError as exc:
            # Not fatal: the stream may still deliver (REST lags, or updates come from
            # elsewhere); the note only makes a timeout easier to understand.
            _log.info("trading.catch_up_failed", order_id=key, error=str(exc))
            if exc.status_code == 404:
                return "the REST API does not know this order (HTTP 404)"
            return f"the REST lookup failed: {exc}"
        event = STATUS_EVENT.get(event_name(order.status))
        if event is None or event not in wanted:
            return None
        # The stream's own update (with execution details) may be a moment behind
        # the REST reply: prefer it when it comes within a short grace period.
        grace = min(_CATCH_UP_GRACE, max(deadline - time.monotonic(), 0.0))
        with self._changed:
            if self._changed.wait_for(lambda: self._match(key, wanted) is not None, grace):
                return None
        return reconciled_update(order, event)

    # -- reconciliation -----------------------------------------------------------------------

    def _schedule_reconcile(self, since: datetime) -> None:
        with self._lock:
            if self._closed:
                return
            pending = self._reconcile_since
            self._reconcile_since = since if pending is None else min(pending, since)
            if self._reconciling:
                return
            self._reconciling = True
        _spawn(self._reconcile_loop)

    def _reconcile_loop(self) -> None:
        while True:
            with self._lock:
                since, self._reconcile_since = self._reconcile_since, None
                if since is None or self._closed:
                    self._reconciling = False
                    return
            try:
                self._reconcile(since)
            except Exception:
                _log.exception("trading.reconcile_failed")
                with self._lock:
                    self._counts["errors"] += 1

    def _reconcile(self, since: datetime) -> None:
        client = self._client
        assert client is not None
        self._wait_listening()
        after = since - self._margin
        orders: dict[str, Order] = {}
        for attempt in range(3):
            try:
                orders = fetch_orders_since(client, after)
                break
            except AlpacaAPIError as exc:
                _log.warning("trading.reconcile_rest_failed", attempt=attempt + 1, error=str(exc))
                if attempt == 2 or self._stop.wait(0.5 * 2**attempt):
                    with self._lock:
                        self._counts["errors"] += 1
                    return
        with self._lock:
            extra = [key for key in self._waiting if key not in orders]
            open_known = [
                key
                for key, record in reversed(self._orders.items())
                if not record.finals and key not in orders and key not in extra
            ][:200]
        for key in [*extra, *open_known]:
            if self._stop.is_set():
                return
            try:
                orders[key] = as_order(rest_call(client, partial(client.get_order_by_id, key)))
            except AlpacaAPIError as exc:
                if exc.status_code != 404:
                    _log.warning("trading.reconcile_lookup_failed", order_id=key, error=str(exc))
        emitted = 0
        for order in sorted(orders.values(), key=lambda o: o.updated_at):
            with self._lock:
                record = self._orders.get(str(order.id))
                update = missed_update(
                    order,
                    last=record.last if record is not None else None,
                    ended=bool(record is not None and record.finals),
                )
            if update is not None and self._deliver(update):
                emitted += 1
        with self._lock:
            self._counts["runs"] += 1
        _log.info(
            "trading.reconciled", since=since.isoformat(), orders=len(orders), emitted=emitted
        )

    def _wait_listening(self) -> None:
        """Block until the new socket's listen is acknowledged (bounded, best effort).

        A short-lived probe subscription is confirmed only by the server's ack on
        the current connection, so REST is read after the stream resumed and no
        transition can fall between the two.
        """
        try:
            probe = self._hub.subscribe(trade_updates=True)
        except ConnectionClosedError:
            return
        try:
            probe.wait_confirmed(timeout=10.0)
        except Exception as exc:
            _log.warning("trading.reconcile_unconfirmed", error=str(exc))
        finally:
            probe.close()


def _closed_error() -> ServiceClosedError:
    return ServiceClosedError("TradingService", "trading_service")


def _spawn(target: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=target, args=args, name="alpaca-di-trading", daemon=True).start()
