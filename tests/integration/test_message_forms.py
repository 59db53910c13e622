"""Model, struct and raw consumers on one hub over the emulator: each gets its form, built once."""

from __future__ import annotations

import datetime as _dt

from _integration_support import wait_until
from alpaca.data.models import Quote as ModelQuote

from alpaca_di.protocol.structs import Quote, Trade
from alpaca_di.testing.messages import quote, trade
from alpaca_di.testing.recorder import Recorder

IEX = "/v2/iex"


def test_each_form_is_delivered_and_shared_by_its_consumers(stock_lease, emulator):
    hub = stock_lease.hub
    models, models2 = Recorder(), Recorder()
    structs, structs2 = Recorder(), Recorder()
    raws = Recorder()
    subs = [
        hub.subscribe(models, quotes=["AAPL"]),
        hub.subscribe(models2, quotes=["*"], form="model"),
        hub.subscribe(structs, quotes=["AAPL"], trades=["AAPL"], form="struct"),
        hub.subscribe(structs2, quotes=["*"], form="struct"),
        hub.subscribe(raws, quotes=["AAPL"], raw=True),
    ]
    for sub in subs:
        sub.wait_confirmed(10)
    assert hub._connection.decoded_forms == {"raw", "struct"}

    emulator.publish(IEX, [quote("AAPL", bid=10.0), trade("AAPL", price=11.0)])
    [model], [model2] = models.wait_for(1), models2.wait_for(1)
    struct_quote, struct_trade = structs.wait_for(2)
    [struct2] = structs2.wait_for(1)
    [raw] = raws.wait_for(1)

    assert isinstance(model, ModelQuote)
    assert model.bid_price == 10.0
    assert isinstance(struct_quote, Quote)
    assert struct_quote.bid_price == 10.0
    assert isinstance(struct_trade, Trade)
    assert struct_trade.price == 11.0
    assert isinstance(raw, dict)
    assert raw["bp"] == 10.0
    assert struct_quote.timestamp.tzinfo is _dt.timezone.utc
    # Built once per form, shared by every consumer of that form.
    assert model is model2
    assert struct_quote is struct2
    assert [sub.form for sub in subs] == ["model", "model", "struct", "struct", "raw"]


def test_struct_consumers_alone_build_no_dicts(stock_lease, emulator):
    hub = stock_lease.hub
    fast = Recorder()
    sub = hub.subscribe(fast, quotes=["AAPL"], form="struct")
    sub.wait_confirmed(10)
    assert hub._connection.decoded_forms == {"struct"}
    emulator.publish(IEX, [quote("AAPL", bid=float(n)) for n in range(50)])
    assert [q.bid_price for q in fast.wait_for(50)] == [float(n) for n in range(50)]

    raw = hub.subscribe(raw=True, quotes=["AAPL"])
    raw.wait_confirmed(10)
    assert hub._connection.decoded_forms == {"raw", "struct"}
    raw.close()
    wait_until(lambda: hub._connection.decoded_forms == {"struct"}, 10, "dicts no longer built")
    sub.close()


def test_a_value_of_the_wrong_type_is_counted_and_raw_consumers_still_get_it(stock_lease, emulator):
    hub = stock_lease.hub
    fast, raws = Recorder(), Recorder()
    subs = [
        hub.subscribe(fast, quotes=["AAPL"], form="struct"),
        hub.subscribe(raws, quotes=["AAPL"], form="raw"),
    ]
    for sub in subs:
        sub.wait_confirmed(10)
    bad = {**quote("AAPL", bid=1.0), "bp": "not a price"}
    emulator.publish(IEX, [bad, quote("AAPL", bid=2.0)])
    assert [m["bp"] for m in raws.wait_for(2)] == ["not a price", 2.0]
    assert [q.bid_price for q in fast.wait_for(1)] == [2.0]
    wait_until(lambda: hub.health().malformed == 1, 10, "the bad quote counted")


def test_struct_only_hub_counts_a_bad_value_without_dicts(stock_lease, emulator):
    hub = stock_lease.hub
    fast = Recorder()
    hub.subscribe(fast, quotes=["AAPL"], form="struct").wait_confirmed(10)
    bad = {**quote("AAPL", bid=1.0), "bp": "not a price"}
    emulator.publish(IEX, [bad, quote("AAPL", bid=2.0)])
    assert [q.bid_price for q in fast.wait_for(1)] == [2.0]
    wait_until(lambda: hub.health().malformed == 1, 10, "the bad quote counted")
