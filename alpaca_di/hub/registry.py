"""ConnectionRegistry: the one place connections live, keyed by (credentials, endpoint).

Every container shares :meth:`ConnectionRegistry.default` unless its ``registry``
provider is overridden (tests do that for isolation). A lease keeps a hub alive;
the socket opens at the hub's first subscription and closes, with a close
frame, when the last lease is released::

    registry = ConnectionRegistry()
    lease = registry.acquire(creds, StreamKind.STOCK, "wss://stream.data.alpaca.markets/v2/iex")
    lease.hub.subscribe(print, quotes=["AAPL"])
    ...
    lease.release()            # last lease: socket closed, runtime thread stopped
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import gc
import os
import threading
import weakref
from dataclasses import dataclass
from typing import ClassVar

import structlog

from alpaca_di._aio import running_loop
from alpaca_di._check import check_seconds
from alpaca_di._interrupts import deferred_interrupts
from alpaca_di.credentials import Credentials
from alpaca_di.hub.health import ConnectionHealth, HealthReport
from alpaca_di.hub.hub import StreamHub
from alpaca_di.protocol import StreamKind
from alpaca_di.transport.backoff import Backoff
from alpaca_di.transport.connection import Connection, ConnectionFactory, check_url
from alpaca_di.transport.options import ConnectionOptions
from alpaca_di.transport.runtime import Runtime

__all__ = ["ConnectionRegistry", "Lease"]

_log = structlog.get_logger("alpaca_di.registry")
_Key = tuple[Credentials, str]


@dataclass
class _Entry:
    hub: StreamHub
    leases: int
    retired: bool = False  # out of the registry, its hub closing or closed
    holds_runtime: bool = True  # one runtime user, given back once the hub closed


class Lease:
    """A claim on one shared hub. Release it exactly once (extra releases are no-ops)."""

    def __init__(self, registry: ConnectionRegistry, key: _Key, entry: _Entry) -> None:
        self._registry = registry
        self._key = key
        self._entry = entry
        self._released = False

    @property
    def hub(self) -> StreamHub:
        """The shared hub this lease keeps alive."""
        return self._entry.hub

    @property
    def released(self) -> bool:
        """True once released."""
        return self._released

    def release(self, timeout: float = 2.0) -> None:
        """Give the lease back; the last one closes the connection.

        Off the hub's loop this blocks until the close frame is exchanged (bounded
        by ``timeout``); on the loop it schedules the close (use :meth:`arelease`).
        """
        check_seconds("timeout", timeout)
        if not self._take():
            return
        closed = self._registry._drop(self._key, self._entry)
        if closed is not None:
            wait = None if self._entry.hub.loop is running_loop() else timeout
            self._registry._give_back_runtime(self._entry, closed, wait)

    async def arelease(self) -> None:
        """Give the lease back and, if it was the last, await the clean close."""
        if not self._take():
            return
        closed = self._registry._drop(self._key, self._entry)
        if closed is None:
            return
        try:
            await asyncio.wrap_future(closed)
        finally:  # cancelled meanwhile: the runtime is given back when the close ends
            self._registry._give_back_runtime(self._entry, closed, 0 if closed.done() else None)

    def _take(self) -> bool:
        with self._registry._lock:
            if self._released:
                return False
            self._released = True
            return True

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Lease {state} {self._entry.hub!r}>"


class ConnectionRegistry:
    """Shared hubs keyed by (credentials, endpoint), with lease counts.

    Thread-safe: any number of threads racing to first use get one hub. Every
    hub runs on the process-wide runtime thread (started on demand, stopped when
    its last hub closes), whatever loop acquires it: an application's loop may
    idle or close while its connections must go on. ``connection_factory``
    builds each hub's upstream: a WebSocket :class:`~alpaca_di.transport.Connection`
    by default, a Redis-fed one in the scale-out mode.
    """

    _default: ClassVar[ConnectionRegistry | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()
    _all: ClassVar[weakref.WeakSet[ConnectionRegistry]] = weakref.WeakSet()

    def __init__(
        self,
        runtime: Runtime | None = None,
        *,
        connection_factory: ConnectionFactory = Connection,
    ) -> None:
        self._connection_factory = connection_factory
        self._lock = threading.RLock()
        self._entries: dict[_Key, _Entry] = {}
        self._runtime = runtime or Runtime.shared()
        # Per key, the close of its last hub while that close runs: a new hub of the
        # key opens its socket only after it (see StreamHub start_after).
        self._closes: dict[_Key, concurrent.futures.Future[None]] = {}
        ConnectionRegistry._all.add(self)

    @classmethod
    def default(cls) -> ConnectionRegistry:
        """The process-wide registry every container shares by default."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    @classmethod
    def live(cls) -> list[ConnectionRegistry]:
        """Every registry of the process that is still referenced (metrics read them all)."""
        return list(cls._all)

    def acquire(
        self,
        credentials: Credentials,
        kind: StreamKind | str,
        endpoint: str,
        options: ConnectionOptions | None = None,
        *,
        backoff: Backoff | None = None,
    ) -> Lease:
        """Lease the hub for (credentials, endpoint), creating it on first use.

        No network is touched here: the socket opens at the first subscription
        (or :meth:`StreamHub.wait_ready`). ``options`` of later acquirers of an
        existing hub are ignored (a warning is logged when they differ).
        """
        if not isinstance(credentials, Credentials):
            raise TypeError(f"credentials must be Credentials, got {type(credentials).__name__}")
        try:
            kind = StreamKind(kind)
        except ValueError:
            valid = ", ".join(k.value for k in StreamKind)
            raise ValueError(f"unknown stream kind {kind!r}; valid kinds: {valid}") from None
        if options is None:
            options = ConnectionOptions()
        elif not isinstance(options, ConnectionOptions):
            raise TypeError(f"options must be ConnectionOptions, got {type(options).__name__}")
        check_url(endpoint, allow_insecure=options.allow_insecure)
        key = (credentials, endpoint)
        # A Ctrl-C between taking the runtime, the entry and the lease would leave
        # a count nobody releases: the bookkeeping completes first.
        with deferred_interrupts(), self._lock:
            entry = self._entries.get(key)
            if entry is not None and (entry.hub.closed or entry.hub.loop.is_closed()):
                del self._entries[key]
                entry = None
            if entry is None:
                # Every socket lives on the runtime thread, whatever loop asks: a
                # caller's loop may idle or close while the connection must go on
                # (pytest-asyncio's loop per test, asyncio.run() per request...),
                # and a second loop must never need a second socket.
                hub_loop = self._runtime.acquire()
                closing = self._closes.get(key)
                try:
                    hub = self._new_hub(
                        kind, endpoint, credentials, options, hub_loop, backoff, closing
                    )
                except BaseException:
                    self._runtime.release()
                    raise
                entry = self._entries[key] = _Entry(hub, 0)
            elif entry.hub.kind is not kind:
                raise ValueError(
                    f"{endpoint} is already open as a {entry.hub.kind.value} stream, "
                    f"not {kind.value}"
                )
            elif entry.hub.options != options:
                _log.warning(
                    "registry.options_ignored",
                    endpoint=endpoint,
                    fingerprint=credentials.fingerprint,
                    reason="the shared connection already exists with other options",
                )
            entry.leases += 1
            return Lease(self, key, entry)

    def _new_hub(
        self,
        kind: StreamKind,
        endpoint: str,
        credentials: Credentials,
        options: ConnectionOptions,
        loop: asyncio.AbstractEventLoop,
        backoff: Backoff | None,
        start_after: concurrent.futures.Future[None] | None = None,
    ) -> StreamHub:
        return StreamHub(
            kind=kind,
            endpoint=endpoint,
            credentials=credentials,
            options=options,
            loop=loop,
            backoff=backoff,
            connection_factory=self._connection_factory,
            start_after=start_after,
        )

    def _forget_parent(self) -> None:
        """In a forked child: every live hub starts over, idle, on the child's runtime."""
        self._lock = threading.RLock()  # another thread may have held it at the fork
        self._closes = {}
        for key, entry in list(self._entries.items()):
            if entry.hub.closed:
                del self._entries[key]
            else:
                entry.hub.forget_after_fork(self._runtime.acquire())
                entry.holds_runtime = True

    def hubs(self) -> list[StreamHub]:
        """Every live hub."""
        with self._lock:
            return [entry.hub for entry in self._entries.values()]

    def leases(self, credentials: Credentials, endpoint: str) -> int:
        """How many leases hold the hub of (credentials, endpoint)."""
        with self._lock:
            entry = self._entries.get((credentials, endpoint))
            return entry.leases if entry else 0

    def health(self) -> HealthReport:
        """A report on every live connection of this registry."""
        connections: list[ConnectionHealth] = [hub.health() for hub in self.hubs()]
        return HealthReport.of(connections)

    def close_all(self, timeout: float = 2.0) -> None:
        """Close every hub now, whatever its lease count (used at interpreter exit)."""
        check_seconds("timeout", timeout)
        with self._lock:
            entries = list(self._entries.items())
        closes = [(entry, self._retire(key, entry)) for key, entry in entries]
        for entry, closed in closes:
            self._give_back_runtime(entry, closed, timeout)

    # -- internals ---------------------------------------------------------------

    def _drop(self, key: _Key, entry: _Entry) -> concurrent.futures.Future[None] | None:
        """Drop one lease; the last one retires the entry (``None`` while leases remain)."""
        with self._lock:
            entry.leases -= 1
            if entry.leases > 0:
                return None
        return self._retire(key, entry)

    def _retire(self, key: _Key, entry: _Entry) -> concurrent.futures.Future[None]:
        """The entry leaves the registry and its hub closes: the one close path.

        Returns the hub's close, which also opens the key's gate: a new hub of
        ``key`` connects only once this socket has closed. Idempotent.
        """
        with self._lock:
            first = not entry.retired
            if first:
                entry.retired = True
                if self._entries.get(key) is entry:
                    del self._entries[key]
                gate = self._hold_key(key)
        closed = entry.hub.start_close()
        if first:
            closed.add_done_callback(lambda _: self._free_key(key, gate))
        return closed

    def _hold_key(self, key: _Key) -> concurrent.futures.Future[None]:
        """Under the lock: the future this close resolves when its socket has closed.

        A new hub of ``key`` waits, before connecting, on every close of the key still
        running: when one is, the key's gate becomes "this close and that one".
        """
        closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        previous = self._closes.get(key)
        if previous is None or previous.done():
            self._closes[key] = closed
            return closed
        both: concurrent.futures.Future[None] = concurrent.futures.Future()
        closed.add_done_callback(
            lambda _: previous.add_done_callback(lambda _: both.set_result(None))
        )
        self._closes[key] = both
        return closed

    def _free_key(self, key: _Key, gate: concurrent.futures.Future[None]) -> None:
        gate.set_result(None)
        with self._lock:
            current = self._closes.get(key)
            if current is not None and current.done():
                del self._closes[key]

    def _give_back_runtime(
        self, entry: _Entry, closed: concurrent.futures.Future[None], wait: float | None
    ) -> None:
        """Give the entry's runtime user back once its hub's socket has closed.

        Waits for the close up to ``wait`` seconds here (the last user then joins
        the runtime's thread), or with ``None`` (on the hub's own loop, which must
        not block) gives it back from the close's completion. Once per entry.
        """
        if wait is None:
            closed.add_done_callback(lambda _: self._give_back_runtime(entry, closed, 0))
            return
        try:
            closed.result(wait)
        except TimeoutError:
            _log.error("registry.close_timeout", endpoint=entry.hub.endpoint, timeout=wait)
        finally:
            with self._lock:
                holds, entry.holds_runtime = entry.holds_runtime, False
            if holds:
                self._runtime.release()


def _forget_after_fork() -> None:
    for registry in list(ConnectionRegistry._all):
        registry._forget_parent()
    gc.collect()  # the parent's connections, now unreachable, drop the child's fd copies


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _close_at_exit() -> None:
    # Without this an app that never shut down would leave Alpaca holding its
    # slot for ~90 s; with a close frame the slot frees at once.
    for registry in list(ConnectionRegistry._all):
        registry.close_all(timeout=1.0)
