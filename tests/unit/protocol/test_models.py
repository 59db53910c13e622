"""alpaca_di.protocol.models: same objects as alpaca-py, raw dicts untouched."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any, cast

import pytest
from alpaca.data.live.websocket import DataStream
from alpaca.data.models import (
    Bar,
    News,
    Orderbook,
    Quote,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)
from alpaca.trading.models import TradeUpdate
from msgpack import Timestamp
from protocol_samples import CHANNEL_OF, SAMPLES, TS
from pydantic import BaseModel

from alpaca_di.errors import ProtocolError
from alpaca_di.protocol.models import ReconciledTradeUpdate, parse

EXPECTED_TYPE: dict[str, type[Any]] = {
    "trades": Trade,
    "quotes": Quote,
    "bars": Bar,
    "updated_bars": Bar,
    "daily_bars": Bar,
    "statuses": TradingStatus,
    "lulds": dict,
    "corrections": TradeCorrection,
    "cancel_errors": TradeCancel,
    "orderbooks": Orderbook,
    "news": News,
    "trade_updates": TradeUpdate,
}


def alpaca_py(name: str, raw: dict[str, Any]) -> Any:
    """What alpaca-py hands a handler for this message (it mutates its input)."""
    msg = copy.deepcopy(raw)
    if name == "trade_update":
        return TradeUpdate(**msg)  # TradingStream._cast
    stream = DataStream.__new__(DataStream)  # _cast needs only _raw_data
    stream._raw_data = False
    return stream._cast(msg)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_parse_equals_alpaca_py(name: str) -> None:
    raw = SAMPLES[name]
    channel = CHANNEL_OF[name]
    ours = parse(channel, raw.get("S", ""), raw)
    theirs = alpaca_py(name, raw)
    assert type(ours) is type(theirs) is EXPECTED_TYPE[channel]
    assert ours == theirs
    if channel != "lulds":
        model, reference = cast(BaseModel, ours), cast(BaseModel, theirs)
        assert model.model_dump() == reference.model_dump()
        assert model.model_fields_set == reference.model_fields_set
        assert repr(model) == repr(reference)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_parse_never_mutates_raw(name: str) -> None:
    raw = copy.deepcopy(SAMPLES[name])
    before = copy.deepcopy(raw)
    stamps = {key: value for key, value in raw.items() if isinstance(value, Timestamp)}
    parse(CHANNEL_OF[name], raw.get("S", ""), raw)
    parse(CHANNEL_OF[name], raw.get("S", ""), raw)  # twice: nothing was consumed
    assert raw == before
    assert all(raw[key] is value for key, value in stamps.items())


def test_timestamps_become_aware_utc_datetimes_truncated_to_microseconds() -> None:
    quote = parse("quotes", "AAPL", SAMPLES["stock_quote"])
    assert isinstance(quote, Quote)
    assert quote.timestamp == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.timezone.utc)
    assert quote.timestamp == TS.to_datetime()
    assert quote.timestamp.tzinfo is dt.timezone.utc


def test_lulds_is_a_converted_copy() -> None:
    raw = SAMPLES["luld"]
    luld = parse("lulds", "AAPL", raw)
    assert isinstance(luld, dict)
    assert luld is not raw
    assert luld == {**raw, "t": TS.to_datetime()}


def test_news_timestamps_and_missing_symbols() -> None:
    raw = {key: value for key, value in SAMPLES["news"].items() if key != "symbols"}
    news = parse("news", "", raw)
    assert isinstance(news, News)
    assert news.symbols == []
    assert news.created_at == TS.to_datetime()
    try:
        expected = alpaca_py("news", raw)
    except ValueError:  # alpaca-py before 0.44 requires the field; we default it
        expected = alpaca_py("news", {**raw, "symbols": []})
    assert news == expected


def test_datetime_and_rfc3339_timestamps_are_accepted() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    for value in (when, "2024-01-02T03:04:05.678901Z"):
        trade = parse("trades", "AAPL", {**SAMPLES["stock_trade"], "t": value})
        assert isinstance(trade, Trade)
        assert trade.timestamp == when


def test_orderbook_levels_are_models() -> None:
    book = parse("orderbooks", "BTC/USD", SAMPLES["orderbook"])
    assert isinstance(book, Orderbook)
    assert [(level.price, level.size) for level in book.bids] == [(37010.1, 0.5), (37009.0, 1.25)]
    assert book.reset is True


def test_trade_update_order_defaults_match_alpaca_py() -> None:
    update = parse("trade_updates", "AAPL", SAMPLES["trade_update"])
    assert isinstance(update, TradeUpdate)
    assert update.order.order_class == "simple"  # "" becomes simple, as in Order.__init__
    assert SAMPLES["trade_update"]["order"]["order_class"] == ""
    assert not isinstance(update, ReconciledTradeUpdate)


def test_a_trade_update_flagged_reconciled_parses_as_a_reconciled_update() -> None:
    # What a scale-out leader publishes after reading an order back through REST.
    raw = {**SAMPLES["trade_update"], "reconciled": True}
    update = parse("trade_updates", "AAPL", raw)
    assert isinstance(update, ReconciledTradeUpdate)
    assert update.reconciled is True
    assert update.order.order_class == "simple"
    again = parse("trade_updates", "AAPL", update.model_dump(mode="json"))
    assert isinstance(again, ReconciledTradeUpdate)
    assert again == update


@pytest.mark.parametrize(
    ("channel", "name", "change", "field"),
    [
        ("quotes", "stock_quote", {"bp": "abc"}, "bid_price"),
        ("quotes", "stock_quote", {"bp": None}, "bid_price"),
        ("quotes", "stock_quote", {"as": None}, "ask_size"),
        ("trades", "stock_trade", {"p": [1]}, "price"),
        ("bars", "bar", {"vw": "x"}, "vwap"),
        ("statuses", "status", {"sc": 5}, "status_code"),
        ("corrections", "correction", {"oc": "@"}, "original_conditions"),
        ("orderbooks", "orderbook", {"b": [{"p": 1.0}]}, "bids"),
        ("news", "news", {"id": "not-a-number"}, "id"),
        ("trade_updates", "trade_update", {"timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_invalid_messages_raise_protocol_error(
    channel: str, name: str, change: dict[str, Any], field: str
) -> None:
    raw = {**SAMPLES[name], **change}
    with pytest.raises(ProtocolError) as info:
        parse(channel, raw.get("S", "AAPL"), raw)
    text = str(info.value)
    assert text.startswith(f"invalid {channel} message for ")
    assert field in text
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("channel", "name"), [(CHANNEL_OF[n], n) for n in SAMPLES if CHANNEL_OF[n] != "lulds"]
)
def test_every_required_field_is_enforced(channel: str, name: str) -> None:
    optional = {"T", "S", "i", "x", "c", "z", "bx", "ax", "tks", "r", "oi", "ci", "a",
                "execution_id", "position_qty", "price", "qty", "symbols"}  # fmt: skip
    if channel in ("corrections", "cancel_errors"):
        optional -= {"x", "z"}
    if name == "option_trade":
        optional |= {"x", "c"}
    for field in SAMPLES[name]:
        if field in optional:
            continue
        raw = {key: value for key, value in SAMPLES[name].items() if key != field}
        with pytest.raises(ProtocolError, match=f"invalid {channel} message"):
            parse(channel, "AAPL", raw)


def test_error_text_names_the_symbol_and_never_the_payload() -> None:
    raw = {**SAMPLES["news"], "content": "X" * 1_000_000, "headline": None}
    with pytest.raises(ProtocolError, match="headline") as info:
        parse("news", "", raw)
    assert len(str(info.value)) < 500
    raw = {**SAMPLES["stock_quote"], "bp": "Y" * 1_000_000}
    with pytest.raises(ProtocolError, match="for 'AAPL'") as info:
        parse("quotes", "AAPL", raw)
    assert "YYYY" not in str(info.value)
    with pytest.raises(ProtocolError) as info:
        parse("quotes", "Z" * 10_000, raw)
    assert len(str(info.value)) < 500


@pytest.mark.parametrize("stamp", [1_700_000_000, 1.5, None, b"2024", ["t"]])
def test_bad_timestamp_types(stamp: object) -> None:
    with pytest.raises(ProtocolError, match="'t' is a"):
        parse("quotes", "AAPL", {**SAMPLES["stock_quote"], "t": stamp})
    with pytest.raises(ProtocolError, match="'t' is a"):
        parse("lulds", "AAPL", {**SAMPLES["luld"], "t": stamp})
    with pytest.raises(ProtocolError, match="'created_at' is a"):
        parse("news", "", {**SAMPLES["news"], "created_at": stamp})


def test_out_of_range_timestamp() -> None:
    raw = {**SAMPLES["stock_quote"], "t": Timestamp(2**62, 0)}
    with pytest.raises(ProtocolError, match="invalid quotes message for 'AAPL'"):
        parse("quotes", "AAPL", raw)


@pytest.mark.parametrize("raw", [None, 42, "q", ["T", "q"]])
def test_non_mapping_raw_is_a_protocol_error(raw: Any) -> None:
    with pytest.raises(ProtocolError, match="invalid quotes message"):
        parse("quotes", "AAPL", raw)


def test_unknown_channel_is_a_plain_value_error() -> None:
    with pytest.raises(ValueError, match="unknown channel 'quote'") as info:
        parse("quote", "AAPL", SAMPLES["stock_quote"])
    assert not isinstance(info.value, ProtocolError)
