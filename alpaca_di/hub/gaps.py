"""Gap notices and bar backfill: what a subscription missed while its connection was down.

A subscription made with ``gaps=True`` gets a :class:`GapNotice` in its stream
of messages (after the last message before the loss, before the first one
after it) each time the connection was lost and restored. With
``backfill=True`` the hub also fetches the ``bars`` and ``daily_bars`` the
stream published meanwhile through a :class:`BarSource` (alpaca-py's
historical clients, given by the container) and delivers them, marked
(:class:`~alpaca_di.protocol.models.BackfilledBar`, or ``"backfilled": True``
raw), before live bars of the same symbol resume::

    def on_message(message):
        if isinstance(message, GapNotice):
            log.warning("missed data", since=message.last_message_at, backfill=message.backfill)
        elif getattr(message, "backfilled", False):
            ...                                   # a bar recovered through REST

    hub.subscribe(on_message, bars=["AAPL"], quotes=["AAPL"], backfill=True)

:class:`GapTracker` is the hub's bookkeeping (loop-only); the REST calls run in
an executor thread, never on the hub's loop. Bounds: at most
:data:`MAX_BACKFILL_SYMBOLS` symbols per subscription and
:data:`MAX_BACKFILL_BARS` bars per request; what is left out is named by the
notice (``not_backfilled``, ``backfill_error``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Protocol

import msgpack
import structlog

from alpaca_di.errors import ProtocolError, describe_error
from alpaca_di.hub.inbox import BAR_CHANNELS, Inbox, Item, Pair
from alpaca_di.protocol import StreamKind
from alpaca_di.protocol.times import message_time

__all__ = [
    "MAX_BACKFILL_BARS",
    "MAX_BACKFILL_SYMBOLS",
    "BarSource",
    "FetchedBars",
    "GapNotice",
    "GapTracker",
    "check_gap_options",
    "window_start",
]

MAX_BACKFILL_SYMBOLS = 100
"""Symbols backfilled per subscription and gap (``bars`` and ``daily_bars`` together)."""
MAX_BACKFILL_BARS = 10_000
"""Bars fetched per backfill request (one request per channel and window start)."""

_TYPE_CODES = {"bars": "b", "daily_bars": "d"}
_PERIODS = {"bars": timedelta(minutes=1), "daily_bars": timedelta(days=1)}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_AFTER = timedelta(seconds=1)  # REST windows are inclusive: start just after the last bar
_log = structlog.get_logger("alpaca_di.gaps")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _symbols(pairs: Iterable[Pair]) -> dict[str, frozenset[str]]:
    result: dict[str, set[str]] = {}
    for channel, symbol in pairs:
        result.setdefault(channel, set()).add(symbol)
    return {channel: frozenset(symbols) for channel, symbols in sorted(result.items())}


@dataclass(frozen=True)
class GapNotice:
    """The connection was lost and restored: this subscription may have missed messages.

    Delivered (to a handler, or by iteration) only to subscriptions made with
    ``gaps=True`` or ``backfill=True``, in order with the messages: after the
    last message before the loss, before the first one after it. No overflow
    policy drops it. A backfill that fails or stops at a bound is reported by a
    second notice of the same gap, with ``backfill_error`` set (only the first
    notice of a gap counts in ``stats.gaps``).

    Attributes:
        kind: the stream kind (``stock``, ``crypto``, ``option``, ``news``).
        endpoint: the stream's URL.
        symbols: per channel, the symbols this subscription held when the loss
            was noticed (and still holds).
        lost_at: when the loss was noticed (this process's clock, UTC).
        confirmed_at: when the server confirmed the subscription again.
        last_message_at: the server's timestamp of the last message this
            subscription received before the loss (``None``: none yet).
        backfill: whether backfilled bars follow this notice.
        not_backfilled: per channel, what was asked to be backfilled and will not
            be (``"*"``: symbols never seen before the loss; symbols past
            :data:`MAX_BACKFILL_SYMBOLS`; on a follow-up notice, what failed).
        backfill_error: on a follow-up notice, why (part of) the backfill failed.

    Example::

        async for message in hub.subscribe(bars=["AAPL"], gaps=True):
            if isinstance(message, GapNotice):
                print("gap since", message.last_message_at, "until", message.confirmed_at)
    """

    kind: str
    endpoint: str
    symbols: Mapping[str, frozenset[str]]
    lost_at: datetime
    confirmed_at: datetime
    last_message_at: datetime | None
    backfill: bool = False
    not_backfilled: Mapping[str, frozenset[str]] = field(default_factory=dict)
    backfill_error: str | None = None


class BarSource(Protocol):
    """Where a hub fetches missed bars: the adapter over alpaca-py's historical clients.

    Called in an executor thread, never on the hub's loop; it may block (and back
    off on ``429``). Raises on failure: the subscriptions get a notice saying so.

    Example::

        class Bars:
            def fetch_bars(self, channel, symbols, start, limit):
                return {"AAPL": [{"t": start, "o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0,
                                  "v": 10, "n": 1, "vw": 1.0}]}

        remove = hub.use_history(Bars())
    """

    def fetch_bars(
        self, channel: str, symbols: Sequence[str], start: datetime, limit: int
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        """``bars`` (1Min) or ``daily_bars`` (1Day) of ``symbols`` from ``start`` on.

        Per symbol, ascending, at most ``limit`` in all; each a mapping with the
        stream's keys ``t`` (an aware ``datetime``), ``o``, ``h``, ``l``, ``c``,
        ``v``, ``n``, ``vw``.
        """
        ...


class FetchedBars(dict[str, list[Mapping[str, Any]]]):
    """A :meth:`BarSource.fetch_bars` answer that can say it stopped at a bound.

    A plain mapping is enough for a source; this one also carries ``truncated``
    (more bars were missed than the source returns), which the subscriptions'
    follow-up notice then reports, as when a fetch returns ``limit`` bars::

        FetchedBars({"AAPL": rows}, truncated=True)
    """

    def __init__(self, rows: Mapping[str, list[Mapping[str, Any]]], *, truncated: bool = False):
        super().__init__(rows)
        self.truncated = truncated


def window_start(channel: str, last_bar: datetime | None, since: datetime) -> datetime:
    """Where the backfill of a ``bars``/``daily_bars`` pair starts.

    Just after its last bar received; without one, at the start of the bar period
    of ``since`` (the last message's time, or the loss's)::

        window_start("bars", None, datetime(2024, 1, 2, 14, 30, 25, tzinfo=timezone.utc))
        # 14:30:00
    """
    if last_bar is not None:
        return last_bar + _AFTER  # REST windows are inclusive
    return since - (since - _EPOCH) % _PERIODS[channel]


def check_gap_options(
    kind: StreamKind, gaps: object, backfill: object, *, form: str = "model", has_source: bool
) -> None:
    """Refuse ``gaps``/``backfill`` values (at ``subscribe()``) that cannot work, by name."""
    if not isinstance(gaps, bool):
        raise TypeError("gaps must be True or False")
    if not isinstance(backfill, bool):
        raise TypeError("backfill must be True or False")
    if backfill and kind not in (StreamKind.STOCK, StreamKind.CRYPTO):
        raise ValueError(f"backfill=True is for bars; the {kind.value} stream carries no bars")
    if gaps and kind is StreamKind.TRADING:
        raise ValueError(
            "gaps=True is for market data; trade updates missed are reconciled through REST"
        )
    if backfill and not has_source:
        raise ValueError(
            "backfill=True needs a historical client and this hub has none: resolve the "
            "stream from AlpacaContainer, or give one with hub.use_history(source)"
        )


@dataclass
class _Loss:
    lost_at: datetime
    pairs: frozenset[Pair]
    last_item: Item | None


@dataclass
class _Plan:
    """One subscription's backfill: the window start of each (channel, symbol)."""

    sub: Inbox
    notice: GapNotice
    starts: dict[Pair, datetime]


