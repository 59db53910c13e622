"""The typed fast form: immutable msgspec structs decoded straight from the wire.

One class per market-data message, with alpaca-py's attribute names
(``quote.symbol``, ``quote.bid_price``, ``quote.timestamp`` as an aware UTC
``datetime``...) but none of its validation cost: a frame of MessagePack goes
to a list of structs in one C call, without building a dict first::

    from alpaca_di.protocol.structs import Quote, decoders_for
    from alpaca_di.protocol import StreamKind

    messages = decoders_for(StreamKind.STOCK).frame.decode(frame)
    quote = messages[0]
    isinstance(quote, Quote), quote.bid_price, quote.timestamp.tzinfo   # True, 189.5, UTC

Subscribe with ``form="struct"`` to receive them (see the *Message forms*
section of ``docs/concepts.md``). What differs from alpaca-py's models:

* enum-like fields (``exchange``, ``tape``, ``conditions``, status codes) are
  plain ``str``: a value Alpaca adds tomorrow never fails a decode;
* sequences are tuples (``conditions``, ``symbols``, ``bids``), so every struct
  is immutable and hashable, and the garbage collector never tracks one
  (``gc=False``: no struct can be part of a reference cycle);
* timestamps are rounded to the nearest microsecond (alpaca-py truncates the
  nanoseconds): the two can differ by 1 µs;
* updated and daily bars are :class:`UpdatedBar` / :class:`DailyBar`,
  subclasses of :class:`Bar`; LULD bands are :class:`Luld` (alpaca-py has no model);
* extra wire fields alpaca-py drops are kept where they name something
  (``Trade.taker_side`` of crypto trades).
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, Union

import msgpack
import msgspec

from alpaca_di.protocol.channels import CHANNEL_BY_TYPE, CHANNELS, StreamKind, _kind

__all__ = [
    "Bar",
    "DailyBar",
    "Decoders",
    "Luld",
    "MarketStruct",
    "News",
    "Orderbook",
    "OrderbookLevel",
    "Quote",
    "Trade",
    "TradeCancel",
    "TradeCorrection",
    "TradingStatus",
    "UpdatedBar",
    "channel_of",
    "decoders_for",
    "from_raw",
]

_field = msgspec.field
_Conditions: TypeAlias = tuple[str, ...] | str | None  # stocks: a list; options: one code


class _Message(msgspec.Struct, frozen=True, gc=False, tag_field="T"):
    """Common base: immutable, untracked by the GC, tagged by the wire's ``T``."""


class Trade(_Message, tag="t", frozen=True, gc=False):
    """A trade (``T: "t"``); alpaca-py: ``alpaca.data.models.Trade``.

    ::

        trade.symbol, trade.price, trade.size, trade.exchange, trade.timestamp
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    price: float = _field(name="p")
    size: float = _field(name="s")
    exchange: str | None = _field(default=None, name="x")
    id: int | None = _field(default=None, name="i")
    conditions: _Conditions = _field(default=None, name="c")
    tape: str | None = _field(default=None, name="z")
    taker_side: str | None = _field(default=None, name="tks")


class Quote(_Message, tag="q", frozen=True, gc=False):
    """A quote (``T: "q"``); alpaca-py: ``alpaca.data.models.Quote``.

    ::

        quote.symbol, quote.bid_price, quote.ask_price, quote.timestamp
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    bid_price: float = _field(name="bp")
    bid_size: float = _field(name="bs")
    ask_price: float = _field(name="ap")
    ask_size: float = _field(name="as")
    bid_exchange: str | None = _field(default=None, name="bx")
    ask_exchange: str | None = _field(default=None, name="ax")
    conditions: _Conditions = _field(default=None, name="c")
    tape: str | None = _field(default=None, name="z")


class Bar(_Message, tag="b", frozen=True, gc=False):
    """A minute bar (``T: "b"``); alpaca-py: ``alpaca.data.models.Bar``.

    ::

        bar.open, bar.high, bar.low, bar.close, bar.volume, bar.vwap
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    open: float = _field(name="o")
    high: float = _field(name="h")
    low: float = _field(name="l")
    close: float = _field(name="c")
    volume: float = _field(name="v")
    trade_count: float | None = _field(name="n")
    vwap: float | None = _field(name="vw")


class UpdatedBar(Bar, tag="u", frozen=True, gc=False):
    """A corrected minute bar (``T: "u"``, channel ``updated_bars``); a :class:`Bar`."""


class DailyBar(Bar, tag="d", frozen=True, gc=False):
    """The day's bar so far (``T: "d"``, channel ``daily_bars``); a :class:`Bar`."""


