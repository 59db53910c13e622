"""What REST read-back emits: only the states the stream did not deliver."""

from __future__ import annotations

from datetime import timedelta

from alpaca.trading.models import TradeUpdate

from alpaca_di.services.trading.reconcile import missed_update

from .test_orders import T0, order


def delivered(event: str, status: str, *, filled: str = "0", seconds: float = 0) -> TradeUpdate:
    at = T0 + timedelta(seconds=seconds)
    return TradeUpdate(event=event, order=order(status, filled=filled, at=at), timestamp=at)


def test_an_order_never_seen_is_emitted_in_its_rest_state() -> None:
    update = missed_update(order("filled", filled="5"), last=None, ended=False)
    assert update is not None
    assert str(update.event.value if hasattr(update.event, "value") else update.event) == "fill"


def test_nothing_is_emitted_for_an_order_that_already_ended() -> None:
    assert missed_update(order("filled", filled="5"), last=None, ended=True) is None


def test_the_state_last_delivered_is_not_emitted_again() -> None:
    last = delivered("partial_fill", "partially_filled", filled="2")
    assert missed_update(order("partially_filled", filled="2"), last=last, ended=False) is None


def test_a_rest_reply_behind_the_stream_is_ignored() -> None:
    last = delivered("partial_fill", "partially_filled", filled="3", seconds=5)
    stale = order("partially_filled", filled="2", at=T0 + timedelta(seconds=1))
    assert missed_update(stale, last=last, ended=False) is None


def test_a_fill_the_stream_missed_after_a_partial_is_emitted() -> None:
    last = delivered("partial_fill", "partially_filled", filled="2")
    later = order("filled", filled="5", at=T0 + timedelta(seconds=4))
    update = missed_update(later, last=last, ended=False)
    assert update is not None
    assert update.qty == 5.0


def test_a_status_without_a_trade_event_emits_nothing() -> None:
    assert missed_update(order("held"), last=None, ended=False) is None
