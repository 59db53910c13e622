"""Turn raw wire messages into alpaca-py's own models, fast and without mutation.

The result is equal to what alpaca-py's ``DataStream._cast`` (or ``TradingStream``)
builds for the same message, but the raw dict is left untouched (it is shared by
every consumer) and the work per message is smaller::

    from alpaca_di.protocol.models import parse

    quote = parse("quotes", "AAPL", raw)      # alpaca.data.models.Quote
    update = parse("trade_updates", "AAPL", raw_update)   # TradeUpdate

Why it is faster than alpaca-py: the models' own ``__init__`` renames the short
keys with a dict comprehension, re-packs them as keyword arguments and only then
validates. Here the renaming uses a precomputed mapping and the dict goes straight
to the model's compiled pydantic validator (the very call ``BaseModel.__init__``
makes), so every field is validated exactly as before.
"""

from __future__ import annotations

import copy
import datetime as _dt
import enum
import functools
import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, Union, get_args, get_origin

import msgspec
from alpaca.data.mappings import (
    BAR_MAPPING,
    ORDERBOOK_MAPPING,
    QUOTE_MAPPING,
    TRADE_CANCEL_MAPPING,
    TRADE_CORRECTION_MAPPING,
    TRADE_MAPPING,
    TRADING_STATUS_MAPPING,
)
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
from pydantic import BaseModel, ValidationError

from alpaca_di.errors import ProtocolError

if TYPE_CHECKING:
    from alpaca_di.protocol.channels import StreamKind
    from alpaca_di.protocol.structs import Decoders

__all__ = [
    "BackfilledBar",
    "Lenient",
    "ModelMessage",
    "ReconciledTradeUpdate",
    "build",
    "is_lenient",
    "model_sources",
    "parse",
]

_Parser = Callable[[str, Mapping[str, Any]], object]

ModelMessage: TypeAlias = Union[  # noqa: UP007 (alpaca-py's classes, for any Python)
    Trade,
    Quote,
    Bar,
    TradingStatus,
    TradeCorrection,
    TradeCancel,
    Orderbook,
    News,
    TradeUpdate,
    dict[str, Any],
]
"""What a ``form="model"`` subscription delivers: alpaca-py's models (LULD bands,
which alpaca-py has no model for, as a dict); narrow it with ``isinstance``::

    message = sub.get()
    if isinstance(message, Quote):
        print(message.bid_price)
"""

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_timedelta = _dt.timedelta
_datetime = _dt.datetime
_UTC = _dt.timezone.utc
_new = object.__new__
_MAX_ERRORS = 5
_MISSING: Any = object()


class _BadTime(TypeError):
    def __init__(self, key: str, value: object) -> None:
        super().__init__(f"{key!r} is a {type(value).__name__}, expected a msgpack Timestamp")


# (seconds, year, month, day, hour, minute, second) of the last Timestamp converted:
# the messages of a frame share their second. One tuple, replaced whole, so threads
# converting at once never pair one second with another second's fields.
_last_second: tuple[int | None, int, int, int, int, int, int] = (None, 1970, 1, 1, 0, 0, 0)


