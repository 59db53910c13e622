"""UpdateReader: a follower's position in its group's trade-update stream.

Trade updates are never dropped, so the leader appends them to a Redis stream
(:func:`~alpaca_di.scaleout.wire.update_entry`) rather than publishing them.
Each process reads that stream from its own position: every update reaches
every process once, even across a leader change, and a reader with a stable
``consumer_id`` resumes where it stopped after a restart. An entry a leader
appended twice (it retried an ``XADD`` whose reply it lost) is recognised by its
(epoch, sequence) fields and counted in ``duplicates``. In the leader's own
process the updates arrive first from memory (:meth:`UpdateReader.take_local`);
their stream entries are then skipped (``from_memory``).

Example (what :class:`~alpaca_di.scaleout.follower.RedisUpstream` does)::

    reader = UpdateReader(keys, sharing, "web-1:42:ab12cd", deliver=hub_batch,
                          malformed=count_malformed)
    await reader.resume(client)                   # once per Redis session
    await reader.read(client, lambda: session_live)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, cast

from redis.asyncio import Redis

from alpaca_di.errors import ProtocolError
from alpaca_di.scaleout.options import SharingOptions
from alpaca_di.scaleout.wire import SharingKeys, decode_update_entry, stream_position

__all__ = ["UpdateReader"]


class UpdateReader:
    """Reads a group's trade-update stream from this reader's own saved position.

    ``consumer`` names the saved position (``P:{T}:cursor:<consumer>``);
    ``deliver`` receives each non-empty batch of ``[channel, symbol, raw]``
    items, ``malformed`` the reason of each entry that does not decode. All
    methods run on the follower's loop.
    """

    def __init__(
        self,
        keys: SharingKeys,
        sharing: SharingOptions,
        consumer: str,
        *,
        deliver: Callable[[list[Any]], None],
        malformed: Callable[[str], None],
    ) -> None:
        self.keys = keys
        self.sharing = sharing
        self.consumer = consumer
        self.duplicates = 0
        self.from_memory = 0
        self.last_id: str | None = None
        self._deliver = deliver
        self._malformed = malformed
        self._seen: dict[int, int] = {}
        self._local: dict[int, int] = {}

    def take_local(self, epoch: int, numbered: list[Any]) -> list[Any]:
        """Updates this process's leader read, ``[(seq, channel, symbol, raw)...]`` in order.

        Returns the ``[channel, symbol, raw]`` items not delivered yet and remembers
        the term's highest sequence, so the same entries read back from the stream
        are skipped.
        """
        mark = self._local.get(epoch, 0)
        fresh = [[channel, symbol, raw] for seq, channel, symbol, raw in numbered if seq > mark]
        if numbered:
            self._local[epoch] = max(mark, int(numbered[-1][0]))
            if len(self._local) > 16:
                del self._local[min(self._local)]
        return fresh

    async def resume(self, client: Redis) -> None:
        """Settle where to read from: the saved position, the stream's end, or its start."""
        keys = self.keys
        newest = await client.xrevrange(keys.updates, count=1)
        top = _text(newest[0][0]) if newest and newest[0][0] else None
        if self.last_id is None:
            saved = None
            if self.sharing.consumer_id:
                saved = await client.get(keys.cursor(self.consumer))
            self.last_id = _text(saved) if saved else (top or "0-0")
        elif top is None or stream_position(top) < stream_position(self.last_id):
            # The stream is younger than our position (Redis restarted empty): read it all.
            self.last_id = "0-0"

    async def read(self, client: Redis, live: Callable[[], bool]) -> None:
        """Deliver new entries and save the position after each read, while ``live()``."""
        keys = self.keys
        bound = self.sharing.command_timeout
        block_ms = max(1, int(min(1.0, bound / 2) * 1000))
        cursor_ttl = int(self.sharing.cursor_ttl * 1000)
        while live():
            assert self.last_id is not None
            # XREAD blocks server-side for block_ms: a reply well after that means a dead link.
            response = await asyncio.wait_for(
                client.xread({keys.updates: self.last_id}, block=block_ms, count=256),
                block_ms / 1000 + bound,
            )
            if not response or not live():
                continue
            for _name, entries in cast(list[Any], response):
                batch: list[Any] = []
                for entry_id, fields in entries:
                    self.last_id = _text(entry_id)
                    item = self._decode(fields)
                    if item is not None:
                        batch.append(item)
                if batch:
                    self._deliver(batch)
            await asyncio.wait_for(
                client.set(keys.cursor(self.consumer), self.last_id, px=cursor_ttl), bound
            )

    def _decode(self, fields: Mapping[bytes, bytes] | None) -> list[Any] | None:
        try:
            epoch, seq, item = decode_update_entry(fields)
        except (ProtocolError, ValueError) as exc:
            self._malformed(str(exc))
            return None
        if seq and seq <= self._local.get(epoch, 0):
            self.from_memory += 1  # delivered already, from this process's leader
            return None
        # A leader retries an XADD whose reply it lost: (epoch, seq) makes that idempotent.
        if seq:
            seen = self._seen
            if seq <= seen.get(epoch, 0):
                self.duplicates += 1
                return None
            seen[epoch] = seq
            if len(seen) > 16:
                del seen[min(seen)]
        return item


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
