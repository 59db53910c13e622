"""Model sources: what alpaca-py models are built from, decoded straight from the wire.

A *model source* is a twin of a :mod:`~alpaca_di.protocol.structs` class (same
attribute names, same wire keys, derived from it here, so the field mapping has
one home) that keeps what the struct form rounds or forgets and an alpaca-py
model needs exactly:

* timestamps stay the wire's MessagePack extension (``msgspec.msgpack.Ext``), so
  the model's datetime truncates the nanoseconds as alpaca-py does
  (``msgpack.Timestamp.to_datetime``), where msgspec would round them;
* an optional field the message lacks is ``msgspec.UNSET``, not ``None``, so the
  model's ``model_fields_set`` is what validation would give;
* ``Bar`` and ``News`` sources refuse unknown keys: a bar carrying
  ``backfilled`` is a ``BackfilledBar`` and alpaca-py's ``News`` reads every key
  (``images``...), so those messages are left to the dict path.

Whatever a source cannot hold (a string timestamp, a price that is not a number,
a LULD band, which has no model) fails its decode; the codec then hands the
message on as a dict, and the model is validated from it as before. Used by
``DataStreamProtocol.forms`` ``"model"``; the models are built by
:func:`alpaca_di.protocol.models.build`::

    from alpaca_di.protocol.sources import sources_for

    [source] = sources_for("stock").frame.decode(frame)
    source.timestamp.code, source.bid_price        # -1 (a MessagePack timestamp), 189.5
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Mapping
from typing import Any, Union

import msgspec

from alpaca_di.protocol.channels import CHANNELS, StreamKind, _kind
from alpaca_di.protocol.structs import (
    _CHANNEL_OF,
    Bar,
    DailyBar,
    Decoders,
    News,
    Orderbook,
    Quote,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
    UpdatedBar,
)

__all__ = ["source_class", "sources_for"]

# The struct classes that have an alpaca-py model (LULD bands have none).
_MODELLED: tuple[Any, ...] = (
    Trade,
    Quote,
    Bar,
    UpdatedBar,
    DailyBar,
    TradingStatus,
    TradeCorrection,
    TradeCancel,
    Orderbook,
    News,
)
# Messages whose model reads more than the struct's fields (see the module docstring).
_CLOSED: frozenset[type[Any]] = frozenset({Bar, UpdatedBar, DailyBar, News})


def _source_type(annotation: Any) -> Any:
    return msgspec.msgpack.Ext if annotation is _dt.datetime else annotation


@functools.cache
def source_class(struct_class: type[Any], order: tuple[str, ...] = ()) -> type[Any]:
    """The model-source class of a struct class: ``source_class(Quote)`` (cached).

    Same name, tag, attribute names and wire keys; timestamps as
    ``msgspec.msgpack.Ext``; optional fields default to ``msgspec.UNSET``. The
    fields named in ``order`` come first, in that order (a model's field order:
    its ``__dict__`` is then built without reordering)::

        source_class(Quote).__name__   # "QuoteSource"

    Raises:
        ValueError: the struct has no alpaca-py model to build (``Luld``).
    """
    if struct_class not in _MODELLED:
        raise ValueError(f"{struct_class.__name__} has no alpaca-py model to build")
    declared = msgspec.structs.fields(struct_class)
    rank = {name: index for index, name in enumerate(order)}
    fields: list[tuple[str, Any, Any]] = []
    for field in sorted(declared, key=lambda field: rank.get(field.name, len(rank))):
        kind = _source_type(field.type)
        if field.required:
            fields.append((field.name, kind, msgspec.field(name=field.encode_name)))
        else:
            fields.append(
                (
                    field.name,
                    Union[kind, msgspec.UnsetType],  # noqa: UP007 (a runtime union)
                    msgspec.field(default=msgspec.UNSET, name=field.encode_name),
                )
            )
    config = struct_class.__struct_config__
    source: type[Any] = msgspec.defstruct(
        f"{struct_class.__name__}Source",
        fields,
        module=__name__,
        tag_field=config.tag_field,
        tag=config.tag,
        kw_only=True,  # any field order, required or not
        frozen=True,
        gc=False,
        forbid_unknown_fields=struct_class in _CLOSED,
    )
    return source


def sources_for(
    kind: StreamKind | str, orders: Mapping[str, tuple[str, ...]] | None = None
) -> Decoders:
    """The :class:`~alpaca_di.protocol.structs.Decoders` of a stream kind's model sources.

    ``orders``: a field order per Python channel (see :func:`source_class`).
    ``channels`` maps each source class to its channel::

        decoders = sources_for(StreamKind.CRYPTO)
        [book] = decoders.frame.decode(frame)
        decoders.channels[type(book)]   # "orderbooks"
    """
    kind = _kind(kind)
    valid = CHANNELS[kind]
    orders = orders or {}
    channels = {
        source_class(cls, orders.get(_CHANNEL_OF[cls], ())): _CHANNEL_OF[cls]
        for cls in _MODELLED
        if _CHANNEL_OF[cls] in valid
    }
    return Decoders.of(kind, channels)
