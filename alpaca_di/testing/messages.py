"""Wire-form market messages for tests: feed them to the emulator or to fakes.

Each builder returns a dict exactly as Alpaca sends it (``T`` first, short keys)::

    from alpaca_di.testing.messages import quote, trade

    emulator.publish("/v2/iex", [quote("AAPL", bid=189.9), trade("AAPL", price=190.0)])
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

__all__ = ["bar", "news", "quote", "trade"]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def quote(
    symbol: str,
    *,
    bid: float = 100.0,
    ask: float | None = None,
    bid_size: float = 1,
    ask_size: float = 1,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A stock quote (``T: q``); ``ask`` defaults to ``bid + 0.01``."""
    return {
        "T": "q",
        "S": symbol,
        "bx": "V",
        "bp": bid,
        "bs": bid_size,
        "ax": "V",
        "ap": bid + 0.01 if ask is None else ask,
        "as": ask_size,
        "c": ["R"],
        "z": "C",
        "t": timestamp or _now(),
    }


def trade(
    symbol: str,
    *,
    price: float = 100.0,
    size: float = 100,
    trade_id: int = 1,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A stock trade (``T: t``)."""
    return {
        "T": "t",
        "S": symbol,
        "i": trade_id,
        "x": "V",
        "p": price,
        "s": size,
        "c": ["@"],
        "z": "C",
        "t": timestamp or _now(),
    }


def bar(
    symbol: str,
    *,
    open: float = 100.0,
    high: float = 101.0,
    low: float = 99.0,
    close: float = 100.5,
    volume: float = 1000,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A minute bar (``T: b``)."""
    return {
        "T": "b",
        "S": symbol,
        "o": open,
        "h": high,
        "l": low,
        "c": close,
        "v": volume,
        "n": 10,
        "vw": (high + low + close) / 3,
        "t": timestamp or _now(),
    }


def news(
    headline: str,
    symbols: Sequence[str],
    *,
    news_id: int = 1,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A news article (``T: n``)."""
    at = timestamp or _now()
    return {
        "T": "n",
        "id": news_id,
        "headline": headline,
        "summary": headline,
        "author": "alpaca-di",
        "created_at": at,
        "updated_at": at,
        "url": f"https://example.com/news/{news_id}",
        "content": "",
        "symbols": list(symbols),
        "source": "emulator",
    }