class GapTracker:
    """A hub's gaps: losses per subscription, notices at the restore, backfills. Loop-only."""

    def __init__(
        self,
        kind: str,
        endpoint: str,
        loop: asyncio.AbstractEventLoop,
        *,
        on_overflow: Callable[[Inbox], None],
    ) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self._loop = loop
        self._sources: list[BarSource] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_overflow = on_overflow  # a release overflowed under "error": closed

    def use(
        self, source: BarSource, share: Callable[[BarSource], BarSource] | None = None
    ) -> Callable[[], None]:
        """Fetch backfills through ``source`` (the latest one given wins); returns a remover.

        ``share`` wraps it first: an upstream that receives backfills from elsewhere
        (the Redis scale-out's leader) keeps ``source`` for what only it missed.
        """
        if not callable(getattr(source, "fetch_bars", None)):
            raise TypeError(f"source must have fetch_bars(), got {type(source).__name__}")
        if share is not None:
            source = share(source)
        self._sources.append(source)

        def remove() -> None:
            if source in self._sources:
                self._sources.remove(source)

        return remove

    @property
    def has_source(self) -> bool:
        """Whether a :class:`BarSource` was given."""
        return bool(self._sources)

    def lost(self, subs: Iterable[Inbox]) -> None:
        """The connection was lost: remember it for every opted-in subscription it affected.

        Call before the subscriptions' pairs are marked unconfirmed: only pairs the
        server had confirmed were affected. A loss already pending (a reconnect
        attempt that failed) is kept as it is.
        """
        now = _utcnow()
        for sub in subs:
            if not sub.gaps or sub.loss is not None or sub.closed:
                continue
            affected = frozenset(sub.pairs - sub.unconfirmed)
            if affected:
                with sub.lock:
                    sub.loss = _Loss(now, affected, sub.last_item)

    def restored(self, subs: Iterable[Inbox]) -> None:
        """The server confirmed the restored subscriptions: notify, and start backfills."""
        now = _utcnow()
        plans: list[_Plan] = []
        for sub in subs:
            loss = sub.loss
            if loss is None:
                continue
            sub.loss = None
            pairs = loss.pairs & sub.pairs
            if sub.closed or not pairs:
                continue
            last = message_time(loss.last_item[2]) if loss.last_item is not None else None
            starts, skipped = self._plan(sub, loss, pairs, last) if sub.backfill else ({}, set())
            notice = GapNotice(
                kind=self.kind,
                endpoint=self.endpoint,
                symbols=_symbols(pairs),
                lost_at=loss.lost_at,
                confirmed_at=now,
                last_message_at=last,
                backfill=bool(starts),
                not_backfilled=_symbols(skipped),
            )
            with sub.lock:
                sub.gap_count += 1
            if starts:
                sub.hold_live(starts)  # before the notice: nothing live slips in between
            sub.push_notice(notice)
            if starts:
                plans.append(_Plan(sub, notice, starts))
        if plans:
            task = self._loop.create_task(self._backfill(plans))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Cancel the backfills under way (their REST calls end in their threads)."""
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    # -- backfill --------------------------------------------------------------------------

    @staticmethod
    def _plan(
        sub: Inbox, loss: _Loss, pairs: frozenset[Pair], last: datetime | None
    ) -> tuple[dict[Pair, datetime], set[Pair]]:
        # The bars it has now, not only those it had when the loss was noticed: behind
        # the Redis scale-out, a bar read before the loss can reach this process after
        # the status that announced it, and the backfill must start after that bar.
        last_bars = sub.last_bars
        wanted: list[Pair] = []
        skipped: set[Pair] = set()
        for channel, symbol in sorted(pairs):
            if channel not in BAR_CHANNELS:
                continue
            if symbol == "*":  # the symbols it had bars of; the rest it never knew
                skipped.add((channel, "*"))
                wanted.extend(sorted(p for p in last_bars if p[0] == channel))
            else:
                wanted.append((channel, symbol))
        wanted = list(dict.fromkeys(wanted))
        skipped.update(wanted[MAX_BACKFILL_SYMBOLS:])
        starts: dict[Pair, datetime] = {}
        for pair in wanted[:MAX_BACKFILL_SYMBOLS]:
            seen = last_bars.get(pair)
            stamp = message_time(seen[2]) if seen is not None else None
            starts[pair] = window_start(pair[0], stamp, last or loss.lost_at)
        return starts, skipped

    async def _backfill(self, plans: list[_Plan]) -> None:
        groups: dict[tuple[str, datetime], set[str]] = {}
        for plan in plans:
            for (channel, symbol), start in plan.starts.items():
                groups.setdefault((channel, start), set()).add(symbol)
        fetched: dict[tuple[str, datetime], Mapping[str, Sequence[Mapping[str, Any]]]] = {}
        failed: dict[tuple[str, datetime], str] = {}
        for (channel, start), symbols in groups.items():
            source = self._sources[-1] if self._sources else None
            if source is None:
                failed[(channel, start)] = "no historical client to backfill from"
                continue
            fetch = partial(source.fetch_bars, channel, sorted(symbols), start, MAX_BACKFILL_BARS)
            try:
                fetched[(channel, start)] = await self._loop.run_in_executor(None, fetch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed[(channel, start)] = describe_error(exc) or type(exc).__name__
                _log.warning(
                    "gaps.backfill_failed", endpoint=self.endpoint, channel=channel,
                    error=failed[(channel, start)],
                )
        forms: dict[tuple[Pair, datetime, str], list[Item]] = {}
        for plan in plans:
            try:
                self._deliver(plan, fetched, failed, forms)
            except Exception as exc:  # a source answering nonsense: say so, hold nothing back
                _log.exception("gaps.source_failed", endpoint=self.endpoint, error=str(exc))
                self._give_up(plan, describe_error(exc) or type(exc).__name__)

    def _give_up(self, plan: _Plan, error: str) -> None:
        """Tell the subscription its backfill failed, and release the live bars it held."""
        sub = plan.sub
        sub.push_notice(self._follow_up(plan.notice, set(plan.starts), error))
        if not sub.release(plan.starts, [], _order):
            self._on_overflow(sub)

    @staticmethod
    def _follow_up(notice: GapNotice, pairs: Iterable[Pair], error: str) -> GapNotice:
        """The second notice of a gap: what was not backfilled, and why."""
        return dataclasses.replace(
            notice, backfill=False, not_backfilled=_symbols(pairs), backfill_error=error
        )

    def _deliver(
        self,
        plan: _Plan,
        fetched: Mapping[tuple[str, datetime], Mapping[str, Sequence[Mapping[str, Any]]]],
        failed: Mapping[tuple[str, datetime], str],
        forms: dict[tuple[Pair, datetime, str], list[Item]],
    ) -> None:
        sub = plan.sub
        errors: dict[str, set[Pair]] = {}
        truncated = {
            key
            for key, rows in fetched.items()
            if getattr(rows, "truncated", False) or _count(rows) >= MAX_BACKFILL_BARS
        }
        for pair, start in plan.starts.items():
            key = (pair[0], start)
            if key in failed:
                errors.setdefault(failed[key], set()).add(pair)
            elif key in truncated:
                errors.setdefault(
                    f"more than {MAX_BACKFILL_BARS} bars were missed: later ones not backfilled",
                    set(),
                ).add(pair)
        for error, pairs in errors.items():  # said before the live bars resume
            sub.push_notice(self._follow_up(plan.notice, pairs, error))
        items: list[Item] = []
        for pair, start in plan.starts.items():
            rows = fetched.get((pair[0], start))
            if rows is not None:
                cached = (pair, start, sub.form)
                if cached not in forms:
                    forms[cached] = _items(pair, rows.get(pair[1], ()), start, form=sub.form)
                items.extend(_before(forms[cached], sub.first_held(pair)))
        if not sub.release(plan.starts, items, _order):
            self._on_overflow(sub)


def _order(item: Item) -> datetime:
    """Items by the server's time (those without one first)."""
    return message_time(item[2]) or _EPOCH


