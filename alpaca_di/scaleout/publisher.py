"""Publisher: a leader's outbox, from its upstream socket to Redis.

The leader's socket reader hands each decoded frame to :meth:`Publisher.enqueue`,
which never blocks; one task per leadership term drains the outbox: market data
to the group's pub/sub channel (merged into batches; past a bounded backlog the
oldest is dropped, counted and logged), trade updates to the group's stream
(numbered per term, kept in memory until Redis acknowledges the ``XADD``,
retried with backoff while Redis is away). A term that ends (the leader was
fenced: Redis unreachable, a freeze, a lost lock) does not end that: what it
read stays in the outbox under its own epoch and is appended once Redis is back,
whoever leads by then (followers de-duplicate by ``(epoch, seq)``, and the new
leader's REST reconciliation, :mod:`alpaca_di.scaleout.recovery`, covers what
no socket read). Only :meth:`Publisher.close` (the group retires: the process
shuts down) gives up, after a bounded flush; what it gives up is counted in
``abandoned`` and logged.

Example (what :class:`~alpaca_di.scaleout.leader.GroupLeader` does)::

    publisher = Publisher(StreamKind.STOCK, keys, sharing, client=lambda: client, log=log)
    publisher.start(epoch)                 # a term begins
    publisher.enqueue([("quotes", "AAPL", raw)])
    await publisher.stop(flush_timeout=0.25)   # the term ends; trade updates carry on
    await publisher.close(flush_timeout=1.0)   # the group retires
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from structlog.typing import FilteringBoundLogger

from alpaca_di.errors import describe_error
from alpaca_di.protocol import StreamKind
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.wire import SharingKeys, encode_batch, update_entry

__all__ = ["Publisher"]

_MAX_BATCH = 2000  # messages merged into one pub/sub message
_MAX_XADD = 500  # trade updates appended per pipeline
_OUTBOX_LIMIT = 10_000  # queued batches before the oldest market data is dropped
_RETRY_MAX = 1.0  # seconds: the longest pause between two XADD attempts
_HELD_LIMIT = 200_000  # trade updates held for Redis before the oldest are given up


class Publisher:
    """One group's outbox and the task that drains it to Redis.

    ``client`` returns the gateway's current Redis client (``None`` once it
    stopped). ``published`` and ``dropped`` (market data only) count messages
    over every term, ``abandoned`` the trade updates Redis never acknowledged
    and that were given up (at :meth:`close`, or past a bound of 200,000 held);
    :attr:`held` is what the outbox holds now, ``carried`` the trade updates a
    term ended with that were appended after it. All methods run on the gateway
    loop.
    """

    def __init__(
        self,
        kind: StreamKind,
        keys: SharingKeys,
        sharing: SharingOptions,
        *,
        client: Callable[[], Redis | None],
        log: FilteringBoundLogger,
    ) -> None:
        self.kind = kind
        self.keys = keys
        self.sharing = sharing
        self.published = 0
        self.dropped = 0
        self.abandoned = 0
        self.carried = 0
        self._client = client
        self._log = log
        self._epoch = 0
        self._trading = kind is StreamKind.TRADING
        # Market data: batches of one term. Trade updates: (epoch, [(seq, ...)...]),
        # across terms: an ended term's updates wait here until Redis takes them.
        self._outbox: deque[Any] = deque()
        self._held = 0
        self._update_seq = 0
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._overflows = 0
        # Market data: how many queued batches may go while a gap's status is on its
        # way (None: no hold). What the socket read after the restore waits for it.
        self._hold_at: int | None = None

    def start(self, epoch: int) -> None:
        """A leadership term begins: sequence numbers from 1 under ``epoch``.

        Trade updates of an earlier term still held stay ahead of the new ones.
        """
        self._epoch = epoch
        self._update_seq = 0
        self._stopping = False
        self._closed = False
        self._hold_at = None
        if not self._trading:
            self._outbox.clear()
        self._ensure_task()

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def hold(self) -> None:
        """Market data: publish what is queued now, nothing queued from now on until
        :meth:`release` (the leader's status announcing a restored gap goes first,
        so a follower restores before the session's first message reaches it)."""
        if not self._trading:
            self._hold_at = len(self._outbox)

    def release(self) -> None:
        """End a :meth:`hold`: what was queued meanwhile is published."""
        if self._hold_at is not None:
            self._hold_at = None
            self._ready.set()

    def _publishable(self) -> bool:
        return bool(self._outbox) and (self._hold_at is None or self._hold_at > 0)

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) term."""
        return self._epoch

    @property
    def held(self) -> int:
        """Messages queued that Redis has not taken yet (trade updates: not acknowledged)."""
        if self._trading:
            return self._held
        return sum(len(batch) for batch in self._outbox)

    def enqueue(self, messages: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
        """A decoded frame: queue it for Redis (never blocks).

        Returns the trade updates as numbered ``(seq, channel, symbol, raw)``
        (an empty list for market data).
        """
        outbox = self._outbox
        if self._trading:
            # Numbered per term: a retried XADD (reply lost) is recognised by followers.
            numbered: list[Any] = []
            for channel, symbol, raw in messages:
                self._update_seq += 1
                numbered.append((self._update_seq, channel, symbol, raw))
            outbox.append((self._epoch, numbered))
            self._held += len(numbered)
            self._drained.clear()
            while self._held > _HELD_LIMIT and len(outbox) > 1:
                _epoch, oldest = outbox.popleft()
                self._held -= len(oldest)
                self._give_up(len(oldest), "held_limit")
            self._ready.set()
            return numbered
        if len(outbox) >= _OUTBOX_LIMIT:
            lost = len(outbox.popleft())
            if self._hold_at:
                self._hold_at -= 1
            self.dropped += lost
            self._overflows += 1
            if self._overflows in (1, 10) or self._overflows % 1000 == 0:
                self._log.warning(
                    "gateway.outbox_overflow",
                    dropped=lost,
                    total_dropped=self.dropped,
                    limit=_OUTBOX_LIMIT,
                )
        outbox.append(messages)
        self._ready.set()
        return []

    async def stop(self, flush_timeout: float) -> None:
        """End the term: let the task publish what is queued (bounded).

        Market data still queued then is dropped (counted). Trade updates are
        kept, under the ended term's epoch, and appended as soon as Redis takes
        them, whoever leads by then.
        """
        if self._trading:
            if self._held:
                self._ready.set()
                try:
                    await asyncio.wait_for(self._drained.wait(), flush_timeout)
                except asyncio.TimeoutError:
                    self.carried += self._held
                    self._log.warning(
                        "gateway.updates_carried_over",
                        messages=self._held,
                        epoch=self._epoch,
                        reason="Redis has not taken them yet: appended once it does",
                    )
            return
        await self._end_task(flush_timeout)
        lost = self.held
        if lost:
            self.dropped += lost
            self._log.warning(
                "gateway.unpublished",
                messages=lost,
                kind=self.kind.value,
                why="stepped_down",
                epoch=self._epoch,
            )
        self._outbox.clear()

    async def close(self, flush_timeout: float) -> None:
        """The group retires: publish what is held (bounded), give up the rest (counted)."""
        self._closed = True
        await self._end_task(flush_timeout)
        lost = self.held
        self._outbox.clear()
        self._held = 0
        if lost and self._trading:
            self._give_up(lost, "closed")
        elif lost:
            self.dropped += lost

    def _give_up(self, lost: int, why: str) -> None:
        self.abandoned += lost
        self._log.warning(
            "gateway.unpublished",
            messages=lost,
            kind=self.kind.value,
            why=why,
            recovery="the next leader's REST reconciliation",
        )

    async def _end_task(self, flush_timeout: float) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._ready.set()
        if self._outbox:
            await asyncio.wait({task}, timeout=flush_timeout)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)

    async def _run(self) -> None:
        ready = self._ready
        while True:
            if not self._publishable():
                if not self._outbox:
                    self._drained.set()
                if self._stopping and not self._trading:
                    return
                if self._closed:
                    return
                await ready.wait()
            ready.clear()
            client = self._client()
            bound = self.sharing.command_timeout
            failures = 0
            while self._publishable() and client is not None:
                try:
                    await asyncio.wait_for(self._drain(client), bound)
                    if failures:
                        self._log.info("gateway.xadd_resumed", attempts=failures + 1)
                    failures = 0
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    if self._stopping and not self._trading:
                        return
                    if self._trading:
                        # Kept in the outbox: retried with backoff until Redis takes them.
                        failures += 1
                        if failures in (1, 10) or failures % 100 == 0:
                            self._log.warning(
                                "gateway.xadd_failed",
                                error=describe_error(exc),
                                held=self.held,
                                attempts=failures,
                            )
                        delay = min(_RETRY_MAX, self.sharing.renew_interval * 2 ** (failures - 1))
                        await asyncio.sleep(delay)
                        client = self._client()
                    else:
                        self.dropped += sum(len(batch) for batch in self._outbox)
                        self._outbox.clear()
                        if self._hold_at is not None:
                            self._hold_at = 0  # still held: what comes next waits
                        self._log.warning("gateway.publish_failed", error=describe_error(exc))
            if client is None and self._outbox:
                return  # the gateway stopped: close() counts what is left

    async def _drain(self, client: Redis) -> None:
        outbox = self._outbox
        if self._trading:
            batches: list[tuple[int, list[Any]]] = []
            count = 0
            for batch in outbox:  # a long backlog goes in slices, each bounded in time
                if batches and count + len(batch[1]) > _MAX_XADD:
                    break
                batches.append(batch)
                count += len(batch[1])
            maxlen = self.sharing.stream_maxlen
            async with client.pipeline(transaction=False) as pipe:
                for epoch, numbered in batches:
                    for seq, channel, symbol, raw in numbered:
                        pipe.xadd(
                            self.keys.updates,
                            update_entry(epoch, seq, channel, symbol, raw),
                            maxlen=maxlen,
                            approximate=True,
                        )
                # Bounded in length by MAXLEN, in time by the readers' cursor lifetime.
                pipe.pexpire(self.keys.updates, int(self.sharing.cursor_ttl * 1000))
                await pipe.execute()
            for batch in batches:  # only now: a failed XADD keeps them for the retry
                if outbox and outbox[0] is batch:  # (unless given up meanwhile: held limit)
                    outbox.popleft()
                    self._held -= len(batch[1])
            self.published += count
            return
        messages: list[Any] = []
        limit = self._hold_at
        taken = 0
        while outbox and len(messages) < _MAX_BATCH and (limit is None or taken < limit):
            messages.extend(outbox.popleft())
            taken += 1
        if self._hold_at is not None:
            self._hold_at -= taken
        await client.publish(self.keys.data_channel, encode_batch(self._epoch, messages))
        self.published += len(messages)
