"""Sampled delivery latency: from the server's timestamp of a message to its handler.

Off by default and free then: a drain checks one module global per batch. Metrics
(:func:`alpaca_di.providers.metrics.init_metrics`) install an observer; from then
on, one message in :data:`SAMPLE_EVERY` is timed, at most one per drained batch,
just before it is handed to the handler or the iterator::

    set_latency_observer(lambda kind, endpoint, seconds: print(kind, seconds))
    set_latency_observer(None)          # off again

The sampled message of a batch is its first, the one that waited longest in the
queue, so the figures err on the high side. The latency is the local wall clock
minus the server's timestamp: clock skew between the two hosts is included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

__all__ = [
    "SAMPLE_EVERY",
    "LatencyObserver",
    "latency_observer",
    "message_time",
    "set_latency_observer",
]

LatencyObserver = Callable[[str, str, float], None]
"""``observer(kind, endpoint, seconds)``: called with each sample, on the consumer's thread."""

SAMPLE_EVERY = 64
"""One message in this many is timed (at most one per drained batch)."""

_observer: LatencyObserver | None = None
_log = structlog.get_logger("alpaca_di.latency")
_TIME_FIELDS = ("timestamp", "t", "created_at", "updated_at")
_FRACTION = re.compile(r"\.\d{7,}")


def set_latency_observer(observer: LatencyObserver | None) -> None:
    """Install the observer every subscription reports samples to (``None``: stop sampling)."""
    if observer is not None and not callable(observer):
        raise TypeError(f"observer must be callable or None, got {type(observer).__name__}")
    global _observer
    _observer = observer


def latency_observer() -> LatencyObserver | None:
    """The installed observer, if any."""
    return _observer


def message_time(message: Any) -> float | None:
    """The server's timestamp of ``message`` in seconds since the epoch, if it has one.

    Reads alpaca-py models (``timestamp``, ``created_at`` for news), typed structs
    with the same names, and raw dicts (``t``, ``timestamp``, ``created_at``: a
    msgpack ``Timestamp``, a datetime, RFC 3339 text or integer nanoseconds).
    """
    for field in _TIME_FIELDS:
        value = message.get(field) if isinstance(message, dict) else getattr(message, field, None)
        if value is not None:
            return _seconds(value)
    return None


def sample(kind: str, endpoint: str, message: Any) -> None:
    """Time ``message`` now and report it to the observer (a no-op without one)."""
    observer = _observer
    if observer is None:
        return
    try:  # a message without a usable time, or a broken observer, never costs a delivery
        sent = message_time(message)
        if sent is not None:
            observer(kind, endpoint, max(0.0, time.time() - sent))
    except Exception:
        _log.exception("latency.observer_failed")


def _seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    to_unix = getattr(value, "to_unix", None)  # msgpack.Timestamp
    if callable(to_unix):
        return float(to_unix())
    if isinstance(value, int) and not isinstance(value, bool):
        return value / 1e9 if value > 10**12 else float(value)
    if isinstance(value, str):
        # Alpaca sends nanoseconds; datetime parses at most microseconds.
        text = _FRACTION.sub(lambda m: m.group(0)[:7], value.replace("Z", "+00:00"), count=1)
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None
    return None
