"""PricingService bookkeeping with a fake hub (no sockets): ref counts, races, waiters."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from alpaca.data.models import Quote, Trade

from alpaca_di.errors import AuthenticationError
from alpaca_di.protocol import StreamKind
from alpaca_di.services.pricing import PricingService
from alpaca_di.transport import ConnectionState

NOW = datetime(2024, 1, 2, 15, 30, tzinfo=timezone.utc)


def make_quote(symbol: str, bid: float, ask: float) -> Quote:
    raw = {"bp": bid, "ap": ask, "bs": 1, "as": 1, "bx": "V", "ax": "V", "c": ["R"], "z": "C"}
    return Quote(symbol, {**raw, "t": NOW})


def make_trade(symbol: str, price: float) -> Trade:
    return Trade(symbol, {"p": price, "s": 1, "x": "V", "i": 1, "c": ["@"], "z": "C", "t": NOW})


class FakeSub:
    def __init__(self, wire: Counter[str], quotes: list[str]) -> None:
        self.wire = wire
        self.closed = False
        self.lock = threading.Lock()
        self._apply(quotes, +1)

    def _apply(self, symbols: list[str], delta: int) -> None:
        with self.lock:
            for symbol in symbols:
                self.wire[symbol] += delta
                assert self.wire[symbol] in (0, 1), f"{symbol} subscribed {self.wire[symbol]} times"

    def add(self, quotes: list[str], trades: list[str]) -> None:
        assert quotes == trades
        self._apply(quotes, +1)

    def remove(self, quotes: list[str], trades: list[str]) -> None:
        assert quotes == trades
        self._apply(quotes, -1)

    def close(self) -> None:
        self.closed = True


class FakeHub:
    closed = False

    def __init__(self, kind: StreamKind = StreamKind.STOCK) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        self.state = ConnectionState.CONNECTED
        self.wire: Counter[str] = Counter()
        self.handler: Callable[[Any], None] | None = None
        self.subs: list[FakeSub] = []
        self.listeners: list[Callable[..., None]] = []

    def subscribe(
        self,
        handler: Any,
        *,
        quotes: list[str],
        trades: list[str],
        overflow: str,
        name: str | None = None,
    ) -> FakeSub:
        assert overflow == "conflate"
        assert name == "alpaca_di.pricing_service"
        assert quotes == trades
        self.handler = handler
        sub = FakeSub(self.wire, quotes)
        self.subs.append(sub)
        return sub

    def add_state_listener(self, listener: Callable[..., None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: None

    def fail(self) -> None:
        previous, self.state = self.state, ConnectionState.FAILED
        for listener in self.listeners:
            listener(ConnectionState.FAILED, previous)

    def wait_ready(self, timeout: float = 10.0) -> None:
        if self.state is ConnectionState.FAILED:
            raise AuthenticationError(402, "auth failed")

    async def ready(self, timeout: float = 10.0) -> None:
        self.wait_ready(timeout)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    yield fake
    fake.loop.close()


@pytest.fixture
def pricing(hub: FakeHub) -> Iterator[PricingService]:
    service = PricingService(stock_stream=hub)  # type: ignore[arg-type]
    yield service
    service.close()


def subscribed(hub: FakeHub) -> set[str]:
    return {symbol for symbol, count in hub.wire.items() if count}


def test_one_subscription_grows_and_shrinks_with_tracking(
    pricing: PricingService, hub: FakeHub
) -> None:
    pricing.track("AAPL", "AAPL", "MSFT", owner="a")  # duplicates in one call count once
    pricing.track("MSFT", owner="b")
    assert len(hub.subs) == 1
    assert subscribed(hub) == {"AAPL", "MSFT"}
    assert pricing.owners("AAPL") == {"a": 1}
    pricing.untrack_all(owner="a")
    assert subscribed(hub) == {"MSFT"}
    pricing.untrack("MSFT", owner="b")
    assert subscribed(hub) == set()
    assert len(hub.subs) == 1


def test_racing_components_keep_the_wire_consistent(pricing: PricingService, hub: FakeHub) -> None:
    symbols = ["AAPL", "MSFT", "TSLA", "NVDA", "SPY"]
    barrier = threading.Barrier(16)

    def component(n: int) -> None:
        rng = random.Random(n)
        barrier.wait()
        for _ in range(200):
            picked = rng.sample(symbols, 2)
            pricing.track(*picked, owner=n)
            pricing.untrack(*picked, owner=n)
        pricing.track(symbols[n % len(symbols)], owner=n)

    threads = [threading.Thread(target=component, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert subscribed(hub) == set(symbols)
    assert pricing.tracked() == set(symbols)
    for n in range(16):
        pricing.untrack_all(owner=n)
    assert subscribed(hub) == set()


def test_prices_listeners_and_untracked_messages(pricing: PricingService, hub: FakeHub) -> None:
    seen: list[tuple[str, float]] = []

    def broken(symbol: str, price: float) -> None:
        raise RuntimeError("listener bug")

    pricing.add_listener(broken)
    remove = pricing.add_listener(lambda s, p: seen.append((s, p)))
    pricing.track("AAPL")
    assert hub.handler is not None
    hub.handler(make_trade("AAPL", 10.0))
    hub.handler(make_quote("AAPL", 9.0, 11.0))
    hub.handler(make_quote("MSFT", 1.0, 2.0))  # not tracked: ignored
    hub.handler("not a quote")
    assert seen == [("AAPL", 10.0), ("AAPL", 10.0)]
    assert pricing.price("MSFT") is None
    remove()
    remove()  # idempotent
    hub.handler(make_quote("AAPL", 10.0, 12.0))
    assert len(seen) == 2
    assert pricing.price("AAPL") == 11.0
    pricing.untrack("AAPL")
    assert pricing.latest_quote("AAPL") is None
    assert pricing.snapshot() == {}


def test_waiters_wake_on_the_first_price(pricing: PricingService, hub: FakeHub) -> None:
    pricing.track("TSLA")
    result: list[float] = []
    ready = threading.Event()

    def waiter() -> None:
        ready.set()
        result.append(pricing.wait_for_price("TSLA", timeout=10))

    thread = threading.Thread(target=waiter)
    thread.start()
    ready.wait(5)
    assert hub.handler is not None
    hub.handler(make_quote("TSLA", 0.0, 5.0))  # one-sided: no price yet
    hub.handler(make_trade("TSLA", 4.0))
    thread.join(5)
    assert result == [4.0]


def test_a_failed_hub_raises_its_named_error(pricing: PricingService, hub: FakeHub) -> None:
    pricing.track("AAPL")
    hub.fail()
    with pytest.raises(AuthenticationError):
        pricing.wait_for_price("AAPL", timeout=5)


class _Registering(dict):  # type: ignore[type-arg]
    """The service's async-waiter table, signalling each registration to the test."""

    def __init__(self) -> None:
        super().__init__()
        self.registered = threading.Event()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        value = super().setdefault(key, default)
        self.registered.set()
        return value


