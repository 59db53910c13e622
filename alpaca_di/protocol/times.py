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
    """The server's timestamp of a message (raw dict or model), aware UTC, or ``None``.

    Example::

        message_time({"t": "2024-03-04T14:30:00.123456789Z"})   # to the microsecond
    """
    if isinstance(message, Mapping):
        value = message.get("t")
    else:
        value = getattr(message, "timestamp", None)
    if isinstance(value, Timestamp):
        moment: _dt.datetime = value.to_datetime()
        return moment
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)
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
