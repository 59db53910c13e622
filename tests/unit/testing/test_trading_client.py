"""FakeTradingClient: alpaca-py's TradingClient in memory; its orders push trade updates."""

from __future__ import annotations

import datetime as dt

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderStatus
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

from alpaca_di import AlpacaManager
from alpaca_di.errors import AlpacaAPIError
from alpaca_di.services.interfaces import ListeningOrderUpdates, OrderUpdates
from alpaca_di.services.trading import TradingService
from alpaca_di.services.trading.reconcile import fetch_orders_since
from alpaca_di.testing import FakeOrderUpdates, FakePriceSource, FakeStreamHub, FakeTradingClient


def market(symbol: str = "AAPL", qty: float = 2, side: str = "buy") -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force="day")


def events(client: FakeTradingClient, order_id: object) -> list[str]:
    updates = client.updates.updates(str(order_id))
    return [str(getattr(u.event, "value", u.event)) for u in updates]


def test_a_market_order_goes_new_then_fill_before_submit_returns() -> None:
    client = FakeTradingClient(fill_price=190.0)
    order = client.submit_order(market(qty=3))
    assert order.status == OrderStatus.FILLED
    assert events(client, order.id) == ["new", "fill"]
    fill = client.updates.wait_for_order(order.id, timeout=1)
    assert fill.price == 190.0
    assert fill.qty == 3
    assert client.position_qty("AAPL") == 3
    assert float(client.get_account().cash) == pytest.approx(100_000 - 570)
    [position] = client.get_all_positions()
    assert position.symbol == "AAPL"
    assert float(position.qty) == 3


def test_partial_fills_then_fill_and_average_price() -> None:
    client = FakeTradingClient(partial_fills=2)
    order = client.submit_order(market(qty=3))
    assert events(client, order.id) == ["new", "partial_fill", "partial_fill", "fill"]
    assert float(client.get_order_by_id(order.id).filled_qty or 0) == 3


def test_reject_refuse_and_accept_outcomes() -> None:
    client = FakeTradingClient()
    client.set_outcome("reject", symbol="GME")
    rejected = client.submit_order(market("GME"))
    assert rejected.status == OrderStatus.REJECTED
    assert events(client, rejected.id) == ["rejected"]
    client.set_outcome("refuse", symbol="AMC")
    with pytest.raises(APIError) as info:
        client.submit_order(market("AMC"))
    assert info.value.status_code == 403
    client.set_outcome("accept")
    resting = client.submit_order(market("MSFT", qty=4))
    assert resting.status == OrderStatus.NEW
    client.fill(resting.id, qty=1, price=10.0)
    assert events(client, resting.id) == ["new", "partial_fill"]
    client.cancel_order_by_id(resting.id)
    assert client.get_order_by_id(resting.id).status == OrderStatus.CANCELED
    with pytest.raises(APIError) as info:
        client.cancel_order_by_id(resting.id)
    assert info.value.status_code == 422
    with pytest.raises(ValueError, match="outcome"):
        client.set_outcome("explode")  # type: ignore[arg-type]


def test_limit_orders_fill_at_their_limit_and_prices_drive_market_orders() -> None:
    prices = FakePriceSource({"AAPL": 123.0})
    client = FakeTradingClient(prices=prices)
    limit = LimitOrderRequest(
        symbol="AAPL", qty=1, side="sell", time_in_force="day", limit_price=125.5
    )
    assert client.updates.wait_for_order(client.submit_order(limit).id, timeout=1).price == 125.5
    assert client.updates.wait_for_order(client.submit_order(market()).id, timeout=1).price == 123.0


def test_get_orders_filters_like_alpaca_and_unknown_ids_are_404() -> None:
    client = FakeTradingClient()
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    filled = client.submit_order(market())
    client.set_outcome("accept")
    open_order = client.submit_order(market("MSFT"))
    assert [o.id for o in client.get_orders()] == [open_order.id]
    everything = client.get_orders(GetOrdersRequest(status="all", direction="asc", after=before))
    assert [o.id for o in everything] == [filled.id, open_order.id]
    assert [o.id for o in client.get_orders(GetOrdersRequest(status="closed"))] == [filled.id]
    assert client.get_orders(GetOrdersRequest(status="all", symbols=["TSLA"])) == []
    assert set(fetch_orders_since(client, before)) == {str(filled.id), str(open_order.id)}  # type: ignore[arg-type]
    with pytest.raises(APIError) as info:
        client.get_order_by_id("00000000-0000-4000-8000-000000000000")
    assert info.value.status_code == 404


def test_the_fakes_satisfy_the_protocols() -> None:
    updates = FakeOrderUpdates()
    assert isinstance(updates, ListeningOrderUpdates)
    assert isinstance(FakeTradingClient(updates).updates, OrderUpdates)


def test_alpaca_manager_on_the_fake_client_sync_and_async() -> None:
    client = FakeTradingClient()
    manager = AlpacaManager(trading_client=client, trading_service=client.updates)  # type: ignore[arg-type]
    assert manager.submit_and_wait(market(), timeout=1).event == "fill"
    assert client.updates.listens == 1
    client.set_outcome("refuse")
    with pytest.raises(AlpacaAPIError) as info:
        manager.submit_order(market())
    assert info.value.status_code == 403
    assert float(manager.account().cash) < 100_000
    assert [p.symbol for p in manager.positions()] == ["AAPL"]


async def test_alpaca_manager_async_twins_on_the_fake_client() -> None:
    client = FakeTradingClient(partial_fills=1)
    manager = AlpacaManager(trading_client=client, trading_service=client.updates)  # type: ignore[arg-type]
    update = await manager.submit_and_wait_async(market(), timeout=1)
    assert update.event == "fill"
    partial = await client.updates.wait_for_order_async(update.order.id, ["partial_fill"], 1)
    assert partial.qty == 1


def test_trading_service_catches_up_through_the_fake_client() -> None:
    """An order filled while nobody listened is found by the service's REST look-up."""
    client = FakeTradingClient(FakeOrderUpdates())  # its updates never reach the hub
    order = client.submit_order(market())
    hub = FakeStreamHub("trading")
    service = TradingService(trading_stream=hub, trading_client=client)  # type: ignore[arg-type]
    try:
        update = service.wait_for_order(order.id, timeout=5)
        assert update.event == "fill"
        assert str(update.order.id) == str(order.id)
    finally:
        service.close()
        hub.close()


def test_it_is_a_trading_client_that_never_reaches_the_network() -> None:
    from alpaca.trading.client import TradingClient

    client = FakeTradingClient()
    assert isinstance(client, TradingClient)
    refused = r"does not fake GET /v2/clock.*faked: submit_order"
    with pytest.raises(NotImplementedError, match=refused):
        client.get_clock()
