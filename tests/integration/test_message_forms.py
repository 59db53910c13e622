"""Model, struct and raw consumers on one hub over the emulator: each gets its form, built once."""

from __future__ import annotations

import copy
import datetime as _dt

import msgpack
from _integration_support import wait_until
from alpaca.data.live.websocket import DataStream
from alpaca.data.models import Quote as ModelQuote

from alpaca_di.protocol.structs import Quote, Trade
from alpaca_di.testing.messages import quote, trade
from alpaca_di.testing.recorder import Recorder

IEX = "/v2/iex"
_CAST = DataStream.__new__(DataStream)
_CAST._raw_data = False  # alpaca-py's own message -> model step (DataStream._cast)


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
    assert hub._connection.decoded_forms == {"raw", "struct", "model"}

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


def test_model_consumers_alone_get_alpaca_pys_own_models_without_dicts(stock_lease, emulator):
    hub = stock_lease.hub
    models = Recorder()
    sub = hub.subscribe(models, quotes=["AAPL"], trades=["AAPL"])
    sub.wait_confirmed(10)
    assert hub._connection.decoded_forms == {"model"}
    # 999 ns past the microsecond: msgspec would round up, alpaca-py truncates.
    stamp = msgpack.Timestamp(1_760_000_000, 123_456_999)
    sent = [
        {**quote("AAPL", bid=10.0), "t": stamp},
        {**trade("AAPL", price=11.0), "t": stamp, "x": "ZZ"},  # an exchange alpaca-py lacks
        {**quote("AAPL", bid=12.0), "t": stamp, "bp": 12},  # an int where a float belongs
        {**quote("AAPL", bid=13.0), "t": stamp, "bp": "13.5"},  # only validation takes it
    ]
    emulator.send_raw(IEX, msgpack.packb(sent))
    received = models.wait_for(4)
    for got, message in zip(received, sent, strict=True):
        expected = _CAST._cast(copy.deepcopy(message))
        assert type(got) is type(expected)
        assert got == expected
        assert got.model_dump() == expected.model_dump()
        assert {k: type(v) for k, v in got.__dict__.items()} == {
            k: type(v) for k, v in expected.__dict__.items()
        }
    assert received[0].timestamp.microsecond == 123_456
    assert received[2].bid_price == 12.0
    assert type(received[2].bid_price) is float
    assert received[3].bid_price == 13.5  # from the dict, validated as before
    assert hub.health().malformed == 0
    sub.close()


def test_model_only_hub_counts_a_bad_value_once(stock_lease, emulator):
    hub = stock_lease.hub
    models = Recorder()
    hub.subscribe(models, quotes=["AAPL"]).wait_confirmed(10)
    assert hub._connection.decoded_forms == {"model"}
    bad_price = {**quote("AAPL", bid=1.0), "bp": "not a price"}
    bad_time = {**quote("AAPL", bid=2.0), "t": msgpack.Timestamp(2**40, 0)}  # past year 9999
    emulator.send_raw(
        IEX,
        msgpack.packb([bad_price, bad_time, quote("AAPL", bid=3.0)], datetime=True),
    )
    assert [q.bid_price for q in models.wait_for(1)] == [3.0]
    wait_until(lambda: hub.health().malformed == 2, 10, "both bad quotes counted")
