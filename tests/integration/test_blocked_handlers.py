"""A hundred sync handlers blocked forever starve nobody else.

The handler pool grows to ``MAX_HANDLER_THREADS`` (256) workers, so a blocked
handler costs one thread, not everyone's delivery; and the ``TradingService``'s
own bookkeeping never runs on the pool at all, so ``wait_for_order`` resolves
whatever user handlers do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry, Lease
from alpaca_di.hub.delivery import MAX_HANDLER_THREADS
from alpaca_di.protocol import StreamKind
from alpaca_di.services.trading import TradingService
from alpaca_di.testing.messages import quote
from alpaca_di.testing.recorder import Recorder
from alpaca_di.transport import ConnectionOptions

KEY = "PKINTEGRATION01"
SECRET = "integration-secret-do-not-leak"
IEX = "/v2/iex"
BLOCKED = 100
DEADLINE = 20.0


@pytest.fixture
def release() -> Iterator[threading.Event]:
    gate = threading.Event()
    yield gate
    gate.set()  # let the blocked workers finish once the test is over


def _blocker(gate: threading.Event, started: threading.Semaphore) -> Any:
    def handler(message: Any) -> None:
        started.release()
        gate.wait()

    return handler


def test_a_new_consumer_receives_while_a_hundred_handlers_are_blocked(
    stock_lease: Lease, emulator: AlpacaEmulator, release: threading.Event
) -> None:
    assert BLOCKED < MAX_HANDLER_THREADS
    hub = stock_lease.hub
    started = threading.Semaphore(0)
    blocked = [hub.subscribe(_blocker(release, started), quotes=["STUCK"]) for _ in range(BLOCKED)]
    blocked[-1].wait_confirmed(DEADLINE)
    emulator.publish(IEX, [quote("STUCK")], key_id=KEY)
    for _ in range(BLOCKED):
        assert started.acquire(timeout=DEADLINE), "a blocked handler never started"
    fresh = Recorder()
    sub = hub.subscribe(fresh, quotes=["FREE"])
    sub.wait_confirmed(DEADLINE)
    emulator.publish(IEX, [quote("FREE", bid=float(n)) for n in range(1, 6)], key_id=KEY)
    assert [q.bid_price for q in fresh.wait_for(5, DEADLINE)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    for each in [*blocked, sub]:
        each.close()


def test_wait_for_order_resolves_while_a_hundred_trade_handlers_are_blocked(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
    release: threading.Event,
) -> None:
    lease = registry.acquire(creds, StreamKind.TRADING, emulator.trading_stream_url, fast_options)
    client = TradingClient(KEY, SECRET, paper=True, url_override=emulator.api_url)
    trading = TradingService(trading_stream=lease.hub, trading_client=client)
    try:
        started = threading.Semaphore(0)
        for _ in range(BLOCKED):
            trading.subscribe(_blocker(release, started))
        trading.listen(DEADLINE)
        first = client.submit_order(
            MarketOrderRequest(
                symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
        for _ in range(BLOCKED):
            assert started.acquire(timeout=DEADLINE), "a blocked handler never started"
        assert trading.wait_for_order(first.id, timeout=DEADLINE) is not None
        second = client.submit_order(
            MarketOrderRequest(
                symbol="MSFT", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
        fill = trading.wait_for_order(second.id, events=("fill",), timeout=DEADLINE)
        assert str(fill.order.id) == str(second.id)
        assert not getattr(fill, "reconciled", False)  # from the stream, not REST catch-up
    finally:
        trading.close()
        lease.release()
