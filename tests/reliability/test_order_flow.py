"""Order flow through faults: no final state is lost or doubled while the stream drops.

200 orders go through ``AlpacaManager`` (REST) while the trading stream is
dropped 10 times (with and without close frames). Each drop is held for a few
refused reconnects while orders are submitted, filled (market orders at once,
resting limits when the emulator's price crosses them) and canceled, so their
trade updates are emitted to nobody. Reconciliation after each reconnect must
cover the gaps:

* ``wait_for_order(..., catch_up=False)`` (no REST fallback of its own) returns
  each order's final state, which matches the emulator's book;
* a subscriber of the TradingService sees exactly one final update per order;
* the gaps were real: some updates arrived reconciled.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from _reliability_support import FIGURES, KEY, SECRET, scaled
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from dependency_injector import providers

from alpaca_di.containers import AlpacaContainer
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry
from alpaca_di.services.trading import FINAL_EVENTS
from alpaca_di.testing.pytest_plugin import emulator_config
from alpaca_di.transport import ConnectionState

ORDERS = int(scaled(200))
DROPS = 10
STREAM = "/stream"
WAIT = 30.0
SYMBOLS = ("AAPL", "MSFT", "NVDA")


@pytest.fixture
def container(emulator: AlpacaEmulator) -> Iterator[AlpacaContainer]:
    registry = ConnectionRegistry()
    container = AlpacaContainer()
    container.config.from_dict(emulator_config(emulator, api_key=KEY, secret_key=SECRET))
    container.registry.override(providers.Object(registry))
    try:
        yield container
    finally:
        container.shutdown_resources()
        registry.close_all()


def _event(update: TradeUpdate) -> str:
    return str(getattr(update.event, "value", update.event))


def test_two_hundred_orders_through_ten_drops_reach_their_final_state_once(
    container: AlpacaContainer, emulator: AlpacaEmulator
) -> None:
    manager = container.alpaca_manager()
    trading = container.trading_service()
    finals: Counter[str] = Counter()
    lock = threading.Condition()

    def on_update(update: TradeUpdate) -> None:
        if _event(update) in FINAL_EVENTS:
            with lock:
                finals[str(update.order.id)] += 1
                lock.notify_all()

    sub = trading.subscribe(on_update)
    sub.wait_confirmed(WAIT)
    hub = trading.hub
    connected = threading.Condition()
    states: list[ConnectionState] = []

    def on_state(state: ConnectionState, previous: ConnectionState) -> None:
        with connected:
            states.append(state)
            connected.notify_all()

    hub.add_state_listener(on_state)
    prices = {symbol: emulator.price(symbol) for symbol in SYMBOLS}
    orders: list[Any] = []
    resting: list[tuple[str, Any]] = []
    canceled: set[str] = set()
    per_round = ORDERS // (DROPS * 2)

    def submit(n: int) -> None:
        symbol = SYMBOLS[n % len(SYMBOLS)]
        if n % 3 == 0:  # a limit below the price: rests until the price falls
            limit = round(prices[symbol] * 0.98, 2)
            request: Any = LimitOrderRequest(
                symbol=symbol,
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=limit,
            )
            order = manager.submit_order(request)
            resting.append((symbol, order))
        else:
            request = MarketOrderRequest(
                symbol=symbol, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
            order = manager.submit_order(request)
        orders.append(order)

    count = 0
    for round_ in range(DROPS):
        with connected:
            mark = len(states)
        # Hold the stream down for a few refused reconnects while orders flow.
        emulator.refuse_handshake(503, times=3, path=STREAM)
        assert emulator.drop_connections(STREAM, close_frame=round_ % 2 == 0) == 1
        for _ in range(per_round):
            submit(count)
            count += 1
        # Some resting orders end while nobody listens: half filled, half canceled.
        while resting:
            symbol, order = resting.pop()
            if len(canceled) % 2 == 0 and str(order.id) not in canceled:
                manager.cancel_order(order.id)
                canceled.add(str(order.id))
            else:
                emulator.set_price(symbol, prices[symbol] * 0.97)
                emulator.set_price(symbol, prices[symbol])
        with connected:
            assert connected.wait_for(
                lambda m=mark: ConnectionState.CONNECTED in states[m:], WAIT
            ), f"round {round_}: the trading stream did not come back: {states[mark:]}"
        for _ in range(per_round):  # and some while it listens
            submit(count)
            count += 1
        FIGURES["order flow: trading stream drops"] += 1
    # Whatever still rests ends now, with the stream up.
    for _symbol, order in resting:
        manager.cancel_order(order.id)

    book = {order["id"]: order for order in emulator.orders(KEY)}
    assert len(orders) == ORDERS
    results: dict[str, str] = {}
    for order in orders:
        update = trading.wait_for_order(order.id, timeout=WAIT, catch_up=False)
        results[str(order.id)] = _event(update)
    expected = {
        key: {"filled": "fill", "canceled": "canceled"}[book[key]["status"]] for key in results
    }
    assert results == expected
    with lock:
        # The subscriber's handler runs on the pool after the service recorded the
        # state that wait_for_order() returned: wait for it, then count.
        lock.wait_for(lambda: all(finals[key] >= 1 for key in results), WAIT)
        assert all(finals[key] == 1 for key in results), {
            key: finals[key] for key in results if finals[key] != 1
        }
    stats = trading.stats()
    assert stats.reconciled > 0, "no update needed reconciliation: the faults missed their aim"
    assert stats.reconcile_errors == 0
    assert emulator.counters(KEY, STREAM).max_concurrent == 1
    FIGURES["order flow: orders to a final state through faults"] += len(results)
    FIGURES["order flow: updates recovered by reconciliation"] += stats.reconciled
