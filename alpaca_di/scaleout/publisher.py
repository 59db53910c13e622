"""Publisher: a leader's outbox, from its upstream socket to Redis.

The leader's socket reader hands each decoded frame to :meth:`Publisher.enqueue`,
which never blocks; one task per leadership term drains the outbox: market data
to the group's pub/sub channel (merged into batches; past a bounded backlog the
oldest is dropped, counted and logged), trade updates to the group's stream
(numbered per term, kept in memory until Redis acknowledges the ``XADD``,
retried with backoff while Redis is away, never dropped while the term lasts).
A term that ends gets a bounded flush; trade updates still held then are
counted in ``abandoned`` and left to the next leader's REST reconciliation
(:mod:`alpaca_di.scaleout.recovery`).

Example (what :class:`~alpaca_di.scaleout.leader.GroupLeader` does)::

    publisher = Publisher(StreamKind.STOCK, keys, sharing, client=lambda: client, log=log)
    publisher.start(epoch)                 # a term begins
    publisher.enqueue([("quotes", "AAPL", raw)])
    await publisher.stop(flush_timeout=1.0)
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


class Publisher:
    """One group's outbox and, while a term lasts, the task that drains it to Redis.

    ``client`` returns the gateway's current Redis client (``None`` once it
    stopped). ``published`` and ``dropped`` (market data only) count messages
    over every term, ``abandoned`` the trade updates a term ended with that
    Redis never acknowledged; :attr:`held` is what the outbox holds now. All
    methods run on the gateway loop.
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
        self._client = client
        self._log = log
        self._epoch = 0
        self._outbox: deque[list[Any]] = deque()
        self._update_seq = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._overflows = 0

    def start(self, epoch: int) -> None:
        """A leadership term begins: an empty outbox, sequence numbers from 1."""
        self._epoch = epoch
        self._outbox.clear()
        self._update_seq = 0
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def epoch(self) -> int:
        """The epoch of the current (or last) term."""
        return self._epoch

    @property
    def held(self) -> int:
        """Messages queued that Redis has not taken yet (trade updates: not acknowledged)."""
        return sum(len(batch) for batch in self._outbox)

    def enqueue(self, messages: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
        """A decoded frame: queue it for Redis (never blocks).

        Returns the trade updates as numbered ``(seq, channel, symbol, raw)``
        (an empty list for market data).
        """
        outbox = self._outbox
        if self.kind is StreamKind.TRADING:
            # Numbered per term: a retried XADD (reply lost) is recognised by followers.
            numbered: list[Any] = []
            for channel, symbol, raw in messages:
                self._update_seq += 1
                numbered.append((self._update_seq, channel, symbol, raw))
            outbox.append(numbered)
            self._ready.set()
            return numbered
        if len(outbox) >= _OUTBOX_LIMIT:
            lost = len(outbox.popleft())
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
        """End the term: let the task publish what is queued (bounded), then empty the outbox."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._ready.set()
            await asyncio.wait({task}, timeout=flush_timeout)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            lost = self.held
            if lost:
                trading = self.kind is StreamKind.TRADING
                if trading:
                    self.abandoned += lost
                else:
                    self.dropped += lost
                self._log.warning(
                    "gateway.unpublished",
                    messages=lost,
                    kind=self.kind.value,
                    epoch=self._epoch,
                    recovery="the next leader's REST reconciliation" if trading else None,
                )
        self._outbox.clear()

    async def _run(self) -> None:
        ready = self._ready
        while True:
            await ready.wait()
            ready.clear()
            client = self._client()
            bound = self.sharing.command_timeout
            failures = 0
            while self._outbox and client is not None:
                try:
                    await asyncio.wait_for(self._drain(client, self._epoch), bound)
                    if failures:
                        self._log.info("gateway.xadd_resumed", attempts=failures + 1)
                    failures = 0
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    if self._stopping:
                        return
                    if self.kind is StreamKind.TRADING:
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
                        self._log.warning("gateway.publish_failed", error=describe_error(exc))
            if self._stopping:
                return

    async def _drain(self, client: Redis, epoch: int) -> None:
        outbox = self._outbox
        if self.kind is StreamKind.TRADING:
            batches: list[list[Any]] = []
            count = 0
            for batch in outbox:  # a long backlog goes in slices, each bounded in time
                if batches and count + len(batch) > _MAX_XADD:
                    break
                batches.append(batch)
                count += len(batch)
            maxlen = self.sharing.stream_maxlen
            async with client.pipeline(transaction=False) as pipe:
                for batch in batches:
                    for seq, channel, symbol, raw in batch:
                        pipe.xadd(
                            self.keys.updates,
                            update_entry(epoch, seq, channel, symbol, raw),
                            maxlen=maxlen,
                            approximate=True,
                        )
                # Bounded in length by MAXLEN, in time by the readers' cursor lifetime.
                pipe.pexpire(self.keys.updates, int(self.sharing.cursor_ttl * 1000))
                await pipe.execute()
            for _ in batches:  # only now: a failed XADD keeps them for the retry
                outbox.popleft()
            self.published += count
            return
        messages: list[Any] = []
        while outbox and len(messages) < _MAX_BATCH:
            messages.extend(outbox.popleft())
        await client.publish(self.keys.data_channel, encode_batch(epoch, messages))
        self.published += len(messages)
