"""HistoricalBarSource: the hub's :class:`~alpaca_di.hub.gaps.BarSource` over alpaca-py's clients.

A hub backfills the bars its subscriptions missed during a disconnect through
this adapter; the container builds one per market-data stream from its
``*_history_client`` provider (resolved only when a backfill happens)::

    source = HistoricalBarSource("stock", container.stock_history_client, feed="iex")
    remove = hub.use_history(source)
    rows = source.fetch_bars("bars", ["AAPL"], start, limit=10_000)   # in a thread

``429 Too Many Requests`` is retried with jittered exponential backoff (alpaca-py
retries it 3 times by itself first); any other error is raised, and the hub
tells the subscriptions (a gap notice with ``backfill_error``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from alpaca_di.protocol import StreamKind
from alpaca_di.protocol.times import message_time
from alpaca_di.transport.backoff import Backoff, ExponentialBackoff

if TYPE_CHECKING:
    from alpaca_di.services.interfaces import BarsClient

__all__ = ["HistoricalBarSource"]
_FIELDS = {  # alpaca-py Bar attribute -> the stream's key
    "open": "o",
    "high": "h",
    "low": "l",
    "close": "c",
    "volume": "v",
    "trade_count": "n",
    "vwap": "vw",
}


def _status(exc: BaseException) -> int | None:
    try:
        status = getattr(exc, "status_code", None)
    except Exception:  # alpaca-py's APIError reads it from a response that may be absent
        return None
    return status if isinstance(status, int) else None


class HistoricalBarSource:
    """Minute and daily bars of one stream kind, fetched with alpaca-py's historical client.

    Args:
        kind: ``stock``, ``crypto`` or ``option``.
        client: a zero-argument callable returning the client (a provider), called
            at each fetch, so nothing is built before a backfill needs it.
        feed: the stream's feed (``iex``/``sip``; the crypto location ``us``...;
            unused for options, whose bars have no feed).
        attempts: tries per fetch when the server answers ``429``.
        backoff: the delays between them (default 1 s doubling up to 30 s).

    Example::

        source = HistoricalBarSource("crypto", lambda: client, feed="us")
    """

    def __init__(
        self,
        kind: StreamKind | str,
        client: Callable[[], BarsClient],
        *,
        feed: str | None = None,
        attempts: int = 5,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kind = StreamKind(kind)
        if self.kind not in (StreamKind.STOCK, StreamKind.CRYPTO, StreamKind.OPTION):
            raise ValueError(f"the {self.kind.value} stream has no bars to backfill")
        if not callable(client):
            raise TypeError(f"client must be a zero-argument callable, got {client!r}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an integer >= 1, got {attempts!r}")
        self._client = client
        self.feed = feed
        self.attempts = attempts
        self._backoff = backoff or ExponentialBackoff(initial=1.0, maximum=30.0)
        self._sleep = sleep
        self.throttled = 0  # 429 answers retried here

    def fetch_bars(
        self, channel: str, symbols: Sequence[str], start: datetime, limit: int
    ) -> dict[str, list[dict[str, Any]]]:
        """``bars`` (1Min) or ``daily_bars`` (1Day) of ``symbols`` since ``start``, per symbol."""
        if channel not in ("bars", "daily_bars"):
            raise ValueError(f"only bars and daily_bars are backfilled, not {channel!r}")
        self._backoff.reset()
        for attempt in range(1, self.attempts + 1):
            try:
                result = self._request(channel, list(symbols), start, limit)
            except Exception as exc:
                if _status(exc) != 429 or attempt == self.attempts:
                    raise
                self.throttled += 1
                self._sleep(self._backoff.next_delay())
            else:
                return _rows(result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(self, channel: str, symbols: list[str], start: datetime, limit: int) -> Any:
        from alpaca.data.enums import CryptoFeed, DataFeed
        from alpaca.data.requests import CryptoBarsRequest, OptionBarsRequest, StockBarsRequest
        from alpaca.data.timeframe import TimeFrame

        timeframe = TimeFrame.Minute if channel == "bars" else TimeFrame.Day
        window: dict[str, Any] = {
            "symbol_or_symbols": symbols,
            "timeframe": timeframe,
            "start": start,
            "limit": limit,
        }
        client: Any = self._client()
        if self.kind is StreamKind.STOCK:
            feeds = {feed.value: feed for feed in DataFeed}
            request = StockBarsRequest(**window, feed=feeds.get(self.feed or ""))
            return client.get_stock_bars(request)
        if self.kind is StreamKind.CRYPTO:
            locations = {feed.value: feed for feed in CryptoFeed}
            location = locations.get(self.feed or "", CryptoFeed.US)
            return client.get_crypto_bars(CryptoBarsRequest(**window), location)
        return client.get_option_bars(OptionBarsRequest(**window))

    def __repr__(self) -> str:
        return f"<HistoricalBarSource {self.kind.value} feed={self.feed!r}>"


def _rows(result: Any) -> dict[str, list[dict[str, Any]]]:
    """A ``BarSet`` (or the raw JSON of a ``raw_data`` client) in the stream's keys."""
    data = result.data if hasattr(result, "data") else result
    if not isinstance(data, Mapping):
        raise TypeError(f"the historical client returned {type(result).__name__}, not bars")
    rows: dict[str, list[dict[str, Any]]] = {}
    for symbol, bars in data.items():
        converted = []
        for bar in bars or ():
            if isinstance(bar, Mapping):  # raw JSON: already the stream's keys
                row = dict(bar)
                row["t"] = message_time(bar)
            else:
                row = {key: getattr(bar, name, None) for name, key in _FIELDS.items()}
                row["t"] = message_time(bar)
            if row["t"] is not None:
                converted.append(row)
        rows[str(symbol)] = converted
    return rows
