"""TradingService against the emulator: lazy socket, memory, fan-out, reconciliation."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce, TradeEvent
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import AuthenticationError, ConnectionClosedError
from alpaca_di.hub import ConnectionRegistry, Lease
from alpaca_di.protocol import StreamKind
from alpaca_di.services.interfaces import OrderUpdates
from alpaca_di.services.trading import ReconciledTradeUpdate, TradingService
from alpaca_di.testing.recorder import Recorder
from alpaca_di.transport import ConnectionOptions, ConnectionState

KEY = "PKINTEGRATION01"
SECRET = "integration-secret-do-not-leak"
STREAM = "/stream"


@pytest.fixture
def trading_lease(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
) -> Iterator[Lease]:
    lease = registry.acquire(creds, StreamKind.TRADING, emulator.trading_stream_url, fast_options)
    yield lease
    lease.release()


@pytest.fixture
def client(emulator: AlpacaEmulator) -> TradingClient:
    return TradingClient(KEY, SECRET, paper=True, url_override=emulator.api_url)


@pytest.fixture
def trading(trading_lease: Lease, client: TradingClient) -> Iterator[TradingService]:
    service = TradingService(trading_stream=trading_lease.hub, trading_client=client)
    yield service
    service.close()


def market(symbol: str = "AAPL", qty: float = 1, side: OrderSide = OrderSide.BUY) -> Any:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY)


def events(updates: list[Any]) -> list[str]:
    return [str(getattr(u.event, "value", u.event)) for u in updates]


def test_the_socket_opens_at_the_first_subscribe_not_at_construction(
    trading_lease: Lease, client: TradingClient, emulator: AlpacaEmulator
) -> None:
    service = TradingService(trading_stream=trading_lease.hub, trading_client=client)
    assert trading_lease.hub.state is ConnectionState.IDLE
    assert emulator.counters(KEY, STREAM).connections_accepted == 0
    recorder = Recorder()
    sub = service.subscribe(recorder)
    sub.wait_confirmed(5)
    assert emulator.counters(KEY, STREAM).open == 1
    order = client.submit_order(market())
    received = recorder.wait_for(2)
    assert events(received) == ["new", "fill"]
    assert all(str(u.order.id) == str(order.id) for u in received)
    assert sub.stats.delivered == 2
    service.close()
    assert sub.closed


def test_a_fill_delivered_before_wait_for_order_is_still_found(
    trading: TradingService, client: TradingClient
) -> None:
    recorder = Recorder()
    trading.subscribe(recorder)
    trading.listen(5)
    order = client.submit_order(market())
    recorder.wait_for(2)  # new + fill are in, before anyone waits
    update = trading.wait_for_order(order.id, timeout=5)
    assert update.event == TradeEvent.FILL
    assert not getattr(update, "reconciled", False)
    assert trading.wait_for_order(str(order.id), events=["new"], timeout=5).event == "new"
    assert trading.wait_for_order(order.id, events=[TradeEvent.NEW, "fill"], timeout=5) is update
    assert trading.last_update(order.id) is update


def test_wait_for_order_waits_for_a_later_fill(
    trading: TradingService, client: TradingClient, emulator: AlpacaEmulator
) -> None:
    trading.listen(5)
    price = emulator.price("MSFT")
    order = client.submit_order(
        LimitOrderRequest(
            symbol="MSFT",
            qty=2,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            limit_price=round(price * 0.5, 2),
        )
    )
    result: dict[str, TradeUpdate] = {}
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        result["update"] = trading.wait_for_order(order.id, events=("fill",), timeout=10)

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(5)
    trading.wait_for_order(order.id, events=("new",), timeout=5)
    emulator.set_price("MSFT", round(price * 0.4, 2))  # crosses the resting limit
    thread.join(10)
    assert not thread.is_alive()
    assert result["update"].event == "fill"
    assert result["update"].qty == 2


def test_handlers_sync_async_and_iteration_all_receive_every_update(
    trading: TradingService, client: TradingClient
) -> None:
    sync_recorder = Recorder()
    async_seen: list[TradeUpdate] = []
    async_done = threading.Event()

    async def on_update(update: TradeUpdate) -> None:
        async_seen.append(update)
        if len(async_seen) == 2:
            async_done.set()

    trading.subscribe(sync_recorder)
    trading.subscribe(on_update)
    with trading.subscribe() as iterator:
        iterator.wait_confirmed(5)
        client.submit_order(market("SPY"))
        first, second = iterator.get(timeout=5), iterator.get(timeout=5)
    assert iterator.closed
    assert events([first, second]) == ["new", "fill"]
    assert events(sync_recorder.wait_for(2)) == ["new", "fill"]
    assert async_done.wait(5)
    assert events(async_seen) == ["new", "fill"]
    with pytest.raises(TypeError, match="no symbols"):
        trading.subscribe().add(trades=["AAPL"])


def test_a_fill_during_a_disconnect_is_recovered_by_reconciliation(
    trading: TradingService,
    trading_lease: Lease,
    client: TradingClient,
    emulator: AlpacaEmulator,
) -> None:
    recorder = Recorder()
    trading.subscribe(recorder)
    trading.listen(5)
    hub = trading_lease.hub

    # Take the trading stream down and keep it down: every reconnect is refused.
    emulator.refuse_handshake(503, times=1_000_000, path=STREAM)
    emulator.drop_connections(STREAM)
    emulator.wait_until(lambda: emulator.stats().refused_handshakes >= 1, 5)
    assert hub.state is not ConnectionState.CONNECTED

    order = client.submit_order(market("NVDA", qty=3))  # fills now; nobody hears it
    emulator.wait_until(lambda: emulator.orders(KEY)[-1]["status"] == "filled", 5)
    assert len(recorder) == 0

    emulator.reset_faults()  # let it reconnect
    update = trading.wait_for_order(order.id, timeout=10, catch_up=False)
    assert isinstance(update, ReconciledTradeUpdate)
    assert update.reconciled is True
    assert update.event == TradeEvent.FILL
    assert update.qty == 3
    assert update.price == pytest.approx(float(emulator.orders(KEY)[-1]["filled_avg_price"]))
    [delivered] = recorder.wait_for(1)
    assert delivered is update
    assert trading.stats().reconciled == 1

    # A late copy of the same final state is never delivered twice.
    raw = emulator.orders(KEY)[-1]
    emulator.push_trade_update(
        KEY, {"event": "fill", "order": raw, "timestamp": raw["updated_at"], "qty": "3"}
    )
    sentinel = client.submit_order(market("AAPL"))
    trading.wait_for_order(sentinel.id, timeout=5)
    recorder.wait_for(3)  # the sentinel's new + fill
    assert [str(u.order.id) for u in recorder.items].count(str(order.id)) == 1
    assert trading.stats().duplicates == 1


def test_reconciliation_emits_nothing_when_nothing_was_missed(
    trading: TradingService,
    trading_lease: Lease,
    client: TradingClient,
    emulator: AlpacaEmulator,
) -> None:
    recorder = Recorder()
    trading.subscribe(recorder)
    trading.listen(5)
    order = client.submit_order(market())
    trading.wait_for_order(order.id, timeout=5)
    recorder.wait_for(2)
    reconnects = trading_lease.hub.health().reconnects
    emulator.drop_connections(STREAM)
    emulator.wait_until(lambda: trading.stats().reconcile_runs >= 1, 10)
    assert trading_lease.hub.health().reconnects > reconnects
    assert trading.stats().reconciled == 0
    assert len(recorder) == 2


def test_catch_up_finds_an_order_that_ended_before_the_stream_was_open(
    trading: TradingService, client: TradingClient
) -> None:
    order = client.submit_order(market("TSLA"))  # trading socket not open yet
    update = trading.wait_for_order(order.id, timeout=10)
    assert isinstance(update, ReconciledTradeUpdate)
    assert update.event == "fill"
    with pytest.raises(TimeoutError, match=f"order {order.id} reached none of canceled"):
        trading.wait_for_order(order.id, events=["canceled"], timeout=0.3, catch_up=False)


def test_catch_up_notes_an_unknown_order_but_keeps_waiting_for_the_stream(
    trading: TradingService, emulator: AlpacaEmulator, client: TradingClient
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(TimeoutError, match=r"does not know this order \(HTTP 404\)"):
        trading.wait_for_order(missing, timeout=0.5)
    # an update the REST API never heard of still resolves a waiter (404 is not fatal)
    real = client.submit_order(market("AMZN"))
    raw = {**emulator.orders(KEY)[-1], "id": str(missing)}
    trading.listen(5)
    emulator.push_trade_update(KEY, {"event": "fill", "order": raw, "timestamp": raw["updated_at"]})
    assert trading.wait_for_order(missing, timeout=5).event == "fill"
    assert trading.wait_for_order(real.id, timeout=5).event == "fill"


async def test_wait_for_order_async(trading: TradingService, client: TradingClient) -> None:
    await trading.listen_async(5)
    order = await asyncio.to_thread(client.submit_order, market("QQQ"))
    update = await trading.wait_for_order_async(order.id, timeout=5, catch_up=False)
    assert update.event == "fill"
    assert (await trading.wait_for_order_async(order.id, events="new", timeout=1)).event == "new"
    with pytest.raises(TimeoutError, match="reached none of expired"):
        await trading.wait_for_order_async(order.id, events=["expired"], timeout=0.2)


async def test_async_iteration_receives_updates(
    trading: TradingService, client: TradingClient
) -> None:
    async with trading.subscribe() as updates:
        await updates.confirmed(5)
        await asyncio.to_thread(client.submit_order, market("GOOGL"))
        seen = []
        async for update in updates:
            seen.append(update)
            if len(seen) == 2:
                break
    assert events(seen) == ["new", "fill"]


def test_bad_input_gives_clear_errors(trading: TradingService) -> None:
    with pytest.raises(ValueError, match="unknown trade event 'filled'; valid events: "):
        trading.wait_for_order(uuid.uuid4(), events=["filled"])
    with pytest.raises(ValueError, match="at least one"):
        trading.wait_for_order(uuid.uuid4(), events=[])
    with pytest.raises(ValueError, match="order_id must be an order UUID, got 'my-order'"):
        trading.wait_for_order("my-order")
    with pytest.raises(TypeError, match="str or UUID"):
        trading.last_update(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        trading.wait_for_order(uuid.uuid4(), timeout=0)
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        trading.wait_for_order(uuid.uuid4(), timeout=-5)
    with pytest.raises(ValueError, match="finite"):
        trading.wait_for_order(uuid.uuid4(), timeout=float("inf"))
    with pytest.raises(TypeError, match="callable"):
        trading.subscribe("not a handler")  # type: ignore[arg-type]


def test_constructor_checks_its_stream(
    registry: ConnectionRegistry, emulator: AlpacaEmulator, creds: Credentials
) -> None:
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url("/v2/iex"))
    try:
        with pytest.raises(ValueError, match="must be a trading stream, got a stock one"):
            TradingService(trading_stream=lease.hub)
        with pytest.raises(TypeError, match="StreamHub"):
            TradingService(trading_stream=None)  # type: ignore[arg-type]
    finally:
        lease.release()


def test_a_failed_trading_stream_raises_its_error(
    trading: TradingService, emulator: AlpacaEmulator
) -> None:
    emulator.reject_auth(402, path=STREAM)
    recorder = Recorder()
    sub = trading.subscribe(recorder)
    with pytest.raises(AuthenticationError):
        trading.wait_for_order(uuid.uuid4(), timeout=10, catch_up=False)
    emulator.wait_until(lambda: sub.closed, 5)


def test_closing_the_hub_ends_subscriptions_and_waiters(
    trading: TradingService, trading_lease: Lease
) -> None:
    trading.listen(5)
    sub = trading.subscribe()
    errors: list[BaseException] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        try:
            trading.wait_for_order(uuid.uuid4(), timeout=10, catch_up=False)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(5)
    trading_lease.release()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionClosedError)
    with pytest.raises(ConnectionClosedError):
        sub.get(timeout=1)


def test_satisfies_the_order_updates_protocol(trading: TradingService) -> None:
    updates: OrderUpdates = trading
    assert isinstance(updates, OrderUpdates)
