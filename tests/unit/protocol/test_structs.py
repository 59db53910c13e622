"""The typed fast form: every message type, alpaca-py's attribute names and values, bad values."""

from __future__ import annotations

import datetime as _dt
import gc
from typing import Any

import msgpack
import msgspec
import pytest

from alpaca_di.protocol import DataBatch, DataStreamProtocol, Malformed, StreamKind, parse
from alpaca_di.protocol import structs as S
from alpaca_di.protocol.codec import SLICE, SLICE_FRAME_BYTES

TS = msgpack.Timestamp.from_unix_nano(1_704_209_400_123_456_000)  # whole microseconds
WHEN = _dt.datetime(2024, 1, 2, 15, 30, 0, 123456, tzinfo=_dt.timezone.utc)

STOCK = [
    {
        "T": "q",
        "S": "AAPL",
        "bx": "V",
        "bp": 189.5,
        "bs": 3,
        "ax": "V",
        "ap": 189.6,
        "as": 4,
        "c": ["R"],
        "z": "C",
        "t": TS,
    },
    {"T": "t", "S": "AAPL", "i": 7, "x": "V", "p": 189.55, "s": 100, "c": ["@"], "z": "C", "t": TS},
    {
        "T": "b",
        "S": "AAPL",
        "o": 1.0,
        "h": 2.0,
        "l": 0.5,
        "c": 1.5,
        "v": 10,
        "t": TS,
        "n": 3,
        "vw": 1.2,
    },
    {
        "T": "u",
        "S": "AAPL",
        "o": 1.0,
        "h": 2.0,
        "l": 0.5,
        "c": 1.6,
        "v": 11,
        "t": TS,
        "n": 4,
        "vw": 1.3,
    },
    {
        "T": "d",
        "S": "AAPL",
        "o": 1.0,
        "h": 2.0,
        "l": 0.5,
        "c": 1.7,
        "v": 99,
        "t": TS,
        "n": 9,
        "vw": 1.4,
    },
    {
        "T": "s",
        "S": "AAPL",
        "sc": "H",
        "sm": "Trading Halt",
        "rc": "T12",
        "rm": "More info",
        "t": TS,
        "z": "C",
    },
    {
        "T": "c",
        "S": "AAPL",
        "x": "V",
        "oi": 7,
        "op": 189.55,
        "os": 100,
        "oc": ["@"],
        "ci": 8,
        "cp": 189.56,
        "cs": 100,
        "cc": ["@"],
        "z": "C",
        "t": TS,
    },
    {"T": "x", "S": "AAPL", "i": 8, "x": "V", "p": 189.56, "s": 100, "a": "C", "z": "C", "t": TS},
]
LULD = {"T": "l", "S": "AAPL", "u": 200.0, "d": 180.0, "i": "B", "t": TS, "z": "C"}
BOOK = {
    "T": "o",
    "S": "BTC/USD",
    "t": TS,
    "b": [{"p": 60000.0, "s": 0.5}],
    "a": [{"p": 60001.0, "s": 0.25}],
    "r": True,
}
NEWS = {
    "T": "n",
    "id": 1,
    "headline": "H",
    "summary": "S",
    "author": "A",
    "created_at": TS,
    "updated_at": TS,
    "url": "https://example.com",
    "content": "",
    "symbols": ["AAPL"],
    "source": "benzinga",
}


def _decode(kind: str, messages: list[dict[str, Any]]) -> list[Any]:
    protocol = DataStreamProtocol(StreamKind(kind))
    protocol.forms = frozenset({"struct"})
    [batch] = protocol.receive(msgpack.packb(messages))
    assert isinstance(batch, DataBatch)
    assert batch.structs is not None
    assert all(raw is None for _, _, raw in batch.messages)  # no dict was built
    return batch.structs


def _same_as_alpaca_py(struct: Any, model: Any) -> None:
    for name in type(model).model_fields:
        if name == "images":
            continue  # historical news only
        expected, got = getattr(model, name), getattr(struct, name)
        if isinstance(expected, list):
            expected = tuple(
                (level.price, level.size) if hasattr(level, "price") else level
                for level in expected
            )
            got = tuple(
                (level.price, level.size) if hasattr(level, "price") else level for level in got
            )
        if hasattr(expected, "value"):  # alpaca-py's enums are str enums
            expected = expected.value
        assert got == expected, name


@pytest.mark.parametrize(
    ("kind", "message"),
    [("stock", m) for m in STOCK] + [("crypto", BOOK), ("news", NEWS)],
    ids=lambda value: value if isinstance(value, str) else value["T"],
)
def test_every_struct_has_alpaca_pys_attributes_and_values(kind, message):
    [struct] = _decode(kind, [message])
    model = _alpaca_py_cast(message)  # alpaca-py's own stream pipeline, as the oracle
    _same_as_alpaca_py(struct, model)
    ours = parse(S.channel_of(struct), message.get("S", ""), message)
    assert ours == model


