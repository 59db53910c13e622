"""Recovery: what a new trading leader reads back through REST after a takeover.

Trade updates Alpaca sent while no leader's socket listened (a failover, a Redis
outage that fenced the leader) or that a deposed leader read but could not
append to the stream before it stepped down never reached Redis. Each time a
leader's trading socket starts listening, it reads the tail of the group's
trade-update stream (:func:`read_tail`: the last update the deployment
published and, per order, the latest state it holds), asks the REST API for the
orders of the window nobody can vouch for (from shortly before that last
update, or ``reconcile_lookback`` when the stream is empty because Redis lost
it), and publishes each state the stream lacks as a reconciled update
(``"reconciled": true``; :class:`~alpaca_di.protocol.models.ReconciledTradeUpdate`
once parsed). :func:`missed_updates` reuses
:func:`~alpaca_di.services.trading.reconcile.fetch_orders_since` and
:func:`~alpaca_di.services.trading.reconcile.missed_update`; a state some
process already had is dropped again by its
:class:`~alpaca_di.services.TradingService` (final states once per order).

Example (what :class:`~alpaca_di.scaleout.leader.GroupLeader` does)::

    rest = rest_client(credentials, "https://paper-api.alpaca.markets")
    tail = await read_tail(client, keys, count=10_000)
    since, orders, messages = await asyncio.to_thread(
        missed_updates, rest, tail, lookback=600.0
    )
    publisher.enqueue(messages)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from alpaca.trading.models import Order, TradeUpdate
from redis.asyncio import Redis

from alpaca_di.credentials import Credentials
from alpaca_di.errors import AlpacaAPIError, ProtocolError
from alpaca_di.protocol.models import parse
from alpaca_di.scaleout.wire import SharingKeys, decode_update_entry, stream_position
from alpaca_di.services.rest import rest_call
from alpaca_di.services.trading.orders import FINAL_EVENTS, as_order, event_name
from alpaca_di.services.trading.reconcile import fetch_orders_since, missed_update

if TYPE_CHECKING:
    from alpaca.trading.client import TradingClient

__all__ = ["StreamTail", "close_rest_client", "missed_updates", "read_tail", "rest_client"]

MARGIN = timedelta(seconds=10)
"""Subtracted from the last published update's time (clock skew, in-flight submits)."""

_MAX_LOOKUPS = 200  # orders the stream shows open, looked up one by one


@dataclass
class StreamTail:
    """What the trade-update stream holds: its newest entry and each order's latest state.

    Attributes:
        last_ms: the newest entry's time (Redis clock, ms since the epoch), or
            ``None`` when the stream is empty.
        last: order id -> the latest update the stream holds for it.
        ended: order ids whose final state the stream holds.
    """

    last_ms: int | None = None
    last: dict[str, TradeUpdate] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)


def rest_client(credentials: Credentials, rest_url: str) -> TradingClient:
    """alpaca-py's ``TradingClient`` for the account, on the trading REST API ``rest_url``.

    Building it does no network I/O; the secret is never bound to a local name::

        rest = rest_client(creds, settings.resolved_api_url)
    """
    from alpaca.trading.client import TradingClient

    return TradingClient(
        credentials.key_id,
        credentials.secret.get_secret_value(),
        url_override=rest_url,
    )


def close_rest_client(client: TradingClient) -> None:
    """Close the HTTP session of a :func:`rest_client` (idempotent)."""
    session = getattr(client, "_session", None)
    if session is not None:
        session.close()


async def read_tail(client: Redis, keys: SharingKeys, *, count: int) -> StreamTail:
    """Read the newest ``count`` entries of the group's trade-update stream.

    Entries that do not decode or parse are skipped: they vouch for nothing.
    """
    entries = cast(list[Any], await client.xrevrange(keys.updates, count=count))
    tail = StreamTail()
    if not entries:
        return tail
    newest = entries[0][0]
    tail.last_ms = stream_position(newest.decode() if isinstance(newest, bytes) else newest)[0]
    for _entry_id, fields in reversed(entries):  # oldest first: the last one wins
        update = _parsed(fields)
        if update is None:
            continue
        key = str(update.order.id)
        tail.last[key] = update
        if event_name(update.event) in FINAL_EVENTS:
            tail.ended.add(key)
    return tail


def _parsed(fields: Mapping[bytes, bytes] | None) -> TradeUpdate | None:
    try:
        _epoch, _seq, (channel, symbol, raw) = decode_update_entry(fields)
        update = parse(str(channel), str(symbol), raw)
    except (ProtocolError, ValueError):
        return None
    return update if isinstance(update, TradeUpdate) else None


def missed_updates(
    rest: TradingClient,
    tail: StreamTail,
    *,
    lookback: float,
    now: datetime | None = None,
) -> tuple[datetime, int, list[tuple[str, str, dict[str, Any]]]]:
    """The reconciled updates the stream lacks: ``(since, orders read, messages)``.

    Blocking (REST calls): run it in a worker thread. ``messages`` are
    ``("trade_updates", symbol, raw)`` in the order of the orders' last change,
    each raw update flagged ``"reconciled": true``.

    Raises:
        AlpacaAPIError: the order listing failed.
    """
    now = now or datetime.now(timezone.utc)
    floor = now - timedelta(seconds=lookback)
    if tail.last_ms is None:
        since = floor
    else:
        last = datetime.fromtimestamp(tail.last_ms / 1000, timezone.utc)
        since = max(floor, min(last, now) - MARGIN)
    orders: dict[str, Order] = fetch_orders_since(rest, since)
    # Orders the stream shows open may have changed in the window, whenever submitted.
    open_seen = [key for key in tail.last if key not in tail.ended and key not in orders]
    for key in open_seen[-_MAX_LOOKUPS:]:
        try:
            orders[key] = as_order(rest_call(rest, partial(rest.get_order_by_id, key)))
        except AlpacaAPIError as exc:
            if exc.status_code != 404:
                raise
    messages: list[tuple[str, str, dict[str, Any]]] = []
    for order in sorted(orders.values(), key=lambda o: o.updated_at):
        key = str(order.id)
        update = missed_update(order, last=tail.last.get(key), ended=key in tail.ended)
        if update is not None:
            raw = update.model_dump(mode="json")
            raw["reconciled"] = True
            messages.append(("trade_updates", order.symbol or "", raw))
    return since, len(orders), messages
