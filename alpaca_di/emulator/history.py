"""Time under the test's control: the emulator's clock, and bars published as it advances.

:class:`History` gives :class:`~alpaca_di.emulator.AlpacaEmulator` its
:attr:`~History.clock` and :meth:`~History.advance`. Advancing by minutes closes
one minute bar per symbol for every minute boundary crossed (by days: one daily
bar per New York midnight crossed); each bar is recorded -- the market-data REST
API answers historical queries from the record -- and published on the
``bars`` (``dailyBars``) channel of every data path that carries the symbol::

    from datetime import datetime, timezone

    with AlpacaEmulator(clock=datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc)) as emu:
        bars = emu.advance(minutes=3)      # 14:30, 14:31, 14:32 bars for every symbol
        # alpaca-py: StockHistoricalDataClient(..., url_override=emu.api_url)
        #            .get_stock_bars(StockBarsRequest(symbol_or_symbols="AAPL", ...))

The symbols are the default universe of each feed plus every symbol a session
subscribed to on that channel (``symbols=`` picks them instead). Option feeds
have no bar stream: option bars are recorded only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from alpaca_di.emulator.bars import new_york_midnight_ns
from alpaca_di.emulator.clock import EmulatorClock
from alpaca_di.emulator.data import DataStreams
from alpaca_di.emulator.market import SyntheticMarket, asset_class_of
from alpaca_di.emulator.wire import FEEDS, FeedSpec

__all__ = ["History"]

_MINUTE_NS = 60 * 1_000_000_000
_MAX_MINUTES = 100_000  # about 70 days of minute bars per call
_MAX_DAYS = 10_000
_KIND_OF_CLASS = {"us_equity": "stock", "crypto": "crypto", "us_option": "option"}


def _day_starts(before_ns: int, after_ns: int) -> list[int]:
    """Starts of the New York days that ended in ``(before_ns, after_ns]``."""
    starts: list[int] = []
    day = new_york_midnight_ns(before_ns)
    while True:
        # noon of the same day + 1 day lands in the next day whatever the DST change
        following = new_york_midnight_ns(day + 36 * 3600 * 1_000_000_000)
        if following > after_ns:
            return starts
        starts.append(day)
        day = following


class History(DataStreams):
    """The emulator clock and clock-paced bars (published through the data streams)."""

    @property
    def clock(self) -> EmulatorClock:
        """The clock every timestamp comes from (data, bars, news, orders, ``/v2/clock``).

        It follows the wall clock unless the emulator was built with ``clock=`` or a
        test froze it. Moving it by hand (``emu.clock.advance(seconds=5)``) publishes
        nothing; :meth:`advance` moves it and publishes the bars that closed.

        Example::

            emu.clock.freeze()
            emu.clock.set("2024-01-02T14:30:00Z")
            emu.clock.now()
        """
        return self._clock

    def advance(
        self, *, minutes: int = 0, days: int = 0, symbols: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Move the clock forward and publish, and record, the bars that closed meanwhile.

        Give ``minutes=N`` (minute bars, ``T`` = ``b``, one per minute boundary
        crossed, stamped with the minute's start) or ``days=N`` (daily bars, ``T`` =
        ``d``, one per New York midnight crossed, stamped with the day's start). Each
        bar continues the symbol's price walk, so its close is the price fills use.
        Returns the bars in wire form (``t`` a msgpack Timestamp), in publishing order.

        Args:
            minutes: minutes to advance (a whole number > 0), or
            days: days to advance.
            symbols: the symbols to make bars for (stocks, crypto pairs, options);
                default: every feed's universe plus the symbols subscribed to the
                ``bars`` (``dailyBars``) channel anywhere.

        Raises:
            ValueError: unless exactly one of ``minutes``/``days`` is a positive integer.

        Example::

            bars = emu.advance(minutes=1, symbols=["AAPL", "BTC/USD"])
            [b["S"] for b in bars]          # ['AAPL', 'BTC/USD']
        """
        if (
            not all(isinstance(n, int) and not isinstance(n, bool) for n in (minutes, days))
            or minutes < 0
            or days < 0
            or bool(minutes) == bool(days)
        ):
            raise ValueError(
                f"advance() takes minutes=N or days=N, one positive integer; "
                f"got minutes={minutes!r}, days={days!r}"
            )
        if minutes > _MAX_MINUTES or days > _MAX_DAYS:
            raise ValueError(
                f"advance() goes at most {_MAX_MINUTES} minutes or {_MAX_DAYS} days at once; "
                f"got minutes={minutes}, days={days}"
            )
        chosen: list[str] | None = None
        if symbols is not None:
            if isinstance(symbols, str):
                raise ValueError("advance(symbols=...) takes a list of symbols, not one string")
            chosen = list(dict.fromkeys(symbols))
            if not all(isinstance(s, str) and s for s in chosen):
                raise ValueError(f"advance(symbols=...) needs non-empty strings, got {chosen!r}")
        return self._call(lambda: self._advance(minutes, days, chosen))

    def _advance(self, minutes: int, days: int, symbols: list[str] | None) -> list[dict[str, Any]]:
        # the clock moves first: a bar is stamped in the past of everything after it
        step = minutes * _MINUTE_NS if minutes else days * 1440 * _MINUTE_NS
        before, after = self._clock.advance_ns(step)
        if minutes:
            first = before - before % _MINUTE_NS + _MINUTE_NS
            starts = [b - _MINUTE_NS for b in range(first, after + 1, _MINUTE_NS)]
            type_code, channel = "b", "bars"
        else:
            starts = _day_starts(before, after)
            type_code, channel = "d", "dailyBars"
        routes = self._bar_routes(channel, symbols)
        market, history = self._market, self._history
        published: list[dict[str, Any]] = []
        for start in starts:
            stamp = msgpack.Timestamp.from_unix_nano(start)
            per_path: dict[str, list[dict[str, Any]]] = {}
            for (kind, symbol), specs in routes.items():
                bar = market.closed_bar(type_code, symbol, kind, stamp)
                history.record(kind, bar)
                published.append(bar)
                for spec in specs:
                    per_path.setdefault(spec.path, []).append(bar)
            for path, bars in per_path.items():
                self._deliver(FEEDS[path], bars, None)
        self._changed()
        return [dict(bar) for bar in published]

    def _bar_routes(
        self, channel: str, symbols: list[str] | None
    ) -> dict[tuple[str, str], list[FeedSpec]]:
        """(kind, symbol) -> the data paths whose ``channel`` carries it."""
        routes: dict[tuple[str, str], list[FeedSpec]] = {}
        if symbols is not None:
            for symbol in symbols:
                kind = _KIND_OF_CLASS[asset_class_of(symbol)]
                routes[(kind, symbol)] = [
                    spec
                    for spec in FEEDS.values()
                    if spec.kind == kind and channel in spec.channels
                ]
            return routes
        for spec in FEEDS.values():
            if spec.kind == "news":
                continue
            names = dict.fromkeys(SyntheticMarket.universe(spec.kind, spec.feed))
            for sess in self._sessions[spec.path]:
                if sess.authenticated and not sess.closing:
                    names.update(dict.fromkeys(s for s in sess.subs.get(channel, ()) if s != "*"))
            streamed = channel in spec.channels
            for name in names:
                paths = routes.setdefault((spec.kind, name), [])
                if streamed:
                    paths.append(spec)
        return routes