def _count(rows: Mapping[str, Sequence[Any]]) -> int:
    return sum(len(bars) for bars in rows.values())


def _items(
    pair: Pair, rows: Iterable[Mapping[str, Any]], start: datetime, *, form: str
) -> list[Item]:
    """The fetched bars of one pair as inbox items (marked), ascending, each time once.

    ``form`` is the subscription's: a ``model`` is a ``BackfilledBar``, a ``struct``
    a :class:`~alpaca_di.protocol.structs.BackfilledBar` (``BackfilledDailyBar``),
    a ``raw`` dict carries ``"backfilled": True``.
    """
    from alpaca_di.protocol.models import parse  # loaded with the first hub already
    from alpaca_di.protocol.structs import backfilled

    channel, symbol = pair
    items: list[Item] = []
    last: datetime | None = None
    for row in rows:
        stamp = message_time(row)
        if stamp is None or stamp < start or (last is not None and stamp <= last):
            continue
        last = stamp
        message = {
            **row,
            "T": _TYPE_CODES[channel],
            "S": symbol,
            "t": msgpack.Timestamp.from_datetime(stamp),
            "backfilled": True,
        }
        if form == "raw":
            items.append((channel, symbol, message))
            continue
        try:
            if form == "struct":
                items.append((channel, symbol, backfilled(channel, message)))
            else:
                items.append((channel, symbol, parse(channel, symbol, message)))
        except (ProtocolError, ValueError) as exc:
            _log.warning("gaps.backfill_malformed", channel=channel, symbol=symbol, error=str(exc))
    return items


def _before(items: list[Item], first_live: Item | None) -> list[Item]:
    """The backfilled items older than the first live bar held (that one is newer)."""
    if first_live is None:
        return items
    cutoff = message_time(first_live[2])
    if cutoff is None:
        return items
    return [item for item in items if (message_time(item[2]) or cutoff) < cutoff]