def _alpaca_py_cast(message: dict[str, Any]) -> Any:
    from alpaca.data.live.websocket import DataStream

    stream = DataStream.__new__(DataStream)  # only _cast is used: no socket, no loop
    stream._raw_data = False
    return stream._cast(dict(message))


def test_bars_keep_their_channel_and_are_bars():
    structs = _decode("stock", STOCK[2:5])
    assert [type(s) for s in structs] == [S.Bar, S.UpdatedBar, S.DailyBar]
    assert [S.channel_of(s) for s in structs] == ["bars", "updated_bars", "daily_bars"]
    assert all(isinstance(s, S.Bar) for s in structs)


def test_luld_has_named_fields():
    [luld] = _decode("stock", [LULD])
    assert (luld.limit_up_price, luld.limit_down_price, luld.indicator, luld.tape) == (
        200.0,
        180.0,
        "B",
        "C",
    )


def test_timestamps_are_aware_utc_and_rounded_to_the_microsecond():
    [quote] = _decode("stock", [STOCK[0]])
    assert quote.timestamp == WHEN
    assert quote.timestamp.tzinfo is _dt.timezone.utc
    odd = {**STOCK[0], "t": msgpack.Timestamp.from_unix_nano(1_704_209_400_123_456_999)}
    [rounded] = _decode("stock", [odd])
    assert rounded.timestamp - WHEN == _dt.timedelta(microseconds=1)


def test_unknown_enum_like_values_decode_as_strings():
    new = {**STOCK[1], "x": "NEWEXCH", "z": "Q", "c": ["new-condition"]}
    [trade] = _decode("stock", [new])
    assert (trade.exchange, trade.tape, trade.conditions) == ("NEWEXCH", "Q", ("new-condition",))


def test_structs_are_immutable_hashable_and_untracked_by_the_gc():
    [quote, _trade] = _decode("stock", STOCK[:2])
    with pytest.raises(AttributeError):
        quote.bid_price = 1.0  # type: ignore[misc]
    assert hash(quote) == hash(_decode("stock", STOCK[:1])[0])
    assert not gc.is_tracked(quote)


def test_a_bad_value_is_malformed_and_the_rest_of_the_frame_is_delivered():
    protocol = DataStreamProtocol(StreamKind.STOCK)
    protocol.forms = frozenset({"struct"})
    frame = msgpack.packb(
        [{**STOCK[0], "bp": "x"}, {"T": "success", "msg": "authenticated"}, {"T": "zz"}, STOCK[1]]
    )
    events = protocol.receive(frame)
    assert isinstance(events[0], Malformed)
    assert "bp" in events[0].reason
    assert type(events[1]).__name__ == "Authenticated"
    assert isinstance(events[2], DataBatch)
    assert isinstance(events[2].structs[0], S.Trade)
    assert protocol.unknown_types["zz"] == 1


def test_both_forms_keep_the_raw_dict_and_mark_a_message_without_struct():
    protocol = DataStreamProtocol(StreamKind.STOCK)
    protocol.forms = frozenset({"raw", "struct"})
    [batch] = protocol.receive(msgpack.packb([{**STOCK[0], "bp": "x"}, STOCK[1]]))
    assert [raw["T"] for _, _, raw in batch.messages] == ["q", "t"]
    assert batch.structs[0] is None
    assert isinstance(batch.structs[1], S.Trade)


def test_a_large_frame_is_decoded_in_slices_in_the_struct_form():
    protocol = DataStreamProtocol(StreamKind.STOCK)
    protocol.forms = frozenset({"struct"})
    frame = msgpack.packb([STOCK[0]] * 5000)
    assert len(frame) >= SLICE_FRAME_BYTES
    slices = list(protocol.receive_slices(frame))
    assert len(slices) == 5000 // SLICE
    assert sum(len(batch.structs) for [batch] in slices) == 5000


def test_from_raw_builds_the_struct_of_a_dict():
    quote = S.from_raw("quotes", STOCK[0])
    assert quote == _decode("stock", [STOCK[0]])[0]
    with pytest.raises(msgspec.ValidationError):
        S.from_raw("quotes", {**STOCK[0], "bp": "x"})
    with pytest.raises(ValueError, match="no struct form"):
        S.from_raw("trade_updates", {})


def test_forms_are_checked():
    protocol = DataStreamProtocol(StreamKind.STOCK)
    with pytest.raises(ValueError, match="subset"):
        protocol.forms = frozenset({"dict"})


def test_a_truncated_large_frame_delivers_what_precedes_the_break():
    protocol = DataStreamProtocol(StreamKind.STOCK)
    protocol.forms = frozenset({"struct"})
    frame = msgpack.packb([STOCK[0]] * 4510)[:-30]
    slices = list(protocol.receive_slices(frame))
    delivered = sum(len(e.structs) for events in slices for e in events if isinstance(e, DataBatch))
    assert delivered == 4509
    last = slices[-1][-1]
    assert isinstance(last, Malformed)
    assert "at element 4509 of 4510" in last.reason
