"""A real hub over the in-memory upstream: what its subscription state costs."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from alpaca_di.testing import FakeStreamHub

SYMBOLS, SUBSCRIPTIONS = 2_000, 50


def test_many_subscriptions_of_many_symbols_cost_little_per_pair() -> None:
    """Pairs are interned, holder sets shared, and a subscription's routed set is its own.

    Before, 250 bytes a (subscription, symbol) pair: a tuple per pair per
    subscription, a set of inboxes per symbol, and three sets per subscription.
    """
    hub = FakeStreamHub("stock")
    symbols = [f"S{i:04d}" for i in range(SYMBOLS)]

    def handler(message: Any) -> None:
        return None

    try:
        hub.subscribe(handler, quotes=["AAPL"]).wait_confirmed(30)
        gc.collect()
        tracemalloc.start()
        subscriptions = [hub.subscribe(handler, quotes=symbols) for _ in range(SUBSCRIPTIONS)]
        for subscription in subscriptions:
            subscription.wait_confirmed(30)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        per_pair = traced / (SYMBOLS * SUBSCRIPTIONS)
        assert per_pair < 80, f"{per_pair:.0f} B a pair"
        assert hub.push_quote("S0001", bid=1.0, ask=1.1) == SUBSCRIPTIONS
        for subscription in subscriptions:
            assert subscription.symbols == {"quotes": frozenset(symbols)}
    finally:
        hub.close()
