"""The emulator's market history: every bar it published, and the latest quote and trade.

:class:`BarHistory` records what the emulator's streams carried -- minute bars
(``b``, ``u`` replacing the bar of the same minute), daily bars (``d``), and the
last quote (``q``) and trade (``t``) per symbol -- and answers historical
queries the way Alpaca's market-data REST API does: any :class:`Timeframe`
(``5Min``, ``1Hour``, ``1Day``, ``1Week``, ``1Month`` ...) aggregated from the
recorded minute or daily bars, a time window, ``asc``/``desc`` order and pages
of at most ``limit`` bars across all symbols with an opaque ``next_page_token``::

    from alpaca_di.emulator.bars import BarHistory, Timeframe

    history = BarHistory()
    history.record("stock", {"T": "b", "S": "AAPL", "o": 1.0, "h": 2.0, "l": 0.5,
                             "c": 1.5, "v": 100, "n": 3, "vw": 1.2, "t": ts})
    page, token = history.query("stock", ["AAPL"], Timeframe.parse("1Min"),
                                start_ns=0, end_ns=2**62)
    page["AAPL"][0]["c"]        # 1.5

Not thread-safe: the emulator uses it from its loop only.
"""

from __future__ import annotations

import base64
import bisect
import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from alpaca_di.emulator.wire import rfc3339

__all__ = ["DAY", "MINUTE", "BarHistory", "Timeframe", "new_york_midnight_ns", "rest_form"]

MINUTE = "minute"
"""The series of minute bars (``T`` = ``b``/``u``)."""
DAY = "day"
"""The series of daily bars (``T`` = ``d``)."""

_NS = 1_000_000_000
_UNITS = {
    "Min": 60,
    "T": 60,
    "Hour": 3600,
    "H": 3600,
    "Day": 0,
    "D": 0,
    "Week": 0,
    "W": 0,
    "Month": 0,
    "M": 0,
}
_CANONICAL = {"T": "Min", "H": "Hour", "D": "Day", "W": "Week", "M": "Month"}
_LIMITS = {
    "Min": range(1, 60),
    "Hour": range(1, 24),
    "Day": range(1, 2),
    "Week": range(1, 2),
    "Month": (1, 2, 3, 4, 6, 12),
}
_WIRE_ONLY = ("T", "S", "seq")

try:  # pragma: no branch - zoneinfo data may be missing on minimal systems
    from zoneinfo import ZoneInfo

    _NEW_YORK: _dt.tzinfo = ZoneInfo("America/New_York")
except Exception:  # pragma: no cover
    _NEW_YORK = _dt.timezone(_dt.timedelta(hours=-5))


