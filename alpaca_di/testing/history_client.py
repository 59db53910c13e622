"""FakeHistoricalDataClient: alpaca-py's historical bar clients in memory.

It answers ``get_stock_bars``, ``get_crypto_bars`` and ``get_option_bars`` (so it
satisfies :class:`~alpaca_di.services.interfaces.StockBarsClient`,
:class:`~alpaca_di.services.interfaces.CryptoBarsClient` and
:class:`~alpaca_di.services.interfaces.OptionBarsClient`) from the bars a test
gave it, with alpaca-py's own ``BarSet``; no socket, no thread, no mock::

    from alpaca_di.testing import FakeHistoricalDataClient

    client = FakeHistoricalDataClient()
    client.add_bar("AAPL", "2024-03-04T14:30:00Z", close=180.5)
    bars = client.get_stock_bars(StockBarsRequest(
        symbol_or_symbols="AAPL", timeframe=TimeFrame.Minute, start=start))
    bars["AAPL"][0].close                        # 180.5

In a container, override the one provider a component (or the hub's backfill) uses::

    container.alpaca.stock_history_client.override(providers.Object(client))

``fail_next(error)`` makes the next calls raise (alpaca-py's ``APIError`` for an
HTTP status, or any exception), ``requests`` records every request received.
"""

from __future__ import annotations

import datetime as _dt
import threading
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.data.models import BarSet

__all__ = ["FakeHistoricalDataClient"]


def _utc(when: _dt.datetime | str) -> _dt.datetime:
    if isinstance(when, str):
        when = _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    if when.tzinfo is None:
        return when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc)


def _http_error(status: int, message: str) -> APIError:
    response = requests.Response()
    response.status_code = status
    response._content = message.encode()
    return APIError(message, requests.HTTPError(response=response))  # type: ignore[no-untyped-call]


class FakeHistoricalDataClient:
    """Stock, crypto and option bars from memory, answered as alpaca-py's clients do.

    Bars are kept per timeframe unit (``"Min"`` for minute bars, ``"Day"`` for
    daily bars); a request gets the bars of its symbols whose timestamp is in
    ``[start, end]``, ascending, at most ``limit`` per request. Thread-safe.

    Example::

        client = FakeHistoricalDataClient()
        client.add_bar("BTC/USD", datetime(2024, 3, 4, 14, 30, tzinfo=timezone.utc))
        client.fail_next(429, times=1)          # then a rate limit, once
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bars: dict[tuple[str, str], dict[_dt.datetime, dict[str, Any]]] = {}
        self._failures: list[BaseException] = []
        self.requests: list[Any] = []

    def add_bar(
        self,
        symbol: str,
        timestamp: _dt.datetime | str,
        *,
        open: float = 100.0,
        high: float | None = None,
        low: float | None = None,
        close: float | None = None,
        volume: float = 100.0,
        trade_count: float = 1.0,
        vwap: float | None = None,
        timeframe: str = "Min",
    ) -> None:
        """Remember one bar (``timeframe``: ``"Min"`` or ``"Day"``), replacing one of its time."""
        if timeframe not in ("Min", "Day"):
            raise ValueError(f"timeframe must be 'Min' or 'Day', got {timeframe!r}")
        close = open if close is None else close
        stamp = _utc(timestamp)
        row = {
            "t": stamp.isoformat().replace("+00:00", "Z"),
            "o": open,
            "h": max(open, close) if high is None else high,
            "l": min(open, close) if low is None else low,
            "c": close,
            "v": volume,
            "n": trade_count,
            "vw": close if vwap is None else vwap,
        }
        with self._lock:
            self._bars.setdefault((timeframe, symbol), {})[stamp] = row

    def fail_next(self, error: int | BaseException, *, times: int = 1) -> None:
        """Make the next ``times`` calls raise ``error`` (an HTTP status: an ``APIError``)."""
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        failure = _http_error(error, f"HTTP {error}") if isinstance(error, int) else error
        with self._lock:
            self._failures.extend([failure] * times)

    # -- alpaca-py's interface ----------------------------------------------------

    def get_stock_bars(self, request_params: Any) -> BarSet:
        """``StockHistoricalDataClient.get_stock_bars``."""
        return self._bars_for(request_params)

    def get_crypto_bars(self, request_params: Any, feed: Any = None) -> BarSet:
        """``CryptoHistoricalDataClient.get_crypto_bars`` (every location serves the same bars)."""
        return self._bars_for(request_params)

    def get_option_bars(self, request_params: Any) -> BarSet:
        """``OptionHistoricalDataClient.get_option_bars``."""
        return self._bars_for(request_params)

    def _bars_for(self, request: Any) -> BarSet:
        with self._lock:
            self.requests.append(request)
            if self._failures:
                raise self._failures.pop(0)
            symbols = request.symbol_or_symbols
            if isinstance(symbols, str):
                symbols = [symbols]
            unit = request.timeframe.unit_value.value
            if unit not in ("Min", "Day") or request.timeframe.amount_value != 1:
                raise ValueError(f"the fake serves 1Min and 1Day bars, not {request.timeframe}")
            start = _utc(request.start) if request.start is not None else None
            end = _utc(request.end) if request.end is not None else None
            limit = request.limit
            found: dict[str, list[dict[str, Any]]] = {}
            for symbol in symbols:
                rows = self._bars.get((unit, symbol), {})
                chosen = [
                    rows[stamp]
                    for stamp in sorted(rows)
                    if (start is None or stamp >= start) and (end is None or stamp <= end)
                ]
                if chosen:
                    found[symbol] = chosen
        if limit is not None:
            budget = limit
            for symbol in list(found):
                found[symbol] = found[symbol][:budget]
                budget -= len(found[symbol])
                if not found[symbol]:
                    del found[symbol]
        return BarSet(found)

    def __repr__(self) -> str:
        return f"<FakeHistoricalDataClient {sum(map(len, self._bars.values()))} bars>"
