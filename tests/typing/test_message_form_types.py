"""Subscriptions are typed by what they deliver (mypy --strict checks the ``assert_type``s)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from typing_extensions import assert_type

from alpaca_di import StreamHub, Subscription
from alpaca_di.protocol import MarketStruct, Quote
from alpaca_di.protocol.models import ModelMessage
from alpaca_di.testing import FakeStreamHub


def _forms(hub: StreamHub) -> None:
    """Checked by mypy, never run."""
    assert_type(hub.subscribe(quotes=["AAPL"]), Subscription[ModelMessage])
    assert_type(hub.subscribe(quotes=["AAPL"], form="model"), Subscription[ModelMessage])
    assert_type(hub.subscribe(quotes=["AAPL"], form="struct"), Subscription[MarketStruct])
    assert_type(hub.subscribe(quotes=["AAPL"], form="raw"), Subscription[dict[str, Any]])
    assert_type(hub.subscribe(quotes=["AAPL"], raw=True), Subscription[dict[str, Any]])
    assert_type(hub.subscribe(print, trades="*", form="struct"), Subscription[MarketStruct])
    fast = hub.subscribe(quotes=["AAPL"], form="struct", maxsize=100, overflow="conflate")
    assert_type(fast.get(timeout=1), MarketStruct)
    assert_type(iter(fast), Iterator[MarketStruct])
    assert_type(fast.__aiter__(), AsyncIterator[MarketStruct])
    with hub.subscribe(quotes=["AAPL"], raw=True) as raw:
        assert_type(raw, Subscription[dict[str, Any]])
        assert_type(raw.get(), dict[str, Any])
    flag: bool = bool(fast.raw)
    assert_type(hub.subscribe(quotes=["AAPL"], raw=flag), Subscription[Any])


def test_the_fake_hub_has_the_same_overloads() -> None:
    hub = FakeStreamHub("stock")
    try:
        sub = hub.subscribe(quotes=["AAPL"], form="struct")
        assert_type(sub, Subscription[MarketStruct])
        hub.push_quote("AAPL", bid=1.0)
        quote = sub.get(timeout=5)
        assert_type(quote, MarketStruct)
        assert isinstance(quote, Quote)
        assert quote.bid_price == 1.0
    finally:
        hub.close()
    assert callable(_forms)
