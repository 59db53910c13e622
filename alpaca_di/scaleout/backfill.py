"""Bar backfill in the Redis scale-out: the leader fetches each gap once, followers read it.

Alpaca's market-data REST API allows 200 requests a minute per account; N
processes each backfilling the same gap would spend N of them. Instead:

* every member writes, next to its demand, the bar pairs it wants backfilled
  (``P:{T}:wants:<member>``, :func:`~alpaca_di.scaleout.wire.encode_wants`);
* the leader (:class:`LeaderBackfill`, one per :class:`GroupLeader`) remembers
  the time of the last bar it published per (channel, symbol); when its socket
  was lost and the server confirmed the subscriptions again, it counts a gap
  (``LeaderStatus.gap``), fetches the window since those bars once, off the
  loop, through a :class:`~alpaca_di.services.history.HistoricalBarSource` on
  the data URL, and writes a :class:`~alpaca_di.scaleout.wire.GapRecord` (bars,
  errors, what a bound left out) with a TTL, then says so (``LeaderStatus.filled``);
* a follower's hub backfills through :class:`SharedBarSource`: for a gap of the
  leader it reads that record (bounded wait); what only this process missed (its
  own Redis link was down while the leader's socket stayed up, or it had not
  received every bar the leader published) it fetches with its own REST source.

:class:`~alpaca_di.hub.gaps.GapTracker` stays the one home of notices, holding
live bars and never delivering a bar twice: the record is only where its
:class:`~alpaca_di.hub.gaps.BarSource` reads from.

Example (what :class:`~alpaca_di.scaleout.leader.GroupLeader` and the hub wire up)::

    source, close = history_source(StreamKind.STOCK, creds, settings.resolved_data_url, "iex")
    backfill = LeaderBackfill(keys, sharing, source, client=lambda: redis, log=log,
                              filled=publish_status)
    hub.use_history(HistoricalBarSource("stock", client))   # a SharedBarSource behind Redis
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from alpaca_di.credentials import Credentials
from alpaca_di.errors import describe_error
from alpaca_di.hub.gaps import (
    MAX_BACKFILL_BARS,
    MAX_BACKFILL_SYMBOLS,
    BarSource,
    FetchedBars,
    window_start,
)
from alpaca_di.hub.inbox import BAR_CHANNELS
from alpaca_di.protocol import StreamKind
from alpaca_di.protocol.times import message_time
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.wire import GapRecord, Pair, SharingKeys

if TYPE_CHECKING:
    from alpaca_di.services.interfaces import BarsClient

__all__ = [
    "MAX_SHARED_PAIRS",
    "GapRecords",
    "LeaderBackfill",
    "SharedBarSource",
    "history_source",
]

MAX_SHARED_PAIRS = 1000
"""Bar pairs a leader backfills per gap (requests of :data:`MAX_BACKFILL_SYMBOLS` each);
the followers fetch the rest themselves."""
RECORD_TTL_MS = 300_000
"""How long a gap record stays in Redis (followers read it within ``backfill_timeout``)."""
_ROW_KEYS = ("o", "h", "l", "c", "v", "n", "vw")
_WRITE_ATTEMPTS = 5


class BackfillUnavailableError(RuntimeError):
    """The group's leader could not backfill a gap (its REST fetch failed), or said nothing."""


def history_source(
    kind: StreamKind, credentials: Credentials, data_url: str, feed: str | None
) -> tuple[BarSource, Callable[[], None]]:
    """A leader's :class:`~alpaca_di.services.history.HistoricalBarSource` and its closer.

    alpaca-py's historical client of ``kind`` on ``data_url`` is built at the first
    fetch (the secret passed straight through, never stored elsewhere)::

        source, close = history_source(StreamKind.STOCK, creds, settings.resolved_data_url, "iex")
    """
    from alpaca_di.services.history import HistoricalBarSource

    built: list[Any] = []

    def client() -> BarsClient:
        if not built:
            from alpaca.data.historical import (
                CryptoHistoricalDataClient,
                OptionHistoricalDataClient,
                StockHistoricalDataClient,
            )

            factory: Any = {
                StreamKind.STOCK: StockHistoricalDataClient,
                StreamKind.CRYPTO: CryptoHistoricalDataClient,
                StreamKind.OPTION: OptionHistoricalDataClient,
            }[kind]
            built.append(
                factory(
                    credentials.key_id,
                    credentials.secret.get_secret_value(),
                    url_override=data_url,
                )
            )
        return built[0]  # type: ignore[no-any-return]

    def close() -> None:
        for made in built:
            session = getattr(made, "_session", None)
            if session is not None:
                session.close()
        built.clear()

    return HistoricalBarSource(kind, client, feed=feed), close


