"""Helpers shared by the integration tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

__all__ = ["CLOCK_START", "wait_until"]

CLOCK_START = datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc)
"""Where the ``clocked_emu`` fixture's clock starts (a Monday, 09:30 in New York)."""

_TICK = 0.01


def wait_until(condition: Callable[[], object], timeout: float, what: str = "condition") -> None:
    """Re-check ``condition`` until it holds; fail after ``timeout`` (a hang fails, never waits).

    For state these tests do not own (health snapshots, emulator counters, other
    processes), which offers nothing to wait on.
    """
    tick = threading.Event()
    for _ in range(max(1, int(timeout / _TICK))):
        if condition():
            return
        tick.wait(_TICK)
    if not condition():
        raise AssertionError(f"not reached within {timeout} s: {what}")
