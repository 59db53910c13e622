"""Fixtures and guards of the reliability suite.

Every test here runs under three guards (autouse):

* **thread deaths**: ``threading.excepthook`` is replaced by a recorder; a test
  fails if any thread died of an exception while it ran;
* **asyncio errors**: ``Task exception was never retrieved`` / ``Exception in
  callback`` records of the ``asyncio`` logger fail the test;
* **secrets**: everything structlog renders (its default ``ConsoleRenderer``
  prints tracebacks *with local variables* when rich is installed) and every
  stdlib log record is captured and scanned for the secret key.

The capture is installed per module and restored after it, so nothing leaks
into the other test directories of a plain ``pytest`` run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from _reliability_support import FIGURES, IEX, KEY, NOTES, SECRET, SecretGuard

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry, Lease
from alpaca_di.protocol import StreamKind
from alpaca_di.transport import ConnectionOptions


class _Tee(io.TextIOBase):
    """A text sink that keeps everything written and forwards it to the current stdout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        with self._lock:
            self._parts.append(text)
        try:
            sys.stdout.write(text)
        except (ValueError, OSError):  # stdout closed (interpreter exit)
            pass
        return len(text)

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except (ValueError, OSError):
            pass

    def mark(self) -> int:
        with self._lock:
            return len(self._parts)

    def since(self, mark: int) -> str:
        with self._lock:
            return "".join(self._parts[mark:])


class _Records(logging.Handler):
    """Keeps every stdlib log record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, int, str]] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is kept raw
            text = repr(record.__dict__)
        self.records.append((record.name, record.levelno, text))


_TEE = _Tee()
_RECORDS = _Records()
_GUARD = SecretGuard((SECRET,))
_THREAD_DEATHS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _capture_everything() -> Iterator[None]:
    """Route structlog's rendered output and stdlib records through the scanners."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=_TEE))
    root = logging.getLogger()
    root.addHandler(_RECORDS)
    previous_hook = threading.excepthook

    def record_death(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        _THREAD_DEATHS.append(f"thread {name} died:\n{text}")
        previous_hook(args)

    threading.excepthook = record_death
    try:
        yield
    finally:
        threading.excepthook = previous_hook
        root.removeHandler(_RECORDS)
        structlog.configure(**saved)


@pytest.fixture(autouse=True)
def _guards() -> Iterator[None]:
    """Per test: no thread death, no asyncio error, no secret in anything logged."""
    deaths, records, mark = len(_THREAD_DEATHS), len(_RECORDS.records), _TEE.mark()
    yield
    new_records = _RECORDS.records[records:]
    logged = _TEE.since(mark)
    FIGURES["log lines scanned for the secret"] += logged.count("\n") + len(new_records)
    _GUARD.text(logged, "structlog output")
    _GUARD.text("\n".join(text for _, _, text in new_records), "stdlib log records")
    asyncio_errors = [
        text for name, level, text in new_records if name == "asyncio" and level >= logging.ERROR
    ]
    assert not asyncio_errors, "asyncio reported errors:\n" + "\n".join(asyncio_errors)
    assert len(_THREAD_DEATHS) == deaths, "\n".join(_THREAD_DEATHS[deaths:])


@pytest.fixture
def guard() -> SecretGuard:
    """The secret scanner: ``guard.exception(exc)``, ``guard.text(s)``."""
    return _GUARD


@pytest.fixture
def logged() -> Callable[[], str]:
    """What structlog rendered since the test began."""
    mark = _TEE.mark()
    return lambda: _TEE.since(mark)


@pytest.fixture
def thread_deaths() -> list[str]:
    """The record of threads that died of an exception (shared, append-only)."""
    return _THREAD_DEATHS


@pytest.fixture
def creds() -> Credentials:
    return Credentials(KEY, SECRET)


@pytest.fixture
def fast_options() -> ConnectionOptions:
    return ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(seed=3, sequence=True) as emu:
        yield emu


@pytest.fixture
def registry() -> Iterator[ConnectionRegistry]:
    registry = ConnectionRegistry()
    yield registry
    registry.close_all()


@pytest.fixture
def stock_lease(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
) -> Iterator[Lease]:
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), fast_options)
    yield lease
    lease.release()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES and not NOTES:
        return
    terminalreporter.section("reliability figures")
    FIGURES["exceptions scanned for the secret"] = _GUARD.scanned_exceptions
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"{name:>45}: {value:,}")
    for name, value in sorted(NOTES.items()):
        terminalreporter.write_line(f"{name:>45}: {value}")
    path = os.environ.get("RELIABILITY_FIGURES")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"figures": dict(FIGURES), "notes": NOTES}, handle, indent=2, sort_keys=True)


@pytest.fixture
def tracing() -> Iterator[None]:
    """tracemalloc on for the test (leak checks), off afterwards."""
    tracemalloc.start(1)
    try:
        yield
    finally:
        tracemalloc.stop()
