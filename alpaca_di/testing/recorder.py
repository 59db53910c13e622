"""A handler that records what it receives and lets a test wait for it."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Recorder"]


class Recorder:
    """A sync handler recording messages, with a deadline-bound wait.

    Use it instead of sleeping::

        recorder = Recorder()
        hub.subscribe(recorder, quotes=["AAPL"])
        emulator.publish("/v2/iex", [quote("AAPL")])
        [q] = recorder.wait_for(1, timeout=5)
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, message: Any) -> None:
        with self._cond:
            self.items.append(message)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self.items)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Return the messages once at least ``count`` arrived; ``TimeoutError`` otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise TimeoutError(
                    f"received {len(self.items)} of {count} messages within {timeout} s"
                )
            return list(self.items)