def _utc(seconds: int, nanoseconds: int) -> _dt.datetime:
    """``Timestamp(seconds, nanoseconds).to_datetime()``: truncated to the microsecond, cheaply."""
    global _last_second
    last = _last_second
    if last[0] != seconds:
        moment = _EPOCH + _timedelta(seconds=seconds)
        last = _last_second = (
            seconds,
            moment.year,
            moment.month,
            moment.day,
            moment.hour,
            moment.minute,
            moment.second,
        )
    _, year, month, day, hour, minute, second = last
    return _datetime(year, month, day, hour, minute, second, nanoseconds // 1000, _UTC)


def _stamp_to_datetime(stamp: Timestamp) -> _dt.datetime:
    """``Timestamp.to_datetime()``, equal to it to the microsecond, at a fraction of its cost."""
    return _utc(stamp.seconds, stamp.nanoseconds)


def _to_datetime(key: str, value: Any) -> Any:
    """``msgpack.Timestamp`` -> aware UTC datetime, exactly as ``Timestamp.to_datetime``.

    ``datetime`` values pass through and RFC 3339 strings are left for pydantic to
    parse (JSON-mode payloads); anything else is an error.
    """
    if type(value) is Timestamp:
        return _stamp_to_datetime(value)
    if isinstance(value, (_dt.datetime, str)):
        return value
    raise _BadTime(key, value)


class Lenient:
    """Marks a model built leniently: some value was one alpaca-py's model does not accept.

    Alpaca adds enum values over time (an order status, an asset class, a time in
    force...). A message carrying one is still delivered: as an instance of a
    subclass of the usual alpaca-py model (so ``isinstance(update, TradeUpdate)``
    holds), every value that validates converted as usual, and each value that does
    not kept as it came (usually the new value's string)::

        update = parse("trade_updates", "AAPL", raw)
        isinstance(update, TradeUpdate)        # True
        is_lenient(update)                     # True: order.status is "pending_hold"
    """


def is_lenient(model: object) -> bool:
    """True when ``model`` was built leniently (see :class:`Lenient`)."""
    return isinstance(model, Lenient)


@functools.cache
def _lenient_class(cls: Any) -> Any:
    if issubclass(cls, Lenient):
        return cls
    return type(f"Lenient{cls.__name__}", (cls, Lenient), {"__module__": __name__})


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Order``, ``Optional[Order]``, ``List[Order]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _known_value(annotation: Any) -> Any:
    """A value the enum or ``Literal`` inside ``annotation`` accepts."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return next(iter(annotation)).value
    if get_origin(annotation) is Literal:
        return get_args(annotation)[0]
    for arg in get_args(annotation):
        value = _known_value(arg)
        if value is not _MISSING:
            return value
    return _MISSING


def _annotation_at(cls: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    annotation: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue  # an index into a list: the element's annotation is the same model
        model = _model_in(annotation)
        if model is None or part not in model.model_fields:
            return _MISSING
        annotation = model.model_fields[part].annotation
    return annotation


def _step(container: Any, part: int | str) -> Any:
    if isinstance(part, int) or isinstance(container, dict):
        return container[part]
    return getattr(container, part)


def _lenient(cls: type[BaseModel], data: dict[str, Any], exc: ValidationError) -> object:
    """Validate ``data`` with each unknown enum value swapped for a known one, then put
    the unknown values back, so every other field goes through the model's own
    validators exactly as usual."""
    unknown = [tuple(error["loc"]) for error in exc.errors()]
    patched = copy.deepcopy(data)
    for loc in unknown:
        known = _known_value(_annotation_at(cls, loc))
        if known is _MISSING or not loc:
            raise exc
        parent: Any = patched
        for part in loc[:-1]:
            parent = _step(parent, part)
        parent[loc[-1]] = known
    instance = _new(cls)
    cls.__pydantic_validator__.validate_python(patched, self_instance=instance)
    for loc in unknown:
        original: Any = data
        for part in loc:
            original = _step(original, part)
        owner: Any = instance
        for part in loc[:-1]:
            owner = _step(owner, part)
        owner.__dict__[loc[-1]] = original
        owner.__class__ = _lenient_class(owner.__class__)
    instance.__class__ = _lenient_class(cls)
    return instance


# Errors of values the model lists but the message goes beyond: Alpaca adding a value.
_UNKNOWN_VALUE_ERRORS = frozenset({"enum", "literal_error"})


def _validate_or_lenient(cls: Any, validate_python: Any, data: dict[str, Any]) -> object:
    """Validate ``data`` into ``cls``; if only unknown enum values fail, build it leniently.

    An unknown value is a string the enum does not list (what Alpaca sends when it
    adds one). Any other error (a price that is not a number, a map where a status
    belongs, a bad timestamp) is a malformed message and raises as before.
    """
    instance = _new(cls)
    try:
        validate_python(data, self_instance=instance)
    except ValidationError as exc:
        if all(
            error["type"] in _UNKNOWN_VALUE_ERRORS and isinstance(error["input"], str)
            for error in exc.errors()
        ):
            return _lenient(cls, data, exc)
        raise
    return instance


def _mapped(cls: Any, mapping: Mapping[str, str]) -> _Parser:
    """A parser for the data models built as ``cls(symbol, raw)``."""
    pairs = tuple(mapping.items())  # (wire key, field name)
    # The model's compiled validator, as BaseModel.__init__ calls it (minus the renaming).
    validate_python = cls.__pydantic_validator__.validate_python

    def parse_mapped(symbol: str, raw: Mapping[str, Any]) -> object:
        data: dict[str, Any] = {name: raw[key] for key, name in pairs if key in raw}
        data["symbol"] = symbol
        stamp: Any = data.get("timestamp", _MISSING)
        if type(stamp) is Timestamp:
            data["timestamp"] = _stamp_to_datetime(stamp)
        elif stamp is not _MISSING:
            data["timestamp"] = _to_datetime("t", stamp)
        return _validate_or_lenient(cls, validate_python, data)

    return parse_mapped


def _news() -> _Parser:
    validate_python = News.__pydantic_validator__.validate_python

    def parse_news(symbol: str, raw: Mapping[str, Any]) -> object:
        data = dict(raw)
        for key in ("t", "created_at", "updated_at"):
            if key in data:
                data[key] = _to_datetime(key, data[key])
        data.setdefault("symbols", [])
        return _validate_or_lenient(News, validate_python, data)

    return parse_news


def _luld(symbol: str, raw: Mapping[str, Any]) -> object:
    data = dict(raw)
    if "t" in data:
        data["t"] = _to_datetime("t", data["t"])
    return data


class ReconciledTradeUpdate(TradeUpdate):
    """A ``TradeUpdate`` rebuilt from the REST API because the stream missed it.

    Behaves like any ``TradeUpdate``; check ``getattr(update, "reconciled", False)``
    (or ``isinstance(update, ReconciledTradeUpdate)``) to tell it apart. On the
    wire (a scale-out leader's trade-update stream) it is a trade update whose
    raw form carries ``"reconciled": true``; :func:`parse` builds this class
    for it.

    Example::

        def on_update(update: TradeUpdate) -> None:
            if getattr(update, "reconciled", False):
                log.info("recovered after a disconnect", order=str(update.order.id))
    """

    reconciled: bool = True


class BackfilledBar(Bar):
    """A ``Bar`` the stream missed (the connection was down), fetched through the REST API.

    Behaves like any ``Bar``; check ``getattr(bar, "backfilled", False)`` (or
    ``isinstance(bar, BackfilledBar)``) to tell it apart. Its raw form carries
    ``"backfilled": true``; :func:`parse` builds this class for it. Delivered only
    to subscriptions made with ``backfill=True`` (see ``docs/gaps-and-backfill.md``).

    Example::

        def on_bar(bar: Bar) -> None:
            if getattr(bar, "backfilled", False):
                log.info("recovered after a disconnect", symbol=bar.symbol)
    """

    backfilled: bool = True


def _bars() -> _Parser:
    live = _mapped(Bar, BAR_MAPPING)
    backfilled = _mapped(BackfilledBar, BAR_MAPPING)

    def parse_bar(symbol: str, raw: Mapping[str, Any]) -> object:
        return backfilled(symbol, raw) if raw.get("backfilled") is True else live(symbol, raw)

    return parse_bar


def _trade_update() -> _Parser:
    validate_python = TradeUpdate.__pydantic_validator__.validate_python
    validate_reconciled = ReconciledTradeUpdate.__pydantic_validator__.validate_python

    def parse_trade_update(symbol: str, raw: Mapping[str, Any]) -> object:
        if raw.get("reconciled") is True:
            return _validate_or_lenient(ReconciledTradeUpdate, validate_reconciled, dict(raw))
        return _validate_or_lenient(TradeUpdate, validate_python, dict(raw))

    return parse_trade_update


# The alpaca-py model of each market-data channel (bars: a live bar's; backfilled
# bars come as dicts).
_MODEL_OF_CHANNEL: dict[str, type[BaseModel]] = {
    "trades": Trade,
    "quotes": Quote,
    "bars": Bar,
    "updated_bars": Bar,
    "daily_bars": Bar,
    "statuses": TradingStatus,
    "corrections": TradeCorrection,
    "cancel_errors": TradeCancel,
    "orderbooks": Orderbook,
    "news": News,
}
_M = _MODEL_OF_CHANNEL
_PARSERS: dict[str, _Parser] = {
    "trades": _mapped(_M["trades"], TRADE_MAPPING),
    "quotes": _mapped(_M["quotes"], QUOTE_MAPPING),
    "bars": _bars(),
    "updated_bars": _mapped(_M["updated_bars"], BAR_MAPPING),
    "daily_bars": _bars(),
    "statuses": _mapped(_M["statuses"], TRADING_STATUS_MAPPING),
    "corrections": _mapped(_M["corrections"], TRADE_CORRECTION_MAPPING),
    "cancel_errors": _mapped(_M["cancel_errors"], TRADE_CANCEL_MAPPING),
    "orderbooks": _mapped(_M["orderbooks"], ORDERBOOK_MAPPING),
    "lulds": _luld,
    "news": _news(),
    "trade_updates": _trade_update(),
}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _BadTime):
        return str(exc)
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            details = errors(include_url=False, include_input=False)
        except Exception:  # not a pydantic ValidationError after all
            details = None
        if isinstance(details, list):
            parts = [
                f"{'.'.join(str(part) for part in item.get('loc', ())) or '<model>'}: "
                f"{item.get('msg', '?')}"
                for item in details[:_MAX_ERRORS]
            ]
            more = len(details) - _MAX_ERRORS
            if more > 0:
                parts.append(f"and {more} more")
            return "; ".join(parts)
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def parse(channel: str, symbol: str, raw: Mapping[str, Any]) -> object:
    """Build the alpaca-py object for one message of ``channel``.

    Returns ``Trade``, ``Quote``, ``Bar`` (bars, updated and daily bars),
    ``TradingStatus``, ``TradeCorrection``, ``TradeCancel``, ``Orderbook``, ``News``,
    ``TradeUpdate``, or for ``lulds`` a copy of the dict with ``t`` as a datetime
    (alpaca-py has no LULD model). ``msgpack.Timestamp`` values (``t``,
    ``created_at``, ``updated_at``) become aware UTC datetimes; ``raw`` itself is
    never modified::

        quote = parse("quotes", "AAPL", {"T": "q", "S": "AAPL", "bp": 1.0, ...})
        quote.bid_price   # 1.0

    A value the model does not accept (an enum value newer than alpaca-py) does not
    lose the message: it is built leniently, still an instance of the model's class,
    with that value kept as it came (see :class:`Lenient`, :func:`is_lenient`).

    Raises:
        ProtocolError: no model can be built (a required field is missing, a
            timestamp of the wrong type...); the text names the channel, the symbol
            and the bad fields, never the whole payload.
        ValueError: ``channel`` is not a channel name.
    """
    parser = _PARSERS.get(channel)
    if parser is None:
        valid = ", ".join(sorted(_PARSERS))
        raise ValueError(f"unknown channel {channel!r}; valid channels: {valid}")
    try:
        return parser(symbol, raw)
    except _INVALID as exc:
        raise _invalid(channel, symbol, exc) from None


# What building a model raises for a message no model can be built from.
_INVALID = (ValueError, TypeError, KeyError, AttributeError, OverflowError)


def _invalid(channel: str, symbol: object, exc: BaseException) -> ProtocolError:
    if isinstance(symbol, str):
        shown = repr(symbol if len(symbol) <= 40 else symbol[:37] + "...")
    else:
        shown = f"<{type(symbol).__name__}>"
    # Raised ``from None``: the pydantic error would quote parts of the payload.
    return ProtocolError(f"invalid {channel} message for {shown}: {_describe(exc)}")


# -- models from model sources (alpaca_di.protocol.sources), without validation -------------


def build(channel: str, source: Any) -> object:
    """The alpaca-py model of a model source: equal to :func:`parse` of the same message.

    The codec's ``"model"`` form decodes a message into a source only when every
    value is one alpaca-py's validators would take as it is (a float for a float,
    a str for a str...); so here each value is only converted as the validator
    would convert it (timestamps truncated to the microsecond, tuples to lists,
    enum values to their members) and the model is put together without
    validating again. Values, field types, ``model_fields_set`` and the class
    (:class:`Lenient` for an exchange alpaca-py does not know) are those of
    :func:`parse`::

        [source] = model_sources("stock").frame.decode(frame)
        quote = build("quotes", source)      # alpaca.data.models.Quote

    Raises:
        ProtocolError: no model can be built (a timestamp that is not one, or
            out of ``datetime``'s range), worded as :func:`parse` words it.
        ValueError: ``channel`` has no model (``lulds``, ``trade_updates``).
    """
    builder = _BUILDERS.get((channel, type(source)))
    if builder is None:
        builder = _builder(channel, type(source))
    try:
        return builder(source)
    except _INVALID as exc:
        raise _invalid(channel, getattr(source, "symbol", ""), exc) from None


class _BadExtension(TypeError):
    def __init__(self, key: str, code: int, size: int) -> None:
        super().__init__(
            f"{key!r} is a MessagePack extension of type {code} and {size} bytes, "
            "expected a timestamp"
        )


def _ext_to_datetime(key: str, ext: Any) -> _dt.datetime:
    """A MessagePack timestamp extension -> what ``msgpack.Timestamp.to_datetime`` gives."""
    data: bytes = ext.data
    size = len(data)
    if ext.code == -1:
        if size == 8:  # 30 bits of nanoseconds, then 34 of seconds: the common form
            value = int.from_bytes(data, "big")
            seconds, nanoseconds = value & 0x3_FFFF_FFFF, value >> 34
            last = _last_second
            if last[0] == seconds and nanoseconds < 1_000_000_000:  # _utc's cache, inlined
                _, year, month, day, hour, minute, second = last
                micro = nanoseconds // 1000
                return _datetime(year, month, day, hour, minute, second, micro, _UTC)
        elif size == 4:
            seconds, nanoseconds = int.from_bytes(data, "big"), 0
        elif size == 12:
            nanoseconds = int.from_bytes(data[:4], "big")
            seconds = int.from_bytes(data[4:], "big", signed=True)
        else:
            raise _BadExtension(key, ext.code, size)
        if nanoseconds < 1_000_000_000:
            return _utc(seconds, nanoseconds)
        raise ValueError(f"{key!r} is a timestamp of {nanoseconds} nanoseconds past its second")
    raise _BadExtension(key, ext.code, size)


_Convert = Callable[[Any], Any]


def _as_list(value: Any) -> Any:
    return list(value) if type(value) is tuple else value


_UNSET: Any = msgspec.UNSET
# Annotations whose validator returns a value of the source's type as it is.
_AS_IS = frozenset({str, float, int, bool})
# BaseModel's slots, set as model_construct sets them (through the descriptors: faster).
_SLOTS = BaseModel.__dict__
_set_dict = _SLOTS["__dict__"].__set__
_set_fields = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__


def _converter(annotation: Any, name: str) -> Any:
    """How alpaca-py's validator turns a source's value of one field into the model's.

    ``None``: the value as it is; ``_MISSING``: no rule here (the model is then validated).
    """
    if annotation is _dt.datetime:
        return functools.partial(_ext_to_datetime, name)
    if annotation in _AS_IS:
        return None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Union:
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # Optional[x]: None stays None
            return _converter(options[0], name)
        others = [arg for arg in options if arg is not str]
        if len(others) < len(options):  # str is an option: a str input matches it exactly
            if all(isinstance(arg, type) and issubclass(arg, enum.Enum) for arg in others):
                return None  # Union[str, Exchange]: the str stays a str (smart mode)
            if [(get_origin(arg), get_args(arg)) for arg in others] == [(list, (str,))]:
                return _as_list  # Union[List[str], str]
        return _MISSING
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        members = {member.value: member for member in annotation}
        return lambda value: members.get(value, value)  # unknown: kept, in a Lenient model
    if origin is list and args == (str,):
        return list
    if origin is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        level = _builder_of(args[0], None)
        return lambda levels: [level(one) for one in levels]
    return _MISSING


def _is_enum(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, enum.Enum)


def _builder_of(cls: type[BaseModel], source_type: type[Any] | None) -> _Convert:
    """A function building ``cls`` from a source of ``source_type`` without validation.

    ``source_type`` ``None``: a nested struct carrying every field (an order book
    level). Falls back to the model's validator when a field has no rule in
    :func:`_converter` or the source lacks a field it needs (an alpaca-py
    version with a new kind of field).
    """
    fields = cls.model_fields
    source_fields: tuple[Any, ...] = ()
    if source_type is None:
        present = list(fields)
        optional: tuple[tuple[str, Any], ...] = ()
    else:
        source_fields = msgspec.structs.fields(source_type)
        present = [name for name in fields if name in {f.name for f in source_fields}]
        optional = tuple(
            (f.name, fields[f.name].default)
            for f in source_fields
            if f.name in fields and not f.required
        )
    absent = {name: field.default for name, field in fields.items() if name not in present}
    if any(field.is_required() for name, field in fields.items() if name in absent) or list(
        fields
    ) != present + list(absent):  # a needed field, or not the model's order: validate
        return _validating_builder(cls)
    converters = {name: _converter(field.annotation, name) for name, field in fields.items()}
    if _MISSING in converters.values():
        return _validating_builder(cls)
    times = tuple(name for name, field in fields.items() if field.annotation is _dt.datetime)
    converted = tuple(
        (name, convert)
        for name, convert in converters.items()
        if convert is not None and name not in times and name in present
    )
    enums = tuple(name for name, field in fields.items() if _is_enum(field.annotation))
    # ``__dict__`` in the model's field order, as validation fills it (``str(model)``,
    # iteration); the source's differs where msgspec wants required fields first.
    order: tuple[str, ...] | None = tuple(present)
    extra: tuple[str, ...] = ()  # source fields the model has not (crypto's taker_side)
    declared = tuple(f.name for f in source_fields)
    if source_type is not None and declared[: len(present)] == order:
        order, extra = None, declared[len(present) :]
    every_field = frozenset(present)
    lenient = _lenient_class(cls)
    asdict = msgspec.structs.asdict
    # Market data has one timestamp: converted without a loop (news has two).
    time, times = (times[0], ()) if len(times) == 1 else (None, times)
    to_datetime = _ext_to_datetime
    # The optional fields' values, to look for UNSET among them only (``in`` compares
    # with ``==``: half the cost of looking through every value).
    optional_values = _values_of(tuple(name for name, _ in optional))

    def build_model(source: Any) -> object:
        values = asdict(source)
        if order is not None:
            values = {name: values[name] for name in order}
        for name in extra:
            del values[name]
        fields_set = set(every_field)
        if optional_values is not None and _UNSET in optional_values(values):  # rare
            for name, default in optional:
                if values[name] is _UNSET:  # not in the message: the default, as validated
                    values[name] = default
                    fields_set.discard(name)
        if time is not None:
            values[time] = to_datetime(time, values[time])
        for name in times:
            values[name] = to_datetime(name, values[name])
        for name, convert in converted:
            value = values[name]
            if value is not None:
                values[name] = convert(value)
        if absent:
            values.update(absent)
        made = cls
        for name in enums:
            if type(values[name]) is str:  # a value the enum does not list
                made = lenient
        instance = _new(made)
        _set_dict(instance, values)
        _set_fields(instance, fields_set)
        _set_extra(instance, None)
        _set_private(instance, None)
        return instance

    return build_model


def _values_of(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]] | None:
    """A function giving the values of ``names`` in a dict, as a tuple (``None``: no names)."""
    if not names:
        return None
    if len(names) == 1:
        (name,) = names
        return lambda values: (values[name],)
    read: Callable[[dict[str, Any]], tuple[Any, ...]] = operator.itemgetter(*names)
    return read


def _validating_builder(cls: type[BaseModel]) -> _Convert:
    """Validate the source's values into ``cls`` (nested structs as their wire maps)."""
    validate_python = cls.__pydantic_validator__.validate_python
    names = tuple(cls.model_fields)

    def build_validated(source: Any) -> object:
        data: dict[str, Any] = {}
        for name in names:
            value = getattr(source, name, _UNSET)
            if value is _UNSET:
                continue
            if type(value) is msgspec.msgpack.Ext:
                data[name] = _ext_to_datetime(name, value)
            else:
                data[name] = msgspec.to_builtins(value)
        return _validate_or_lenient(cls, validate_python, data)

    return build_validated


def _builder(channel: str, source_type: type[Any]) -> _Convert:
    model = _MODEL_OF_CHANNEL.get(channel)
    if model is None:
        raise ValueError(f"channel {channel!r} has no model to build from a source")
    builder = _BUILDERS[(channel, source_type)] = _builder_of(model, source_type)
    return builder


_BUILDERS: dict[tuple[str, type[Any]], _Convert] = {}


@functools.cache
def model_sources(kind: StreamKind | str) -> Decoders:
    """The decoders of the model sources :func:`build` takes, for a stream kind (cached).

    Their fields come in the models' order, so :func:`build` never reorders::

        [source] = model_sources("stock").frame.decode(frame)
        build("quotes", source)
    """
    from alpaca_di.protocol.sources import sources_for

    orders = {channel: tuple(model.model_fields) for channel, model in _MODEL_OF_CHANNEL.items()}
    return sources_for(kind, orders)