class TradingStatus(_Message, tag="s", frozen=True, gc=False):
    """A halt or resume (``T: "s"``); alpaca-py: ``alpaca.data.models.TradingStatus``.

    ::

        status.status_code, status.reason_message
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    status_code: str = _field(name="sc")
    status_message: str = _field(name="sm")
    reason_code: str = _field(name="rc")
    reason_message: str = _field(name="rm")
    tape: str = _field(name="z")


class Luld(_Message, tag="l", frozen=True, gc=False):
    """Limit up / limit down price bands (``T: "l"``); alpaca-py has no model for them.

    ::

        luld.limit_up_price, luld.limit_down_price, luld.indicator
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    limit_up_price: float = _field(name="u")
    limit_down_price: float = _field(name="d")
    indicator: str = _field(name="i")
    tape: str = _field(name="z")


class TradeCorrection(_Message, tag="c", frozen=True, gc=False):
    """A corrected trade (``T: "c"``); alpaca-py: ``TradeCorrection``.

    ::

        correction.original_price, correction.corrected_price
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    exchange: str = _field(name="x")
    original_price: float = _field(name="op")
    original_size: float = _field(name="os")
    original_conditions: tuple[str, ...] = _field(name="oc")
    corrected_price: float = _field(name="cp")
    corrected_size: float = _field(name="cs")
    corrected_conditions: tuple[str, ...] = _field(name="cc")
    tape: str = _field(name="z")
    original_id: int | None = _field(default=None, name="oi")
    corrected_id: int | None = _field(default=None, name="ci")


class TradeCancel(_Message, tag="x", frozen=True, gc=False):
    """A cancelled or erroneous trade (``T: "x"``); alpaca-py: ``TradeCancel``.

    ::

        cancel.price, cancel.action
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    exchange: str = _field(name="x")
    price: float = _field(name="p")
    size: float = _field(name="s")
    tape: str = _field(name="z")
    id: int | None = _field(default=None, name="i")
    action: str | None = _field(default=None, name="a")


class OrderbookLevel(msgspec.Struct, frozen=True, gc=False):
    """One price level of an :class:`Orderbook`; alpaca-py: ``OrderbookQuote``."""

    price: float = _field(name="p")
    size: float = _field(name="s")


class Orderbook(_Message, tag="o", frozen=True, gc=False):
    """A crypto order book snapshot or update (``T: "o"``); alpaca-py: ``Orderbook``.

    ::

        book.bids[0].price, book.asks[0].size, book.reset
    """

    symbol: str = _field(name="S")
    timestamp: _dt.datetime = _field(name="t")
    bids: tuple[OrderbookLevel, ...] = _field(name="b")
    asks: tuple[OrderbookLevel, ...] = _field(name="a")
    reset: bool = _field(default=False, name="r")


class News(_Message, tag="n", frozen=True, gc=False):
    """A news article (``T: "n"``); alpaca-py: ``alpaca.data.models.News``.

    ::

        article.headline, article.symbols, article.created_at
    """

    id: int
    headline: str
    summary: str
    author: str
    created_at: _dt.datetime
    updated_at: _dt.datetime
    url: str | None
    content: str
    symbols: tuple[str, ...]
    source: str


MarketStruct: TypeAlias = (
    Trade | Quote | Bar | TradingStatus | Luld | TradeCorrection | TradeCancel | Orderbook | News
)
"""Any struct of the fast form (``UpdatedBar`` and ``DailyBar`` are ``Bar``)."""

_BY_CODE: dict[str, type[Any]] = {
    "t": Trade,
    "q": Quote,
    "b": Bar,
    "u": UpdatedBar,
    "d": DailyBar,
    "s": TradingStatus,
    "l": Luld,
    "c": TradeCorrection,
    "x": TradeCancel,
    "o": Orderbook,
    "n": News,
}
_CHANNEL_OF: dict[type[Any], str] = {cls: CHANNEL_BY_TYPE[code] for code, cls in _BY_CODE.items()}
_CLASS_OF_CHANNEL: dict[str, type[Any]] = {
    channel: _BY_CODE[code] for code, channel in CHANNEL_BY_TYPE.items()
}


def channel_of(message: Any) -> str:
    """The Python channel a struct arrived on: ``channel_of(quote) == "quotes"``.

    ::

        channel_of(DailyBar(...))   # "daily_bars"
    """
    return _CHANNEL_OF[type(message)]


