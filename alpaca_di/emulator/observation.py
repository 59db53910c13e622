"""What a test reads: counters, connections, subscriptions, sequence numbers, waiting.

Every reading of :class:`Observation` is an immutable snapshot (plain dataclasses:
``dataclasses.asdict`` works on them). :meth:`Observation.snapshot` gathers them
as JSON, which the REST port also serves at ``GET /_emulator/counters`` for
anyone outside the process. :meth:`Observation.wait_until` (and its async twin
:meth:`Observation.until`) re-evaluate a predicate at every emulator state
change, so tests never sleep-poll::

    emu.wait_until(lambda: emu.counters("PK", "/v2/iex").open == 1, 5)
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from alpaca_di.emulator.accounts import ConnectionInfo, EmulatorStats, EndpointCounters
from alpaca_di.emulator.core import EmulatorCore
from alpaca_di.emulator.session import resolve_path
from alpaca_di.emulator.wire import FEEDS, TYPE_TO_CHANNEL

__all__ = ["Observation"]


def _peer(address: object) -> tuple[str, int]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return ("", 0)


class Observation(EmulatorCore):
    """Counters, subscription state, sequences and condition waits."""

    def counters(self, key_id: str, path: str) -> EndpointCounters:
        """An immutable snapshot of the counters of ``(key_id, path)`` (zeros if never seen).

        Example::

            c = emu.counters("PKTEST", "/v2/iex")
            c.open, c.rejections.get(406, 0), c.messages_sent
        """
        resolved = resolve_path(path)
        with self._cond:
            cell = self._cells.get((key_id, resolved))
            return cell.snapshot() if cell is not None else EndpointCounters(key_id, resolved)

    def all_counters(self) -> list[EndpointCounters]:
        """Snapshots of every ``(key_id, path)`` the emulator has seen, sorted by path and key.

        Sessions that never authenticated are counted under ``key_id=""``.

        Example::

            sum(c.messages_sent for c in emu.all_counters())
        """
        with self._cond:
            cells = sorted(self._cells.values(), key=lambda c: (c.path, c.key_id))
            return [cell.snapshot() for cell in cells]

    def snapshot(self) -> dict[str, Any]:
        """Everything the emulator counts, as JSON-ready data (what ``/_emulator/counters`` serves).

        ``{"clock": ISO time, "stats": {...}, "counters": [{key_id, path, ...}, ...],
        "connections": [{id, path, key_id, authenticated, peer}, ...]}``: the fields
        of :class:`EmulatorStats`, :class:`EndpointCounters` and :class:`ConnectionInfo`
        (JSON turns the ``rejections`` codes into strings). No secret is in it.

        Example::

            json.dumps(emu.snapshot())
            # or, from outside: curl http://127.0.0.1:RESTPORT/_emulator/counters
        """
        return {
            "clock": self._clock.now().isoformat().replace("+00:00", "Z"),
            "stats": dataclasses.asdict(self.stats()),
            "counters": [dataclasses.asdict(c) for c in self.all_counters()],
            "connections": [dataclasses.asdict(c) for c in self.connections()],
        }

    def subscriptions(self, key_id: str, path: str) -> dict[str, frozenset[str]]:
        """The server-side subscription state of the key's open sessions on a data path.

        Every channel key of the feed is present (empty when not subscribed);
        ``corrections``/``cancelErrors`` mirror ``trades`` on stock feeds.

        Example::

            emu.subscriptions("PKTEST", "/v2/iex")["quotes"] == {"AAPL", "*"}
        """
        resolved = resolve_path(path)
        spec = FEEDS.get(resolved)
        if spec is None:
            raise ValueError("subscriptions() serves data paths; /stream has no symbols")
        with self._cond:
            snapshot = self._subs_snapshot.get((key_id, resolved))
        if snapshot is None:
            return {channel: frozenset() for channel in spec.ack_channels}
        return dict(snapshot)

    def sequences(self, key_id: str, path: str) -> dict[tuple[str, str], int]:
        """The last sequence number generated per (channel, symbol) for a key's open sessions.

        Only with ``AlpacaEmulator(sequence=True)``. Channels are the subscribe keys
        (``trades``, ``quotes``, ``updatedBars`` ...). A number is counted when the
        point is generated, before it is queued for the socket, so every point a
        client has seen has a number at most this one. With several open sessions
        (connection_limit > 1) the highest number per pair is given.

        Example::

            before = emu.sequences("PK", "/v2/iex").get(("quotes", "AAPL"), 0)
        """
        resolved = resolve_path(path)

        def run() -> dict[tuple[str, str], int]:
            merged: dict[tuple[str, str], int] = {}
            for sess in self._sessions[resolved]:
                if sess.key_id != key_id or not sess.authenticated:
                    continue
                for (type_code, symbol), number in sess.seq.items():
                    key = (TYPE_TO_CHANNEL.get(type_code, type_code), symbol)
                    if number > merged.get(key, 0):
                        merged[key] = number
            return merged

        return self._call(run)

    def connections(
        self, path: str | None = None, *, key_id: str | None = None
    ) -> list[ConnectionInfo]:
        """The open WebSocket connections (filtered by path and key), oldest first.

        Example::

            [c.id for c in emu.connections("/v2/iex", key_id="PKTEST")]
        """
        resolved = None if path is None else resolve_path(path)

        def run() -> list[ConnectionInfo]:
            found = [
                ConnectionInfo(
                    id=s.id,
                    path=s.path,
                    key_id=s.key_id,
                    authenticated=s.authenticated,
                    peer=_peer(s.ws.remote_address),
                )
                for s in self._matching(resolved, key_id)
            ]
            return sorted(found, key=lambda c: c.id)

        return self._call(run)

    def stats(self) -> EmulatorStats:
        """Server-wide figures: handshakes (refused too), open connections, REST calls."""
        with self._cond:
            return EmulatorStats(
                handshakes=self._stats["handshakes"],
                refused_handshakes=self._stats["refused_handshakes"],
                open_connections=self._stats["open"],
                rest_requests=self._stats["rest"],
                market_data_requests=self._stats["market_data"],
            )

    def wait_until(
        self, predicate: Callable[[], object], timeout: float = 5.0, *, message: str | None = None
    ) -> None:
        """Block until ``predicate()`` is true; raise ``TimeoutError`` after ``timeout`` seconds.

        The predicate is re-evaluated on every emulator state change (connection,
        auth, subscription, frame sent, ...), and at least every 50 ms for state
        the emulator does not own. Not for the emulator's own loop thread: use
        :meth:`until` there.

        Example::

            emu.wait_until(lambda: emu.counters("PK", "/v2/iex").open == 1, 5,
                           message="stream never connected")
        """
        if self._loop is not None and self._on_loop():
            raise RuntimeError(
                "wait_until() would block the emulator's loop; use 'await emu.until()'"
            )
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_text(predicate, timeout, message))
                self._cond.wait(min(remaining, 0.05))

    async def until(
        self, predicate: Callable[[], object], timeout: float = 5.0, *, message: str | None = None
    ) -> None:
        """Async :meth:`wait_until`: await until ``predicate()`` is true, or ``TimeoutError``.

        Example::

            async with AlpacaEmulator() as emu:
                ...
                await emu.until(lambda: emu.counters("PK", "/v2/iex").open == 1)
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await asyncio.to_thread(self.wait_until, predicate, timeout, message=message)
            return
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_text(predicate, timeout, message))
            waiter: asyncio.Future[None] = loop.create_future()
            self._async_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, min(remaining, 0.05))
            except asyncio.TimeoutError:
                pass

    @staticmethod
    def _timeout_text(predicate: Callable[[], object], timeout: float, message: str | None) -> str:
        what = message or getattr(predicate, "__qualname__", repr(predicate))
        return f"emulator condition not met within {timeout:g}s: {what}"
