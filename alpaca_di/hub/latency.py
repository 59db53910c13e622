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

import time
from collections.abc import Callable
from typing import Any

import structlog

from alpaca_di.protocol.times import message_time

__all__ = [
    "SAMPLE_EVERY",
    "LatencyObserver",
    "latency_observer",
    "set_latency_observer",
]

LatencyObserver = Callable[[str, str, float], None]
"""``observer(kind, endpoint, seconds)``: called with each sample, on the consumer's thread."""

SAMPLE_EVERY = 64
"""One message in this many is timed (at most one per drained batch)."""

_observer: LatencyObserver | None = None
_log = structlog.get_logger("alpaca_di.latency")


def set_latency_observer(observer: LatencyObserver | None) -> None:
    """Install the observer every subscription reports samples to (``None``: stop sampling)."""
    if observer is not None and not callable(observer):
        raise TypeError(f"observer must be callable or None, got {type(observer).__name__}")
    global _observer
    _observer = observer


def latency_observer() -> LatencyObserver | None:
    """The installed observer, if any."""
    return _observer


def sample(kind: str, endpoint: str, message: Any) -> None:
    """Time ``message`` now and report it to the observer (a no-op without one)."""
    observer = _observer
    if observer is None:
        return
    try:  # a message without a usable time, or a broken observer, never costs a delivery
        sent = message_time(message)
        if sent is not None:
            observer(kind, endpoint, max(0.0, time.time() - sent.timestamp()))
    except Exception:
        _log.exception("latency.observer_failed")