def _to_dt(ns: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ns // _NS, _dt.timezone.utc)


def _ns(moment: _dt.datetime) -> int:
    return int(moment.timestamp()) * _NS


def new_york_midnight_ns(ns: int) -> int:
    """The start (New York midnight, as Alpaca stamps daily bars) of the day holding ``ns``."""
    local = _to_dt(ns).astimezone(_NEW_YORK)
    return _ns(_dt.datetime(local.year, local.month, local.day, tzinfo=_NEW_YORK))


def rest_form(message: Mapping[str, Any]) -> dict[str, Any]:
    """A wire message as the REST API shows it: no ``T``/``S``, RFC 3339 times.

    Example::

        rest_form({"T": "q", "S": "AAPL", "bp": 1.0, "t": Timestamp(0, 0)})
        # {'bp': 1.0, 't': '1970-01-01T00:00:00Z'}
    """
    out: dict[str, Any] = {}
    for key, value in message.items():
        if key in _WIRE_ONLY:
            continue
        out[key] = rfc3339(value) if isinstance(value, msgpack.Timestamp) else value
    return out


@dataclass(frozen=True)
class Timeframe:
    """A bar timeframe as Alpaca's REST API spells it: ``1Min``, ``15Min``, ``1Hour``, ``1Day`` ...

    Attributes:
        amount: how many units one bar spans.
        unit: ``Min``, ``Hour``, ``Day``, ``Week`` or ``Month``.
    """

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Parse ``"5Min"``, ``"1Hour"``, ``"1Day"``, ``"1T"``, ``"1D"`` ...

        Raises:
            ValueError: naming the bad timeframe and the accepted forms.
        """
        digits = ""
        for char in text:
            if not char.isdigit():
                break
            digits += char
        unit = _CANONICAL.get(text[len(digits) :], text[len(digits) :])
        amount = int(digits) if digits else 0
        if unit not in _LIMITS or amount not in _LIMITS[unit]:
            raise ValueError(
                f"invalid timeframe {text!r}: use [1-59]Min, [1-23]Hour, 1Day, 1Week "
                "or [1,2,3,4,6,12]Month"
            )
        return cls(amount, unit)

    @property
    def series(self) -> str:
        """Which recorded series it aggregates: :data:`MINUTE` or :data:`DAY`."""
        return MINUTE if self.unit in ("Min", "Hour") else DAY

    def bucket(self, ns: int) -> int:
        """The start of the bar (of this timeframe) that holds the instant ``ns``."""
        seconds = _UNITS[self.unit]
        if seconds:
            span = self.amount * seconds * _NS
            return ns - ns % span
        day = _to_dt(new_york_midnight_ns(ns)).astimezone(_NEW_YORK).date()
        if self.unit == "Week":
            day -= _dt.timedelta(days=day.weekday())
        elif self.unit == "Month":
            month = (day.month - 1) // self.amount * self.amount + 1
            day = day.replace(month=month, day=1)
        return _ns(_dt.datetime(day.year, day.month, day.day, tzinfo=_NEW_YORK))

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


class _Series:
    """One symbol's bars of one series, sorted by time; a bar replaces one of the same time."""

    __slots__ = ("rows", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.rows: list[dict[str, Any]] = []

    def put(self, ns: int, row: dict[str, Any]) -> None:
        index = bisect.bisect_left(self.times, ns)
        if index < len(self.times) and self.times[index] == ns:
            self.rows[index] = row
        else:
            self.times.insert(index, ns)
            self.rows.insert(index, row)

    def window(self, start_ns: int, end_ns: int) -> tuple[list[int], list[dict[str, Any]]]:
        lo = bisect.bisect_left(self.times, start_ns)
        hi = bisect.bisect_right(self.times, end_ns)
        return self.times[lo:hi], self.rows[lo:hi]


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if len(rows) == 1:
        return dict(rows[0])
    volume = sum(row["v"] for row in rows)
    weighted = sum(row["vw"] * row["v"] for row in rows)
    return {
        "o": rows[0]["o"],
        "h": max(row["h"] for row in rows),
        "l": min(row["l"] for row in rows),
        "c": rows[-1]["c"],
        "v": volume,
        "n": sum(row["n"] for row in rows),
        "vw": round(weighted / volume, 4) if volume else rows[-1]["vw"],
    }


def _token(symbol: str, ns: int) -> str:
    raw = json.dumps([symbol, ns], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        symbol, ns = json.loads(raw)
        if isinstance(symbol, str) and isinstance(ns, int):
            return symbol, ns
    except (ValueError, TypeError):
        pass
    raise ValueError(f"invalid page_token {token!r}")


class BarHistory:
    """Bars, quotes and trades the emulator published, per kind (``stock``, ``crypto``, ``option``).

    Example::

        history = BarHistory()
        history.record("crypto", bar_message)          # from the stream, in wire form
        history.latest("crypto", "b", "BTC/USD")       # that bar, in REST form
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._latest: dict[tuple[str, str, str], Mapping[str, Any]] = {}

    def record(self, kind: str, message: Mapping[str, Any]) -> bool:
        """Remember one wire message if it is a bar, quote or trade; True if it was kept.

        A bar needs ``S`` and a msgpack Timestamp ``t`` (as :func:`normalize_message` makes).
        """
        type_code = message.get("T")
        symbol = message.get("S")
        if not isinstance(symbol, str):
            return False
        if type_code in ("q", "t"):
            self._latest[(kind, type_code, symbol)] = message
            return True
        if type_code not in ("b", "u", "d"):
            return False
        stamp = message.get("t")
        if not isinstance(stamp, msgpack.Timestamp):
            return False
        try:
            row = {key: message[key] for key in ("o", "h", "l", "c", "v")}
        except KeyError:
            return False
        row["n"] = message.get("n", 0)
        row["vw"] = message.get("vw", row["c"])
        series = DAY if type_code == "d" else MINUTE
        ns = stamp.to_unix_nano()
        found = self._series.get((kind, series, symbol))
        if found is None:
            found = self._series[(kind, series, symbol)] = _Series()
        found.put(ns, row)
        if series == MINUTE:
            self._latest[(kind, "b", symbol)] = message
        return True

    def note_latest(
        self, kind: str, type_code: str, symbol: str, message: Mapping[str, Any]
    ) -> None:
        """Remember a quote (``q``) or trade (``t``) as the latest (hot path: no checks)."""
        self._latest[(kind, type_code, symbol)] = message

    def latest(self, kind: str, what: str, symbol: str) -> dict[str, Any] | None:
        """The last quote (``q``), trade (``t``) or minute bar (``b``) of a symbol, REST form."""
        found = self._latest.get((kind, what, symbol))
        return None if found is None else rest_form(found)

    def bars(
        self, kind: str, symbol: str, timeframe: Timeframe, start_ns: int, end_ns: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(bar start ns, bar)`` pairs of one symbol in ``[start_ns, end_ns]``, oldest first.

        Buckets are aggregated from the recorded series (open of the first bar, close
        of the last, high/low extremes, volume and trade count summed, VWAP weighted).
        """
        series = self._series.get((kind, timeframe.series, symbol))
        if series is None:
            return []
        times, rows = series.window(start_ns, end_ns)
        if timeframe.amount == 1 and timeframe.unit in ("Min", "Day"):
            pairs = [(ns, dict(row)) for ns, row in zip(times, rows, strict=True)]
        else:
            pairs = []
            group: list[dict[str, Any]] = []
            current = None
            for ns, row in zip(times, rows, strict=True):
                bucket = timeframe.bucket(ns)
                if bucket != current and group:
                    assert current is not None
                    pairs.append((current, _aggregate(group)))
                    group = []
                current = bucket
                group.append(row)
            if group:
                assert current is not None
                pairs.append((current, _aggregate(group)))
        # a bucket that starts before the window holds only part of its bars: left out
        return [(ns, row) for ns, row in pairs if ns >= start_ns]

    def query(
        self,
        kind: str,
        symbols: Iterable[str],
        timeframe: Timeframe,
        *,
        start_ns: int,
        end_ns: int,
        limit: int = 1000,
        descending: bool = False,
        page_token: str | None = None,
    ) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
        """One page of bars per symbol (REST form) and the token of the next page, or ``None``.

        Bars are ordered by symbol, then by time (``descending`` reverses the time
        order); a page holds at most ``limit`` bars across all symbols. Symbols
        without bars in the window are left out, as Alpaca does.

        Raises:
            ValueError: for a malformed ``page_token``.
        """
        flat: list[tuple[str, int, dict[str, Any]]] = []
        for symbol in sorted(set(symbols)):
            pairs = self.bars(kind, symbol, timeframe, start_ns, end_ns)
            if descending:
                pairs.reverse()
            flat.extend((symbol, ns, row) for ns, row in pairs)
        first = 0
        if page_token:
            key = _untoken(page_token)
            first = next(
                (i for i, (symbol, ns, _) in enumerate(flat) if (symbol, ns) == key), len(flat)
            )
        page = flat[first : first + limit]
        rest = flat[first + limit : first + limit + 1]
        out: dict[str, list[dict[str, Any]]] = {}
        for symbol, ns, row in page:
            stamp = rfc3339(msgpack.Timestamp.from_unix_nano(ns))
            out.setdefault(symbol, []).append({"t": stamp, **row})
        token = _token(rest[0][0], rest[0][1]) if rest else None
        return out, token