@dataclass
class _Loss:
    last_bars: dict[Pair, Any]
    since: datetime
    pairs: frozenset[Pair]


class LeaderBackfill:
    """One group leader's gaps: the last bar it published per pair, each gap fetched once.

    ``source`` is ``None`` when the leader has no data URL (the followers then
    fetch themselves). ``client`` returns the gateway's Redis client; ``filled``
    is called (on the loop) when a gap's record is written, to publish the status.
    All methods run on the gateway loop.
    """

    def __init__(
        self,
        keys: SharingKeys,
        sharing: SharingOptions,
        source: BarSource | None,
        *,
        client: Callable[[], Redis | None],
        log: FilteringBoundLogger,
        filled: Callable[[], None],
    ) -> None:
        self.keys = keys
        self.sharing = sharing
        self.source = source
        self.wants: set[Pair] = set()
        self.gap = 0
        self.filled = 0
        self.fetches = 0  # REST requests made for gaps (each fetch_bars call)
        self._client = client
        self._log = log
        self._on_filled = filled
        self._epoch = 0
        self._last_bars: dict[Pair, Any] = {}
        self._last_raw: Mapping[str, Any] | None = None
        self._loss: _Loss | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, epoch: int) -> None:
        """A leadership term begins: gaps count from 1; nothing published yet."""
        self.stop()
        self._epoch = epoch
        self.gap = self.filled = 0
        self._last_bars = {}
        self._last_raw = None
        self._loss = None

    def stop(self) -> None:
        """The term ends: fetches under way are abandoned (followers fall back to REST)."""
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    def observe(self, messages: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
        """A frame the leader publishes: remember its bars' times (the hot path: no parsing)."""
        if not messages:
            return
        last_bars = self._last_bars
        for channel, symbol, raw in messages:
            if channel in BAR_CHANNELS:
                stamp = raw.get("t")
                if stamp is not None:
                    last_bars[(channel, symbol)] = stamp
        self._last_raw = messages[-1][2]

    def idle(self) -> None:
        """The socket was closed for want of demand: no gap to fill when one opens again."""
        self._loss = None

    def lost(self, ack: Mapping[str, Iterable[str]]) -> None:
        """The socket was lost with ``ack`` confirmed: remember what it had published.

        A loss already pending (a reconnect attempt that failed) is kept.
        """
        if self._loss is not None:
            return
        pairs = frozenset(
            (channel, symbol)
            for channel, symbols in ack.items()
            if channel in BAR_CHANNELS
            for symbol in symbols
        )
        last = message_time(self._last_raw) if self._last_raw is not None else None
        self._loss = _Loss(dict(self._last_bars), last or datetime.now(timezone.utc), pairs)

    def restored(self) -> bool:
        """The server confirmed the subscriptions again: count the gap, fetch it (a task).

        Returns whether a loss was pending (the status must then be published).
        """
        loss, self._loss = self._loss, None
        if loss is None:
            return False
        self.gap += 1
        starts = self._plan(loss)
        task = asyncio.get_running_loop().create_task(self._fill(self._epoch, self.gap, starts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _plan(self, loss: _Loss) -> dict[Pair, datetime]:
        wanted: list[Pair] = []
        for channel, symbol in sorted(self.wants):
            if channel not in BAR_CHANNELS:
                continue
            if symbol == "*":
                if (channel, "*") in loss.pairs:
                    wanted.extend(sorted(p for p in loss.last_bars if p[0] == channel))
            elif (channel, symbol) in loss.pairs or (channel, "*") in loss.pairs:
                wanted.append((channel, symbol))
        starts: dict[Pair, datetime] = {}
        for pair in list(dict.fromkeys(wanted))[:MAX_SHARED_PAIRS]:
            stamp = loss.last_bars.get(pair)
            last = message_time({"t": stamp}) if stamp is not None else None
            starts[pair] = window_start(pair[0], last, loss.since)
        return starts

    async def _fill(self, epoch: int, seq: int, starts: dict[Pair, datetime]) -> None:
        groups: dict[tuple[str, datetime], list[str]] = {}
        for (channel, symbol), start in starts.items():
            groups.setdefault((channel, start), []).append(symbol)
        bars: dict[Pair, tuple[msgpack.Timestamp, list[dict[str, Any]]]] = {}
        errors: dict[Pair, str] = {}
        truncated: set[Pair] = set()
        for (channel, start), symbols in groups.items():
            for at in range(0, len(symbols), MAX_BACKFILL_SYMBOLS):
                chunk = symbols[at : at + MAX_BACKFILL_SYMBOLS]
                if self.source is None:
                    for symbol in chunk:
                        errors[(channel, symbol)] = "the leader has no market-data REST URL"
                    continue
                self.fetches += 1
                try:
                    rows = await asyncio.to_thread(
                        self.source.fetch_bars, channel, chunk, start, MAX_BACKFILL_BARS
                    )
                    got = {symbol: _wire_rows(rows.get(symbol, ())) for symbol in chunk}
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = describe_error(exc) or type(exc).__name__
                    self._log.warning("gateway.backfill_failed", channel=channel, error=error)
                    for symbol in chunk:
                        errors[(channel, symbol)] = error
                    continue
                if sum(len(r) for r in got.values()) >= MAX_BACKFILL_BARS:
                    truncated.update((channel, symbol) for symbol in chunk)
                stamp = msgpack.Timestamp.from_datetime(start)
                for symbol, wire in got.items():
                    bars[(channel, symbol)] = (stamp, wire)
        record = GapRecord(bars, errors, frozenset(truncated)).encode()
        await self._write(epoch, seq, record)
        self._log.info(
            "gateway.backfilled",
            gap=seq,
            pairs=len(bars),
            bars=sum(len(rows) for _start, rows in bars.values()),
            failed=len(errors),
        )

    async def _write(self, epoch: int, seq: int, record: bytes) -> None:
        delay = self.sharing.renew_interval
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            client = self._client()
            if client is None or self._epoch != epoch:
                return
            try:
                await asyncio.wait_for(
                    client.set(self.keys.gap(epoch, seq), record, px=RECORD_TTL_MS),
                    self.sharing.command_timeout,
                )
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self._log.warning(
                    "gateway.gap_record_failed", attempt=attempt, error=describe_error(exc)
                )
                await asyncio.sleep(delay)  # Redis away: retry with backoff, bounded
                delay = min(delay * 2, 5.0)
                continue
            if self._epoch == epoch:
                self.filled = max(self.filled, seq)
                self._on_filled()
            return


def _wire_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fetched bars in the stream's keys, ``t`` a msgpack Timestamp (what the record holds)."""
    wire: list[dict[str, Any]] = []
    for row in rows:
        stamp = message_time(row)
        if stamp is None:
            continue
        bar: dict[str, Any] = {key: row.get(key) for key in _ROW_KEYS if key in row}
        bar["t"] = msgpack.Timestamp.from_datetime(stamp)
        wire.append(bar)
    return wire


class GapRecords(Protocol):
    """What a :class:`SharedBarSource` asks its upstream (a ``RedisUpstream``)."""

    def restored_gap(self) -> tuple[int, int] | None:
        """The leader gap ``(epoch, seq)`` the last restore followed, if it was one alone."""
        ...

    def gap_record(self, gap: tuple[int, int]) -> GapRecord | None:
        """That gap's record (blocking, bounded; in a thread); ``None``: fetch it yourself."""
        ...


class SharedBarSource:
    """A follower hub's :class:`~alpaca_di.hub.gaps.BarSource`: the leader's record first.

    For each symbol asked, the leader's bars are used when its window starts no
    later than the one asked (the leader published, and this process received,
    everything before it); the rest is fetched through ``fallback`` (this
    process's own REST source). A pair the leader failed to fetch raises, and the
    subscriptions get a notice saying why.

    Example::

        source = SharedBarSource(upstream, HistoricalBarSource("stock", client))
        source.fetch_bars("bars", ["AAPL"], start, 10_000)     # in a thread
    """

    def __init__(self, upstream: GapRecords, fallback: BarSource) -> None:
        self.upstream = upstream
        self.fallback = fallback
        self.shared = 0  # pairs served from the leader's records
        self.own = 0  # fetches made through the fallback

    def fetch_bars(
        self, channel: str, symbols: Sequence[str], start: datetime, limit: int
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        """The bars of ``symbols`` since ``start``: from the leader's record, else ``fallback``."""
        gap = self.upstream.restored_gap()
        record = self.upstream.gap_record(gap) if gap is not None else None
        served: dict[str, list[Mapping[str, Any]]] = {}
        truncated = False
        missing: list[str] = []
        for symbol in symbols:
            pair = (channel, symbol)
            if record is not None and pair in record.errors:
                raise BackfillUnavailableError(
                    f"the group's leader could not backfill {channel} {symbol}: "
                    f"{record.errors[pair]}"
                )
            entry = record.bars.get(pair) if record is not None else None
            if entry is not None and entry[0].to_datetime() <= start:
                served[symbol] = list(entry[1])
                truncated = truncated or pair in record.truncated  # type: ignore[union-attr]
            else:
                missing.append(symbol)
        self.shared += len(served)
        if missing:
            self.own += 1
            for symbol, rows in self.fallback.fetch_bars(channel, missing, start, limit).items():
                served[symbol] = list(rows)
        return FetchedBars(served, truncated=truncated)

    def __repr__(self) -> str:
        return f"<SharedBarSource fallback={self.fallback!r}>"
