"""Encode client messages and decode server frames: bytes in, events out.

No sockets and no asyncio here (the split ``websockets`` makes between its sans-I/O
core and its network shell). The transport feeds every frame it reads to
``receive()`` and sends what the ``*_message()`` methods return::

    from alpaca_di.protocol import DataStreamProtocol, StreamKind

    protocol = DataStreamProtocol(StreamKind.STOCK)
    await ws.send(protocol.auth_message(key_id, secret))
    await ws.send(protocol.subscribe_message({"quotes": ["AAPL"], "updated_bars": ["*"]}))
    events = protocol.receive(await ws.recv())

Data streams speak MessagePack on binary frames; the trading stream speaks JSON.
``receive()`` never raises on what the server sends: anything that does not follow
the protocol becomes a :class:`~alpaca_di.protocol.events.Malformed` event.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from alpaca_di.protocol.channels import (
    _CHANNEL_BY_WIRE,
    CHANNEL_BY_TYPE,
    CHANNELS,
    StreamKind,
    _kind,
    validate_channel,
    wire_channel,
)
from alpaca_di.protocol.events import (
    Authenticated,
    DataBatch,
    Event,
    Malformed,
    ServerErrorEvent,
    SubscriptionAck,
    Welcome,
)

if TYPE_CHECKING:
    import msgspec

    from alpaca_di.protocol.structs import Decoders

__all__ = [
    "FORMS",
    "SLICE",
    "SLICE_FRAME_BYTES",
    "DataStreamProtocol",
    "TradingStreamProtocol",
    "protocol_for",
]

SLICE = 100
"""Messages decoded and handed on per slice of a large frame (see ``receive_slices``).

Small on purpose: a slice's dicts and models then die before the garbage
collector's young generations promote them (a slice of 1,000 lived through
several collections, and the promoted survivors of one 150,000-message frame
set off 7-10 full collections of ~100 ms each)."""
SLICE_FRAME_BYTES = 256 * 1024
"""Frames at least this large are decoded in slices; smaller ones at once."""
FORMS = frozenset({"raw", "struct", "model"})
"""What a data stream's messages can be decoded into (see ``DataStreamProtocol.forms``)."""
_RAW_ONLY = frozenset({"raw"})
_TYPED = ("struct", "model")  # the forms decoded by msgspec, in DataBatch's order

# Fields a data message must carry (Alpaca's short keys), by ``T`` code. They are the
# fields alpaca-py's models require, plus ``S`` (news has ``symbols`` instead).
_REQUIRED: dict[str, frozenset[str]] = {
    "t": frozenset({"S", "t", "p", "s"}),
    "q": frozenset({"S", "t", "bp", "bs", "ap", "as"}),
    "b": frozenset({"S", "t", "o", "h", "l", "c", "v", "n", "vw"}),
    "s": frozenset({"S", "sc", "sm", "rc", "rm", "t", "z"}),
    "l": frozenset({"S", "u", "d", "i", "t", "z"}),
    "c": frozenset({"S", "x", "op", "os", "oc", "cp", "cs", "cc", "z", "t"}),
    "x": frozenset({"S", "x", "p", "s", "z", "t"}),
    "o": frozenset({"S", "t", "b", "a"}),
    "n": frozenset(
        {
            "id",
            "headline",
            "summary",
            "author",
            "created_at",
            "updated_at",
            "url",
            "content",
            "symbols",
            "source",
        }
    ),
}
_REQUIRED["u"] = _REQUIRED["d"] = _REQUIRED["b"]

# Server ack keys (wire names) -> Python channel names.
_ACK_CHANNELS: dict[str, str] = {
    **{name: name for name in CHANNEL_BY_TYPE.values()},
    **_CHANNEL_BY_WIRE,
}

_MAX_UNKNOWN_KINDS = 64  # distinct unknown ``T`` values remembered; the rest are lumped
_OTHER = "<other>"
_MAX_TEXT = 500  # longest server text kept in an event

# (python channel, required keys, is_news) per ``T`` code, per stream kind.
_Spec = tuple[str, frozenset[str], bool]


