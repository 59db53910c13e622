"""Synthetic news at a realistic pace: a few headlines per minute of emulator time.

Real news does not come at the rate of quotes. :class:`News` runs one ticker for
the whole emulator that writes ``news_per_minute`` headlines per minute of the
emulator's clock and publishes each once on ``/v1beta1/news``, to
every session subscribed to ``"*"`` or to the headline's symbol -- the same story,
with the same id, for every subscriber. It follows the clock: a frozen clock
stops the news, a running one paces it with the wall clock, and a jump forward
(``emu.advance(minutes=10)``) brings at most one minute's worth at once. By
default news is synthetic data like any other: 3 headlines a minute while the
market-data ``rate`` is above 0, none while it is 0 (a quiet emulator stays
quiet); a pace set explicitly holds whatever the rate::

    emu.news_per_minute = 60          # one a second (of emulator time)
    emu.news_per_minute = 0           # none
    emu.news_per_minute = None        # back to the default: 3 a minute while rate > 0
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import structlog

from alpaca_di.emulator.data import DataStreams
from alpaca_di.emulator.market import SyntheticMarket
from alpaca_di.emulator.wire import FEEDS

__all__ = ["DEFAULT_NEWS_PER_MINUTE", "NEWS_PATH", "News", "check_news_per_minute"]

NEWS_PATH = "/v1beta1/news"
"""The news stream's path."""

_log = structlog.get_logger("alpaca_di.emulator")
_MINUTE_NS = 60 * 1_000_000_000
_MAX_WAIT = 5.0  # seconds between checks of a running clock, whatever the pace
DEFAULT_NEWS_PER_MINUTE = 3.0
"""The pace of synthetic news while synthetic data is on (``rate`` > 0)."""


def check_news_per_minute(value: float | None) -> float | None:
    """``value`` as a float (or ``None``); ``ValueError`` unless a finite number >= 0."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"news_per_minute must be a finite number >= 0 or None, got {value!r}")
    return float(value)


class News(DataStreams):
    """The emulator-wide news ticker, paced by the emulator clock."""

    _news_per_minute: float | None
    _news_task: asyncio.Task[None] | None
    _news_unlisten: Callable[[], None] | None

    @property
    def news_per_minute(self) -> float:
        """Synthetic headlines per minute of emulator time now (0 = none); settable while running.

        Set a number to hold that pace, or ``None`` for the default
        (:data:`DEFAULT_NEWS_PER_MINUTE` while ``rate`` > 0, else 0).

        Example::

            emu.news_per_minute = 30
        """
        if self._news_per_minute is not None:
            return self._news_per_minute
        return DEFAULT_NEWS_PER_MINUTE if self._rate > 0 else 0.0

    @news_per_minute.setter
    def news_per_minute(self, value: float | None) -> None:
        per_minute = check_news_per_minute(value)

        def run() -> None:
            self._news_per_minute = per_minute
            if self._news_wake is not None:
                self._news_wake.set()

        self._call(run)

    def _start_news(self, loop: asyncio.AbstractEventLoop) -> None:
        wake = self._news_wake = asyncio.Event()

        def clock_moved() -> None:  # on whichever thread moved the clock
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake.set)

        self._news_unlisten = self._clock.on_change(clock_moved)
        self._news_task = loop.create_task(self._news_ticker(wake))

    async def _stop_news(self) -> None:
        if self._news_unlisten is not None:
            self._news_unlisten()
            self._news_unlisten = None
        task, self._news_task = self._news_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._news_wake = None

    async def _news_ticker(self, wake: asyncio.Event) -> None:
        clock = self._clock
        last, credit = clock.now_ns(), 0.0
        try:
            while True:
                per_minute = self.news_per_minute
                now = clock.now_ns()
                if per_minute > 0 and now > last:
                    # a jump forward brings at most one minute's worth of news
                    credit = min(
                        credit + (now - last) / _MINUTE_NS * per_minute, max(1.0, per_minute)
                    )
                last = now
                due = int(credit)
                credit -= due
                for _ in range(due):
                    self._publish_headline()
                timeout: float | None = None
                if per_minute > 0 and not clock.frozen:
                    timeout = min(_MAX_WAIT, (1.0 - credit) * 60.0 / per_minute)
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - defensive: a dead ticker must say so
            _log.exception("emulator news ticker failed")

    def _publish_headline(self) -> None:
        symbols = dict.fromkeys(SyntheticMarket.universe("stock"))
        for sess in self._sessions[NEWS_PATH]:
            if sess.authenticated and not sess.closing:
                symbols.update(dict.fromkeys(s for s in sess.subs.get("news", ()) if s != "*"))
        symbol = self._market.pick(tuple(symbols))
        story = self._market.message("n", symbol, "news", self._market.now())
        self._publish(FEEDS[NEWS_PATH], [story], None)
