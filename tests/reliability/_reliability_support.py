"""Constants and helpers of the reliability suite (imported by its conftest and tests).

``FIGURES`` collects what the scenarios checked (messages, faults, cycles, fuzz
cases...); the conftest prints it in the terminal summary and writes it to
``$RELIABILITY_FIGURES`` when set. ``RELIABILITY_SCALE`` (default 1) multiplies
durations and counts for soak runs: ``RELIABILITY_SCALE=5 pytest tests/reliability``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

from alpaca_di.testing import register_secret

__all__ = [
    "FIGURES",
    "IEX",
    "KEY",
    "NOTES",
    "SCALE",
    "SECRET",
    "SecretGuard",
    "await_for",
    "render_with_locals",
    "scaled",
    "wait_for",
]

KEY = "PKRELIABILITY001"
SECRET = "rel-Secret-7Qx9-do-not-leak"
register_secret(SECRET)  # the suite-wide guard (tests/conftest.py) scans captured output too
IEX = "/v2/iex"
SCALE = float(os.environ.get("RELIABILITY_SCALE", "1") or 1)

FIGURES: Counter[str] = Counter()
"""Figures of the run (name -> number), summed over the scenarios."""
NOTES: dict[str, Any] = {}
"""Non-additive figures (achieved rates, durations)."""


def scaled(value: float, minimum: float = 1) -> float:
    """``value`` times ``RELIABILITY_SCALE``, at least ``minimum``."""
    return max(minimum, value * SCALE)


def render_with_locals(exc: BaseException) -> str:
    """Every frame of the traceback with the ``repr`` of each local variable.

    What structlog's default renderer prints for ``log.exception`` (rich, with
    ``show_locals=True``), only stricter: reprs are not cut at 80 characters.
    Follows ``__cause__`` and ``__context__`` as the renderers do.
    """
    parts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        tb = current.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            parts.append(f"  {frame.f_code.co_filename}:{tb.tb_lineno} in {frame.f_code.co_name}")
            for name, value in list(frame.f_locals.items()):
                try:
                    text = repr(value)
                except Exception as error:  # a broken __repr__ is not our concern here
                    text = f"<repr failed: {type(error).__name__}>"
                parts.append(f"    {name} = {text[:20_000]}")
            tb = tb.tb_next
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return "\n".join(parts)


class SecretGuard:
    """Scans text and exceptions for the secrets; counts what it scanned.

    :meth:`exception` renders an exception twice: with ``traceback.format_exception``
    and with every local variable of every frame (what structlog's default
    renderer prints for ``log.exception`` with rich installed), so a secret held
    by a local variable of any frame of the traceback, its cause or its context,
    is found too.
    """

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = secrets
        self.scanned_exceptions = 0
        self.scanned_texts = 0

    def text(self, text: str, what: str = "text") -> None:
        self.scanned_texts += 1
        for secret in self.secrets:
            if secret in text:
                at = text.index(secret)
                raise AssertionError(
                    f"the secret key appears in {what}:\n{text[max(0, at - 2500) : at + 500]}"
                )

    def exception(self, exc: BaseException) -> None:
        self.scanned_exceptions += 1
        plain = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.text(plain, f"the traceback of {type(exc).__name__}")
        self.text(render_with_locals(exc), f"the frames' locals of {type(exc).__name__}")
        self.text(repr(exc) + str(exc), f"repr/str of {type(exc).__name__}")


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Wait, bounded, for client-side state that has no event to wait on (a hub's health).

    Re-checks every few milliseconds until ``predicate()`` is true; fails with
    ``what`` once ``timeout`` seconds passed. Emulator state: use its ``wait_until``.
    """
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        tick.wait(0.005)


async def await_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """:func:`wait_for` inside a running loop (never blocks it, starts no thread)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


# -- leak checks: file descriptors and traced memory, the test harness excluded -----------

MEMORY_GROWTH_LIMIT = 1_000_000
# Traces of the test harness itself (captured log text, pytest) are not the library's.
HARNESS = (
    "*/_pytest/*",
    "*/pluggy/*",
    "*conftest.py",
    "*_reliability_support.py",
    "*/tracemalloc.py",
    "*/structlog/*",  # the captured log text (scanned for the secret) is built there
    "*/alpaca_di/testing/*",  # the emulator runs in this process; its books are not ours
)


def open_fds() -> int:
    """How many file descriptors the process holds."""
    return len(os.listdir("/proc/self/fd"))


def traced_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Traced memory outside the harness."""
    filters = [tracemalloc.Filter(False, pattern) for pattern in HARNESS]
    return sum(stat.size for stat in snapshot.filter_traces(filters).statistics("filename"))


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> str:
    """The 15 lines that grew most between two snapshots, for a failure message."""
    filters = [tracemalloc.Filter(False, pattern) for pattern in HARNESS]
    stats = after.filter_traces(filters).compare_to(before.filter_traces(filters), "lineno")
    return "\n".join(str(stat) for stat in stats[:15])
