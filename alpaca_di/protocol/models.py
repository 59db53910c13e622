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
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias, Union, get_args, get_origin

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

__all__ = [
    "BackfilledBar",
    "Lenient",
    "ModelMessage",
    "ReconciledTradeUpdate",
    "is_lenient",
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


def _stamp_to_datetime(stamp: Timestamp) -> _dt.datetime:
    """``Timestamp.to_datetime()``, equal to it to the microsecond, at a fraction of its cost."""
    global _last_second
    seconds = stamp.seconds
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
    return _datetime(year, month, day, hour, minute, second, stamp.nanoseconds // 1000, _UTC)


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


_PARSERS: dict[str, _Parser] = {
    "trades": _mapped(Trade, TRADE_MAPPING),
    "quotes": _mapped(Quote, QUOTE_MAPPING),
    "bars": _bars(),
    "updated_bars": _mapped(Bar, BAR_MAPPING),
    "daily_bars": _bars(),
    "statuses": _mapped(TradingStatus, TRADING_STATUS_MAPPING),
    "corrections": _mapped(TradeCorrection, TRADE_CORRECTION_MAPPING),
    "cancel_errors": _mapped(TradeCancel, TRADE_CANCEL_MAPPING),
    "orderbooks": _mapped(Orderbook, ORDERBOOK_MAPPING),
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
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        if isinstance(symbol, str):
            shown = repr(symbol if len(symbol) <= 40 else symbol[:37] + "...")
        else:
            shown = f"<{type(symbol).__name__}>"
        # ``from None``: the pydantic error would quote parts of the payload.
        raise ProtocolError(f"invalid {channel} message for {shown}: {_describe(exc)}") from None
