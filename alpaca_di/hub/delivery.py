"""How messages leave an inbox: async drains, the handler pool, inline drains for services.

:class:`AsyncDrains` delivers to the async handlers of one event loop with a few
shared tasks instead of one task per subscription: a frame that reaches a hundred
consumers wakes one task, not a hundred. :class:`HandlerPool` runs sync handlers
on daemon worker threads, so none runs on the reader's loop. :class:`InlineDrain`
delivers on the producer's own
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

import asyncio
import os
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import structlog

from alpaca_di.hub.inbox import Inbox

__all__ = ["MAX_HANDLER_THREADS", "AsyncDrains", "Deliverable", "HandlerPool", "InlineDrain"]

MAX_HANDLER_THREADS = 256
"""The most worker threads the shared pool starts for sync handlers.

A sync handler blocked forever holds one; past this bound further sync-handler
drains wait for a free worker (iterators, async handlers and the library's own
services never use the pool).
"""

_log = structlog.get_logger("alpaca_di.workers")
_STOP = object()


class Deliverable(Protocol):
    """A subscription whose inbox :class:`AsyncDrains` empties."""

    async def deliver_ready(self) -> None:
        """Deliver everything queued, in order; return once the inbox is empty."""
        ...

    def loop_closed(self) -> None:
        """Its loop closed before delivering: nobody ever will (close the inbox)."""
        ...


class AsyncDrains:
    """The tasks that run one event loop's async handlers, shared by its subscriptions.

    A subscription with items is queued here (:meth:`schedule`, any thread) and a
    drain task delivers them (:meth:`Deliverable.deliver_ready`); a subscription is
    never queued twice, so its handler never runs concurrently with itself. A frame
    that reaches a hundred consumers wakes one task, not a hundred.

    A handler that suspends (awaits I/O) holds only the task running it: after each
    subscription a task takes, a check on the next loop turn wakes (or starts)
    another task for whatever is still queued, so a slow consumer never delays
    another. A handler runs inside a drain task, so ``asyncio.timeout()`` and
    ``asyncio.current_task()`` work in it as in any task. Idle tasks park on a
    future; past two idle ones they end.

    Example::

        drains = AsyncDrains.of(loop)
        drains.schedule(subscription, on_loop=False)   # from another thread
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncDrains]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _pid: ClassVar[int] = os.getpid()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the registry maps loops to their drains weakly, and a drains object
        # that held its loop would keep every loop ever used (one per test) alive.
        self._loop = weakref.ref(loop)
        self._ready: deque[Deliverable] = deque()
        self._idle: dict[asyncio.Task[None], asyncio.Future[None]] = {}  # parked tasks
        self._woken: set[asyncio.Task[None]] = set()  # on their way to the queue
        self._check_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Scheduled from other threads: one hop to the loop carries them all, so a
        # frame read on the runtime thread for a hundred consumers of an app's loop
        # costs one wake-up of that loop, not a hundred.
        self._inbound: list[Deliverable] = []
        self._inbound_lock = threading.Lock()

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> AsyncDrains:
        """The drains of ``loop`` (made at first use; forgotten with the loop)."""
        if cls._pid != os.getpid():  # a forked child: the parent's lock may be held
            cls._pid = os.getpid()
            cls._lock = threading.Lock()
            cls._by_loop = weakref.WeakKeyDictionary()
        with cls._lock:
            drains = cls._by_loop.get(loop)
            if drains is None:
                drains = cls._by_loop[loop] = cls(loop)
            return drains

    @property
    def tasks(self) -> int:
        """How many drain tasks exist now (parked ones included)."""
        return len(self._tasks)

    def schedule(self, sub: Deliverable, *, on_loop: bool) -> None:
        """Have ``sub`` delivered soon (or told :meth:`~Deliverable.loop_closed`).

        ``on_loop``: the caller runs on this loop's thread (no thread hop needed).
        """
        if on_loop:
            self._ready.append(sub)
            self._call_one()
            return
        with self._inbound_lock:
            self._inbound.append(sub)
            if len(self._inbound) > 1:
                return  # the hop that carries the first one is on its way
        loop = self._loop()
        try:
            if loop is None:
                raise RuntimeError("the loop is gone")
            loop.call_soon_threadsafe(self._take_inbound)
        except RuntimeError:  # the loop is closed
            with self._inbound_lock:
                stranded, self._inbound = self._inbound, []
            for each in stranded:
                each.loop_closed()

    def _take_inbound(self) -> None:
        with self._inbound_lock:
            arrived, self._inbound = self._inbound, []
        self._ready.extend(arrived)
        self._call_one()

    def _call_one(self) -> None:
        """Make sure a drain task is on its way to the queue."""
        if self._woken:
            return
        while self._idle:
            task, parked = self._idle.popitem()
            if not parked.done():  # its task may have been cancelled meanwhile
                parked.set_result(None)
                self._woken.add(task)
                return
        task = asyncio.get_running_loop().create_task(self._drain(), name="alpaca-di drain")
        self._woken.add(task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check(self) -> None:
        """Next loop turn after a task took a subscription: is anything left waiting?"""
        self._check_pending = False
        if self._ready:
            self._call_one()  # the task that took the last one is still in its handler

    async def _drain(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        loop = me.get_loop()
        ready = self._ready
        try:
            while True:
                self._woken.discard(me)
                while ready:
                    sub = ready.popleft()
                    if ready and not self._check_pending:
                        self._check_pending = True
                        loop.call_soon(self._check)
                    await sub.deliver_ready()
                if len(self._idle) >= 2:
                    return
                parked = loop.create_future()
                self._idle[me] = parked
                await parked
        finally:
            self._woken.discard(me)
            self._idle.pop(me, None)


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
