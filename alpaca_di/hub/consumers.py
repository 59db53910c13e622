"""Consumer names and the per-name tally of a connection's consumers (for metrics).

A consumer may be named at subscribe (``hub.subscribe(on_quote, quotes=["AAPL"],
name="momentum")``). The name groups its counts: every subscription with the same
name on one connection adds to one set of totals, and every unnamed one adds to
:data:`UNNAMED`, so the number of groups stays bounded however many short-lived
subscriptions come and go. Totals never go down: a closed subscription's counts
stay in its name's totals::

    tally = ConsumerTally()
    tally.track(inbox)                  # when a subscription opens
    for name, totals in tally.snapshot().items():
        print(name, totals.delivered, totals.queued)
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from alpaca_di.hub.inbox import Inbox

__all__ = ["UNNAMED", "ConsumerTally", "ConsumerTotals", "check_consumer_name"]

UNNAMED = "_unnamed"
"""The group of every subscription made without a ``name`` (no valid name starts with ``_``)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_SWEEP_MIN = 64  # closed inboxes folded into the totals once this many more are tracked


def check_consumer_name(name: Any) -> str | None:
    """Validate a consumer ``name`` given at subscribe; returns it (or ``None``).

    A name is 1 to 64 characters: letters, digits and ``_ . : -``, starting with a
    letter or a digit. It becomes a metric label value, so it must stay short and
    must not vary per subscription (no ids, no timestamps).

    Example::

        check_consumer_name("risk-monitor")     # 'risk-monitor'
        check_consumer_name("bad name!")        # ValueError naming the rule
    """
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise ValueError(
            f"invalid consumer name {shown!r}: use 1 to 64 letters, digits or '_.:-', "
            "starting with a letter or digit (it is a metric label: keep it short and "
            "the same for every subscription of one component)"
        )
    return name


@dataclass(frozen=True)
class ConsumerTotals:
    """The counts of every subscription of one name on one connection (a snapshot).

    Attributes:
        subscriptions: open subscriptions of this name now.
        delivered, dropped, errors: totals since the connection's hub was made,
            closed subscriptions included (they never go down).
        queued: messages waiting in the open subscriptions' queues now.
    """

    subscriptions: int
    delivered: int
    dropped: int
    queued: int
    errors: int


class ConsumerTally:
    """Open consumers of one connection, and the totals of closed ones, by name.

    Thread-safe. :meth:`track` is called when a subscription opens; a closed one is
    noticed later (at the next :meth:`snapshot`, or when enough new ones were
    tracked) and its final counts are folded into its name's totals, so nobody has
    to tell the tally about a close.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[Inbox, None] = {}
        self._retired: dict[str, list[int]] = {}  # name -> [delivered, dropped, errors]
        self._sweep_at = _SWEEP_MIN

    def track(self, inbox: Inbox) -> None:
        """Count ``inbox`` under its ``name`` from now on (idempotent)."""
        with self._lock:
            self._open[inbox] = None
            if len(self._open) >= self._sweep_at:
                self._sweep()
                self._sweep_at = max(_SWEEP_MIN, 2 * len(self._open))

    def snapshot(self) -> dict[str, ConsumerTotals]:
        """The totals per name now (names seen so far, open or not)."""
        with self._lock:
            self._sweep()
            found = {name: [0, *counts, 0] for name, counts in self._retired.items()}
            for inbox in self._open:
                stats = inbox.stats()
                row = found.setdefault(inbox.name or UNNAMED, [0, 0, 0, 0, 0])
                row[0] += 1
                row[1] += stats.delivered
                row[2] += stats.dropped
                row[3] += stats.errors
                row[4] += stats.queued
        return {
            name: ConsumerTotals(row[0], row[1], row[2], row[4], row[3])
            for name, row in found.items()
        }

    def _sweep(self) -> None:
        """Under the lock: fold closed inboxes into their name's totals."""
        for inbox in [inbox for inbox in self._open if inbox.closed]:
            del self._open[inbox]
            stats = inbox.stats()
            row = self._retired.setdefault(inbox.name or UNNAMED, [0, 0, 0])
            row[0] += stats.delivered
            row[1] += stats.dropped
            row[2] += stats.errors
