"""Hold a Ctrl-C that arrives in the middle of bookkeeping until the bookkeeping is done.

``KeyboardInterrupt`` is raised in the main thread at whatever bytecode it is
running: inside a thread start, between taking a lease and recording it. Those
few steps are made atomic with respect to SIGINT: a signal that arrives during
them is delivered, to the handler that was installed, when they end::

    with deferred_interrupts():
        loop, thread = start_thread()
        self._loop, self._thread = loop, thread
    # a Ctrl-C during the block raises KeyboardInterrupt here

Only the main thread receives Python signal handlers, so elsewhere (and when
SIGINT is ignored or handled outside Python) the block runs as is. Keep the
blocks short: Ctrl-C waits for them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["deferred_interrupts"]


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Defer SIGINT until the block ends (main thread only); see the module docstring."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored, default (C-level) or not set from Python
        yield
        return
    held: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append((signum, frame))

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            previous(*held[0])  # the default handler raises KeyboardInterrupt here
