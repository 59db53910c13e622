"""The one background event loop that serves every connection of a sync application.

A sync application never touches asyncio: the first connection it opens starts
this loop on a daemon thread, every later connection shares it, and the thread
stops when the last user releases it::

    from alpaca_di.transport.runtime import Runtime

    loop = Runtime.shared().acquire()     # starts the thread on first use
    ...
    Runtime.shared().release()            # the last release stops and joins it
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import ClassVar

import structlog

from alpaca_di._interrupts import deferred_interrupts

__all__ = ["Runtime"]

_log = structlog.get_logger("alpaca_di.runtime")


class Runtime:
    """A reference-counted event loop on its own daemon thread."""

    _shared: ClassVar[Runtime | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "alpaca-di-runtime") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._users = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @classmethod
    def shared(cls) -> Runtime:
        """The process-wide runtime."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @property
    def running(self) -> bool:
        """True while the loop thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def users(self) -> int:
        """How many acquisitions are outstanding."""
        return self._users

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread, while it runs."""
        return self._thread

    def acquire(self) -> asyncio.AbstractEventLoop:
        """Return the running loop, starting its thread if this is the first user."""
        self._forget_parent()
        with deferred_interrupts(), self._lock:
            if self._loop is None:
                self._start()
            self._users += 1
            assert self._loop is not None
            return self._loop

    def release(self) -> None:
        """Drop one user; the last one stops the loop and joins its thread."""
        self._forget_parent()
        with deferred_interrupts():  # the count and the stop go together, or not at all
            with self._lock:
                if self._users == 0:
                    return
                self._users -= 1
                if self._users:
                    return
                loop, thread = self._loop, self._thread
                self._loop = self._thread = None
            assert loop is not None and thread is not None
            loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(timeout=5.0)
            if thread.is_alive():
                _log.error("runtime.join_timeout", thread=thread.name)

    def _forget_parent(self) -> None:
        """In a forked child, drop the parent's loop and thread (neither runs here).

        Nothing of the inherited loop is run or closed: its sockets are the
        parent's. The child's first :meth:`acquire` starts its own thread.
        """
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        loop = self._loop
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._users = 0
        self._loop = self._thread = None
        if loop is not None:
            for task in asyncio.all_tasks(loop):
                task._log_destroy_pending = False  # type: ignore[attr-defined]

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            try:
                loop.run_forever()
            finally:
                _cancel_leftovers(loop)
                loop.close()

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        started.wait()
        self._loop, self._thread = loop, thread


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
