"""StreamHub: the handle on one shared connection, fanning messages out to consumers.

Every consumer of a (credentials, endpoint) pair gets the same hub, usually
from the container (``container.stock_stream()``). The hub keeps reference
counts per (channel, symbol), sends only deltas, parses each message once and
hands it to every interested :class:`~alpaca_di.services.Subscription`::

    hub = app.alpaca.stock_stream()
    sub = hub.subscribe(on_quote, quotes=["AAPL", "MSFT"], trades=["AAPL"])
    hub.wait_ready(timeout=10)
    print(hub.health().state)          # "connected"
    sub.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import structlog

from alpaca_di._aio import running_loop
from alpaca_di._check import check_seconds
from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConnectionClosedError, ServerError, ServiceClosedError, describe_error
from alpaca_di.hub.consumers import ConsumerTally, check_consumer_name
from alpaca_di.hub.gaps import BarSource, GapTracker, check_gap_options
from alpaca_di.hub.health import ConnectionHealth, StateTransition
from alpaca_di.hub.inbox import BAR_CHANNELS, Inbox, MessageForm, Pair, pending_changes
from alpaca_di.hub.routing import Router
from alpaca_di.hub.subscribing import USE_DEFAULT, Subscriber, check_subscribe_form
from alpaca_di.hub.subscription import Handler, Subscription
from alpaca_di.hub.waiting import Changes
from alpaca_di.protocol import (
    StreamKind,
    SubscriptionState,
    carrier_channel,
    validate_channel,
    validate_symbol,
)
from alpaca_di.transport.backoff import Backoff
from alpaca_di.transport.connection import Connection, ConnectionFactory, Upstream
from alpaca_di.transport.options import ConnectionOptions, OverflowPolicy, check_overflow
from alpaca_di.transport.states import ConnectionState

__all__ = ["StateListener", "StreamHub"]

StateListener = Callable[[ConnectionState, ConnectionState], None]
_Change = tuple[Inbox, AbstractSet[Pair], bool]  # an inbox, pairs, add (else remove)

# corrections and cancel errors ride on the trades subscription (Alpaca sends them
# to every trades subscriber), so they count against the wire's trades entry.
_log = structlog.get_logger("alpaca_di.hub")


def _wire(pair: Pair) -> Pair:
    return (carrier_channel(pair[0]), pair[1])


class StreamHub(Subscriber):
    """One shared connection and all of its consumers.

    Thread-safe: subscribe, add, remove and close from any thread, from async
    tasks, or from inside handlers. State lives on the hub's loop (the runtime
    thread's loop in a sync app, the app's own loop in an async app); calls from
    elsewhere are handed to it and never block it.

    Example::

        hub = container.stock_stream()

        def on_quote(quote): ...
        async def on_trade(trade): ...

        quotes = hub.subscribe(on_quote, quotes=["AAPL", "MSFT"])
        trades = hub.subscribe(on_trade, trades=["*"], maxsize=1000, overflow="drop_newest")
        hub.wait_ready(timeout=10)
    """

    def __init__(
        self,
        *,
        kind: StreamKind,
        endpoint: str,
        credentials: Credentials,
        options: ConnectionOptions,
        loop: asyncio.AbstractEventLoop,
        backoff: Backoff | None = None,
        connection_factory: ConnectionFactory = Connection,
        start_after: concurrent.futures.Future[None] | None = None,
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.options = options
        self.fingerprint = credentials.fingerprint
        self._loop = loop
        self._state = SubscriptionState()
        self._new_connection = partial(
            connection_factory,
            endpoint,
            kind=kind,
            credentials=credentials,
            options=options,
            listener=self,
            backoff=backoff,
        )
        self._connection: Upstream = self._new_connection(subscriptions=self._state, loop=loop)
        self._feed = _HubFeed(self)
        self._shipments: dict[
            asyncio.AbstractEventLoop, list[tuple[Inbox, AbstractSet[Pair], bool]]
        ] = {}
        self._shipments_lock = threading.Lock()
        self._subs: set[Inbox] = set()
        self._router = Router()
        self._acked: set[Pair] = set()
        self._changes = Changes()
        self._listeners: list[StateListener] = []
        self._closing = False
        self._close_lock = threading.Lock()
        self._closed: concurrent.futures.Future[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        # The close of the previous hub of this key: our socket opens only once that
        # socket has closed, so Alpaca never sees two sessions of one key at once.
        self._start_after = start_after
        self._retired = [0, 0, 0, 0, 0]  # delivered, dropped, errors, gaps, backfilled: closed
        self._gaps = GapTracker(kind.value, endpoint, loop, on_overflow=self._forget)
        self.consumers = ConsumerTally()  # by consumer name, for metrics (services add theirs)
        self._log = _log.bind(kind=kind.value, endpoint=endpoint, fingerprint=self.fingerprint)

    # -- public API --------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's current state."""
        return self._connection.state

    @property
    def closed(self) -> bool:
        """True once the hub was closed (its last lease released)."""
        return self._closing

    @property
    def last_error(self) -> BaseException | None:
        """The error behind the last failure or reconnect (``None`` when healthy)."""
        return self._connection.last_error

    @property
    def unrouted(self) -> int:
        """Messages that reached no consumer (a symbol just removed, say)."""
        return self._router.unrouted

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the connection runs on."""
        return self._loop

    def _subscribe(
        self,
        handler: Handler | None,
        channels: dict[str, Any],
        *,
        trade_updates: bool,
        maxsize: int | None,
        overflow: OverflowPolicy | None,
        raw: bool,
        form: MessageForm | None,
        name: str | None,
        gaps: bool = False,
        backfill: bool = False,
    ) -> Subscription[Any]:
        """:meth:`subscribe`'s work, once its keywords are gathered (see ``Subscriber``)."""
        if self._closing:
            raise self._closed_error()
        if self._connection.state is ConnectionState.FAILED:
            raise self._connection.last_error or ConnectionClosedError("connection failed")
        if handler is not None and not callable(handler):
            raise TypeError(f"handler must be callable or None, got {type(handler).__name__}")
        handler, subscribed = self._wrap_handler(handler)
        if not isinstance(trade_updates, bool):
            raise TypeError("trade_updates must be True or False")
        if not isinstance(raw, bool):
            raise TypeError("raw must be True or False")
        chosen = check_subscribe_form(raw, form)
        check_gap_options(self.kind, gaps, backfill, form=chosen, has_source=self._gaps.has_source)
        # Only the default (an empty tuple) means "not this channel": None, 0 or ""
        # are mistakes and get a clear error from _pairs().
        pairs = self._pairs(
            {name: value for name, value in channels.items() if type(value) is not tuple or value}
        )
        if trade_updates:
            validate_channel(self.kind, "trade_updates")
            pairs.add(("trade_updates", "*"))
        if chosen == "struct" and self.kind is StreamKind.TRADING:
            raise ValueError('trade updates have no struct form: use form="model" or "raw"')
        size = self.options.queue_maxsize if maxsize is USE_DEFAULT else maxsize
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(f"maxsize must be a positive int or None, got {maxsize!r}")
        policy = self.options.overflow if overflow is None else overflow
        check_overflow(policy)
        inbox = Inbox(
            maxsize=size,
            overflow=policy,
            form=chosen,
            held=pairs,
            never_drop=self.kind is StreamKind.TRADING,
            gaps=gaps,
            backfill=backfill,
            name=check_consumer_name(name),
        )
        sub: Subscription[Any] = Subscription(
            self._feed, handler, inbox=inbox, consumer_loop=running_loop() or self._loop
        )
        self._change(inbox, inbox.held, add=True)
        if subscribed is not None:
            subscribed(sub)
        return sub

    def use_history(self, source: BarSource) -> Callable[[], None]:
        """Backfill bars through ``source`` (the last one given wins); returns its remover.

        Example::

            remove = hub.use_history(HistoricalBarSource("stock", lambda: client, feed="iex"))

        Behind the Redis scale-out the group's leader backfills each of its gaps
        once for every process; ``source`` fetches only what this process alone missed.
        """
        return self._gaps.use(source, getattr(self._connection, "shared_backfill", None))

    def backfill_pairs(self) -> set[Pair]:
        """On the loop: the wire's bar pairs some ``backfill=True`` subscription holds."""
        return {
            _wire(pair)
            for sub in self._subs
            if sub.backfill and not sub.closed
            for pair in sub.pairs
            if pair[0] in BAR_CHANNELS
        }

    def _wrap_handler(
        self, handler: Handler | None
    ) -> tuple[Handler | None, Callable[[Subscription[Any]], None] | None]:
        """For subclasses (the testing fake): wrap the handler; what to run once subscribed."""
        return handler, None

    def forget_after_fork(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a forked child: start over, idle, on ``loop`` (the child's runtime).

        The parent's socket is never written to or closed here, and nothing of the
        parent's loop runs. Subscriptions made before the fork belong to the
        parent: they are closed with an error that says so. The child's first
        subscription opens the child's own socket.
        """
        forked = ConnectionClosedError(
            "this process was forked: subscriptions made before the fork belong to "
            "the parent; subscribe again in the child"
        )
        for inbox in list(self._subs):
            inbox.listener = None  # its wake-ups would go to the parent's loops
            inbox.close(forked)
        self._subs.clear()
        self.consumers = ConsumerTally()  # a fresh lock: another thread may have held it
        self._router.clear()
        self._acked = set()
        self._shipments = {}
        self._shipments_lock = threading.Lock()
        self._changes = Changes()
        self._close_lock = threading.Lock()
        self._closed = None
        self._close_task = None
        self._start_after = None
        self._loop = loop
        self._gaps = GapTracker(self.kind.value, self.endpoint, loop, on_overflow=self._forget)
        self._state = SubscriptionState()
        self._connection = self._new_connection(subscriptions=self._state, loop=loop)

    def attach(self, inbox: Inbox, **channels: Any) -> Subscription[Any]:
        """Route ``channels`` to an inbox the caller drains itself through its listener.

        For services built on a hub: the inbox's listener is told on the hub's
        loop, so it must never block (see :class:`~alpaca_di.hub.delivery.InlineDrain`).
        Channels are given as to :meth:`subscribe`; the result is the consumer's
        :class:`Subscription` (close it to stop).

        Example::

            inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=False)
            inbox.listener = InlineDrain(inbox, on_update)
            sub = hub.attach(inbox, trade_updates=True)
        """
        if self._closing:
            raise self._closed_error()
        if self._connection.state is ConnectionState.FAILED:
            raise self._connection.last_error or ConnectionClosedError("connection failed")
        pairs = self._pairs(channels)
        inbox.hold(pairs, add=True)
        sub: Subscription[Any] = Subscription(
            self._feed, None, inbox=inbox, consumer_loop=self._loop
        )
        self._change(inbox, pairs, add=True)
        return sub

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Connect if needed and block until connected.

        Raises the named error when the connection failed (``AuthenticationError``,
        ``InsufficientSubscriptionError``, ``ConnectionLimitError`` after the
        grace window), ``TimeoutError`` when time runs out. Do not call it on the
        hub's own loop: ``await hub.ready()`` there.
        """
        check_seconds("timeout", timeout)
        if self._closing:
            raise self._closed_error()
        if running_loop() is not None:
            raise RuntimeError("wait_ready() would block the event loop; use await hub.ready()")
        self._call(self._start)
        self._wait(self._ready_check, timeout)

    async def ready(self, timeout: float = 10.0) -> None:
        """Async form of :meth:`wait_ready`; never blocks the calling loop.

        Works from any loop (the hub's or another one) without tying up a thread.
        """
        check_seconds("timeout", timeout)
        if self._closing:
            raise self._closed_error()
        self._call(self._start)
        await self._await(self._ready_check, timeout)

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(state, previous)`` on every transition; returns a remover.

        Listeners run on the hub's loop and must not block.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {type(listener).__name__}")
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def health(self) -> ConnectionHealth:
        """A snapshot of this connection's health (safe to call from any thread)."""
        conn = self._connection
        subs = list(self._subs)
        stats = [sub.stats() for sub in subs]
        per_channel = self._router.symbols_per_channel()
        last = conn.last_message_monotonic
        last_at = (
            datetime.now(timezone.utc) - timedelta(seconds=self._loop.time() - last)
            if last is not None
            else None
        )
        state = conn.state
        health = ConnectionHealth(
            kind=self.kind.value,
            endpoint=self.endpoint,
            fingerprint=self.fingerprint,
            state=state.value,
            state_since=conn.history.since,
            healthy=state
            in (
                ConnectionState.IDLE,
                ConnectionState.CONNECTING,
                ConnectionState.AUTHENTICATING,
                ConnectionState.CONNECTED,
            ),
            consumers=len(subs),
            subscriptions={channel: count for channel, count in per_channel.items() if count},
            messages_received=conn.messages_received,
            messages_parsed=self._router.parsed,
            messages_delivered=self._retired[0] + sum(s.delivered for s in stats),
            messages_dropped=self._retired[1] + sum(s.dropped for s in stats),
            malformed=conn.malformed,
            handler_errors=self._retired[2] + sum(s.errors for s in stats),
            gaps=self._retired[3] + sum(s.gaps for s in stats),
            backfilled=self._retired[4] + sum(s.backfilled for s in stats),
            reconnects=conn.reconnects,
            last_message_at=last_at,
            last_error=describe_error(conn.last_error),
            transitions=[
                StateTransition(state=c.state.value, at=c.at, error=c.error)
                for c in conn.history.changes[-10:]
            ],
            in_use=bool(subs) or state is not ConnectionState.IDLE,
            ever_connected=conn.history.ever_connected,
            subscriptions_pending=pending_changes(subs),
        )
        extra = conn.health_fields()
        return health.model_copy(update=extra) if extra else health

    def close(self, timeout: float = 2.0) -> None:
        """Close every subscription and the socket (with a close frame).

        Blocks until the socket has closed (at most ``timeout``) when called off the
        hub's loop. On the loop (from an async handler, say) it cannot block: every
        subscription closes at once and the socket closes in the background
        (``await hub.aclose()`` there to wait).
        """
        check_seconds("timeout", timeout)
        closed = self.start_close()
        if self._on_loop():
            return
        try:
            closed.result(timeout)
        except TimeoutError:
            self._log.error("hub.close_timeout", timeout=timeout)

    async def aclose(self) -> None:
        """Close every subscription and the socket; waits for the close handshake.

        May be awaited from any loop; the work runs on the hub's loop.
        """
        await asyncio.wrap_future(self.start_close())

    def start_close(self) -> concurrent.futures.Future[None]:
        """Begin closing, from any thread or loop; the future resolves once the socket closed.

        The one close path: :meth:`close`, :meth:`aclose` and the registry's release
        all come here. Idempotent (every call returns the same future, which
        cannot be cancelled). New subscriptions are refused from the first call.

        Example::

            closed = hub.start_close()
            ...                       # other work meanwhile
            closed.result(timeout=2)
        """
        with self._close_lock:
            closed = self._closed
            if closed is not None:
                return closed
            closed = self._closed = concurrent.futures.Future()
            closed.set_running_or_notify_cancel()  # one waiter's cancel must not cancel all
            self._closing = True
        if self._on_loop():
            self._close_now(closed)
            return closed
        try:
            self._loop.call_soon_threadsafe(self._close_now, closed)
        except RuntimeError:
            # The loop is gone (asyncio.run() ended under us): no socket is left on it.
            self._close_subscriptions()
            closed.set_result(None)
        return closed

    def _close_now(self, closed: concurrent.futures.Future[None]) -> None:
        """On the loop: every subscription closes now, the socket in a task."""
        self._gaps.close()
        self._close_subscriptions()
        self._close_task = self._loop.create_task(self._close_socket(closed))

    async def _close_socket(self, closed: concurrent.futures.Future[None]) -> None:
        try:
            await self._connection.close()
        except Exception as exc:
            self._log.error("hub.close_failed", error=describe_error(exc))
        finally:
            self._notify()
            closed.set_result(None)

    def __repr__(self) -> str:
        return (
            f"<StreamHub {self.kind.value} {self.endpoint} {self.fingerprint} "
            f"{self.state.value} consumers={len(self._subs)}>"
        )

    # -- consumer bookkeeping (subscriptions call these) -----------------------------------

    def _pairs(self, channels: Mapping[str, Any]) -> set[Pair]:
        pairs: set[Pair] = set()
        for channel, symbols in channels.items():
            validate_channel(self.kind, channel)
            if channel == "trade_updates":
                if symbols is not True:
                    raise ValueError("trade_updates takes True, not symbols")
                pairs.add(("trade_updates", "*"))
                continue
            if isinstance(symbols, str):
                symbols = [symbols]
            elif isinstance(symbols, (bytes, bytearray)) or not isinstance(symbols, Iterable):
                raise TypeError(
                    f"{channel} must be a symbol or an iterable of symbols, "
                    f"got {type(symbols).__name__}"
                )
            intern = self._router.intern  # one tuple per pair, however many hold it
            for symbol in symbols:
                pairs.add(intern((channel, validate_symbol(self.kind, symbol))))
        return pairs

    def _change(self, sub: Inbox, pairs: AbstractSet[Pair], *, add: bool) -> None:
        with sub.lock:
            sub.pending_changes += 1  # confirmation waits for changes still in flight
        caller = running_loop()
        if caller is None or caller is self._loop:
            self._call(self._apply, sub, pairs, add)
            return
        # From an application's loop: this tick's changes travel to the hub's loop
        # together, so a burst of add()/remove() in one task step is one delta.
        with self._shipments_lock:
            batch = self._shipments.get(caller)
            if batch is None:
                batch = self._shipments[caller] = []
                caller.call_soon(self._ship, caller)
            batch.append((sub, pairs, add))

    def _ship(self, caller: asyncio.AbstractEventLoop) -> None:
        with self._shipments_lock:
            batch = self._shipments.pop(caller, [])
        try:
            self._call(self._apply_all, batch)
        except ConnectionClosedError:
            for sub, _pairs, _add in batch:
                sub.close()

    def _apply_all(self, batch: list[_Change]) -> None:
        for sub, pairs, add in batch:
            self._apply(sub, pairs, add)

    def _detach(self, sub: Inbox) -> None:
        try:
            self._call(self._forget, sub)
        except ConnectionClosedError:
            pass

    def _apply(self, sub: Inbox, pairs: AbstractSet[Pair], add: bool) -> None:
        try:
            self._apply_change(sub, pairs, add)
        finally:
            with sub.lock:
                sub.pending_changes -= 1
            self._notify()

    def _apply_change(self, sub: Inbox, pairs: AbstractSet[Pair], add: bool) -> None:
        if self._closing:
            sub.close()
            return
        if sub.closed:
            return
        if sub not in self._subs:
            self._subs.add(sub)
            self.consumers.track(sub)
        if add:
            # A new subscription's pairs are its held frozenset: one object for both.
            changed = pairs - sub.pairs if sub.pairs else pairs
            self._router.add(sub, *changed)
            for pair in changed:
                wire = _wire(pair)
                self._state.add(wire[0], (wire[1],))
                if wire not in self._acked:
                    sub.unconfirmed.add(pair)
            sub.pairs = sub.pairs | changed if sub.pairs else frozenset(changed)
        else:
            changed = pairs & sub.pairs
            self._unindex(sub, changed, release=True)
        if changed:
            self._routes_changed()
            self._connection.request_flush()
        self._start()

    def _routes_changed(self) -> None:
        """On the loop: forget cached routes; decode only the forms the consumers need now."""
        self._router.changed()
        # A direct connection decodes what is asked for (no dicts for struct-only or
        # model-only consumers); other upstreams hand dicts over, and structs and
        # models are made from them.
        decode_forms = getattr(self._connection, "decode_forms", None)
        if decode_forms is not None:
            decode_forms(self._router.forms())

    def _start(self) -> None:
        """On the loop: start the connection, once the previous socket of this key closed."""
        gate = self._start_after
        if gate is not None and not gate.done():
            gate.add_done_callback(lambda _: self._call_soon(self._start))
            return
        self._start_after = None
        if not self._closing:
            self._connection.start()

    def _call_soon(self, function: Callable[[], None]) -> None:
        try:
            self._loop.call_soon_threadsafe(function)
        except RuntimeError:  # the loop is closed: the hub went with it
            pass

    def _forget(self, sub: Inbox) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            self._unindex(sub, set(sub.pairs), release=True)
            self._routes_changed()
            self._connection.request_flush()
            stats = sub.stats()
            self._retired[0] += stats.delivered
            self._retired[1] += stats.dropped
            self._retired[2] += stats.errors
            self._retired[3] += stats.gaps
            self._retired[4] += stats.backfilled

    def _unindex(self, sub: Inbox, pairs: AbstractSet[Pair], *, release: bool) -> None:
        self._router.remove(sub, *pairs)
        if release:
            for pair in pairs:
                wire = _wire(pair)
                self._state.remove(wire[0], (wire[1],))
        sub.pairs -= pairs
        sub.unconfirmed -= pairs

    def _close_subscriptions(self) -> None:
        on_loop = self._on_loop()
        for sub in list(self._subs):
            sub.close()
            if on_loop:
                self._forget(sub)

    # -- the connection's listener interface (runs on the loop) ---------------------------

    def on_batch(
        self,
        messages: list[tuple[str, str, dict[str, Any]]],
        structs: list[Any] | None = None,
        sources: list[Any] | None = None,
    ) -> None:
        malformed = self._connection.count_malformed
        for sub in self._router.dispatch(messages, malformed, structs, sources):
            self._forget(sub)  # overflowed under "error": closed

    def on_ack(self, channels: Mapping[str, tuple[str, ...]]) -> None:
        self._acked = {
            (channel, symbol) for channel, symbols in channels.items() for symbol in symbols
        }
        for sub in self._subs:
            if sub.unconfirmed:
                sub.unconfirmed = {p for p in sub.unconfirmed if _wire(p) not in self._acked}
        if self._connection.state is ConnectionState.CONNECTED:
            self._gaps.restored(self._subs)  # the restore's ack comes before its data
        self._notify()

    def on_unsubscribing(self, channels: Mapping[str, list[str]]) -> None:
        """An unsubscribe went out: the last ack no longer covers those symbols.

        A consumer that re-adds one of them must wait for the server's next ack,
        not be confirmed by the stale one.
        """
        if self._acked:
            self._acked = self._acked - {
                (channel, symbol) for channel, symbols in channels.items() for symbol in symbols
            }

    def on_rejected(self, pairs: list[Pair], error: ServerError) -> None:
        rejected = set(pairs)
        for sub in list(self._subs):
            dropped = {pair for pair in sub.pairs if _wire(pair) in rejected}
            if dropped:
                self._unindex(sub, dropped, release=False)
                sub.rejection = error
        self._routes_changed()
        self._notify()

    def on_state(
        self, state: ConnectionState, previous: ConnectionState, error: BaseException | None
    ) -> None:
        if state is ConnectionState.RECONNECTING:
            self._gaps.lost(self._subs)
            self._acked = set()
            for sub in self._subs:
                sub.unconfirmed = set(sub.pairs)  # only the new socket's ack confirms them
        if state is ConnectionState.FAILED:
            failure = error or ConnectionClosedError("connection failed")
            for sub in list(self._subs):
                if sub.close(failure):
                    self._forget(sub)
        for listener in list(self._listeners):
            try:
                listener(state, previous)
            except Exception:
                self._log.exception("hub.state_listener_failed")
        self._notify()

    def on_malformed(self, reason: str) -> None:
        """Counted by the connection; nothing else to do."""

    # -- waiting ---------------------------------------------------------------------------

    def _ready_check(self) -> bool:
        state = self._connection.state
        if state is ConnectionState.CONNECTED:
            return True
        if state is ConnectionState.FAILED:
            raise self._connection.last_error or ConnectionClosedError("connection failed")
        if state is ConnectionState.CLOSED or self._closing:
            raise self._closed_error()
        return False

    def _confirmed_check(self, sub: Inbox) -> bool:
        if sub.rejection is not None:
            raise sub.rejection
        if sub.closed:  # closed because of an error (402, overflow...): that error, by name
            raise sub.error or ConnectionClosedError("subscription is closed")
        if self._connection.state is ConnectionState.FAILED:
            raise self._connection.last_error or ConnectionClosedError("connection failed")
        return not sub.unconfirmed and not sub.pending_changes

    def _wait_confirmed(self, sub: Inbox, timeout: float) -> None:
        check_seconds("timeout", timeout)
        if running_loop() is not None:
            raise RuntimeError(
                "wait_confirmed() would block the event loop; use await sub.confirmed()"
            )
        self._wait(lambda: self._confirmed_check(sub), timeout, "subscription confirmed")

    async def _await_confirmed(self, sub: Inbox, timeout: float) -> None:
        check_seconds("timeout", timeout)
        await self._await(lambda: self._confirmed_check(sub), timeout, "subscription confirmed")

    def _wait(self, check: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        self._changes.wait(check, timeout, lambda: self._timeout_message(timeout, what))

    async def _await(self, check: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        await self._changes.wait_async(check, timeout, lambda: self._timeout_message(timeout, what))

    def _timeout_message(self, timeout: float, what: str) -> str:
        error = describe_error(self._connection.last_error)
        return (
            f"{self.kind.value} stream {self.endpoint}: not {what} within {timeout} s "
            f"(state {self.state.value}{'; last error: ' + error if error else ''})"
        )

    def _notify(self) -> None:
        self._changes.notify()

    # -- threading -------------------------------------------------------------------------

    def _on_loop(self) -> bool:
        return running_loop() is self._loop

    def _call(self, function: Callable[..., None], *args: Any) -> None:
        if self._on_loop():
            function(*args)
            return
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:
            raise ConnectionClosedError(
                f"the {self.kind.value} hub's event loop is closed"
            ) from None

    def _closed_error(self) -> ServiceClosedError:
        return ServiceClosedError(f"{self.kind.value} StreamHub", f"{self.kind.value}_stream")


class _HubFeed:
    """The :class:`~alpaca_di.hub.subscription.Feed` a hub gives its subscriptions."""

    __slots__ = ("_hub",)

    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub

    @property
    def kind(self) -> StreamKind:
        return self._hub.kind

    @property
    def endpoint(self) -> str:
        return self._hub.endpoint

    def pairs(self, channels: Mapping[str, Any]) -> set[Pair]:
        return self._hub._pairs(channels)

    def change(self, inbox: Inbox, pairs: set[Pair], *, add: bool) -> None:
        self._hub._change(inbox, pairs, add=add)

    def detach(self, inbox: Inbox) -> None:
        self._hub._detach(inbox)

    def abandon(self, inbox: Inbox) -> None:
        self._hub._call_soon(lambda: self._hub._forget(inbox))

    def wait_confirmed(self, inbox: Inbox, timeout: float) -> None:
        self._hub._wait_confirmed(inbox, timeout)

    async def confirmed(self, inbox: Inbox, timeout: float) -> None:
        await self._hub._await_confirmed(inbox, timeout)