@dataclass(frozen=True)
class Decoders:
    """The msgspec decoders of one stream kind (built once, shared; thread-safe).

    Attributes:
        frame: a whole frame -> ``list`` of structs (fails on any control message,
            unknown ``T`` or bad value: the caller then goes element by element).
        one: one element (``msgspec.Raw``) -> its struct.
        elements: a whole frame -> ``list[msgspec.Raw]``, one undecoded view per element.
        channels: struct class -> Python channel, for this kind.
        error: what the decoders raise (``msgspec.DecodeError``; validation
            errors are a subclass).

    Example::

        decoders = decoders_for(StreamKind.CRYPTO)
        books = decoders.frame.decode(frame)
    """

    frame: msgspec.msgpack.Decoder[Any]
    one: msgspec.msgpack.Decoder[Any]
    elements: msgspec.msgpack.Decoder[list[msgspec.Raw]]
    channels: Mapping[type[Any], str]
    error: type[Exception] = msgspec.DecodeError

    @classmethod
    def of(cls, kind: StreamKind, channels: Mapping[type[Any], str]) -> Decoders:
        """Decoders of ``channels``' classes (each mapped to its channel) for ``kind``."""
        classes = tuple(channels)
        if not classes:
            raise ValueError(f"the {kind.value} stream has no market-data messages")
        union: Any = Union[classes]  # noqa: UP007 (a runtime union of classes)
        return cls(
            frame=msgspec.msgpack.Decoder(list[union]),
            one=msgspec.msgpack.Decoder(union),
            elements=msgspec.msgpack.Decoder(list[msgspec.Raw]),
            channels=channels,
        )


@functools.cache
def decoders_for(kind: StreamKind | str) -> Decoders:
    """The :class:`Decoders` of a data stream kind (cached).

    ::

        decoders_for("stock").one.decode(element)   # Quote(symbol='AAPL', ...)
    """
    kind = _kind(kind)
    valid = CHANNELS[kind]
    classes = [cls for code, cls in _BY_CODE.items() if CHANNEL_BY_TYPE[code] in valid]
    return Decoders.of(kind, {cls: _CHANNEL_OF[cls] for cls in classes})


@functools.cache
def _decoder_of(channel: str) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(_CLASS_OF_CHANNEL[channel])


def from_raw(channel: str, raw: Mapping[str, Any]) -> Any:
    """The struct of a message already decoded into a dict (a fake's, a scale-out follower's).

    Slower than decoding from the wire (the dict is re-encoded first), for the
    sources that hand dicts over. ``msgpack.Timestamp`` and aware ``datetime``
    values are both accepted.

    Raises:
        msgspec.ValidationError: a field is missing or of the wrong type.
        ValueError: ``channel`` has no struct (``trade_updates``), or a value
            cannot be encoded (a naive datetime...).

    Example::

        from_raw("quotes", {"T": "q", "S": "AAPL", "bp": 1.0, ...})   # Quote(...)
    """
    if channel not in _CLASS_OF_CHANNEL:
        raise ValueError(f"channel {channel!r} has no struct form")
    try:
        data = msgpack.packb(raw, datetime=True)
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {str(exc)[:120]}") from None
    return _decoder_of(channel).decode(data)


# -- backfilled bars (the gap tracker's, never decoded from a frame) ------------------------


class BackfilledBar(Bar, tag="b+backfilled", frozen=True, gc=False):
    """A minute bar the stream missed (the connection was down), fetched through REST.

    A :class:`Bar` in every other respect: check ``getattr(bar, "backfilled", False)``
    (or ``isinstance(bar, BackfilledBar)``). Delivered only to ``form="struct"``
    subscriptions made with ``backfill=True`` (``docs/gaps-and-backfill.md``)::

        if getattr(bar, "backfilled", False):
            log.info("recovered after a disconnect", symbol=bar.symbol)
    """

    backfilled: bool = True


class BackfilledDailyBar(DailyBar, tag="d+backfilled", frozen=True, gc=False):
    """A daily bar fetched through REST after a gap; a :class:`DailyBar`, ``backfilled`` True."""

    backfilled: bool = True


_CHANNEL_OF[BackfilledBar] = "bars"
_CHANNEL_OF[BackfilledDailyBar] = "daily_bars"
_BACKFILLED_OF: dict[str, type[Any]] = {"bars": BackfilledBar, "daily_bars": BackfilledDailyBar}


def backfilled(channel: str, raw: Mapping[str, Any]) -> Any:
    """The marked struct of a backfilled bar given as a dict (``bars`` or ``daily_bars``).

    Raises as :func:`from_raw` does; ``ValueError`` for another channel::

        backfilled("bars", {"T": "b", "S": "AAPL", "t": stamp, "o": 1.0, ...})  # BackfilledBar
    """
    cls = _BACKFILLED_OF.get(channel)
    if cls is None:
        raise ValueError(f"only bars and daily_bars are backfilled, not {channel!r}")
    bar = from_raw(channel, raw)
    return cls(**{name: getattr(bar, name) for name in bar.__struct_fields__})


__all__ += ["BackfilledBar", "BackfilledDailyBar", "backfilled"]
