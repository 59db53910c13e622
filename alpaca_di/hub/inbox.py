"""One consumer's bounded queue: overflow policies, conflation, counts; no I/O, no threads.

An :class:`Inbox` is what a hub routes messages to. The hub appends batches
(never waiting), the consumer takes them; a listener hears when there is
something to take and when the inbox closed::

    inbox = Inbox(maxsize=1000, overflow="drop_oldest", form="model", held={("quotes", "AAPL")})
    inbox.push([("quotes", "AAPL", quote)])
    with inbox.lock:
        item = inbox.pop()              # ("quotes", "AAPL", quote), or None
    inbox.close()                        # queued items are discarded

:class:`~alpaca_di.hub.subscription.Subscription` is the consumer's handle on
one; the hub holds the inbox, not the handle, so a handle nobody can reach
any more can be reclaimed.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from alpaca_di.errors import SubscriptionOverflowError
from alpaca_di.transport.options import OverflowPolicy

__all__ = [
    "BAR_CHANNELS",
    "FORMS",
    "NOTICE",
    "Inbox",
    "InboxListener",
    "Item",
    "MessageForm",
    "Pair",
    "SubscriptionStats",
    "check_form",
    "pending_changes",
]

Pair = tuple[str, str]
Item = tuple[str, str, Any]
"""``(channel, symbol, message)``: what a hub routes."""
NOTICE = "gap"
"""The channel of a gap notice in an inbox (no Alpaca channel has this name)."""
BAR_CHANNELS = frozenset({"bars", "daily_bars"})
"""The channels whose last message per symbol a backfilling inbox remembers."""

MessageForm = Literal["model", "struct", "raw"]
"""What a subscription receives: alpaca-py ``model``s (the default), the typed fast
form's ``struct``s (:mod:`alpaca_di.protocol.structs`) or the ``raw`` decoded dicts."""
FORMS: tuple[MessageForm, ...] = get_args(MessageForm)


