"""A condition that threads and coroutines both wait on, for the fakes.

::

    signal = Signal()
    with signal.cond:                       # the producer
        state.append(item)
        signal.notify()
    with signal.cond:                       # a thread
        signal.cond.wait_for(lambda: state, timeout=5)
    await signal.wait_for(lambda: state, 5)   # a coroutine, on any loop
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from alpaca_di._aio import settle

__all__ = ["Signal"]


class Signal:
    """Threads wait with ``cond.wait_for``, coroutines with :meth:`wait_for` (no thread
    tied up). Notify with ``cond`` held."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def notify(self) -> None:
        """Wake every waiter; call with ``cond`` held."""
        self.cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            settle(loop, future, None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Await until ``predicate()`` (checked with ``cond`` held); ``False`` on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.cond:
                if predicate():
                    return True
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                pass
