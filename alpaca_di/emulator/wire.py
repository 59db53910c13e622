"""Wire-level facts and encoders shared by the emulator's servers.

Everything here is independent of :mod:`alpaca_di.protocol` on purpose: the
emulator is the truth check for that package, so it carries its own small
description of Alpaca's market-data feeds (paths, channel keys, type codes) and
its own encoders::

    from alpaca_di.emulator.wire import FEEDS, encode_msgpack_batch

    spec = FEEDS["/v2/iex"]
    spec.channels            # ('trades', 'quotes', 'bars', ...)
    frame = encode_msgpack_batch([b"\\x81\\xa1T\\xa1q"])
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "FEEDS",
    "TIMESTAMP_FIELDS",
    "TYPE_TO_CHANNEL",
    "FeedSpec",
    "encode_json",
    "encode_json_batch",
    "encode_msgpack",
    "encode_msgpack_batch",
    "normalize_message",
    "rfc3339",
    "to_timestamp",
]

_STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
_STOCK_ACK = (*_STOCK_CHANNELS, "corrections", "cancelErrors")
_CRYPTO_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
_OPTION_CHANNELS = ("trades", "quotes")
_NEWS_CHANNELS = ("news",)


@dataclass(frozen=True)
class FeedSpec:
    """One market-data endpoint of the emulator.

    Attributes:
        path: the URL path (``/v2/iex``).
        kind: ``stock``, ``crypto``, ``option`` or ``news``.
        feed: the feed name (``iex``, ``sip``, ``us``, ``opra``, ...).
        channels: the wire keys a subscribe message may carry.
        ack_channels: the keys of the ``subscription`` reply, in Alpaca's order.
        implicit: keys accepted and ignored in subscribe messages (stock
            ``corrections``/``cancelErrors`` follow ``trades``).
        msgpack_only: the endpoint always speaks MessagePack (options).
    """

    path: str
    kind: str
    feed: str
    channels: tuple[str, ...]
    ack_channels: tuple[str, ...]
    implicit: tuple[str, ...] = ()
    msgpack_only: bool = False


def _stock(path: str, feed: str) -> FeedSpec:
    return FeedSpec(
        path, "stock", feed, _STOCK_CHANNELS, _STOCK_ACK, implicit=("corrections", "cancelErrors")
    )


FEEDS: Mapping[str, FeedSpec] = {
    spec.path: spec
    for spec in (
        _stock("/v2/iex", "iex"),
        _stock("/v2/sip", "sip"),
        _stock("/v2/delayed_sip", "delayed_sip"),
        _stock("/v2/test", "test"),
        _stock("/v2/boats", "boats"),
        _stock("/v2/overnight", "overnight"),
        _stock("/v1beta1/boats", "boats"),
        _stock("/v1beta1/overnight", "overnight"),
        FeedSpec("/v1beta3/crypto/us", "crypto", "us", _CRYPTO_CHANNELS, _CRYPTO_CHANNELS),
        # Alpaca serves three crypto locations, as AlpacaSettings.crypto_feed allows.
        FeedSpec("/v1beta3/crypto/us-1", "crypto", "us-1", _CRYPTO_CHANNELS, _CRYPTO_CHANNELS),
        FeedSpec("/v1beta3/crypto/eu-1", "crypto", "eu-1", _CRYPTO_CHANNELS, _CRYPTO_CHANNELS),
        FeedSpec(
            "/v1beta1/indicative",
            "option",
            "indicative",
            _OPTION_CHANNELS,
            _OPTION_CHANNELS,
            msgpack_only=True,
        ),
        FeedSpec(
            "/v1beta1/opra", "option", "opra", _OPTION_CHANNELS, _OPTION_CHANNELS, msgpack_only=True
        ),
        FeedSpec("/v1beta1/news", "news", "news", _NEWS_CHANNELS, _NEWS_CHANNELS),
    )
}
"""Every market-data path the emulator serves, keyed by path."""

TYPE_TO_CHANNEL: Mapping[str, str] = {
    "t": "trades",
    "q": "quotes",
    "b": "bars",
    "u": "updatedBars",
    "d": "dailyBars",
    "s": "statuses",
    "l": "lulds",
    "o": "orderbooks",
    "n": "news",
    # corrections and cancel errors follow the trades subscription
    "c": "trades",
    "x": "trades",
}
"""Data message ``T`` code -> the subscription channel that routes it."""

TIMESTAMP_FIELDS = ("t", "created_at", "updated_at")
"""Top-level fields that carry timestamps (msgpack Timestamp / RFC 3339)."""

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:\d{2})$"
)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def to_timestamp(value: Any) -> Any:
    """Convert a datetime, an RFC 3339 string or integer nanoseconds to a msgpack Timestamp.

    Values of any other type (including a ``msgpack.Timestamp``) are returned
    unchanged, so callers can pass already-encoded values through::

        to_timestamp("2024-01-02T15:30:00.5Z")   # Timestamp(seconds=..., nanoseconds=500000000)
    """
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        seconds = delta.days * 86_400 + delta.seconds
        return msgpack.Timestamp(seconds, delta.microseconds * 1000)
    if isinstance(value, str):
        match = _RFC3339.match(value)
        if match is None:
            return value
        year, month, day, hour, minute, second, frac, zone = match.groups()
        base = _dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=_dt.timezone.utc,
        )
        if zone not in ("Z", "z"):
            sign = 1 if zone[0] == "+" else -1
            base -= sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        delta = base - _EPOCH
        nanos = int((frac or "0").ljust(9, "0"))
        return msgpack.Timestamp(delta.days * 86_400 + delta.seconds, nanos)
    if isinstance(value, int) and not isinstance(value, bool):
        return msgpack.Timestamp.from_unix_nano(value)
    return value


def rfc3339(ts: msgpack.Timestamp) -> str:
    """Format a msgpack Timestamp the way Alpaca's JSON streams do (UTC, ``Z``, trimmed nanos).

    Example::

        rfc3339(msgpack.Timestamp(0, 208_000_000))   # '1970-01-01T00:00:00.208Z'
    """
    moment = _EPOCH + _dt.timedelta(seconds=ts.seconds)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.nanoseconds:
        text += "." + f"{ts.nanoseconds:09d}".rstrip("0")
    return text + "Z"


def _json_default(value: Any) -> Any:
    if isinstance(value, msgpack.Timestamp):
        return rfc3339(value)
    if isinstance(value, _dt.datetime):
        return rfc3339(to_timestamp(value))
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def normalize_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """Return a wire-form copy of ``message`` with ``"T"`` first and Timestamp values.

    Example::

        normalize_message({"S": "AAPL", "T": "q", "t": "2024-01-02T15:30:00Z"})
        # {'T': 'q', 'S': 'AAPL', 't': Timestamp(...)}
    """
    if "T" in message:
        out: dict[str, Any] = {"T": message["T"]}
        for key, value in message.items():
            if key != "T":
                out[key] = value
    else:
        out = dict(message)
    for key in TIMESTAMP_FIELDS:
        if key in out:
            out[key] = to_timestamp(out[key])
    return out


def encode_msgpack(message: Any) -> bytes:
    """MessagePack-encode one value (Timestamp values become ext type -1)."""
    data: bytes = msgpack.packb(message)
    return data


def encode_json(message: Any) -> str:
    """JSON-encode one value compactly, with timestamps as RFC 3339 strings."""
    return json.dumps(message, separators=(",", ":"), default=_json_default)


def encode_msgpack_batch(parts: Sequence[bytes]) -> bytes:
    """Join individually msgpack-encoded values into one encoded array (no re-encoding)."""
    count = len(parts)
    if count < 16:
        header = bytes((0x90 | count,))
    elif count < 0x10000:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return header + b"".join(parts)


def encode_json_batch(parts: Iterable[str]) -> str:
    """Join individually JSON-encoded values into one JSON array."""
    return "[" + ",".join(parts) + "]"
