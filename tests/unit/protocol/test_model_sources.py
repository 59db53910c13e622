"""The model form: models built from model sources are exactly alpaca-py's, malformed counted alike.

Hypothesis writes frames of every message type of the stock, crypto, option and
news streams: timestamps with any nanoseconds (and out of ``datetime``'s range),
optional fields missing, ``None`` or set, exchanges alpaca-py does and does not
know, conditions as a list or one code, ints where floats belong, and now and
then a value of the wrong type. Each frame goes through the codec twice: in the
model form (sources, then :func:`build`; :func:`parse` for a message left as a
dict) and as alpaca-py does it (dicts, then ``DataStream._cast``; where alpaca-py
raises, alpaca-di's :func:`parse` of the dict, which other tests pin). Models,
values, field types, ``model_fields_set``, ``__dict__`` order and the malformed
count must agree.
"""

from __future__ import annotations

import copy
from typing import Any

import msgpack
import pytest
from alpaca.data.live.websocket import DataStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from alpaca_di.errors import ProtocolError
from alpaca_di.protocol import DataBatch, DataStreamProtocol, Malformed, StreamKind
from alpaca_di.protocol.channels import CHANNEL_BY_TYPE
from alpaca_di.protocol.codec import SLICE, SLICE_FRAME_BYTES
from alpaca_di.protocol.models import build, model_sources, parse
from alpaca_di.protocol.sources import source_class
from alpaca_di.protocol.structs import Luld

_CAST = DataStream.__new__(DataStream)
_CAST._raw_data = False  # only _cast is used: the parsed-model path of alpaca-py's stream

_seconds = st.one_of(st.integers(0, 2**32 - 1), st.integers(1_700_000_000, 1_800_000_000))
_stamps = st.one_of(
    st.builds(msgpack.Timestamp, _seconds, st.integers(0, 999_999_999)),
    st.builds(msgpack.Timestamp, _seconds, st.integers(999_999_500, 999_999_999)),
    st.builds(msgpack.Timestamp, st.integers(-(2**40), 2**40), st.integers(0, 999_999_999)),
)
_floats = st.one_of(
    st.floats(allow_nan=False, width=64),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(0, 1e6, allow_nan=False),
)
_exchanges = st.sampled_from(["V", "Q", "N", "P", "Z", "ZZ", "", "CBSE", "ERSX"])
_conditions = st.one_of(
    st.lists(st.sampled_from(["@", "R", "I", "F", "T"]), max_size=3), st.text(max_size=2)
)
_text = st.text(max_size=8)
_wrong = st.one_of(
    st.just("1.5"), st.just("x"), st.booleans(), st.none(), st.just([1]), st.just({})
)
_levels = st.lists(st.fixed_dictionaries({"p": _floats, "s": _floats}), max_size=3)

# Per T code: (required keys, optional keys), each with the values it may take.
_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "t": (
        {"S": _text, "t": _stamps, "p": _floats, "s": _floats},
        {
            "x": st.one_of(_exchanges, st.none()),
            "i": st.one_of(st.integers(0, 2**63 - 1), st.none()),
            "c": st.one_of(_conditions, st.none()),
            "z": st.one_of(st.sampled_from(["A", "B", "C", "O"]), st.none()),
            "tks": st.sampled_from(["B", "S", "-"]),
        },
    ),
    "q": (
        {"S": _text, "t": _stamps, "bp": _floats, "bs": _floats, "ap": _floats, "as": _floats},
        {
            "bx": st.one_of(_exchanges, st.none()),
            "ax": st.one_of(_exchanges, st.none()),
            "c": st.one_of(_conditions, st.none()),
            "z": st.one_of(st.sampled_from(["A", "B", "C"]), st.none()),
        },
    ),
    "b": (
        {
            "S": _text,
            "t": _stamps,
            **{key: _floats for key in ("o", "h", "l", "c", "v")},
            "n": st.one_of(_floats, st.none()),
            "vw": st.one_of(_floats, st.none()),
        },
        {},
    ),
    "s": (
        {"S": _text, "t": _stamps, **{key: _text for key in ("sc", "sm", "rc", "rm", "z")}},
        {},
    ),
    "l": (
        {"S": _text, "t": _stamps, "u": _floats, "d": _floats, "i": _text, "z": _text},
        {},
    ),
    "c": (
        {
            "S": _text,
            "t": _stamps,
            "x": _exchanges,
            "op": _floats,
            "os": _floats,
            "oc": st.lists(_text, max_size=2),
            "cp": _floats,
            "cs": _floats,
            "cc": st.lists(_text, max_size=2),
            "z": _text,
        },
        {"oi": st.one_of(st.integers(0, 2**40), st.none()), "ci": st.integers(0, 2**40)},
    ),
    "x": (
        {"S": _text, "t": _stamps, "x": _exchanges, "p": _floats, "s": _floats, "z": _text},
        {"i": st.one_of(st.integers(0, 2**40), st.none()), "a": st.sampled_from(["C", "E"])},
    ),
    "o": (
        {"S": _text, "t": _stamps, "b": _levels, "a": _levels},
        {"r": st.booleans()},
    ),
    "n": (
        {
            "id": st.integers(0, 2**40),
            "headline": _text,
            "summary": _text,
            "author": _text,
            "created_at": _stamps,
            "updated_at": _stamps,
            "url": st.one_of(_text, st.none()),
            "content": _text,
            "symbols": st.lists(st.sampled_from(["AAPL", "TSLA", "BTCUSD"]), max_size=3),
            "source": _text,
        },
        {"images": st.just([])},
    ),
}
_CODES = {
    StreamKind.STOCK: "tqbudslcx",
    StreamKind.CRYPTO: "tqbudo",
    StreamKind.OPTION: "tq",
    StreamKind.NEWS: "n",
}


