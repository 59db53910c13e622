"""Order-state rules: event names, order ids, reconciled updates."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from alpaca.trading.enums import TradeEvent
from alpaca.trading.models import Order, TradeUpdate

from alpaca_di.protocol.models import parse
from alpaca_di.services.trading import FINAL_EVENTS, TRADE_EVENTS, ReconciledTradeUpdate
from alpaca_di.services.trading.orders import event_names, order_key, reconciled_update
from alpaca_di.testing.fakes import trade_update_message

T0 = datetime(2024, 1, 2, 15, 30, tzinfo=timezone.utc)


def order(status: str, *, filled: str = "0", at: datetime = T0) -> Order:
    stamp = at.isoformat()
    return Order(
        id=str(uuid.UUID(int=7)),
        client_order_id="c-7",
        created_at=stamp,
        updated_at=stamp,
        submitted_at=stamp,
        filled_at=stamp if status == "filled" else None,
        canceled_at=stamp if status == "canceled" else None,
        asset_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, "AAPL")),
        symbol="AAPL",
        asset_class="us_equity",
        qty="5",
        filled_qty=filled,
        filled_avg_price="190.5" if filled != "0" else None,
        order_class="simple",
        order_type="market",
        type="market",
        side="buy",
        time_in_force="day",
        status=status,
        extended_hours=False,
    )


def test_event_and_order_id_validation() -> None:
    assert event_names("fill") == {"fill"}
    assert "done_for_day" in TRADE_EVENTS
    assert {"fill", "canceled", "rejected", "expired"} <= FINAL_EVENTS
    with pytest.raises(ValueError, match="unknown trade event 'FILL'"):
        event_names(["FILL"])
    with pytest.raises(ValueError, match="unknown trade event 3"):
        event_names([3])  # type: ignore[list-item]
    oid = uuid.uuid4()
    assert order_key(str(oid).upper()) == str(oid)
    assert order_key(f" {oid} ") == str(oid)
    with pytest.raises(ValueError, match="order UUID"):
        order_key("")


def test_a_reconciled_fill_carries_the_cumulative_quantity_and_average_price() -> None:
    fill = reconciled_update(order("filled", filled="5", at=T0 + timedelta(seconds=3)), "fill")
    assert isinstance(fill, ReconciledTradeUpdate)
    assert fill.reconciled is True
    assert (fill.qty, fill.price) == (5.0, 190.5)
    assert fill.timestamp == T0 + timedelta(seconds=3)
    canceled = reconciled_update(order("canceled"), "canceled")
    assert (canceled.qty, canceled.price) == (None, None)
    assert canceled.timestamp == T0


@pytest.mark.parametrize("name", sorted(TRADE_EVENTS))
def test_streamed_and_reconciled_updates_carry_the_same_event_type(name: str) -> None:
    streamed = parse("trade_updates", "AAPL", trade_update_message(name))
    assert isinstance(streamed, TradeUpdate)
    reconciled = reconciled_update(streamed.order, name)
    # The str alpaca-py's own TradingStream delivers, on both paths: it prints and
    # logs as the event's name (f"{TradeEvent.FILL}" would be "TradeEvent.FILL").
    assert type(streamed.event) is str
    assert type(reconciled.event) is str
    assert streamed.event == reconciled.event == name
    assert f"{reconciled.event}" == name
    if name in {event.value for event in TradeEvent}:
        assert reconciled_update(streamed.order, TradeEvent(name)).event == name
        assert type(reconciled_update(streamed.order, TradeEvent(name)).event) is str
