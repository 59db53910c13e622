"""alpaca_di.protocol.codec: encoding client messages and decoding server frames."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_samples import SAMPLES

from alpaca_di.protocol.channels import StreamKind
from alpaca_di.protocol.codec import DataStreamProtocol, TradingStreamProtocol, protocol_for
from alpaca_di.protocol.events import (
    Authenticated,
    DataBatch,
    Event,
    Malformed,
    ServerErrorEvent,
    SubscriptionAck,
    Welcome,
)
from alpaca_di.protocol.subscriptions import SubscriptionState

EVENT_TYPES = (Welcome, Authenticated, ServerErrorEvent, SubscriptionAck, DataBatch, Malformed)


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj)
    return data


def malformed(events: list[Event]) -> list[str]:
    return [event.reason for event in events if isinstance(event, Malformed)]


def batches(events: list[Event]) -> list[DataBatch]:
    return [event for event in events if isinstance(event, DataBatch)]


@pytest.fixture
def stock() -> DataStreamProtocol:
    return DataStreamProtocol(StreamKind.STOCK)


# --- client messages -----------------------------------------------------------------


def test_auth_message(stock: DataStreamProtocol) -> None:
    assert msgpack.unpackb(stock.auth_message("KEY", "SECRET")) == {
        "action": "auth",
        "key": "KEY",
        "secret": "SECRET",
    }


def test_subscribe_message_matches_what_alpaca_py_sends(stock: DataStreamProtocol) -> None:
    # byte for byte the example verified against alpaca-py (reference section 2.3)
    expected = pack({"trades": ["AAPL", "*"], "quotes": ["SPY"], "action": "subscribe"})
    assert stock.subscribe_message({"trades": ["AAPL", "*"], "quotes": ["SPY"]}) == expected


def test_subscribe_maps_merges_and_dedupes(stock: DataStreamProtocol) -> None:
    message = msgpack.unpackb(
        stock.subscribe_message(
            {
                "updated_bars": ["AAPL"],
                "daily_bars": ("MSFT",),
                "corrections": ["AAPL", "TSLA"],
                "trades": iter(["TSLA", "SPY", "SPY"]),
                "cancel_errors": ["*"],
                "quotes": [],
            }
        )
    )
    assert message == {
        "updatedBars": ["AAPL"],
        "dailyBars": ["MSFT"],
        "trades": ["AAPL", "TSLA", "SPY", "*"],
        "action": "subscribe",
    }
    assert list(message)[-1] == "action"


def test_subscribe_accepts_wire_names(stock: DataStreamProtocol) -> None:
    assert stock.subscribe_message({"updatedBars": ["AAPL"]}) == stock.subscribe_message(
        {"updated_bars": ["AAPL"]}
    )


def test_unsubscribe_message(stock: DataStreamProtocol) -> None:
    assert msgpack.unpackb(stock.unsubscribe_message({"bars": ["*"], "quotes": ["MSFT"]})) == {
        "bars": ["*"],
        "quotes": ["MSFT"],
        "action": "unsubscribe",
    }


def test_empty_subscribe_has_only_the_action(stock: DataStreamProtocol) -> None:
    assert msgpack.unpackb(stock.subscribe_message({})) == {"action": "subscribe"}


def test_subscribe_rejects_channels_of_other_kinds(stock: DataStreamProtocol) -> None:
    with pytest.raises(ValueError, match="orderbooks"):
        stock.subscribe_message({"orderbooks": ["BTC/USD"]})
    crypto = DataStreamProtocol(StreamKind.CRYPTO)
    with pytest.raises(ValueError, match="statuses"):
        crypto.subscribe_message({"statuses": ["AAPL"]})


def test_subscribe_rejects_a_bare_string(stock: DataStreamProtocol) -> None:
    with pytest.raises(TypeError, match=r"\['AAPL'\]"):
        stock.subscribe_message({"quotes": "AAPL"})


def test_subscribe_bytes_grow_linearly_when_adding_symbols_one_by_one() -> None:
    """alpaca-py re-sends the whole set each time: O(n^2) bytes. We send deltas."""
    protocol = DataStreamProtocol(StreamKind.STOCK)
    state = SubscriptionState()
    total = 0
    for n in range(2_000):
        state.add("quotes", [f"S{n:04d}"])
        subscribe, unsubscribe = state.take_delta()
        assert not unsubscribe
        total += len(protocol.subscribe_message(subscribe))
    assert total < 100_000
    assert state.wire() == {"quotes": frozenset(f"S{n:04d}" for n in range(2_000))}
    full_set_resend = sum(
        len(pack({"quotes": [f"S{i:04d}" for i in range(n + 1)], "action": "subscribe"}))
        for n in range(2_000)
    )
    assert full_set_resend > 100 * total


def test_data_protocol_is_not_for_trading() -> None:
    with pytest.raises(ValueError, match="TradingStreamProtocol"):
        DataStreamProtocol(StreamKind.TRADING)


def test_protocol_for() -> None:
    assert isinstance(protocol_for(StreamKind.TRADING), TradingStreamProtocol)
    for kind in (StreamKind.STOCK, StreamKind.CRYPTO, StreamKind.OPTION, StreamKind.NEWS):
        protocol = protocol_for(kind)
        assert isinstance(protocol, DataStreamProtocol)
        assert protocol.kind is kind
    assert protocol_for("news").kind is StreamKind.NEWS  # type: ignore[arg-type]
    assert protocol_for(StreamKind.STOCK) is not protocol_for(StreamKind.STOCK)


# --- control messages ------------------------------------------------------------------


def test_welcome_and_authenticated(stock: DataStreamProtocol) -> None:
    assert stock.receive(pack([{"T": "success", "msg": "connected"}])) == [Welcome()]
    assert stock.receive(pack([{"T": "success", "msg": "authenticated"}])) == [Authenticated()]


def test_unexpected_success_is_malformed(stock: DataStreamProtocol) -> None:
    (event,) = stock.receive(pack([{"T": "success", "msg": "hello"}]))
    assert isinstance(event, Malformed)
    assert "'hello'" in event.reason


@pytest.mark.parametrize("code", [400, 402, 405, 406, 407, 409, 500])
def test_error(stock: DataStreamProtocol, code: int) -> None:
    frame = pack([{"T": "error", "code": code, "msg": "text"}])
    assert stock.receive(frame) == [ServerErrorEvent(code, "text")]


def test_error_without_message_or_with_a_bad_code(stock: DataStreamProtocol) -> None:
    assert stock.receive(pack([{"T": "error", "code": 500}])) == [ServerErrorEvent(500, "")]
    (bad,) = stock.receive(pack([{"T": "error", "code": "402", "msg": "x"}]))
    assert isinstance(bad, Malformed)
    assert "'code'" in bad.reason


def test_long_server_text_is_truncated(stock: DataStreamProtocol) -> None:
    (event,) = stock.receive(pack([{"T": "error", "code": 400, "msg": "x" * 100_000}]))
    assert isinstance(event, ServerErrorEvent)
    assert len(event.message) == 500


def test_subscription_ack_uses_python_names(stock: DataStreamProtocol) -> None:
    frame = pack(
        [
            {
                "T": "subscription",
                "trades": ["AAPL"],
                "quotes": [],
                "bars": ["*"],
                "updatedBars": ["AAPL"],
                "dailyBars": [],
                "statuses": [],
                "lulds": [],
                "corrections": ["AAPL"],
                "cancelErrors": ["AAPL"],
                "imbalances": ["AAPL"],  # not a channel of ours: left out
            }
        ]
    )
    assert stock.receive(frame) == [
        SubscriptionAck(
            {
                "trades": ("AAPL",),
                "quotes": (),
                "bars": ("*",),
                "updated_bars": ("AAPL",),
                "daily_bars": (),
                "statuses": (),
                "lulds": (),
                "corrections": ("AAPL",),
                "cancel_errors": ("AAPL",),
            }
        )
    ]


def test_bad_subscription_ack(stock: DataStreamProtocol) -> None:
    (event,) = stock.receive(pack([{"T": "subscription", "trades": "AAPL"}]))
    assert isinstance(event, Malformed)
    assert "'trades'" in event.reason
    (event,) = stock.receive(pack([{"T": "subscription", "trades": ["AAPL", 3]}]))
    assert isinstance(event, Malformed)


# --- data messages ---------------------------------------------------------------------

KIND_SAMPLES = {
    StreamKind.STOCK: ["stock_trade", "stock_quote", "bar", "updated_bar", "daily_bar",
                       "status", "luld", "correction", "cancel_error"],
    StreamKind.CRYPTO: ["crypto_trade", "crypto_quote", "crypto_bar", "updated_bar",
                        "daily_bar", "orderbook"],
    StreamKind.OPTION: ["option_trade", "stock_quote"],
    StreamKind.NEWS: ["news"],
}  # fmt: skip

EXPECTED_CHANNEL = {
    "t": "trades",
    "q": "quotes",
    "b": "bars",
    "u": "updated_bars",
    "d": "daily_bars",
    "s": "statuses",
    "l": "lulds",
    "c": "corrections",
    "x": "cancel_errors",
    "o": "orderbooks",
    "n": "news",
}


@pytest.mark.parametrize("kind", list(KIND_SAMPLES))
def test_every_data_message_of_a_kind_arrives_in_one_batch_in_order(kind: StreamKind) -> None:
    protocol = DataStreamProtocol(kind)
    messages = [SAMPLES[name] for name in KIND_SAMPLES[kind]]
    events = protocol.receive(pack(messages))
    assert len(events) == 1
    (batch,) = events
    assert isinstance(batch, DataBatch)
    assert [(channel, symbol) for channel, symbol, _ in batch.messages] == [
        (EXPECTED_CHANNEL[m["T"]], m.get("S", "")) for m in messages
    ]
    assert [raw for _, _, raw in batch.messages] == messages
    assert protocol.unknown == 0


def test_timestamps_stay_msgpack_timestamps_in_raw(stock: DataStreamProtocol) -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    message = {**SAMPLES["stock_trade"], "t": when}
    (batch,) = stock.receive(msgpack.packb([message], datetime=True))
    assert isinstance(batch, DataBatch)
    raw = batch.messages[0][2]
    assert isinstance(raw["t"], msgpack.Timestamp)
    assert raw["t"].to_datetime() == when


def test_news_symbol_is_empty_and_raw_keeps_symbols() -> None:
    news = DataStreamProtocol(StreamKind.NEWS)
    (batch,) = news.receive(pack([SAMPLES["news"]]))
    assert isinstance(batch, DataBatch)
    assert batch.messages[0][:2] == ("news", "")
    assert batch.messages[0][2]["symbols"] == ["AAPL", "MSFT"]


def test_messages_of_other_kinds_are_ignored_and_counted(stock: DataStreamProtocol) -> None:
    frame = pack([SAMPLES["orderbook"], SAMPLES["news"], SAMPLES["stock_quote"]])
    (batch,) = stock.receive(frame)
    assert isinstance(batch, DataBatch)
    assert [channel for channel, _, _ in batch.messages] == ["quotes"]
    assert stock.unknown_types == {"o": 1, "n": 1}
    assert stock.unknown == 2


def test_unknown_types_are_counted_not_reported(stock: DataStreamProtocol) -> None:
    frame = pack([{"T": "i", "S": "AAPL"}, {"T": "i", "S": "MSFT"}, {"T": "p"}])
    assert stock.receive(frame) == []
    assert stock.unknown_types == {"i": 2, "p": 1}


def test_unknown_type_counter_is_bounded(stock: DataStreamProtocol) -> None:
    stock.receive(pack([{"T": f"type-{n}" + "x" * 100} for n in range(1_000)]))
    assert stock.unknown == 1_000
    assert len(stock.unknown_types) <= 65
    assert all(len(key) <= 32 for key in stock.unknown_types)
    assert stock.unknown_types["<other>"] == 1_000 - 64


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("stock_quote", "bp"),
        ("stock_quote", "as"),
        ("stock_quote", "t"),
        ("stock_trade", "p"),
        ("stock_trade", "s"),
        ("bar", "vw"),
        ("bar", "n"),
        ("status", "rm"),
        ("luld", "u"),
        ("correction", "cc"),
        ("cancel_error", "x"),
        ("stock_trade", "S"),
    ],
)
def test_missing_required_field_is_malformed_and_the_rest_is_delivered(
    stock: DataStreamProtocol, name: str, field: str
) -> None:
    broken = {key: value for key, value in SAMPLES[name].items() if key != field}
    good = SAMPLES["stock_quote"] if name != "stock_quote" else SAMPLES["stock_trade"]
    events = stock.receive(pack([good, broken, good]))
    (reason,) = malformed(events)
    assert reason.startswith("element 1: ")
    assert f"lacks field(s) {field!r}" in reason
    assert EXPECTED_CHANNEL[SAMPLES[name]["T"]] in reason
    (batch,) = batches(events)
    assert [raw for _, _, raw in batch.messages] == [good, good]


@pytest.mark.parametrize(
    ("kind", "name"), [(StreamKind.CRYPTO, "orderbook"), (StreamKind.NEWS, "news")]
)
def test_missing_fields_of_orderbooks_and_news(kind: StreamKind, name: str) -> None:
    protocol = DataStreamProtocol(kind)
    for field in SAMPLES[name]:
        if field in ("T", "r"):
            continue
        broken = {key: value for key, value in SAMPLES[name].items() if key != field}
        (event,) = protocol.receive(pack([broken]))
        assert isinstance(event, Malformed), field
        assert repr(field) in event.reason


def test_crypto_quotes_need_no_exchange_fields() -> None:
    crypto = DataStreamProtocol(StreamKind.CRYPTO)
    assert "bx" not in SAMPLES["crypto_quote"]
    (batch,) = crypto.receive(pack([SAMPLES["crypto_quote"]]))
    assert isinstance(batch, DataBatch)


def test_symbol_must_be_a_string(stock: DataStreamProtocol) -> None:
    events = stock.receive(pack([{**SAMPLES["stock_quote"], "S": 42}]))
    (reason,) = malformed(events)
    assert "'S' is a int" in reason
    assert not batches(events)


def test_news_symbols_must_be_an_array() -> None:
    news = DataStreamProtocol(StreamKind.NEWS)
    (event,) = news.receive(pack([{**SAMPLES["news"], "symbols": "AAPL"}]))
    assert isinstance(event, Malformed)
    assert "'symbols' is a str" in event.reason


def test_malformed_reasons_never_quote_payloads(stock: DataStreamProtocol) -> None:
    huge = "A" * 1_000_000
    broken = {key: value for key, value in SAMPLES["stock_quote"].items() if key != "bp"}
    events = stock.receive(pack([{**broken, "S": huge}, {"T": huge}, [huge], {"T": 5}]))
    assert len(malformed(events)) == 3
    assert all(len(reason) < 200 for reason in malformed(events))


def test_control_messages_split_batches_and_keep_wire_order(stock: DataStreamProtocol) -> None:
    quote, trade = SAMPLES["stock_quote"], SAMPLES["stock_trade"]
    events = stock.receive(
        pack([quote, {"T": "error", "code": 407, "msg": "slow client"}, trade, {"nope": 1}, quote])
    )
    assert events[0] == DataBatch([("quotes", "AAPL", quote)])
    assert events[1] == ServerErrorEvent(407, "slow client")
    assert isinstance(events[2], Malformed)  # a bad element does not split a batch
    assert events[3] == DataBatch([("trades", "AAPL", trade), ("quotes", "AAPL", quote)])
    assert len(events) == 4


def test_empty_frame_array(stock: DataStreamProtocol) -> None:
    assert stock.receive(pack([])) == []


def test_accepts_bytearray_and_memoryview(stock: DataStreamProtocol) -> None:
    frame = pack([SAMPLES["stock_quote"]])
    assert stock.receive(bytearray(frame)) == stock.receive(frame)  # type: ignore[arg-type]
    assert stock.receive(memoryview(frame)) == stock.receive(frame)  # type: ignore[arg-type]


def test_huge_batch(stock: DataStreamProtocol) -> None:
    quote = SAMPLES["stock_quote"]
    messages: list[Any] = [quote] * 50_000 + [7] * 1_000
    events = stock.receive(pack(messages))
    (batch,) = batches(events)
    assert len(batch.messages) == 50_000
    assert len(malformed(events)) == 1_000


# --- garbage ---------------------------------------------------------------------------

GARBAGE: list[tuple[str, Any, str]] = [
    ("empty frame", b"", "undecodable MessagePack"),
    ("truncated", pack([SAMPLES["stock_quote"]])[:-5], "undecodable MessagePack"),
    ("extra data", pack([]) + b"\x01", "undecodable MessagePack"),
    ("random bytes", bytes(range(256)), "undecodable MessagePack"),
    ("json bytes", b'[{"T":"success","msg":"connected"}]', "looks like JSON"),
    ("json text", '[{"T":"success","msg":"connected"}]', "text frame"),
    ("plain text", "hello", "text frame"),
    ("top-level map", pack({"T": "success", "msg": "connected"}), "holds a dict"),
    ("top-level int", pack(7), "holds a int"),
    ("top-level nil", pack(None), "holds a NoneType"),
    ("int map keys", pack([{1: 2}]), "undecodable MessagePack"),
    ("invalid utf-8", b"\x91\x81\xa1T\xa2\xff\xfe", "undecodable MessagePack"),
    ("deep nesting", b"\x91" * 100_000, "undecodable MessagePack"),
    ("not bytes at all", None, "undecodable MessagePack"),
]


@pytest.mark.parametrize(("frame", "expected"), [(f, e) for _, f, e in GARBAGE],
                         ids=[name for name, _, _ in GARBAGE])  # fmt: skip
def test_garbage_frames_are_malformed(stock: DataStreamProtocol, frame: Any, expected: str) -> None:
    events = stock.receive(frame)
    (event,) = events
    assert isinstance(event, Malformed)
    assert expected in event.reason
    assert len(event.reason) < 300


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        (7, "a int, expected a map"),
        ("q", "a str, expected a map"),
        ([1, 2], "a list, expected a map"),
        (None, "a NoneType"),
        ({"S": "AAPL"}, "has no 'T'"),
        ({"T": 1}, "has a int 'T'"),
        ({"T": ["q"]}, "has a list 'T'"),  # unhashable T must not crash the lookup
        ({"T": {"q": 1}}, "has a dict 'T'"),
        ({"T": b"q"}, "has a bytes 'T'"),
    ],
)
def test_bad_elements(stock: DataStreamProtocol, element: Any, expected: str) -> None:
    quote = SAMPLES["stock_quote"]
    events = stock.receive(pack([quote, element]))
    (reason,) = malformed(events)
    assert reason == f"element 1: {expected}" or (
        reason.startswith("element 1: ") and expected in reason
    )
    (batch,) = batches(events)
    assert batch.messages == [("quotes", "AAPL", quote)]


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from(["T", "S", "q", "t", "success", "error", "subscription", "n", "o"]),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(
        st.sampled_from(["T", "S", "t", "p", "s", "bp", "bs", "ap", "as", "msg", "code",
                         "symbols", "trades", "quotes", "x"]) | st.text(max_size=4),
        children,
        max_size=8,
    ),
    max_leaves=15,
)  # fmt: skip

message_like = st.fixed_dictionaries(
    {"T": st.sampled_from(["t", "q", "b", "u", "d", "s", "l", "c", "x", "o", "n", "success",
                           "error", "subscription", "zz"])},
    optional={key: json_like for key in ["S", "t", "p", "s", "bp", "bs", "ap", "as", "o", "h",
                                         "l", "c", "v", "n", "vw", "msg", "code", "trades",
                                         "symbols", "b", "a", "x", "z"]},
)  # fmt: skip


def check_events(events: object) -> None:
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, EVENT_TYPES)
        if isinstance(event, DataBatch):
            for channel, symbol, raw in event.messages:
                assert isinstance(channel, str)
                assert isinstance(symbol, str)
                assert isinstance(raw, dict)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(frame=st.binary(max_size=200))
def test_fuzz_random_bytes_never_raise(frame: bytes) -> None:
    for kind in (StreamKind.STOCK, StreamKind.CRYPTO, StreamKind.NEWS):
        check_events(DataStreamProtocol(kind).receive(frame))
    check_events(TradingStreamProtocol().receive(frame))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(payload=st.lists(message_like | json_like, max_size=8) | json_like)
def test_fuzz_structured_frames_never_raise(payload: Any) -> None:
    frame = pack(payload)
    for kind in (StreamKind.STOCK, StreamKind.CRYPTO, StreamKind.OPTION, StreamKind.NEWS):
        check_events(DataStreamProtocol(kind).receive(frame))
    check_events(TradingStreamProtocol().receive(json.dumps(payload, default=repr)))


# --- trading stream --------------------------------------------------------------------


@pytest.fixture
def trading() -> TradingStreamProtocol:
    return TradingStreamProtocol()


def test_trading_auth_message(trading: TradingStreamProtocol) -> None:
    assert json.loads(trading.auth_message("KEY", "SECRET")) == {
        "action": "authenticate",
        "data": {"key_id": "KEY", "secret_key": "SECRET"},
    }


def test_trading_listen_messages(trading: TradingStreamProtocol) -> None:
    assert json.loads(trading.subscribe_message({"trade_updates": ["*"]})) == {
        "action": "listen",
        "data": {"streams": ["trade_updates"]},
    }
    assert json.loads(trading.unsubscribe_message({"trade_updates": ["*"]})) == {
        "action": "listen",
        "data": {"streams": []},
    }
    with pytest.raises(ValueError, match="quotes"):
        trading.subscribe_message({"quotes": ["AAPL"]})


def test_trading_authorization(trading: TradingStreamProtocol) -> None:
    ok = {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}
    assert trading.receive(json.dumps(ok)) == [Authenticated()]
    assert trading.receive(json.dumps(ok).encode()) == [Authenticated()]  # binary JSON frames
    denied: dict[str, Any] = {
        "stream": "authorization",
        "data": {"action": "authenticate", "status": "unauthorized"},
    }
    assert trading.receive(json.dumps(denied)) == [ServerErrorEvent(402, "unauthorized")]
    denied["data"]["message"] = "access key verification failed"
    assert trading.receive(json.dumps(denied)) == [
        ServerErrorEvent(402, "access key verification failed")
    ]
    odd = {"stream": "authorization", "data": {"status": "maybe"}}
    (event,) = trading.receive(json.dumps(odd))
    assert isinstance(event, Malformed)


def test_trading_listening(trading: TradingStreamProtocol) -> None:
    on = {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    off = {"stream": "listening", "data": {"streams": []}}
    assert trading.receive(json.dumps(on)) == [SubscriptionAck({"trade_updates": ("*",)})]
    assert trading.receive(json.dumps(off)) == [SubscriptionAck({})]


def test_trading_updates(trading: TradingStreamProtocol) -> None:
    data = SAMPLES["trade_update"]
    frame = json.dumps({"stream": "trade_updates", "data": data})
    assert trading.receive(frame) == [DataBatch([("trade_updates", "AAPL", data)])]
    no_symbol = {**data, "order": {**data["order"], "symbol": None}}
    frame = json.dumps({"stream": "trade_updates", "data": no_symbol})
    assert trading.receive(frame) == [DataBatch([("trade_updates", "", no_symbol)])]


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("", "undecodable JSON"),
        ("{", "undecodable JSON"),
        (b"\xff\xfe\x00", "undecodable JSON"),
        ("[" * 100_000, "undecodable JSON"),
        ("[]", "JSON list"),
        ('"x"', "JSON str"),
        ("{}", "no 'stream'"),
        ('{"stream": 1, "data": {}}', "no 'stream'"),
        ('{"stream": "trade_updates"}', "no 'data'"),
        ('{"stream": "trade_updates", "data": []}', "no 'data'"),
        ('{"stream": "trade_updates", "data": {"event": "fill"}}', "lacks field(s) order"),
        (
            '{"stream": "trade_updates", "data": {"event": "fill", "order": 1, "timestamp": 1}}',
            "'order' is not an object",
        ),
        ('{"stream": "listening", "data": {"streams": "x"}}', "'streams' array"),
        ('{"stream": "bogus", "data": {}}', "unknown stream 'bogus'"),
    ],
)
def test_trading_garbage(trading: TradingStreamProtocol, frame: str | bytes, expected: str) -> None:
    (event,) = trading.receive(frame)
    assert isinstance(event, Malformed)
    assert expected in event.reason


def test_trading_connection_limit_is_a_406_not_an_auth_failure():
    import json

    from alpaca_di.errors import ConnectionLimitError
    from alpaca_di.protocol import ServerErrorEvent, TradingStreamProtocol

    frame = json.dumps(
        {
            "stream": "authorization",
            "data": {
                "action": "authenticate",
                "status": "unauthorized",
                "message": "connection limit exceeded",
            },
        }
    )
    [event] = TradingStreamProtocol().receive(frame)
    assert event == ServerErrorEvent(406, "connection limit exceeded")
    assert isinstance(event.exception(), ConnectionLimitError)


# -- large frames in slices -------------------------------------------------------------


def _big_quotes(count: int) -> list[dict[str, Any]]:
    pad = "x" * 100  # enough bytes per quote to cross SLICE_FRAME_BYTES
    return [
        {
            "T": "q",
            "S": f"S{n % 50}",
            "bx": "V",
            "bp": 1.0,
            "bs": 1,
            "ax": "V",
            "ap": 1.1,
            "as": 1,
            "c": ["R"],
            "z": "C",
            "t": "2024-01-02T15:30:00Z",
            "pad": pad,
        }
        for n in range(count)
    ]


def test_a_large_frame_is_decoded_in_slices_with_the_same_messages() -> None:
    from alpaca_di.protocol.codec import SLICE, SLICE_FRAME_BYTES

    protocol = DataStreamProtocol(StreamKind.STOCK)
    frame = pack(_big_quotes(20 * SLICE + SLICE // 2))
    assert len(frame) >= SLICE_FRAME_BYTES
    slices = list(protocol.receive_slices(frame))
    counts = [sum(len(b.messages) for b in batches(s)) for s in slices]
    assert counts == [SLICE] * 20 + [SLICE // 2]
    sliced = [m for s in slices for b in batches(s) for m in b.messages]
    whole = [m for b in batches(protocol.receive(frame)) for m in b.messages]
    assert sliced == whole


def test_slices_are_decoded_lazily() -> None:
    from alpaca_di.protocol.codec import SLICE

    protocol = DataStreamProtocol(StreamKind.STOCK)
    good = pack(_big_quotes(3_000))
    truncated = good[: len(good) * 2 // 3]  # the last third never arrives
    slices = protocol.receive_slices(truncated)
    first = next(slices)  # decodes one slice, not the whole frame
    assert sum(len(b.messages) for b in batches(first)) == SLICE
    rest = list(slices)
    reasons = [reason for events in rest for reason in malformed(events)]
    assert len(reasons) == 1
    assert "at element" in reasons[0]
    assert "of 3000" in reasons[0]


def test_a_large_frame_that_is_not_an_array_is_named() -> None:
    protocol = DataStreamProtocol(StreamKind.STOCK)
    frame = pack({"T": "q", "z": "x" * 300_000})
    [events] = list(protocol.receive_slices(frame))
    assert malformed(events) == ["frame holds a dict, expected an array of messages"]


def test_a_bad_element_in_a_later_slice_is_reported_at_its_index() -> None:
    protocol = DataStreamProtocol(StreamKind.STOCK)
    messages: list[Any] = _big_quotes(2_500)
    messages[1_700] = {"T": "q", "bp": 1.0}  # no symbol
    events = [e for s in protocol.receive_slices(pack(messages)) for e in s]
    [reason] = malformed(events)
    assert reason.startswith("element 1700: quotes message")
