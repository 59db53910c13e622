"""What every figure shares: settings, results, the two clients' harnesses, measuring tools.

A figure module exposes ``run(ctx: Context) -> list[Row]``; each :class:`Row` holds
the repeated measurements of alpaca-py and alpaca-di for one line of the table::

    ctx = Context(emu=emu, quick=True)
    rows = ingest.run(ctx)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import itertools
import logging
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._server import EmulatorProcess

__all__ = [
    "DATA_PATH",
    "SECRET",
    "Context",
    "PyStream",
    "Row",
    "Summary",
    "cpu_fraction",
    "di_hub",
    "gc_collected",
    "latency_ns",
    "new_key",
    "percentile",
    "quiet_logging",
    "rss_bytes",
    "summarize",
]

DATA_PATH = "/v2/iex"
SECRET = "bench-secret"
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_keys = itertools.count(1)


def new_key(prefix: str = "PKBENCH") -> str:
    """A fresh key id: every client gets its own connection slot on the emulator."""
    return f"{prefix}{next(_keys):05d}"


def quiet_logging() -> None:
    """Keep the table readable: only errors from alpaca-di (structlog) and alpaca-py."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("alpaca").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


# ---------------------------------------------------------------------------- results


@dataclass
class Summary:
    """min / median / max of repeated measurements."""

    min: float
    median: float
    max: float
    runs: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"min": self.min, "median": self.median, "max": self.max, "runs": self.runs}


def summarize(values: Sequence[float]) -> Summary | None:
    """Summary of ``values``; ``None`` when there are none."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return None
    return Summary(min(clean), statistics.median(clean), max(clean), clean)


@dataclass
class Row:
    """One line of the table: a figure measured on both clients.

    ``better`` is ``"higher"`` or ``"lower"``: which direction of the alpaca-di /
    alpaca-py ratio is the good one. ``py`` may stay empty when alpaca-py has
    no counterpart; ``note`` explains what exactly was compared.
    """

    figure: int
    key: str
    label: str
    unit: str
    better: str
    py: list[float] = field(default_factory=list)
    di: list[float] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def ratio(self) -> Summary | None:
        """alpaca-di / alpaca-py per run pair, summarised (runs paired in order)."""
        pairs = [(d, p) for d, p in zip(self.di, self.py, strict=False) if p]
        return summarize([d / p for d, p in pairs])

    def as_dict(self) -> dict[str, Any]:
        py, di, ratio = summarize(self.py), summarize(self.di), self.ratio()
        return {
            "figure": self.figure,
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "better": self.better,
            "alpaca_py": py.as_dict() if py else None,
            "alpaca_di": di.as_dict() if di else None,
            "ratio": ratio.as_dict() if ratio else None,
            "note": self.note,
            "extra": self.extra,
        }


@dataclass
class Context:
    """Shared settings of one benchmark run."""

    emu: EmulatorProcess
    quick: bool = False
    runs: int = 3
    log: Callable[[str], None] = print

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def seconds(self, full: float, quick: float) -> float:
        return quick if self.quick else full


# ---------------------------------------------------------------------------- measuring


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def latency_ns(stamp: Any, now_ns: int) -> int:
    """``now_ns`` minus a message timestamp (``datetime`` or ``msgpack.Timestamp``)."""
    if isinstance(stamp, _dt.datetime):
        delta = stamp - _EPOCH
        sent = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    else:
        sent = stamp.to_unix_nano()
    return now_ns - sent


def cpu_fraction(seconds: float) -> float:
    """Fraction of one core this process used over the next ``seconds`` (wall time)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def gc_collected() -> Iterator[None]:
    """Start a timed section from a collected heap; the GC stays on inside it.

    It stays on on purpose: a client whose pipeline keeps many parsed messages
    alive at once pays for it in (full) collections, as an application would.
    """
    gc.collect()
    yield


# ---------------------------------------------------------------------------- alpaca-py


class PyStream:
    """alpaca-py's ``StockDataStream`` running ``run()`` in a thread, as its docs show.

    Example::

        stream = PyStream(emu, key, raw=False)
        stream.stream.subscribe_quotes(handler, "*")
        stream.start()
        ...
        stream.stop()
    """

    def __init__(self, emu: EmulatorProcess, key: str, *, raw: bool = False) -> None:
        from alpaca.data.live import StockDataStream

        self.emu = emu
        self.key = key
        self.stream = StockDataStream(
            key, SECRET, raw_data=raw, url_override=emu.data_url(DATA_PATH)
        )
        self.thread = threading.Thread(target=self.stream.run, name=f"alpaca-py {key}", daemon=True)

    def start(self) -> PyStream:
        self.thread.start()
        return self

    def wait_loop(self, timeout: float = 10.0) -> None:
        """Wait until ``run()`` created its loop (``stop()`` raises before that)."""
        deadline = time.monotonic() + timeout
        while self.stream._loop is None:  # alpaca-py exposes no public signal
            if time.monotonic() > deadline:
                raise TimeoutError("alpaca-py never started its loop")
            time.sleep(0.001)

    def stop(self, *, wake: bool = True, timeout: float = 15.0) -> float:
        """``stop()`` + join; returns the seconds it took.

        ``wake`` sends the idle reader an empty frame right after ``stop()`` so it
        notices at once instead of within its 5 s receive timeout: a harness
        shortcut for teardown, never used where the stop itself is measured. A
        stream still running after ``timeout`` (a backlog of frames to read, on
        a loaded machine) has its socket aborted by the emulator, then must end.
        """
        started = time.perf_counter()
        self.wait_loop()
        self.stream.stop()
        if wake:
            with contextlib.suppress(Exception):
                self.emu.wake(DATA_PATH, self.key)
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.emu.drop(DATA_PATH, self.key)
            self.thread.join(timeout)
        if self.thread.is_alive():
            # Seen when stop() came with >= 1024 frames unread: the legacy websockets
            # reader waits for queue space nobody frees, and close() waits for it.
            # The thread sleeps in select() from then on; leave it (a daemon).
            print(
                f"warning: alpaca-py stream {self.key} never stopped; thread abandoned",
                file=sys.stderr,
            )
        return time.perf_counter() - started


# ---------------------------------------------------------------------------- alpaca-di


@contextlib.contextmanager
def di_hub(emu: EmulatorProcess, key: str, **options: Any) -> Iterator[Any]:
    """A hub on a private registry (sync mode: the runtime thread), released at exit."""
    from alpaca_di.credentials import Credentials
    from alpaca_di.hub.registry import ConnectionRegistry
    from alpaca_di.protocol import StreamKind
    from alpaca_di.transport.options import ConnectionOptions

    registry = ConnectionRegistry()
    lease = registry.acquire(
        Credentials(key, SECRET),
        StreamKind.STOCK,
        emu.data_url(DATA_PATH),
        ConnectionOptions(**options),
    )
    try:
        yield lease.hub
    finally:
        lease.release()