async def test_async_waiter_fails_with_the_hub(pricing: PricingService, hub: FakeHub) -> None:
    pricing.track("AAPL")
    hub.fail()  # already failed: named error at once, not a timeout
    with pytest.raises(AuthenticationError):
        await pricing.wait_for_price_async("AAPL", timeout=5)


async def test_async_waiter_wakes_when_the_hub_fails(pricing: PricingService, hub: FakeHub) -> None:
    pricing.track("AAPL")
    table = pricing._async_waiters = _Registering()
    waiting = asyncio.ensure_future(pricing.wait_for_price_async("AAPL", timeout=5))
    await asyncio.to_thread(table.registered.wait, 5)
    await asyncio.to_thread(hub.fail)
    with pytest.raises(AuthenticationError):
        await waiting


async def test_async_waiter_resolves_from_another_thread(
    pricing: PricingService, hub: FakeHub
) -> None:
    pricing.track("NVDA")
    table = pricing._async_waiters = _Registering()
    waiting = asyncio.ensure_future(pricing.wait_for_price_async("NVDA", timeout=5))
    await asyncio.to_thread(table.registered.wait, 5)
    assert hub.handler is not None
    await asyncio.to_thread(hub.handler, make_quote("NVDA", 1.0, 3.0))
    assert await waiting == 2.0
