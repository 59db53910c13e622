"""TradingService bookkeeping with a fake hub and a fake REST client (no sockets)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from alpaca.trading.models import Order, TradeUpdate

from alpaca_di.hub.consumers import ConsumerTally
from alpaca_di.hub.inbox import Inbox
from alpaca_di.protocol import StreamKind
from alpaca_di.services.trading import (
    ReconciledTradeUpdate,
    TradingService,
)
from alpaca_di.services.trading.reconcile import missed_update
from alpaca_di.transport import ConnectionState

T0 = datetime(2024, 1, 2, 15, 30, tzinfo=timezone.utc)


def order_dict(
    order_id: str, status: str, *, filled: str = "0", at: datetime = T0
) -> dict[str, Any]:
    stamp = at.isoformat()
    return {
        "id": order_id,
        "client_order_id": f"c-{order_id[:8]}",
        "created_at": stamp,
        "updated_at": stamp,
        "submitted_at": stamp,
        "filled_at": stamp if status == "filled" else None,
        "canceled_at": stamp if status == "canceled" else None,
        "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "AAPL")),
        "symbol": "AAPL",
        "asset_class": "us_equity",
        "qty": "5",
        "filled_qty": filled,
        "filled_avg_price": "190.5" if filled != "0" else None,
        "order_class": "simple",
        "order_type": "market",
        "type": "market",
        "side": "buy",
        "time_in_force": "day",
        "status": status,
        "extended_hours": False,
    }


def update(
    order_id: str, event: str, status: str, *, filled: str = "0", at: datetime = T0
) -> TradeUpdate:
    return TradeUpdate(
        event=event,
        order=Order(**order_dict(order_id, status, filled=filled, at=at)),
        timestamp=at,
    )


class FakeSub:
    def __init__(self) -> None:
        self.closed = False
        self.confirmed = 0

    def wait_confirmed(self, timeout: float = 10.0) -> None:
        self.confirmed += 1

    def close(self) -> None:
        self.closed = True


class FakeHub:
    """Just enough of StreamHub for TradingService."""

    kind = StreamKind.TRADING
    endpoint = "ws://127.0.0.1:9/stream"
    closed = False

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.state = ConnectionState.IDLE
        self.handler: Callable[[Any], None] | None = None
        self.listeners: list[Callable[[ConnectionState, ConnectionState], None]] = []
        self.subscribes = 0
        self.consumers = ConsumerTally()

    def subscribe(self, handler: Any = None, **kwargs: Any) -> FakeSub:
        assert kwargs.get("trade_updates") is True
        self.subscribes += 1
        if handler is not None:
            self.handler = handler
        self.state = ConnectionState.CONNECTED
        return FakeSub()

    def attach(self, inbox: Inbox, **kwargs: Any) -> FakeSub:
        assert kwargs.get("trade_updates") is True
        self.subscribes += 1
        self.handler = lambda update: inbox.push([("trade_updates", "", update)])
        self.state = ConnectionState.CONNECTED
        return FakeSub()

    def add_state_listener(self, listener: Callable[..., None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def move(self, state: ConnectionState) -> None:
        previous, self.state = self.state, state
        for listener in list(self.listeners):
            listener(state, previous)

    def health(self) -> Any:
        class _Health:
            last_error = "boom"

        return _Health()

    def _detach(self, sub: Any) -> None:
        pass


class FakeClient:
    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.list_calls: list[Any] = []
        self.get_calls: list[str] = []
        self._secret_key = "fake-secret"

    def get_orders(self, filter: Any = None) -> list[Order]:
        self.list_calls.append(filter)
        return [Order(**o) for o in self.orders.values()]

    def get_order_by_id(self, order_id: str) -> Order:
        self.get_calls.append(order_id)
        return Order(**self.orders[order_id])


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    yield fake
    fake.loop.close()


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def service(hub: FakeHub, client: FakeClient) -> Iterator[TradingService]:
    trading = TradingService(trading_stream=hub, trading_client=client)  # type: ignore[arg-type]
    trading.listen(1)
    yield trading
    trading.close()


def feed(hub: FakeHub, item: TradeUpdate) -> None:
    assert hub.handler is not None
    hub.handler(item)


def test_final_states_are_delivered_once(service: TradingService, hub: FakeHub) -> None:
    oid = str(uuid.uuid4())
    seen: list[TradeUpdate] = []
    sub = service.subscribe()
    feed(hub, update(oid, "new", "new"))
    feed(hub, update(oid, "fill", "filled", filled="5"))
    feed(hub, update(oid, "fill", "filled", filled="5"))
    while True:
        try:
            seen.append(sub.get(timeout=0.01))
        except TimeoutError:
            break
    assert [u.event for u in seen] == ["new", "fill"]
    assert service.stats().duplicates == 1
    assert service.stats().updates == 2


def test_a_late_update_after_the_final_state_does_not_replace_it(
    service: TradingService, hub: FakeHub
) -> None:
    """A previous leader's carried-over ``new`` may arrive after the new leader's ``fill``."""
    oid = str(uuid.uuid4())
    fill = update(oid, "fill", "filled", filled="5")
    feed(hub, fill)
    feed(hub, update(oid, "new", "new"))
    assert service.last_update(oid) is fill
    assert service.wait_for_order(oid, timeout=1) is fill
    assert service.wait_for_order(oid, events=["new"], timeout=1).event == "new"


def test_remembered_updates_resolve_waits_and_the_latest_match_wins(
    service: TradingService, hub: FakeHub
) -> None:
    oid = uuid.uuid4()
    feed(hub, update(str(oid), "new", "new"))
    partial = update(str(oid), "partial_fill", "partially_filled", filled="2")
    feed(hub, partial)
    assert service.wait_for_order(oid, events=["new", "partial_fill"], timeout=1) is partial
    assert service.last_update(str(oid).upper()) is partial
    assert service.last_update(uuid.uuid4()) is None


def test_memory_is_bounded_least_recently_updated_first(hub: FakeHub) -> None:
    service = TradingService(trading_stream=hub, remember=3)  # type: ignore[arg-type]
    service.listen(1)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for oid in ids[:3]:
        feed(hub, update(oid, "new", "new"))
    feed(hub, update(ids[0], "fill", "filled", filled="5"))  # touches the oldest
    feed(hub, update(ids[3], "new", "new"))  # evicts ids[1]
    assert service.last_update(ids[1]) is None
    assert all(service.last_update(oid) is not None for oid in (ids[0], ids[2], ids[3]))
    assert service.stats().orders == 3
    service.close()


def test_reconnect_reconciles_what_was_missed(
    service: TradingService, hub: FakeHub, client: FakeClient
) -> None:
    open_id, done_id, quiet_id, new_id = (str(uuid.uuid4()) for _ in range(4))
    feed(hub, update(open_id, "new", "new"))
    feed(hub, update(done_id, "fill", "filled", filled="5"))
    feed(hub, update(quiet_id, "new", "new"))
    later = T0 + timedelta(seconds=5)
    client.orders = {
        open_id: order_dict(open_id, "filled", filled="5", at=later),  # filled while down
        done_id: order_dict(done_id, "filled", filled="5", at=later),  # known final: skip
        quiet_id: order_dict(quiet_id, "new", at=T0),  # nothing changed: skip
        new_id: order_dict(new_id, "canceled", at=later),  # unknown order: emit
    }
    sub = service.subscribe()
    hub.move(ConnectionState.RECONNECTING)
    hub.move(ConnectionState.CONNECTING)
    hub.move(ConnectionState.CONNECTED)
    fill = service.wait_for_order(open_id, timeout=5, catch_up=False)
    assert isinstance(fill, ReconciledTradeUpdate)
    assert (fill.event, fill.qty, fill.price) == ("fill", 5.0, 190.5)
    canceled = service.wait_for_order(new_id, timeout=5, catch_up=False)
    assert canceled.event == "canceled"
    got = [sub.get(timeout=1), sub.get(timeout=1)]
    assert {str(u.order.id) for u in got} == {open_id, new_id}
    with pytest.raises(TimeoutError):
        sub.get(timeout=0.05)
    assert service.stats().reconciled == 2
    [request] = client.list_calls
    assert request.status == "all"
    assert request.after is not None
    # a late stream copy of the reconciled fill is dropped
    feed(hub, update(open_id, "fill", "filled", filled="5", at=later))
    assert service.stats().duplicates == 1


def test_rest_behind_the_stream_is_not_replayed(service: TradingService, hub: FakeHub) -> None:
    oid = str(uuid.uuid4())
    feed(hub, update(oid, "partial_fill", "partially_filled", filled="3", at=T0 + timedelta(1)))
    stale = Order(**order_dict(oid, "partially_filled", filled="2", at=T0))
    last = service.last_update(oid)
    assert missed_update(stale, last=last, ended=False) is None
    same = Order(**order_dict(oid, "partially_filled", filled="3", at=T0 + timedelta(1)))
    assert missed_update(same, last=last, ended=False) is None
    newer = Order(**order_dict(oid, "partially_filled", filled="4", at=T0 + timedelta(2)))
    missed = missed_update(newer, last=last, ended=False)
    assert missed is not None
    assert missed.event == "partial_fill"


def test_failed_stream_fails_subscriptions_and_async_waiters(
    service: TradingService, hub: FakeHub
) -> None:
    sub = service.subscribe()
    hub.move(ConnectionState.FAILED)
    assert sub.closed
    with pytest.raises(Exception, match="trading stream failed: boom"):
        sub.get(timeout=1)


def test_no_reconcile_without_a_client(hub: FakeHub) -> None:
    service = TradingService(trading_stream=hub)  # type: ignore[arg-type]
    service.listen(1)
    hub.move(ConnectionState.RECONNECTING)
    hub.move(ConnectionState.CONNECTED)
    assert service.stats().reconcile_runs == 0
    service.close()


def test_concurrent_waiters_all_resolve(service: TradingService, hub: FakeHub) -> None:
    oid = str(uuid.uuid4())
    results: list[TradeUpdate] = []
    barrier = threading.Barrier(11)

    def waiter() -> None:
        barrier.wait()
        results.append(service.wait_for_order(oid, timeout=5, catch_up=False))

    threads = [threading.Thread(target=waiter) for _ in range(10)]
    for thread in threads:
        thread.start()
    barrier.wait()
    feed(hub, update(oid, "fill", "filled", filled="5"))
    for thread in threads:
        thread.join(5)
    assert len(results) == 10
    assert len({id(r) for r in results}) == 1
