"""The demo's bar watcher, and the outage the embedded emulator stages for it.

:class:`BarWatcher` follows the minute bars of the demo's stocks with
``backfill=True``: when the stock stream drops, it is told (a
:class:`~alpaca_di.hub.gaps.GapNotice`) and gets the bars it missed
(:class:`~alpaca_di.protocol.models.BackfilledBar`) before live ones resume.
:class:`StagedOutage` makes that happen against the emulator: it drops the
stock stream, keeps the client out while three bar minutes pass, then lets it
back in::

    watcher = BarWatcher(stock_stream, events)
    watcher.start()
    outage = StagedOutage(emulator, "/v2/iex", events, at=6.0)
    outage.start()
    ...
    outage.stop(); watcher.stop()
    watcher.live, watcher.backfilled, watcher.gaps
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from alpaca_di.cli.demo.components import STOCK_SYMBOLS, EventLog
from alpaca_di.hub.gaps import GapNotice
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.subscription import Subscription

if TYPE_CHECKING:
    from alpaca_di.emulator import AlpacaEmulator

__all__ = ["BarWatcher", "StagedOutage"]

_OUTAGE_MINUTES = 3


class BarWatcher:
    """Minute bars of the demo's stocks, with gap notices and backfill.

    Example::

        watcher = BarWatcher(stock_stream, events)
        watcher.start()
        print(watcher.describe())     # "1,204 live, 10 backfilled after 1 gap"
    """

    name = "bars"
    streams = ("stock",)

    def __init__(
        self, stock_stream: StreamHub, events: EventLog, symbols: Iterable[str] = STOCK_SYMBOLS
    ) -> None:
        self._hub = stock_stream
        self._events = events
        self._symbols = tuple(symbols)
        self._lock = threading.Lock()
        self.live = 0
        self.backfilled = 0
        self.gaps = 0
        self._since_gap: int | None = None  # bars backfilled since the last notice
        self._sub: Subscription | None = None

    def start(self) -> None:
        """Subscribe to the bars, asking for gap notices and backfills."""
        self._sub = self._hub.subscribe(self._on_message, bars=self._symbols, backfill=True)

    def stop(self) -> None:
        """Close the subscription."""
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()

    @property
    def settled(self) -> bool:
        """No backfill under way (none since the last gap, or live bars resumed after it)."""
        with self._lock:
            return self._since_gap is None

    def describe(self) -> str:
        """One line for the view."""
        with self._lock:
            return f"{self.live:,} live, {self.backfilled:,} backfilled after {self.gaps} gap(s)"

    def _on_message(self, message: Any) -> None:
        if isinstance(message, GapNotice):
            self._on_gap(message)
            return
        with self._lock:
            if getattr(message, "backfilled", False):
                self.backfilled += 1
                if self._since_gap is not None:
                    self._since_gap += 1
                return
            self.live += 1
            done, self._since_gap = self._since_gap, None
        if done is not None:
            self._events.add(
                self.name, f"{done} missed bars backfilled through REST; live bars resume"
            )

    def _on_gap(self, notice: GapNotice) -> None:
        down = (notice.confirmed_at - notice.lost_at).total_seconds()
        if notice.backfill_error is not None:
            self._events.add(
                self.name, f"backfill failed: {notice.backfill_error}", error=True
            )
            return
        with self._lock:
            self.gaps += 1
            self._since_gap = 0 if notice.backfill else None
        last = notice.last_message_at
        since = f"last bar {last:%H:%M}" if last is not None else "no bar yet"
        follows = "backfill follows" if notice.backfill else "no backfill"
        self._events.add(self.name, f"gap: stock stream down {down:.1f} s ({since}); {follows}")


class StagedOutage:
    """Drop the emulator's stock stream once, for three bar minutes, ``at`` s after start().

    The emulator refuses reconnects meanwhile and publishes (and records) the
    bars of those minutes, so the watcher's backfill has something to fetch.
    """

    def __init__(self, emulator: AlpacaEmulator, path: str, events: EventLog, *, at: float) -> None:
        self._emulator = emulator
        self._path = path
        self._events = events
        self._at = at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the timer thread."""
        self._thread = threading.Thread(target=self._run, name="demo-outage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel (or finish) the outage; the emulator accepts handshakes again."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        emulator, path = self._emulator, self._path
        if self._stop.wait(self._at):
            return
        refused = emulator.stats().refused_handshakes
        emulator.refuse_handshake(503, times=1_000_000, path=path)
        try:
            emulator.drop_connections(path, close_frame=False)
            self._events.add(
                "emulator",
                f"network drop on {path}: reconnects refused for {_OUTAGE_MINUTES} bar minutes",
            )
            deadline = time.monotonic() + 5.0
            while emulator.stats().refused_handshakes == refused and time.monotonic() < deadline:
                if self._stop.wait(0.02):
                    return
            emulator.advance(minutes=_OUTAGE_MINUTES, symbols=STOCK_SYMBOLS)
        finally:
            emulator.accept_handshakes(path)
