"""Wire-form market messages for tests: feed them to the emulator or to fakes.

Each builder returns a dict exactly as Alpaca sends it (``T`` first, short keys)::

    from alpaca_di.testing.messages import quote, trade

    emulator.publish("/v2/iex", [quote("AAPL", bid=189.9), trade("AAPL", price=190.0)])
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal
from uuid import UUID

from alpaca.trading.enums import TradeEvent

__all__ = ["bar", "news", "quote", "trade", "trade_update"]


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


def trade_update(
    event: str | TradeEvent = "fill",
    /,
    *,
    symbol: str = "AAPL",
    order_id: str | UUID | None = None,
    client_order_id: str | None = None,
    side: Literal["buy", "sell"] = "buy",
    qty: float = 1,
    price: float = 100.0,
    order_type: str = "market",
    time_in_force: str = "day",
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """A trading-stream ``trade_updates`` payload (``data``), as Alpaca sends it.

    ``fill`` and ``partial_fill`` carry ``price``/``qty`` and a filled order;
    other events carry an order in the matching status.

    Example::

        emulator.push_trade_update("PKTEST", trade_update("fill", symbol="MSFT"))
    """
    name = event.value if isinstance(event, TradeEvent) else str(event)
    at = (timestamp or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")
    status = {
        "fill": "filled",
        "partial_fill": "partially_filled",
        "new": "new",
        "canceled": "canceled",
        "expired": "expired",
        "rejected": "rejected",
        "replaced": "replaced",
        "pending_new": "pending_new",
        "accepted": "accepted",
    }.get(name, name)
    filled = name in ("fill", "partial_fill")
    filled_qty = qty if name == "fill" else (qty / 2 if name == "partial_fill" else 0)
    order: dict[str, Any] = {
        "id": str(order_id or uuid.uuid4()),
        "client_order_id": client_order_id or str(uuid.uuid4()),
        "created_at": at,
        "updated_at": at,
        "submitted_at": at,
        "filled_at": at if name == "fill" else None,
        "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-di:{symbol}")),
        "symbol": symbol,
        "asset_class": "crypto" if "/" in symbol else "us_equity",
        "qty": f"{qty:g}",
        "filled_qty": f"{filled_qty:g}",
        "filled_avg_price": f"{price:g}" if filled else None,
        "order_class": "simple",
        "order_type": order_type,
        "type": order_type,
        "side": side,
        "time_in_force": time_in_force,
        "status": status,
        "extended_hours": False,
    }
    data: dict[str, Any] = {
        "event": name,
        "execution_id": str(uuid.uuid4()),
        "order": order,
        "timestamp": at,
    }
    if filled:
        data.update(price=f"{price:g}", qty=f"{filled_qty:g}", position_qty=f"{filled_qty:g}")
    return data
