"""Recovering what a trading socket never saw: orders read back through REST.

After a reconnect (or a scale-out takeover) the orders changed in the window
nobody can vouch for are read from the REST API, and each state the stream did
not deliver is rebuilt as a
:class:`~alpaca_di.services.trading.orders.ReconciledTradeUpdate`::

    orders = fetch_orders_since(client, disconnected_at - margin)
    for order in sorted(orders.values(), key=lambda o: o.updated_at):
        update = missed_update(order, last=last_seen.get(str(order.id)), ended=False)
        if update is not None:
            deliver(update)
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from alpaca.common.enums import Sort
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import GetOrdersRequest

from alpaca_di.services.rest import rest_call
from alpaca_di.services.trading.orders import (
    STATUS_EVENT,
    ReconciledTradeUpdate,
    as_order,
    event_name,
    filled_qty,
    reconciled_update,
    same_fill,
)

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

__all__ = ["fetch_orders_since", "missed_update"]

_PAGE = 500
_MAX_PAGES = 20


def fetch_orders_since(client: TradingClient, after: datetime) -> dict[str, Order]:
    """Every order submitted after ``after`` (all statuses), by id; paged, bounded.

    Raises :class:`~alpaca_di.errors.AlpacaAPIError` when a REST call fails.
    """
    orders: dict[str, Order] = {}
    cursor = after
    for _page in range(_MAX_PAGES):
        request = GetOrdersRequest(
            status=QueryOrderStatus.ALL, after=cursor, limit=_PAGE, direction=Sort.ASC
        )
        page = [
            as_order(item) for item in rest_call(client, partial(client.get_orders, filter=request))
        ]
        fresh = [order for order in page if str(order.id) not in orders]
        for order in fresh:
            orders[str(order.id)] = order
        if len(page) < _PAGE or not fresh:
            break
        cursor = max(order.submitted_at for order in page)
    return orders


def missed_update(
    order: Order, *, last: TradeUpdate | None, ended: bool
) -> ReconciledTradeUpdate | None:
    """The update to emit for ``order``'s REST state, or ``None`` if nothing was missed.

    ``last`` is the latest update delivered for the order, ``ended`` whether a
    final state of it was already delivered.
    """
    event = STATUS_EVENT.get(event_name(order.status))
    if event is None or ended:
        return None
    if last is not None:
        if event_name(last.event) == event and same_fill(last.order, order):
            return None
        if order.updated_at < last.order.updated_at:
            return None  # REST is behind the stream
        if filled_qty(order) < filled_qty(last.order):
            return None
    return reconciled_update(order, event)