def _specs_for(kind: StreamKind) -> dict[str, _Spec]:
    valid = CHANNELS[kind]
    return {
        code: (channel, _REQUIRED[code], code == "n")
        for code, channel in CHANNEL_BY_TYPE.items()
        if channel in valid
    }


def _clip(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _explain(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def _streaming(frame: bytes | bytearray | memoryview) -> msgpack.Unpacker:
    """An unpacker that reads ``frame`` in small chunks as it goes.

    ``feed()`` would copy the whole frame into the unpacker at once: 2 to 11 ms for
    10 MiB here, one step no slice could interrupt. Read through a file it copies
    a chunk at a time, and ``tell()`` still counts from the frame's start.
    """
    return msgpack.Unpacker(io.BytesIO(frame), max_buffer_size=max(len(frame), 1))


def _array(count: int, elements: memoryview) -> bytes:
    """A MessagePack array of ``count`` already-encoded ``elements`` (an array32 header)."""
    return b"\xdd" + count.to_bytes(4, "big") + elements


def _merge(kind: StreamKind, channels: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    merged: dict[str, dict[str, None]] = {}
    for channel, symbols in channels.items():
        python = _CHANNEL_BY_WIRE.get(channel, channel)
        validate_channel(kind, python)
        if isinstance(symbols, str):
            raise TypeError(
                f"symbols of {channel!r} must be an iterable of str, not one str "
                f"(write [{symbols!r}])"
            )
        bucket = merged.setdefault(wire_channel(python), {})
        for symbol in symbols:
            bucket[symbol] = None
    return {wire: list(bucket) for wire, bucket in merged.items() if bucket}


class DataStreamProtocol:
    """The MessagePack protocol of the stock, crypto, option and news streams.

    One instance per connection (it keeps counters)::

        protocol = DataStreamProtocol(StreamKind.CRYPTO)
        frame = protocol.subscribe_message({"quotes": ["BTC/USD"], "orderbooks": ["BTC/USD"]})
        for event in protocol.receive(data):
            ...

    Subscribe keys may be Python (``updated_bars``) or wire (``updatedBars``) names.
    ``corrections`` and ``cancel_errors`` are sent as ``trades`` (the server has no
    key for them), so an *unsubscribe* of ``corrections`` also stops ``trades`` for
    those symbols: callers that count references should key them by
    :func:`~alpaca_di.protocol.channels.wire_channel`.

    Attributes:
        kind: the stream kind.
        unknown_types: how many messages were ignored per unknown ``T`` value
            (``collections.Counter``; at most 64 distinct values are kept, the rest
            are counted under ``"<other>"``). Alpaca adds message types over time
            (imbalances, perp pricing...), so unknown types are not errors.
    """

    def __init__(self, kind: StreamKind) -> None:
        self.kind = _kind(kind)
        if self.kind is StreamKind.TRADING:
            raise ValueError("the trading stream speaks JSON: use TradingStreamProtocol")
        self.unknown_types: Counter[str] = Counter()
        self._specs = _specs_for(self.kind)
        self._forms = _RAW_ONLY
        self._decoders: dict[str, Decoders] = {}  # typed form -> its decoders, once asked for
        self._typed: tuple[tuple[str, Decoders], ...] = ()  # the typed forms asked for now

    @property
    def forms(self) -> frozenset[str]:
        """What data messages are decoded into: ``"raw"`` dicts, ``"struct"``s, ``"model"`` sources.

        ``{"raw"}`` by default. With ``"struct"``, every :class:`DataBatch` also
        carries the typed structs of :mod:`alpaca_di.protocol.structs`, decoded
        straight from the frame; with ``"model"``, the model sources of
        :mod:`alpaca_di.protocol.sources` alpaca-py models are built from
        (:func:`alpaca_di.protocol.models.build`; asking for it loads alpaca-py),
        and the dict of each message that has no source (a value only
        validation can judge, a LULD band), so a model can still be validated
        from it. Without ``"raw"``, no other dict is built at all (each
        message's raw slot is ``None``). Read at every frame (and every slice of
        a large one), so it may change between frames::

            protocol.forms = frozenset({"struct"})
            [batch] = protocol.receive(frame)
            batch.structs[0].bid_price
        """
        return self._forms

    @forms.setter
    def forms(self, forms: frozenset[str]) -> None:
        forms = frozenset(forms)
        if not forms or not forms <= FORMS:
            raise ValueError(f"forms must be a non-empty subset of {sorted(FORMS)}, got {forms!r}")
        decoders = self._decoders
        if "struct" in forms and "struct" not in decoders:
            from alpaca_di.protocol.structs import decoders_for  # msgspec, when first asked

            decoders["struct"] = decoders_for(self.kind)
        if "model" in forms and "model" not in decoders:
            from alpaca_di.protocol.models import model_sources  # alpaca-py: models are wanted

            decoders["model"] = model_sources(self.kind)
        self._typed = tuple((form, decoders[form]) for form in _TYPED if form in forms)
        self._forms = forms

    def __repr__(self) -> str:
        return f"DataStreamProtocol({self.kind.value!r})"

    @property
    def unknown(self) -> int:
        """Total number of messages ignored because of an unknown ``T`` value."""
        return sum(self.unknown_types.values())

    def auth_message(self, key_id: str, secret: str) -> bytes:
        """Encode ``{"action":"auth","key":...,"secret":...}``.

        The result contains the secret: send it, never log it::

            await ws.send(protocol.auth_message(creds.key_id, creds.secret.get_secret_value()))
        """
        data: bytes = msgpack.packb({"action": "auth", "key": key_id, "secret": secret})
        return data

    def subscribe_message(self, channels: Mapping[str, Iterable[str]]) -> bytes:
        """Encode a subscribe for ``channels`` (channel name -> symbols).

        Channels are mapped to wire names and merged (``corrections`` and
        ``cancel_errors`` into ``trades``); symbols are deduplicated in order;
        empty channels are left out; ``"action"`` comes last, as alpaca-py sends it::

            protocol.subscribe_message({"updated_bars": ["AAPL"], "corrections": ["AAPL"]})
            # msgpack of {"updatedBars": ["AAPL"], "trades": ["AAPL"], "action": "subscribe"}

        Raises ``ValueError`` for a channel the stream does not have. A mapping with
        no symbols gives a message with no channels: check the delta before sending.
        """
        return self._channel_message("subscribe", channels)

    def unsubscribe_message(self, channels: Mapping[str, Iterable[str]]) -> bytes:
        """Encode an unsubscribe; same mapping rules as :meth:`subscribe_message`.

        ::

            protocol.unsubscribe_message({"quotes": ["MSFT"]})
        """
        return self._channel_message("unsubscribe", channels)

    def _channel_message(self, action: str, channels: Mapping[str, Iterable[str]]) -> bytes:
        message: dict[str, Any] = dict(_merge(self.kind, channels))
        message["action"] = action
        data: bytes = msgpack.packb(message)
        return data

    def receive(self, frame: bytes | str) -> list[Event]:
        """Decode one frame into events; never raises on bad input.

        * ``success`` -> :class:`Welcome` / :class:`Authenticated`; ``error`` ->
          :class:`ServerErrorEvent`; ``subscription`` -> :class:`SubscriptionAck`
          (Python channel names).
        * Data messages of this stream kind that carry their required fields and a
          str ``S`` are gathered, in wire order, into one :class:`DataBatch`. A
          control event ends the current batch, so batches and control events keep
          their relative order.
        * Every bad element gives one :class:`Malformed` (its index and what was
          wrong); the good elements of the same frame are still delivered.
        * Unknown ``T`` values are skipped and counted in :attr:`unknown_types`.

        ::

            events = protocol.receive(msgpack.packb([{"T": "success", "msg": "connected"}]))
            assert events == [Welcome()]
        """
        if self._typed and not isinstance(frame, str):
            return self._receive_typed(frame)
        return self._receive_raw(frame)

    def _receive_raw(self, frame: bytes | str) -> list[Event]:
        if isinstance(frame, str):
            looks = " (it looks like JSON)" if frame.lstrip()[:1] in ("[", "{") else ""
            return [
                Malformed(
                    f"text frame of {len(frame)} characters on a MessagePack stream{looks}; "
                    "the server must be asked for msgpack (Content-Type: application/msgpack)"
                )
            ]
        try:
            decoded = msgpack.unpackb(frame)
        except Exception as exc:
            size = len(frame) if isinstance(frame, (bytes, bytearray, memoryview)) else "?"
            looks = ""
            if isinstance(frame, (bytes, bytearray)) and frame.lstrip()[:1] in (b"[", b"{"):
                looks = " (it looks like JSON)"
            return [
                Malformed(f"undecodable MessagePack frame of {size} bytes{looks}: {_explain(exc)}")
            ]
        if type(decoded) is not list:
            return [
                Malformed(f"frame holds a {type(decoded).__name__}, expected an array of messages")
            ]
        return self._read(decoded)

    def receive_slices(self, frame: bytes | str) -> Iterator[list[Event]]:
        """Like :meth:`receive`, lazily, ``SLICE`` elements at a time for a large frame.

        Decoding itself is sliced (a streaming unpacker reads the array one element
        at a time), so the caller can yield to its event loop between slices and
        one huge frame never holds up everyone else. A frame under
        ``SLICE_FRAME_BYTES`` is one slice, decoded at once::

            for events in protocol.receive_slices(frame):
                handle(events)
                await asyncio.sleep(0)   # the shell's yield, not the protocol's
        """
        if isinstance(frame, str) or len(frame) < SLICE_FRAME_BYTES:
            yield self.receive(frame)
            return
        if self._typed:
            yield from self._typed_slices(frame)
            return
        unpacker = _streaming(frame)
        try:
            count = unpacker.read_array_header()
        except Exception:
            yield self.receive(frame)  # not an array: receive() names what it is
            return
        index = 0
        while index < count:
            elements: list[Any] = []
            try:
                for _ in range(min(SLICE, count - index)):
                    elements.append(unpacker.unpack())
            except Exception as exc:
                events = self._read(elements, offset=index)
                events.append(
                    Malformed(
                        f"undecodable MessagePack frame of {len(frame)} bytes at element "
                        f"{index + len(elements)} of {count}: {_explain(exc)}"
                    )
                )
                yield events
                return
            yield self._read(elements, offset=index)
            index += len(elements)

    # -- the typed forms (structs, model sources) --------------------------------------------

    def _receive_typed(self, frame: bytes | bytearray | memoryview, offset: int = 0) -> list[Event]:
        """The fast path: one msgspec call per typed form for the whole frame, if it is all data."""
        decoded: dict[str, list[Any]] = {}
        for form, decoders in self._typed:
            try:
                decoded[form] = decoders.frame.decode(frame)
            except decoders.error:
                # A control message, an unknown type or a bad value somewhere: element by element.
                try:
                    elements = decoders.elements.decode(frame)
                except decoders.error:
                    return self._receive_raw(bytes(frame))  # names what is wrong with the frame
                return self._read_elements(elements, offset)
        form, decoders = self._typed[0]
        typed = decoded[form]
        if not typed:
            return []
        raws: list[Any] | None = None
        if "raw" in self._forms:
            try:
                raws = msgpack.unpackb(frame)
            except Exception:  # msgspec read it, msgpack did not: let the slow path tell
                return self._read_elements(decoders.elements.decode(frame), offset)
        channels = decoders.channels
        messages: list[tuple[str, str, Any]]
        if self.kind is StreamKind.NEWS:  # routed by the article's symbols, not by one symbol
            messages = [("news", "", raw) for raw in (raws or [None] * len(typed))]
        elif raws is None:
            messages = [(channels[type(one)], one.symbol, None) for one in typed]
        else:
            messages = [
                (channels[type(one)], one.symbol, raw) for one, raw in zip(typed, raws, strict=True)
            ]
        return [DataBatch(messages, decoded.get("struct"), decoded.get("model"))]

    def _typed_slices(self, frame: bytes | bytearray | memoryview) -> Iterator[list[Event]]:
        """A large frame ``SLICE`` elements at a time, each slice in one msgspec call per form.

        msgspec has no streaming decoder, so a streaming unpacker only finds where
        each slice's elements end (``skip()``, no objects built); the slice's bytes
        behind an array header of its own are then decoded like a small frame.
        """
        unpacker = _streaming(frame)
        try:
            count = unpacker.read_array_header()
        except Exception:
            yield self._receive_raw(bytes(frame))  # not an array: receive_raw names it
            return
        view = memoryview(frame)
        start = unpacker.tell()
        index = 0
        while index < count:
            size = min(SLICE, count - index)
            done = 0
            try:
                for done in range(1, size + 1):  # noqa: B007 (done counts the skipped)
                    unpacker.skip()
            except Exception as exc:
                good = done - 1  # the elements before the broken one, found again
                rescan = _streaming(view[start:])
                for _ in range(good):
                    rescan.skip()
                end = start + rescan.tell()
                events = self._receive_typed(_array(good, view[start:end]), offset=index)
                events.append(
                    Malformed(
                        f"undecodable MessagePack frame of {len(frame)} bytes at element "
                        f"{index + done - 1} of {count}: {_explain(exc)}"
                    )
                )
                yield events
                return
            end = unpacker.tell()
            yield self._receive_typed(_array(size, view[start:end]), offset=index)
            start, index = end, index + size

    def _read_elements(self, elements: list[msgspec.Raw], offset: int = 0) -> list[Event]:
        """Element by element, in the forms asked for now; the dict rules judge the rest.

        A message the model form has no source for keeps its dict (the model is
        validated from it), whether or not the raw form is wanted.
        """
        forms = self._forms
        typed = self._typed
        want_raw, want_model = "raw" in forms, "model" in forms
        news = self.kind is StreamKind.NEWS
        events: list[Event] = []
        batch: list[tuple[str, str, Any]] = []
        columns: dict[str, list[Any]] = {form: [] for form, _ in typed}

        def flush() -> None:
            nonlocal batch, columns
            events.append(DataBatch(batch, columns.get("struct"), columns.get("model")))
            batch, columns = [], {form: [] for form, _ in typed}

        for index, element in enumerate(elements, offset):
            found: dict[str, Any] = {}
            first: tuple[Decoders, Any] | None = None
            problem = ""
            for form, decoders in typed:
                try:
                    found[form] = one = decoders.one.decode(element)
                except decoders.error as exc:
                    found[form] = None
                    problem = problem or str(exc)[:160]
                else:
                    first = first or (decoders, one)
            keep_dict = want_raw or (want_model and found["model"] is None)
            msg: Any = None
            if keep_dict or first is None:
                try:
                    msg = msgpack.unpackb(element)
                except Exception as exc:
                    events.append(Malformed(f"element {index}: undecodable: {_explain(exc)}"))
                    continue
            if first is not None:
                decoders, one = first
                batch.append((decoders.channels[type(one)], "" if news else one.symbol, msg))
                for form, column in columns.items():
                    column.append(found[form])
                continue
            for event in self._read([msg], offset=index):
                if isinstance(event, DataBatch):
                    if want_raw or want_model:
                        batch.extend(event.messages)
                        for column in columns.values():
                            column.extend([None] * len(event.messages))
                    else:  # the struct form alone, and this message has none
                        channel, symbol, _ = event.messages[0]
                        where = f" for {_clip(symbol)}" if symbol else ""
                        events.append(
                            Malformed(f"element {index}: {channel} message{where}: {problem}")
                        )
                    continue
                if batch and not isinstance(event, Malformed):
                    flush()
                events.append(event)
        if batch:
            flush()
        return events

    def _read(self, decoded: list[Any], offset: int = 0) -> list[Event]:
        events: list[Event] = []
        batch: list[tuple[str, str, dict[str, Any]]] = []
        specs = self._specs
        for index, msg in enumerate(decoded, offset):
            if type(msg) is not dict:
                events.append(Malformed(f"element {index}: a {type(msg).__name__}, expected a map"))
                continue
            code = msg.get("T")
            if type(code) is not str:
                what = "has no 'T'" if code is None else f"has a {type(code).__name__} 'T'"
                events.append(Malformed(f"element {index}: message {what}"))
                continue
            spec = specs.get(code)
            if spec is not None:
                channel, required, is_news = spec
                if msg.keys() >= required:
                    if is_news:
                        if type(msg["symbols"]) is list:
                            batch.append((channel, "", msg))
                            continue
                    else:
                        symbol = msg["S"]
                        if type(symbol) is str:
                            batch.append((channel, symbol, msg))
                            continue
                events.append(self._bad_data(index, channel, required, is_news, msg))
                continue
            if code == "success" or code == "error" or code == "subscription":
                event = self._control(index, code, msg)
                if batch and not isinstance(event, Malformed):
                    events.append(DataBatch(batch))
                    batch = []
                events.append(event)
                continue
            self._count_unknown(code)
        if batch:
            events.append(DataBatch(batch))
        return events

    @staticmethod
    def _bad_data(
        index: int, channel: str, required: frozenset[str], is_news: bool, msg: dict[Any, Any]
    ) -> Malformed:
        where = f"element {index}: {channel} message"
        symbol = msg.get("S")
        if symbol is not None and not is_news:
            where += f" for {_clip(symbol)}"
        missing = required - msg.keys()
        if missing:
            fields = ", ".join(repr(name) for name in sorted(missing))
            return Malformed(f"{where} lacks field(s) {fields}")
        if is_news:
            kind = type(msg["symbols"]).__name__
            return Malformed(f"{where}: 'symbols' is a {kind}, expected an array")
        return Malformed(f"{where}: 'S' is a {type(symbol).__name__}, expected a str")

    @staticmethod
    def _control(index: int, code: str, msg: dict[Any, Any]) -> Event:
        if code == "success":
            text = msg.get("msg")
            if text == "connected":
                return Welcome()
            if text == "authenticated":
                return Authenticated()
            return Malformed(f"element {index}: unexpected success message {_clip(text)}")
        if code == "error":
            number = msg.get("code")
            if type(number) is not int:
                return Malformed(
                    f"element {index}: error message with a {type(number).__name__} 'code'"
                )
            text = msg.get("msg")
            return ServerErrorEvent(number, text[:_MAX_TEXT] if isinstance(text, str) else "")
        channels: dict[str, tuple[str, ...]] = {}
        for key, value in msg.items():
            name = _ACK_CHANNELS.get(key) if type(key) is str else None
            if name is None:
                continue
            if type(value) is not list or not all(type(item) is str for item in value):
                return Malformed(
                    f"element {index}: subscription ack {key!r} is not an array of str"
                )
            channels[name] = tuple(value)
        return SubscriptionAck(channels)

    def _count_unknown(self, code: str) -> None:
        key = code[:32]
        counter = self.unknown_types
        if key not in counter and len(counter) >= _MAX_UNKNOWN_KINDS:
            key = _OTHER
        counter[key] += 1


class TradingStreamProtocol:
    """The JSON protocol of the trading stream (``/stream``, ``trade_updates``).

    ::

        protocol = TradingStreamProtocol()
        await ws.send(protocol.auth_message(key_id, secret))
        await ws.send(protocol.subscribe_message({"trade_updates": ["*"]}))
        for event in protocol.receive(await ws.recv()):
            ...

    ``listen`` replaces the whole set of streams, so subscribe always listens to
    ``trade_updates`` and unsubscribe listens to nothing; the symbols are ignored.

    Attributes:
        kind: always :attr:`StreamKind.TRADING`.
    """

    kind = StreamKind.TRADING

    def __repr__(self) -> str:
        return "TradingStreamProtocol()"

    def auth_message(self, key_id: str, secret: str) -> str:
        """Encode ``{"action":"authenticate","data":{"key_id":...,"secret_key":...}}``.

        The result contains the secret: send it, never log it::

            await ws.send(protocol.auth_message(key_id, secret))
        """
        return json.dumps(
            {"action": "authenticate", "data": {"key_id": key_id, "secret_key": secret}}
        )

    def subscribe_message(self, channels: Mapping[str, Iterable[str]]) -> str:
        """Encode ``{"action":"listen","data":{"streams":["trade_updates"]}}``.

        ::

            protocol.subscribe_message({"trade_updates": ["*"]})
        """
        _merge(StreamKind.TRADING, channels)
        return self._listen(["trade_updates"])

    def unsubscribe_message(self, channels: Mapping[str, Iterable[str]]) -> str:
        """Encode ``{"action":"listen","data":{"streams":[]}}`` (stop listening).

        ::

            protocol.unsubscribe_message({"trade_updates": ["*"]})
        """
        _merge(StreamKind.TRADING, channels)
        return self._listen([])

    @staticmethod
    def _listen(streams: list[str]) -> str:
        return json.dumps({"action": "listen", "data": {"streams": streams}})

    def receive_slices(self, frame: bytes | str) -> Iterator[list[Event]]:
        """:meth:`receive` as one slice (trading frames carry one update each)."""
        yield self.receive(frame)

    def receive(self, frame: bytes | str) -> list[Event]:
        """Decode one text or binary JSON frame; never raises on bad input.

        ``authorization`` -> :class:`Authenticated` or ``ServerErrorEvent(402, ...)``;
        ``listening`` -> :class:`SubscriptionAck` (``{"trade_updates": ("*",)}`` or
        ``{}``); ``trade_updates`` -> a one-message :class:`DataBatch` keyed by the
        order's symbol; anything else -> :class:`Malformed`::

            protocol.receive('{"stream":"listening","data":{"streams":["trade_updates"]}}')
            # [SubscriptionAck(channels={'trade_updates': ('*',)})]
        """
        try:
            decoded = json.loads(frame)
        except Exception as exc:
            return [Malformed(f"undecodable JSON frame: {_explain(exc)}")]
        if type(decoded) is not dict:
            return [Malformed(f"frame holds a JSON {type(decoded).__name__}, expected an object")]
        stream = decoded.get("stream")
        data = decoded.get("data")
        if type(stream) is not str:
            return [Malformed("message has no 'stream' name")]
        if type(data) is not dict:
            return [Malformed(f"{_clip(stream)} message has no 'data' object")]
        if stream == "trade_updates":
            order = data.get("order")
            missing = sorted({"event", "order", "timestamp"} - data.keys())
            if missing:
                return [Malformed(f"trade_updates message lacks field(s) {', '.join(missing)}")]
            if type(order) is not dict:
                return [Malformed("trade_updates message: 'order' is not an object")]
            symbol = order.get("symbol")
            return [DataBatch([("trade_updates", symbol if type(symbol) is str else "", data)])]
        if stream == "authorization":
            status = data.get("status")
            if status == "authorized":
                return [Authenticated()]
            if status == "unauthorized":
                text = data.get("message")
                text = text[:_MAX_TEXT] if isinstance(text, str) and text else "unauthorized"
                # The trading stream has no error codes; its text tells a held slot
                # (retried) from bad keys (fatal).
                code = 406 if "connection limit" in text.lower() else 402
                return [ServerErrorEvent(code, text)]
            return [Malformed(f"authorization message with status {_clip(status)}")]
        if stream == "listening":
            streams = data.get("streams")
            if type(streams) is not list:
                return [Malformed("listening message without a 'streams' array")]
            return [
                SubscriptionAck({"trade_updates": ("*",)} if "trade_updates" in streams else {})
            ]
        return [Malformed(f"unknown stream {_clip(stream)}")]


def protocol_for(kind: StreamKind) -> DataStreamProtocol | TradingStreamProtocol:
    """Return a fresh protocol object for ``kind``.

    ::

        protocol_for(StreamKind.TRADING)   # TradingStreamProtocol()
        protocol_for("news")               # DataStreamProtocol('news')
    """
    kind = _kind(kind)
    if kind is StreamKind.TRADING:
        return TradingStreamProtocol()
    return DataStreamProtocol(kind)