def check_form(form: object) -> MessageForm:
    """``form`` itself, or a ``ValueError`` naming the valid ones.

    ::

        check_form("struct")   # "struct"
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(map(repr, FORMS))}; got {form!r}")
    return form


@dataclass(frozen=True)
class SubscriptionStats:
    """Counters of one subscription (an immutable snapshot).

    Attributes:
        delivered: messages handed to the handler or the iterator.
        dropped: messages discarded by the overflow policy (or conflated away).
        queued: messages waiting in the queue now.
        errors: exceptions raised by the handler (all counted; the first ten of a
            subscription are logged with their traceback, then one in a thousand).
        gaps: connection losses this subscription was told of with a
            :class:`~alpaca_di.hub.gaps.GapNotice` (``gaps=True``; ``0`` otherwise).
        backfilled: bars delivered to it by a backfill (``backfill=True``).

    Example::

        stats = sub.stats
        print(stats.delivered, stats.dropped, stats.queued, stats.errors, stats.gaps)
    """

    delivered: int
    dropped: int
    queued: int
    errors: int
    gaps: int = 0
    backfilled: int = 0


class InboxListener(Protocol):
    """Told when an inbox has something to take, and when it closed (outside its lock)."""

    def inbox_ready(self) -> None:
        """Items arrived."""

    def inbox_closed(self, error: BaseException | None) -> None:
        """The inbox closed, because of ``error`` if not ``None``; called once."""


class Inbox:
    """A bounded queue with an overflow policy, and the pairs its consumer holds.

    ``lock`` guards the queue and the counters; ``ready`` (a condition on it) is
    notified on every push and on close. The membership fields (``pairs``,
    ``unconfirmed``, ``rejection``, ``pending_changes``) belong to the hub that
    routes to this inbox and are written on its loop.

    ``form`` says what the inbox receives (see :data:`MessageForm`); ``raw=True``
    is the older spelling of ``form="raw"``.
    """

    def __init__(
        self,
        *,
        maxsize: int | None,
        overflow: OverflowPolicy,
        raw: bool = False,
        form: MessageForm | None = None,
        held: Iterable[Pair] = (),
        never_drop: bool = False,
        gaps: bool = False,
        backfill: bool = False,
        name: str | None = None,
    ) -> None:
        self.form: MessageForm = check_form(form) if form is not None else "raw" if raw else "model"
        self.raw = self.form == "raw"
        self.name = name  # the consumer's name (metrics group by it); validated by the caller
        self.maxsize = None if never_drop else maxsize
        self.overflow: OverflowPolicy = overflow
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.listener: InboxListener | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self._queue: deque[Item] = deque()
        self._latest: dict[Pair, Item] = {}  # the queue under "conflate"
        self._conflate = overflow == "conflate" and not never_drop
        # The consumer's own view of its pairs, changed at once by add() and remove()
        # (the hub applies changes later, on its loop). Once a pair was removed,
        # deliveries are checked against it: nothing of a removed pair reaches the
        # consumer after remove() returned, even if it was queued already.
        self.held: frozenset[Pair] = frozenset(held)
        # True once a pair was removed or the inbox closed: each delivery is then
        # checked (closed? still wanted?). Drains test this one flag per message.
        self.filtering = False
        self.sleepers = 0  # threads blocked in ``ready.wait()`` (get()): pushes notify only them
        # Owned by the hub's loop:
        self.pairs: frozenset[Pair] = frozenset()  # replaced whole, never mutated
        self.unconfirmed: set[Pair] = set()
        self.rejection: BaseException | None = None
        self.pending_changes = 0
        # Gap notices (opt-in): the last item received, and with backfill the last
        # bar per (channel, symbol); a gap the hub is handling (its own record).
        self.gaps = gaps or backfill
        self.backfill = backfill
        self.last_item: Item | None = None
        self.last_bars: dict[Pair, Item] = {}
        self.loss: Any = None
        self.gap_count = 0
        self.backfilled = 0
        self._notices = 0  # gap notices in _queue: never dropped, never conflated
        self._holding: dict[Pair, list[Item]] = {}  # live bars held during a backfill
        self._floors: dict[Pair, tuple[Callable[[Item], Any], Any]] = {}  # backfilled up to

    # -- the producer's side -------------------------------------------------------------

    def push(self, items: list[Item]) -> bool:
        """Append ``items`` (never blocks, never mutates ``items``).

        Returns ``False`` when the push overflowed a queue whose policy is
        ``"error"``: the inbox is then closed with a ``SubscriptionOverflowError``.
        """
        overflowed = False
        with self.lock:
            if self.closed:
                return True
            if self.gaps:
                self._track(items)
            if self._holding:
                items = self._divert(items)
            if self._floors:
                items = self._above_floors(items)
            if not items:
                return True
            if self._conflate:
                self._push_conflated(items)
            elif self.maxsize is None:
                self._queue.extend(items)
            else:
                overflowed = not self._push_bounded(items)
            if self.sleepers:
                self.ready.notify()
        if overflowed:
            self.close(
                SubscriptionOverflowError(
                    f"queue of {self.maxsize} messages is full (overflow='error'); "
                    "the subscription was closed"
                )
            )
            return False
        listener = self.listener
        if listener is not None:
            listener.inbox_ready()
        return True

    def push_notice(self, notice: Any) -> None:
        """Queue a gap notice after everything queued so far; no overflow policy drops it."""
        with self.lock:
            if self.closed:
                return
            if self._conflate:  # what was conflated so far comes before the notice
                self._queue.extend(self._latest.values())
                self._latest.clear()
            self._queue.append((NOTICE, "", notice))
            self._notices += 1
            self.ready.notify()
        listener = self.listener
        if listener is not None:
            listener.inbox_ready()

    def hold_live(self, pairs: Iterable[Pair]) -> None:
        """Keep the live messages of ``pairs`` aside until :meth:`release` (a backfill runs)."""
        with self.lock:
            for pair in pairs:
                self._holding.setdefault(pair, [])

    def first_held(self, pair: Pair) -> Item | None:
        """The oldest live message held for ``pair`` (``None``: none, or not held)."""
        with self.lock:
            held = self._holding.get(pair)
            return held[0] if held else None

    def release(
        self, pairs: Iterable[Pair], backfilled: list[Item], order: Callable[[Item], Any]
    ) -> bool:
        """Queue ``backfilled``, then the live messages held for ``pairs``, each by ``order``.

        Both parts are sorted by ``order`` (stable: the server's time, say); returns
        as :meth:`push` does.
        """
        floors: dict[Pair, tuple[Callable[[Item], Any], Any]] = {}
        with self.lock:
            live: list[Item] = []
            for pair in pairs:
                held = self._holding.pop(pair, [])
                live.extend(held)
                mine = [order(item) for item in backfilled if (item[0], item[1]) == pair]
                if mine and not held:  # a live copy of the newest may still come: drop it
                    floors[pair] = (order, max(mine))
            if not self.closed:
                self.backfilled += len(backfilled)
        items = sorted(backfilled, key=order) + sorted(live, key=order)
        pushed = self.push(items) if items else True
        with self.lock:
            self._floors.update(floors)
        return pushed

    def _track(self, items: list[Item]) -> None:
        self.last_item = items[-1]
        if self.backfill:
            last_bars = self.last_bars
            for item in items:
                if item[0] in BAR_CHANNELS:
                    last_bars[(item[0], item[1])] = item

    def _divert(self, items: list[Item]) -> list[Item]:
        holding = self._holding
        kept: list[Item] = []
        for item in items:
            held = holding.get((item[0], item[1]))
            if held is None:
                kept.append(item)
            else:
                held.append(item)
        return kept

    def _above_floors(self, items: list[Item]) -> list[Item]:
        """Leave out live messages a backfill delivered already (same pair, not newer)."""
        floors = self._floors
        kept: list[Item] = []
        for item in items:
            floor = floors.get((item[0], item[1]))
            if floor is not None:
                if floor[0](item) <= floor[1]:
                    continue
                del floors[(item[0], item[1])]
            kept.append(item)
        return kept

    def _push_bounded(self, items: list[Item]) -> bool:
        queue, maxsize = self._queue, self.maxsize
        assert maxsize is not None
        room = maxsize - len(queue) + self._notices  # notices take no room
        if len(items) <= room:
            queue.extend(items)
            return True
        policy = self.overflow
        if policy == "drop_oldest" and self._notices:
            self._drop_oldest_around_notices(items, len(items) - room)
            return True
        if policy == "drop_oldest":
            overflow = len(items) - room
            if overflow >= len(queue):
                self.dropped += len(queue) + len(items) - maxsize
                queue.clear()
                queue.extend(items[-maxsize:])
            else:
                for _ in range(overflow):
                    queue.popleft()
                queue.extend(items)
                self.dropped += overflow
            return True
        queue.extend(items[: max(room, 0)])
        self.dropped += len(items) - max(room, 0)
        return policy == "drop_newest"  # "error": the caller closes the inbox

    def _drop_oldest_around_notices(self, items: list[Item], excess: int) -> None:
        """``drop_oldest`` with gap notices queued: drop the oldest messages, keep the notices."""
        kept: deque[Item] = deque()
        for item in itertools.chain(self._queue, items):
            if excess > 0 and item[0] != NOTICE:
                excess -= 1
                self.dropped += 1
                continue
            kept.append(item)
        self._queue = kept

    def _push_conflated(self, items: list[Item]) -> None:
        latest, maxsize = self._latest, self.maxsize
        for item in items:
            key = (item[0], item[1])
            if key in latest:
                self.dropped += 1
            elif maxsize is not None and len(latest) >= maxsize:
                del latest[next(iter(latest))]
                self.dropped += 1
            latest[key] = item

    # -- the consumer's side (call with ``lock`` held) -----------------------------------

    @property
    def queued(self) -> int:
        """How many items wait now."""
        return len(self._latest) + len(self._queue) if self._conflate else len(self._queue)

    def pop(self) -> Item | None:
        """The oldest item the consumer still wants, or ``None``."""
        while True:
            if self._queue:  # under "conflate", what came before a gap notice, and it
                item = self._queue.popleft()
                if self._notices and item[0] == NOTICE:
                    self._notices -= 1
            elif self._conflate and self._latest:
                item = self._latest.pop(next(iter(self._latest)))
            else:
                return None
            if not self.filtering or self.wants(item):
                return item

    def take(self, limit: int) -> list[Item]:
        """Up to ``limit`` items, in order (filtering is the caller's: see :meth:`wants`)."""
        if self.closed:
            return []
        queue = self._queue
        if self._conflate and not queue:
            return [self._latest.pop(key) for key in list(self._latest)[:limit]]
        if len(queue) <= limit:
            batch = list(queue)
            queue.clear()
        else:
            batch = [queue.popleft() for _ in range(limit)]
        if self._notices:
            self._notices -= sum(1 for item in batch if item[0] == NOTICE)
        return batch

    def take_all(self) -> deque[Item] | list[Item]:
        """Everything queued, in order.

        For the async drain, which never yields between the messages of a batch
        unless the handler does: a batch limit buys no fairness there, and
        swapping the deque out costs O(1) instead of a ``popleft`` per message.
        """
        if self.closed:
            return []
        self._notices = 0
        if self._conflate:
            items = [*self._queue, *self._latest.values()]
            self._queue.clear()
            self._latest.clear()
            return items
        queue = self._queue
        if not queue:
            return []
        self._queue = deque()
        return queue

    def wants(self, item: Item) -> bool:
        """Whether the consumer still holds the pair of ``item`` (see ``remove()``)."""
        channel = item[0]
        held = self.held
        if (channel, item[1]) in held or (channel, "*") in held:
            return True
        if channel == NOTICE:
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

    # -- either side ---------------------------------------------------------------------

    def hold(self, pairs: set[Pair], *, add: bool) -> None:
        """Change the consumer's own view of its pairs at once (thread-safe)."""
        with self.lock:
            if add:
                self.held = self.held | pairs
            else:
                self.held = self.held - pairs
                self.filtering = True

    def stats(self) -> SubscriptionStats:
        """A snapshot of the counters (thread-safe)."""
        with self.lock:
            return SubscriptionStats(
                self.delivered,
                self.dropped,
                self.queued,
                self.errors,
                self.gap_count,
                self.backfilled,
            )

    def close(self, error: BaseException | None = None) -> bool:
        """Close, discarding what is queued; ``False`` if it was closed already."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            self.filtering = True
            self.error = error
            self._queue.clear()
            self._latest.clear()
            self._holding.clear()
            self._floors.clear()
            self._notices = 0
            self.ready.notify_all()
        listener = self.listener
        if listener is not None:
            listener.inbox_closed(error)
        return True


def pending_changes(inboxes: Iterable[Inbox]) -> int:
    """Subscription changes not confirmed by the server yet (pairs + changes in flight)."""
    unconfirmed: set[Pair] = set()
    in_flight = 0
    for inbox in inboxes:
        unconfirmed.update(list(inbox.unconfirmed))
        in_flight += inbox.pending_changes
    return len(unconfirmed) + in_flight
