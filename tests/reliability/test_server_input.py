"""Bad input from the server: fuzzed frames never reach a typed consumer, never kill the socket.

Over a real socket (``emulator.send_raw``) 10,000 seeded-random frames mix valid
messages with every kind of garbage: truncated MessagePack, trailing bytes, JSON
where MessagePack is expected, frames that are not arrays, elements that are not
maps, missing or mistyped ``T``/``S``, missing required fields, values of the
wrong type, impossible timestamps, unknown ``T`` codes, junk control messages,
invalid UTF-8, and huge batches. The generator knows, frame by frame, which
elements are bad, so the suite proves:

* every valid message reaches every consumer exactly once, as a valid alpaca-py
  model of the subscribed symbol (or the wire dict, for ``raw=True``);
* nothing else reaches a typed consumer; a ``raw=True`` consumer also gets each
  routable element that no model can be built from (a message always reaches raw
  subscribers), exactly once, and nothing else;
* every bad element (or undecodable frame) is counted once in ``health().malformed``;
* the connection never dropped (one session, no reconnect).

A frame over the size limit closes the socket: the hub reconnects and restores.
The trading stream gets the same treatment with JSON. Without sockets, hypothesis
throws arbitrary MessagePack values at the codec and the model parser.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import msgpack
from _reliability_support import FIGURES, IEX, KEY, scaled
from alpaca.data.models import Bar, Quote, Trade, TradingStatus
from alpaca.trading.models import TradeUpdate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import ProtocolError
from alpaca_di.hub import ConnectionRegistry
from alpaca_di.protocol import (
    DataBatch,
    DataStreamProtocol,
    Malformed,
    StreamKind,
    TradingStreamProtocol,
)
from alpaca_di.protocol.models import parse
from alpaca_di.transport import ConnectionOptions

FRAMES = int(scaled(10_000))
TRADING_FRAMES = int(scaled(1_000))
WAIT = 30.0
SYMBOLS = ("FZA", "FZB", "FZC")
CHANNELS = ("trades", "quotes", "bars", "statuses")
MODELS: dict[str, type] = {"trades": Trade, "quotes": Quote, "bars": Bar, "statuses": TradingStatus}
# Fields alpaca-py's models require as floats; a bad value there fails validation.
FLOAT_FIELDS = {"t": ("p", "s"), "q": ("bp", "bs", "ap", "as"), "b": ("o", "h", "l", "c"), "s": ()}
REQUIRED = {
    "t": ("S", "t", "p", "s"),
    "q": ("S", "t", "bp", "bs", "ap", "as"),
    "b": ("S", "t", "o", "h", "l", "c", "v", "n", "vw"),
    "s": ("S", "sc", "sm", "rc", "rm", "t", "z"),
}
NOT_A_FLOAT: tuple[Any, ...] = ("abc", {}, [1.0], None, msgpack.ExtType(42, b"x"))
NOT_A_TIME: tuple[Any, ...] = (12345, "not a time", 1.5, [], msgpack.Timestamp(2**40, 0))


class Fuzzer:
    """Seeded frames plus what they must do: valid ids to deliver, bad elements to count."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_id = 1
        self.expected: dict[str, set[int]] = {channel: set() for channel in CHANNELS}
        self.malformed = 0
        self.raw_only = 0  # bad elements with a T and an S: raw consumers still get them
        self.kinds: Counter[str] = Counter()

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _ts(self) -> msgpack.Timestamp:
        return msgpack.Timestamp(
            1_760_000_000 + self.rng.randrange(10**6), self.rng.randrange(10**9)
        )

    def valid(self, symbol: str | None = None) -> tuple[str, int, dict[str, Any]]:
        rng, symbol = self.rng, symbol or self.rng.choice(SYMBOLS)
        code, ident = rng.choice("tqbs"), self._id()
        price = round(rng.uniform(1, 500), 2)
        if code == "t":
            msg = {
                "T": "t",
                "S": symbol,
                "i": ident,
                "x": "V",
                "p": price,
                "s": rng.randint(1, 900),
                "c": ["@"],
                "z": "C",
                "t": self._ts(),
            }
        elif code == "q":
            msg = {
                "T": "q",
                "S": symbol,
                "bx": "V",
                "bp": price,
                "bs": ident,
                "ax": "V",
                "ap": price + 0.01,
                "as": 3,
                "c": ["R"],
                "z": "C",
                "t": self._ts(),
            }
        elif code == "b":
            msg = {
                "T": "b",
                "S": symbol,
                "o": price,
                "h": price + 1,
                "l": price - 1,
                "c": price,
                "v": ident,
                "n": 10,
                "vw": price,
                "t": self._ts(),
            }
        else:
            msg = {
                "T": "s",
                "S": symbol,
                "sc": "H",
                "sm": f"halt {ident}",
                "rc": "T12",
                "rm": "news pending",
                "t": self._ts(),
                "z": "C",
            }
        return {"t": "trades", "q": "quotes", "b": "bars", "s": "statuses"}[code], ident, msg

    def _take_valid(self, channel: str, ident: int) -> None:
        self.expected[channel].add(ident)

    def bad_element(self) -> Any:
        """One element that must be counted malformed exactly once."""
        rng = self.rng
        _, _, msg = self.valid()
        code = msg["T"]
        kind = rng.choice(
            [
                "not a map",
                "no T",
                "T not str",
                "missing field",
                "S not str",
                "bad float",
                "bad time",
                "control junk",
            ]
            if FLOAT_FIELDS[code]
            else [
                "not a map",
                "no T",
                "T not str",
                "missing field",
                "S not str",
                "bad time",
                "control junk",
            ]
        )
        self.kinds[kind] += 1
        if kind == "not a map":
            return rng.choice([5, "x", None, [1, 2], True, 2.5, b"raw"])
        if kind == "no T":
            del msg["T"]
        elif kind == "T not str":
            msg["T"] = rng.choice([5, ["t"], 1.5, {"T": "t"}])
        elif kind == "missing field":
            del msg[rng.choice(REQUIRED[code])]
        elif kind == "S not str":
            msg["S"] = rng.choice([5, None, ["FZA"], b"FZA", msgpack.ExtType(1, b"")])
        elif kind == "bad float":
            msg[rng.choice(FLOAT_FIELDS[code])] = rng.choice(NOT_A_FLOAT)
        elif kind == "bad time":
            msg["t"] = rng.choice(NOT_A_TIME)
        else:
            return rng.choice(
                [
                    {"T": "error", "code": "401", "msg": "x"},
                    {"T": "success", "msg": "who knows"},
                    {"T": "subscription", "trades": 5},
                    {"T": "subscription", "quotes": ["A", 1]},
                ]
            )
        if _routed(msg):
            self.raw_only += 1
        return msg

    def harmless(self) -> Any:
        """An element that is neither delivered nor malformed."""
        rng = self.rng
        kind = rng.choice(["unknown T", "unsubscribed symbol", "long symbol"])
        self.kinds[kind] += 1
        _, _, msg = self.valid()
        if kind == "unknown T":
            msg["T"] = rng.choice(["zz", "imbalance", "", "T" * 50])
        elif kind == "unsubscribed symbol":
            msg["S"] = "NOTSUB"
        else:
            msg["S"] = "L" * rng.randint(100, 5000)
        return msg

    def frame(self) -> bytes | str:
        """One frame; updates what must be delivered and counted."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:  # the whole frame is undecodable or not an array
            self.malformed += 1
            kind = rng.choice(
                [
                    "truncated",
                    "trailing bytes",
                    "JSON text",
                    "JSON bytes",
                    "not msgpack",
                    "not an array",
                    "invalid utf-8",
                ]
            )
            self.kinds[kind] += 1
            elements = [self.valid()[2] for _ in range(rng.randint(1, 4))]
            packed = msgpack.packb(elements)
            if kind == "truncated":
                return packed[: rng.randrange(len(packed))]
            if kind == "trailing bytes":
                return packed + rng.choice([b"\x00", b"\x91\x01", b"junk"])
            if kind == "JSON text":
                return json.dumps([{"T": "t", "S": "FZA", "p": 1.0}])
            if kind == "JSON bytes":
                return json.dumps([{"T": "q", "S": "FZB"}]).encode()
            if kind == "not msgpack":
                return b"\xc1" + rng.randbytes(rng.randint(0, 40))
            if kind == "not an array":
                return msgpack.packb(rng.choice([{"T": "t", "S": "FZA"}, 5, "text", None, 1.5]))
            return b"\x91\x82\xa1T\xa1t\xa1S\xa3\xff\xfe\xfd"
        size = rng.randint(2000, 5000) if roll > 0.9995 else rng.randint(1, 8)
        if size > 8:
            self.kinds["huge batch"] += 1
        elements: list[Any] = []
        for _ in range(size):
            pick = rng.random()
            if pick < 0.55:
                channel, ident, msg = self.valid()
                self._take_valid(channel, ident)
                elements.append(msg)
            elif pick < 0.9:
                elements.append(self.bad_element())
                self.malformed += 1
            else:
                elements.append(self.harmless())
        return msgpack.packb(elements)


_RAW_CHANNEL = {"t": "trades", "q": "quotes", "b": "bars", "s": "statuses"}


def _routed(msg: dict[str, Any]) -> bool:
    """Whether the codec hands ``msg`` on to the hub (it may still fail the model)."""
    events = DataStreamProtocol(StreamKind.STOCK).receive(msgpack.packb([msg], datetime=True))
    return any(isinstance(event, DataBatch) for event in events)


class Checker:
    """A consumer that accepts only what the fuzzer declared valid, each exactly once."""

    def __init__(self, name: str, *, raw: bool) -> None:
        self.name, self.raw = name, raw
        self.cond = threading.Condition()
        self.seen: dict[str, set[int]] = {channel: set() for channel in CHANNELS}
        self.problems: list[str] = []
        self.count = 0
        self.unparsable = 0

    def identify(self, message: Any) -> tuple[str, int] | None:
        if self.raw:
            if type(message) is not dict:
                return None
            channel = _RAW_CHANNEL.get(message.get("T"))
            if channel is None or message.get("S") not in SYMBOLS:
                return None
            key = {"trades": "i", "quotes": "bs", "bars": "v", "statuses": "sm"}[channel]
            value = message.get(key)
            if channel == "statuses":
                value = int(str(value).split()[-1]) if isinstance(value, str) else None
            return (channel, value) if isinstance(value, int) else None
        for channel, model in MODELS.items():
            if type(message) is model:
                if message.symbol not in SYMBOLS:
                    return None
                if channel == "trades":
                    return channel, int(message.id)
                if channel == "quotes":
                    return channel, int(message.bid_size)
                if channel == "bars":
                    return channel, int(message.volume)
                return channel, int(message.status_message.split()[-1])
        return None

    def _unparsable(self, message: Any) -> bool:
        channel = _RAW_CHANNEL.get(message.get("T")) if type(message) is dict else None
        if channel is None or message.get("S") not in SYMBOLS:
            return False
        try:
            parse(channel, message["S"], message)
        except ProtocolError:
            return True
        return False

    def __call__(self, message: Any) -> None:
        unparsable = self.raw and self._unparsable(message)
        found = None if unparsable else self.identify(message)
        with self.cond:
            self.count += 1
            if unparsable:
                self.unparsable += 1
            elif found is None:
                self.problems.append(f"{self.name} got an unexpected object {message!r:.300}")
            else:
                channel, ident = found
                if ident in self.seen[channel]:
                    self.problems.append(f"{self.name} got {channel} #{ident} twice")
                self.seen[channel].add(ident)
            self.cond.notify_all()

    async def acall(self, message: Any) -> None:
        self(message)

    def wait_for(self, channel: str, ident: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: ident in self.seen[channel], WAIT), (
                f"{self.name} never got the sentinel"
            )


def _subscribe_all(hub: Any, handler: Callable[[Any], Any], raw: bool) -> Any:
    return hub.subscribe(handler, raw=raw, **{channel: list(SYMBOLS) for channel in CHANNELS})


def test_ten_thousand_fuzzed_frames(
    registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials
) -> None:
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    hub = lease.hub
    checkers = [Checker("model", raw=False), Checker("async", raw=False), Checker("raw", raw=True)]
    subs = [
        _subscribe_all(hub, checkers[0], False),
        _subscribe_all(hub, checkers[1].acall, False),
        _subscribe_all(hub, checkers[2], True),
    ]
    for sub in subs:
        sub.wait_confirmed(WAIT)
    fuzzer = Fuzzer(seed=20_240_601)
    for _ in range(FRAMES):
        assert emulator.send_raw(IEX, fuzzer.frame()) == 1
    channel, ident, sentinel = fuzzer.valid("FZA")
    fuzzer._take_valid(channel, ident)
    emulator.send_raw(IEX, msgpack.packb([sentinel]))
    for checker in checkers:
        checker.wait_for(channel, ident)

    problems = [problem for checker in checkers for problem in checker.problems]
    assert not problems, "\n".join(problems[:20])
    for checker in checkers:
        for name in CHANNELS:
            missing = fuzzer.expected[name] - checker.seen[name]
            assert not missing, f"{checker.name} never got {name} {sorted(missing)[:10]}"
            assert checker.seen[name] == fuzzer.expected[name]
    assert [checker.unparsable for checker in checkers] == [0, 0, fuzzer.raw_only]
    health = hub.health()
    assert health.malformed == fuzzer.malformed
    assert health.reconnects == 0
    assert health.state == "connected"
    assert emulator.counters(KEY, IEX).connections_accepted == 1
    for sub in subs:
        assert sub.stats.dropped == 0
    FIGURES["fuzz frames over the socket (data)"] += FRAMES + 1
    FIGURES["fuzz bad elements counted as malformed"] += fuzzer.malformed
    FIGURES["fuzz valid messages delivered exactly once"] += sum(
        len(ids) for ids in fuzzer.expected.values()
    )
    FIGURES["fuzz fault kinds"] = len(fuzzer.kinds)
    lease.release()


def test_a_frame_over_the_size_limit_reconnects_and_restores(
    registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials
) -> None:
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), options)
    checker = Checker("model", raw=False)
    sub = _subscribe_all(lease.hub, checker, False)
    sub.wait_confirmed(WAIT)
    wanted = emulator.subscriptions(KEY, IEX)
    emulator.send_raw(IEX, b"\xc4" + b"\x00" * (17 * 2**20))  # > the 16 MiB limit
    emulator.wait_until(
        lambda: (
            emulator.counters(KEY, IEX).connections_accepted == 2
            and emulator.subscriptions(KEY, IEX) == wanted
        ),
        WAIT,
        message="reconnected and restored after the oversized frame",
    )
    sub.wait_confirmed(WAIT)
    fuzzer = Fuzzer(seed=7)
    channel, ident, msg = fuzzer.valid("FZB")
    emulator.send_raw(IEX, msgpack.packb([msg]))
    checker.wait_for(channel, ident)
    assert checker.problems == []
    assert "1009" in (lease.hub.health().last_error or "")
    FIGURES["fuzz frames over the socket (data)"] += 2
    lease.release()


# ----------------------------------------------------------------------------- trading stream


def _order(rng: random.Random, ident: int) -> dict[str, Any]:
    now = datetime.now(timezone.utc).isoformat()
    return {
        "id": f"00000000-0000-4000-8000-{ident:012d}",
        "client_order_id": f"c{ident}",
        "created_at": now,
        "updated_at": now,
        "submitted_at": now,
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": "00000000-0000-4000-8000-000000000001",
        "symbol": rng.choice(SYMBOLS),
        "asset_class": "us_equity",
        "notional": None,
        "qty": "1",
        "filled_qty": "0",
        "filled_avg_price": None,
        "order_class": "simple",
        "order_type": "market",
        "type": "market",
        "side": "buy",
        "time_in_force": "day",
        "limit_price": None,
        "stop_price": None,
        "status": "new",
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


def test_fuzzed_trading_stream_frames(
    registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials
) -> None:
    options = ConnectionOptions(backoff_initial=0.01, backoff_max=0.05, open_timeout=5.0)
    lease = registry.acquire(creds, StreamKind.TRADING, emulator.trading_stream_url, options)
    hub = lease.hub
    seen: list[TradeUpdate] = []
    others: list[Any] = []
    cond = threading.Condition()

    def on_update(update: Any) -> None:
        with cond:
            (seen if type(update) is TradeUpdate else others).append(update)
            cond.notify_all()

    sub = hub.subscribe(on_update, trade_updates=True)
    sub.wait_confirmed(WAIT)
    rng = random.Random(99)
    expected: list[str] = []
    malformed = 0
    for n in range(TRADING_FRAMES):
        order = _order(rng, n)
        update = {"event": "new", "order": order, "timestamp": order["created_at"]}
        roll = rng.random()
        if roll < 0.4:
            expected.append(order["id"])
            frame: str | bytes = json.dumps({"stream": "trade_updates", "data": update})
        else:
            malformed += 1
            kind = rng.randrange(8)
            if kind == 0:
                frame = json.dumps({"stream": "trade_updates", "data": update})[
                    : rng.randint(0, 50)
                ]
            elif kind == 1:
                frame = msgpack.packb({"stream": "trade_updates", "data": update}, default=str)
            elif kind == 2:
                frame = json.dumps([update])
            elif kind == 3:
                del update[rng.choice(["event", "order", "timestamp"])]
                frame = json.dumps({"stream": "trade_updates", "data": update})
            elif kind == 4:
                update["order"] = rng.choice([None, "x", 5, []])
                frame = json.dumps({"stream": "trade_updates", "data": update})
            elif kind == 5:  # the order itself does not validate
                order[rng.choice(["side", "status", "created_at", "qty"])] = {"bad": True}
                frame = json.dumps({"stream": "trade_updates", "data": update})
            elif kind == 6:
                frame = json.dumps({"stream": rng.choice(["bogus", 5, None]), "data": {}})
            else:
                frame = json.dumps({"stream": "authorization", "data": {"status": "maybe"}})
        emulator.send_raw("/stream", frame.encode() if isinstance(frame, str) and n % 2 else frame)
    sentinel = _order(rng, 10**9)
    expected.append(sentinel["id"])
    emulator.send_raw(
        "/stream",
        json.dumps(
            {
                "stream": "trade_updates",
                "data": {"event": "new", "order": sentinel, "timestamp": sentinel["created_at"]},
            }
        ),
    )
    with cond:
        assert cond.wait_for(lambda: any(u.order.id.hex.endswith("1000000000") for u in seen), WAIT)
    assert others == []
    assert [str(update.order.id) for update in seen] == expected
    health = hub.health()
    assert health.malformed == malformed
    assert health.reconnects == 0
    assert health.state == "connected"
    FIGURES["fuzz frames over the socket (trading)"] += TRADING_FRAMES + 1
    FIGURES["fuzz bad elements counted as malformed"] += malformed
    lease.release()


# ----------------------------------------------------------------------------- no sockets

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=8)
    | st.sampled_from(["t", "q", "b", "s", "n", "o", "l", "c", "x", "u", "d", "T", "S", "FZA"])
    | st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 999_999_999))
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["T", "S", "t", "p", "symbols", "x"]), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def _near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message of a random kind with a few keys removed or given arbitrary values."""
    _, _, msg = Fuzzer(draw(st.integers(0, 2**32))).valid(draw(st.sampled_from(SYMBOLS)))
    msg["T"] = draw(st.sampled_from([msg["T"]] * 4 + ["l", "c", "x", "o", "n", "u", "d", "zz"]))
    for key in draw(st.lists(st.sampled_from(sorted(msg)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del msg[key]
        else:
            msg[key] = draw(_values)
    if draw(st.booleans()):
        msg[draw(st.sampled_from(["symbols", "id", "b", "a", "u", "d", "i", "extra"]))] = draw(
            _values
        )
    return msg


_messages = _near_valid()


@settings(
    max_examples=int(scaled(800)),
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(_messages | _values, max_size=6), st.sampled_from(list(StreamKind)[:4]))
def test_codec_and_parser_never_raise_and_never_yield_a_bad_model(
    elements: list[Any], kind: StreamKind
) -> None:
    try:
        frame = msgpack.packb(elements)
    except (OverflowError, TypeError, ValueError):
        return  # not encodable: the server could not have sent it
    protocol = DataStreamProtocol(kind)
    events = protocol.receive(frame)
    data = [event for event in events if isinstance(event, DataBatch)]
    bad = sum(1 for event in events if isinstance(event, Malformed))
    assert bad <= len(elements)
    for batch in data:
        for channel, symbol, raw in batch.messages:
            assert isinstance(symbol, str)
            assert isinstance(raw, dict)
            try:
                model = parse(channel, symbol, raw)
            except ProtocolError:
                continue
            if channel in ("trades", "quotes", "bars", "statuses"):
                assert type(model) is MODELS[channel]
                assert model.symbol == symbol
    # Truncations of any frame: one Malformed, never an exception.
    for cut in {0, len(frame) // 2, len(frame) - 1}:
        truncated = protocol.receive(frame[:cut])
        assert len(truncated) == 1
        assert isinstance(truncated[0], Malformed)
    FIGURES["fuzz cases without sockets (hypothesis)"] += 1


@settings(max_examples=int(scaled(500)), derandomize=True, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        _values.map(lambda value: json.dumps(value, default=repr)),
    )
)
def test_trading_codec_never_raises(frame: str | bytes) -> None:
    for event in TradingStreamProtocol().receive(frame):
        if isinstance(event, DataBatch):
            for channel, symbol, raw in event.messages:
                try:
                    update = parse(channel, symbol, raw)
                except ProtocolError:
                    continue
                assert type(update) is TradeUpdate
    FIGURES["fuzz cases without sockets (hypothesis)"] += 1


def test_fuzz_generator_is_deterministic() -> None:
    first, second = Fuzzer(seed=1), Fuzzer(seed=1)
    assert [first.frame() for _ in range(50)] == [second.frame() for _ in range(50)]
    assert first.malformed == second.malformed
