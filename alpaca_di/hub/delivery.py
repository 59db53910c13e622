"""How messages leave an inbox: the handler pool, and inline drains for services.

:class:`HandlerPool` runs sync handlers on daemon worker threads, so none runs
on the reader's loop. :class:`InlineDrain` delivers on the producer's own
thread instead, for O(1) consumers inside the library (the
:class:`~alpaca_di.services.TradingService`'s bookkeeping): it never waits for a
worker, so no number of blocked user handlers can delay it.

Unlike ``concurrent.futures.ThreadPoolExecutor`` the threads are daemons: a
handler blocked forever cannot stop the interpreter from exiting. The pool is
reference-counted: it starts with the first sync-handler subscription and its
threads end with the last one. Releasing never waits for a handler that is busy
(blocked, perhaps forever): its thread ends once the handler returns.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import structlog

from alpaca_di.hub.inbox import Inbox

__all__ = ["MAX_HANDLER_THREADS", "HandlerPool", "InlineDrain"]

MAX_HANDLER_THREADS = 256
"""The most worker threads the shared pool starts for sync handlers.

A sync handler blocked forever holds one; past this bound further sync-handler
drains wait for a free worker (iterators, async handlers and the library's own
services never use the pool).
"""

_log = structlog.get_logger("alpaca_di.workers")
_STOP = object()


class HandlerPool:
    """A growable set of daemon threads fed from one job queue."""

    _shared: ClassVar[HandlerPool | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()
    _shared_pid: ClassVar[int] = os.getpid()

    def __init__(self, max_workers: int = MAX_HANDLER_THREADS) -> None:
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy: set[threading.Thread] = set()
        self._idle = 0
        self._queued = 0
        self._users = 0

    @classmethod
    def shared(cls) -> HandlerPool:
        """The process-wide pool (a forked child's own: the parent's workers are not there)."""
        if cls._shared_pid != os.getpid():
            cls._shared_pid = os.getpid()
            cls._shared_lock = threading.Lock()
            cls._shared = None
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @property
    def threads(self) -> int:
        """How many worker threads are alive."""
        return sum(thread.is_alive() for thread in self._threads)

    def acquire(self) -> None:
        """Count one more user of the pool."""
        with self._lock:
            self._users += 1

    def release(self) -> None:
        """Drop one user; the last one stops every worker thread."""
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users:
                return
            threads, self._threads, self._idle, self._queued = self._threads, [], 0, 0
            stale, self._jobs = self._jobs, queue.SimpleQueue()
            busy = set(self._busy)
        for _ in threads:
            stale.put(_STOP)
        current = threading.current_thread()
        for thread in threads:
            # Join the idle ones (they stop at once); a busy one may be blocked in a
            # handler forever, and this may run on an event loop: never wait for it.
            if thread is not current and thread not in busy:
                thread.join(timeout=1.0)

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on a worker thread, starting one if all are busy."""
        with self._lock:
            if not self._users:
                return  # every user left: the job belongs to a closed subscription
            self._jobs.put(job)
            self._queued += 1
            if self._queued > self._idle and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work,
                    args=(self._jobs,),
                    name=f"alpaca-di-handler-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                self._idle += 1
                thread.start()

    def _work(self, jobs: queue.SimpleQueue[object]) -> None:
        me = threading.current_thread()
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            with self._lock:
                self._busy.add(me)
                if jobs is self._jobs:
                    self._idle -= 1
                    self._queued -= 1
            try:
                job()  # type: ignore[operator]
            except BaseException:  # jobs handle their own errors; a worker never dies of one
                _log.exception("workers.job_failed")
            finally:
                with self._lock:
                    self._busy.discard(me)
                    if jobs is self._jobs:
                        self._idle += 1


class InlineDrain:
    """An inbox listener that delivers on the pushing thread, at once, in order.

    For consumers that only do O(1) bookkeeping: ``callback`` runs on the hub's
    loop, so it must never block. Its exceptions are logged and counted.

    Example::

        inbox = Inbox(maxsize=None, overflow="drop_oldest", raw=False, never_drop=True)
        inbox.listener = InlineDrain(inbox, on_update)
        hub.attach(inbox, trade_updates=True)
    """

    __slots__ = ("_callback", "_inbox")

    def __init__(self, inbox: Inbox, callback: Callable[[Any], None]) -> None:
        self._inbox = inbox
        self._callback = callback

    def inbox_ready(self) -> None:
        inbox = self._inbox
        with inbox.lock:
            batch = inbox.take_all()
        delivered = 0
        for item in batch:
            try:
                self._callback(item[2])
            except Exception:
                with inbox.lock:
                    inbox.errors += 1
                _log.exception("delivery.inline_failed")
            delivered += 1
        with inbox.lock:
            inbox.delivered += delivered

    def inbox_closed(self, error: BaseException | None) -> None:
        """Nothing to release."""
