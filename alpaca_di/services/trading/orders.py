"""Order-state rules: event names, final events, and updates rebuilt from REST.

Pure functions over alpaca-py's ``Order`` and ``TradeUpdate`` (no I/O)::

    event_names(("fill", "canceled"))           # frozenset, or ValueError naming the event
    order_key(order.id)                         # canonical UUID text, or ValueError
    update = reconciled_update(order, "fill")   # a ReconciledTradeUpdate from a REST order
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import Order

from alpaca_di.protocol.models import ReconciledTradeUpdate

__all__ = [
    "FINAL_EVENTS",
    "STATUS_EVENT",
    "TRADE_EVENTS",
    "ReconciledTradeUpdate",
    "as_order",
    "event_name",
    "event_names",
    "filled_qty",
    "order_key",
    "reconciled_update",
    "same_fill",
]

TRADE_EVENTS: frozenset[str] = frozenset(
    {event.value for event in TradeEvent}
    | {
        "done_for_day",
        "stopped",
        "suspended",
        "calculated",
        "order_replace_rejected",
        "order_cancel_rejected",
    }
)
"""Every trade-update event name Alpaca documents (``TradeEvent`` values and a few more)."""

FINAL_EVENTS: frozenset[str] = frozenset({"fill", "canceled", "rejected", "expired", "replaced"})
"""Events that end an order; each is delivered at most once per order."""

# An order status in REST and the trade-update event that reports it.
STATUS_EVENT: Mapping[str, str] = {
    "new": "new",
    "accepted": "accepted",
    "pending_new": "pending_new",
    "partially_filled": "partial_fill",
    "filled": "fill",
    "done_for_day": "done_for_day",
    "canceled": "canceled",
    "expired": "expired",
    "replaced": "replaced",
    "pending_cancel": "pending_cancel",
    "pending_replace": "pending_replace",
    "rejected": "rejected",
    "stopped": "stopped",
    "suspended": "suspended",
    "calculated": "calculated",
}


def reconciled_update(order: Order, event: str | TradeEvent) -> ReconciledTradeUpdate:
    """A :class:`ReconciledTradeUpdate` for ``order`` reaching ``event``, from its REST state.

    ``update.event`` is the event's name as a ``str`` (``"fill"``), as in streamed
    updates, whether ``event`` is given as a str or a ``TradeEvent``.
    """
    event = event_name(event)
    timestamps = {
        "fill": order.filled_at,
        "partial_fill": order.filled_at,
        "canceled": order.canceled_at,
        "expired": order.expired_at,
        "rejected": order.failed_at,
        "replaced": order.replaced_at,
    }
    stamp = timestamps.get(event) or order.updated_at or datetime.now(timezone.utc)
    filled = event in ("fill", "partial_fill")
    price = float(order.filled_avg_price) if filled and order.filled_avg_price else None
    qty = float(order.filled_qty) if filled and order.filled_qty else None
    # ``event`` stays the str the stream's updates carry: alpaca-py's TradeUpdate
    # (``Union[TradeEvent, str]``) keeps every wire value a plain str, so a
    # reconciled update prints, logs and compares exactly like a streamed one.
    return ReconciledTradeUpdate(event=event, order=order, timestamp=stamp, price=price, qty=qty)


def as_order(item: Any) -> Order:
    if isinstance(item, Order):
        return item
    if isinstance(item, Mapping):
        return Order(**item)
    raise TypeError(f"expected an Order from the trading client, got {type(item).__name__}")


def _value(value: Any) -> str:
    return str(getattr(value, "value", value))


def filled_qty(order: Order) -> float:
    try:
        return float(order.filled_qty or 0)
    except ValueError:
        return 0.0


def same_fill(a: Order, b: Order) -> bool:
    return filled_qty(a) == filled_qty(b)


def event_name(event: Any) -> str:
    return _value(event)


def event_names(events: Iterable[str | TradeEvent] | str | TradeEvent) -> frozenset[str]:
    if isinstance(events, (str, TradeEvent)):
        events = (events,)
    names: set[str] = set()
    for event in events:
        name = _value(event) if isinstance(event, (str, TradeEvent)) else None
        if name not in TRADE_EVENTS:
            valid = ", ".join(sorted(TRADE_EVENTS))
            raise ValueError(f"unknown trade event {event!r}; valid events: {valid}")
        names.add(name)
    if not names:
        raise ValueError("events must name at least one trade event")
    return frozenset(names)


def order_key(order_id: str | UUID) -> str:
    if isinstance(order_id, UUID):
        return str(order_id)
    if isinstance(order_id, str):
        try:
            return str(UUID(order_id.strip()))
        except ValueError:
            pass
        raise ValueError(f"order_id must be an order UUID, got {order_id!r}")
    raise TypeError(f"order_id must be a str or UUID, got {type(order_id).__name__}")
