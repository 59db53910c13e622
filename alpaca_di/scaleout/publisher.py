"""Publisher: a leader's outbox, from its upstream socket to Redis.

The leader's socket reader hands each decoded frame to :meth:`Publisher.enqueue`,
which never blocks; one task per leadership term drains the outbox: market data
to the group's pub/sub channel (merged into batches, the oldest dropped when
Redis cannot keep up), trade updates to the group's stream (numbered per term,
retried until Redis takes them, never dropped).

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
_OUTBOX_LIMIT = 10_000  # queued batches before the oldest market data is dropped


class Publisher:
    """One group's outbox and, while a term lasts, the task that drains it to Redis.

    ``client`` returns the gateway's current Redis client (``None`` once it
    stopped). ``published`` and ``dropped`` count messages over every term.
    All methods run on the gateway loop.
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
        self._client = client
        self._log = log
        self._epoch = 0
        self._outbox: deque[list[Any]] = deque()
        self._update_seq = 0
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self, epoch: int) -> None:
        """A leadership term begins: an empty outbox, sequence numbers from 1."""
        self._epoch = epoch
        self._outbox.clear()
        self._update_seq = 0
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def enqueue(self, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
        """A decoded frame: queue it for Redis (never blocks)."""
        outbox = self._outbox
        if self.kind is StreamKind.TRADING:
            # Numbered per term: a retried XADD (reply lost) is recognised by followers.
            numbered: list[Any] = []
            for channel, symbol, raw in messages:
                self._update_seq += 1
                numbered.append((self._update_seq, channel, symbol, raw))
            outbox.append(numbered)
        else:
            if len(outbox) >= _OUTBOX_LIMIT:
                self.dropped += len(outbox.popleft())
            outbox.append(messages)
        self._ready.set()

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
            if self._outbox:
                lost = sum(len(batch) for batch in self._outbox)
                self._log.warning("gateway.unpublished", messages=lost)
        self._outbox.clear()

    async def _run(self) -> None:
        ready = self._ready
        while True:
            await ready.wait()
            ready.clear()
            client = self._client()
            bound = self.sharing.command_timeout
            while self._outbox and client is not None:
                try:
                    await asyncio.wait_for(self._drain(client, self._epoch), bound)
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    if self._stopping:
                        return
                    if self.kind is StreamKind.TRADING:
                        self._log.warning("gateway.xadd_failed", error=describe_error(exc))
                        await asyncio.sleep(self.sharing.renew_interval)
                    else:
                        self.dropped += sum(len(batch) for batch in self._outbox)
                        self._outbox.clear()
                        self._log.warning("gateway.publish_failed", error=describe_error(exc))
            if self._stopping:
                return

    async def _drain(self, client: Redis, epoch: int) -> None:
        outbox = self._outbox
        if self.kind is StreamKind.TRADING:
            batches = list(outbox)
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
                self.published += 1
            return
        messages: list[Any] = []
        while outbox and len(messages) < _MAX_BATCH:
            messages.extend(outbox.popleft())
        await client.publish(self.keys.data_channel, encode_batch(epoch, messages))
        self.published += len(messages)
