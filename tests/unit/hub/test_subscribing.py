"""subscribe()'s form keyword: checked at the call, raw=True kept as its older spelling."""

from __future__ import annotations

import pytest

from alpaca_di.hub.subscribing import check_subscribe_form
from alpaca_di.testing import FakeStreamHub


@pytest.fixture
def stock():
    hub = FakeStreamHub("stock")
    yield hub
    hub.close()


def test_each_form_is_what_the_subscription_reports(stock):
    assert stock.subscribe(quotes=["AAPL"]).form == "model"
    assert stock.subscribe(quotes=["AAPL"], form="struct").form == "struct"
    raw = stock.subscribe(quotes=["AAPL"], raw=True)
    assert (raw.form, raw.raw) == ("raw", True)
    assert stock.subscribe(quotes=["AAPL"], raw=True, form="raw").form == "raw"


def test_a_bad_form_is_named_at_the_call(stock):
    with pytest.raises(ValueError, match="form must be one of 'model', 'struct', 'raw'"):
        stock.subscribe(quotes=["AAPL"], form="structs")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="raw=True contradicts form='struct'"):
        stock.subscribe(quotes=["AAPL"], raw=True, form="struct")  # type: ignore[call-overload]


def test_trade_updates_have_no_struct_form():
    hub = FakeStreamHub("trading")
    try:
        with pytest.raises(ValueError, match="no struct form"):
            hub.subscribe(trade_updates=True, form="struct")
    finally:
        hub.close()


def test_every_form_of_a_pushed_quote(stock):
    model = stock.subscribe(quotes=["AAPL"])
    fast = stock.subscribe(quotes=["AAPL"], form="struct")
    raw = stock.subscribe(quotes=["AAPL"], form="raw")
    stock.push_quote("AAPL", bid=7.0)
    assert model.get(timeout=5).bid_price == 7.0
    assert fast.get(timeout=5).bid_price == 7.0
    assert raw.get(timeout=5)["bp"] == 7.0


def test_check_subscribe_form():
    assert check_subscribe_form(False, None) == "model"
    assert check_subscribe_form(True, None) == "raw"
    assert check_subscribe_form(False, "struct") == "struct"
