"""The server's timestamp of a message, in any of its forms; no alpaca-py, no I/O.

Raw messages carry ``t`` as a ``msgpack.Timestamp`` (msgpack streams), an RFC
3339 string (JSON) or a ``datetime``; models carry ``timestamp``::

    message_time({"T": "q", "S": "AAPL", "t": msgpack.Timestamp(1709562600, 0)})
    message_time(bar)                  # bar.timestamp
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from msgpack import Timestamp

__all__ = ["message_time"]

_UTC = _dt.timezone.utc


def message_time(message: Any) -> _dt.datetime | None:
    """The server's timestamp of a message (raw dict, model or struct), aware UTC, or ``None``.

    Reads ``t`` of raw messages (a ``msgpack.Timestamp``, a ``datetime``, RFC 3339
    text or integer nanoseconds), ``timestamp`` of models and structs, and
    ``created_at`` of news. Never raises: what cannot be read is ``None``.

    Example::

        message_time({"t": "2024-03-04T14:30:00.123456789Z"})   # to the microsecond
    """
    for field in _RAW_FIELDS if isinstance(message, Mapping) else _MODEL_FIELDS:
        if isinstance(message, Mapping):
            value = message.get(field)
        else:
            value = getattr(message, field, None)
        if value is not None:
            return _moment(value)
    return None


_RAW_FIELDS = ("t", "timestamp", "created_at")
_MODEL_FIELDS = ("timestamp", "created_at")


def _moment(value: Any) -> _dt.datetime | None:
    if isinstance(value, Timestamp):
        moment: _dt.datetime = value.to_datetime()
        return moment
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value / 1e9 if value > 10**12 else float(value)  # nanoseconds or seconds
        try:
            return _dt.datetime.fromtimestamp(seconds, _UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:  # RFC 3339; Python's parser takes at most microseconds
            head, dot, fraction = value.replace("Z", "+00:00").partition(".")
            if dot:
                digits = len(fraction) - len(fraction.lstrip("0123456789"))
                fraction = fraction[: min(digits, 6)] + fraction[digits:]
            parsed = _dt.datetime.fromisoformat(head + dot + fraction)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_UTC)
    return None
