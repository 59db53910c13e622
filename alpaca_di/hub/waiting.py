"""Changes: waiting for a hub's state to change, from threads and from any event loop.

A hub calls :meth:`Changes.notify` after every change (a state transition, an
ack, a subscription applied); waiters re-check their condition then::

    changes = Changes()
    changes.wait(lambda: hub.state is CONNECTED, 10.0, lambda: "not connected")   # a thread
    await changes.wait_async(lambda: hub.state is CONNECTED, 10.0, describe)      # any loop
    changes.notify()                                                              # the hub
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from alpaca_di._aio import running_loop, wake

__all__ = ["Changes"]


class Changes:
    """A condition for threads plus futures for coroutines, each on its own loop."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        # Futures of async waiters, each with its own loop (the hub's or a caller's).
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def wait(self, check: Callable[[], bool], timeout: float, describe: Callable[[], str]) -> None:
        """Block until ``check()``; ``TimeoutError(describe())`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(describe())
                self._changed.wait(remaining)

    async def wait_async(
        self, check: Callable[[], bool], timeout: float, describe: Callable[[], str]
    ) -> None:
        """Wait on the running loop, the hub's or any other, without a thread.

        The waiter is registered before ``check()`` runs, so a change made on
        the hub's loop in between still wakes it (thread-safely, on its loop).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            entry = (loop, waiter)
            with self._changed:
                self._async_waiters.append(entry)
            try:
                if check():
                    return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(describe())
                try:
                    await asyncio.wait_for(waiter, remaining)
                except asyncio.TimeoutError:
                    pass
            finally:
                with self._changed:
                    if entry in self._async_waiters:
                        self._async_waiters.remove(entry)

    def notify(self) -> None:
        """Wake every waiter (thread-safe; each future on its own loop)."""
        with self._changed:
            self._changed.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        here = running_loop()
        for loop, waiter in waiters:
            if loop is here:
                wake(waiter)
            else:
                try:
                    loop.call_soon_threadsafe(wake, waiter)
                except RuntimeError:  # that loop is closed: nobody waits there any more
                    pass