@st.composite
def _message(draw: st.DrawFn, codes: str) -> dict[str, Any]:
    code = draw(st.sampled_from(codes))
    required, optional = _SHAPES["b" if code in "ud" else code]
    message: dict[str, Any] = {"T": code}
    for key, values in required.items():
        message[key] = draw(values)
    for key, values in optional.items():
        if draw(st.booleans()):
            message[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:  # now and then a value only validation can judge
        message[draw(st.sampled_from(sorted(message)))] = draw(_wrong)
    return message


def _reference(message: dict[str, Any]) -> object:
    """alpaca-py's object for a decoded message; alpaca-di's parse where alpaca-py raises."""
    try:
        return _CAST._cast(copy.deepcopy(message))
    except Exception:
        channel = CHANNEL_BY_TYPE[message["T"]]
        return parse(channel, "" if channel == "news" else message["S"], message)




def _models(protocol: DataStreamProtocol, frame: bytes, reference: bool) -> tuple[list[Any], int]:
    """What a model consumer gets from ``frame`` and how many messages are malformed."""
    delivered: list[Any] = []
    malformed = 0
    for event in protocol.receive(frame):
        if isinstance(event, Malformed):
            malformed += 1
        if not isinstance(event, DataBatch):
            continue
        sources = event.sources or [None] * len(event.messages)
        for (channel, symbol, raw), source in zip(event.messages, sources, strict=True):
            try:
                if reference:
                    delivered.append(_reference(raw))
                elif source is not None:
                    delivered.append(build(channel, source))
                else:
                    delivered.append(parse(channel, symbol, raw))
            except ProtocolError:
                malformed += 1
    return delivered, malformed


def _shape(value: Any) -> Any:
    """A value's type, all the way down (list items, nested models' fields)."""
    if isinstance(value, BaseModel):
        return (type(value), [(name, _shape(item)) for name, item in value.__dict__.items()])
    if isinstance(value, (list, tuple)):
        return (type(value), [_shape(item) for item in value])
    if isinstance(value, dict):
        return (type(value), [(key, _shape(item)) for key, item in value.items()])
    return type(value)


def assert_same(ours: Any, theirs: Any) -> None:
    assert type(ours) is type(theirs)
    assert ours == theirs
    assert _shape(ours) == _shape(theirs)
    if isinstance(theirs, BaseModel):
        assert ours.model_dump() == theirs.model_dump()
        assert ours.model_fields_set == theirs.model_fields_set
        assert str(ours) == str(theirs)
        for name in ("bids", "asks"):
            for mine, other in zip(getattr(ours, name, ()), getattr(theirs, name, ()), strict=True):
                assert mine.model_fields_set == other.model_fields_set


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # Lenient: str exchange
@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_models_from_sources_are_alpaca_pys_own(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(list(_CODES)))
    elements = data.draw(st.lists(_message(_CODES[kind]), min_size=1, max_size=5))
    try:
        frame = msgpack.packb(elements)
    except (OverflowError, TypeError, ValueError):
        return  # not encodable: the server could not have sent it
    fast = DataStreamProtocol(kind)
    fast.forms = frozenset({"model"})
    ours, our_malformed = _models(fast, frame, reference=False)
    theirs, their_malformed = _models(DataStreamProtocol(kind), frame, reference=True)
    assert our_malformed == their_malformed
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        assert_same(mine, other)


def test_sub_microsecond_parts_are_truncated_as_alpaca_py_does() -> None:
    stamp = msgpack.Timestamp(1_760_000_000, 123_456_999)  # msgspec would round up to ...457
    quote = {"T": "q", "S": "AAPL", "bp": 1, "bs": 2, "ap": 3, "as": 4, "t": stamp}
    [source] = model_sources(StreamKind.STOCK).frame.decode(msgpack.packb([quote]))
    model = build("quotes", source)
    assert model.timestamp == stamp.to_datetime()  # type: ignore[attr-defined]
    assert model.timestamp.microsecond == 123_456  # type: ignore[attr-defined]
    assert_same(model, _CAST._cast(copy.deepcopy(quote)))


def test_sources_follow_the_models_field_order() -> None:
    """So build() fills ``__dict__`` without reordering (``str(model)`` depends on it)."""
    from alpaca.data.models import News, Quote, Trade

    by_name = {cls.__name__: cls for cls in model_sources(StreamKind.STOCK).channels}
    by_name.update({cls.__name__: cls for cls in model_sources(StreamKind.NEWS).channels})
    for model in (Quote, Trade):
        fields = list(by_name[f"{model.__name__}Source"].__struct_fields__)
        assert fields[: len(model.model_fields)] == list(model.model_fields)  # then taker_side
    news = list(by_name["NewsSource"].__struct_fields__)
    assert news == [name for name in News.model_fields if name != "images"]


def test_a_luld_band_has_no_source() -> None:
    with pytest.raises(ValueError, match="no alpaca-py model"):
        source_class(Luld)


def test_build_rejects_a_channel_without_a_model() -> None:
    [source] = model_sources(StreamKind.STOCK).frame.decode(
        msgpack.packb(
            [{"T": "q", "S": "A", "bp": 1, "bs": 2, "ap": 3, "as": 4, "t": msgpack.Timestamp(1, 0)}]
        )
    )
    with pytest.raises(ValueError, match="no model"):
        build("trade_updates", source)


def test_a_timestamp_out_of_range_is_a_protocol_error() -> None:
    stamp = msgpack.Timestamp(2**40, 0)
    quote = {"T": "q", "S": "AAPL", "bp": 1, "bs": 2, "ap": 3, "as": 4, "t": stamp}
    [source] = model_sources(StreamKind.STOCK).frame.decode(msgpack.packb([quote]))
    with pytest.raises(ProtocolError, match="invalid quotes message for 'AAPL'"):
        build("quotes", source)
    with pytest.raises(ProtocolError, match="invalid quotes message for 'AAPL'"):
        parse("quotes", "AAPL", quote)


def _quote(index: int) -> dict[str, Any]:
    stamp = msgpack.Timestamp(1_760_000_000, 123_456_000 + index)
    return {"T": "q", "S": "AAPL", "bp": float(index), "bs": 1, "ap": 2.0, "as": 3, "t": stamp}


def test_a_large_frame_is_decoded_in_slices_of_sources() -> None:
    protocol = DataStreamProtocol(StreamKind.STOCK)
    protocol.forms = frozenset({"model"})
    messages = [_quote(index) for index in range(5000)]
    frame = msgpack.packb(messages)
    assert len(frame) >= SLICE_FRAME_BYTES
    slices = list(protocol.receive_slices(frame))
    assert len(slices) == 5000 // SLICE
    batches = [event for events in slices for event in events]
    assert all(isinstance(batch, DataBatch) and batch.sources for batch in batches)
    sources = [source for batch in batches for source in batch.sources]  # type: ignore[union-attr]
    models = [build("quotes", source) for source in sources]
    assert [model.bid_price for model in models] == [float(i) for i in range(5000)]  # type: ignore[attr-defined]
    assert_same(models[-1], _CAST._cast(copy.deepcopy(messages[-1])))


def test_a_truncated_large_frame_delivers_the_sources_before_the_break() -> None:
    protocol = DataStreamProtocol(StreamKind.STOCK)
    protocol.forms = frozenset({"model"})
    frame = msgpack.packb([_quote(index) for index in range(6010)])[:-30]
    assert len(frame) >= SLICE_FRAME_BYTES
    slices = list(protocol.receive_slices(frame))
    batches = [event for events in slices for event in events if isinstance(event, DataBatch)]
    assert sum(len(batch.sources or ()) for batch in batches) == 6009
    last = slices[-1][-1]
    assert isinstance(last, Malformed)
    assert "at element 6009 of 6010" in last.reason
