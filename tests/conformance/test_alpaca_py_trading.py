"""alpaca-py 0.44's real TradingClient and TradingStream against the emulator."""

from __future__ import annotations

import json

import pytest
from _conformance_support import Collector, StreamRunner
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from alpaca.trading.stream import TradingStream

from alpaca_di.emulator import AlpacaEmulator

KEY, SECRET = "PKTRADE001", "trade-secret"
STREAM = "/stream"


def start_trading_stream(
    emu: AlpacaEmulator, runner: StreamRunner, key: str = KEY, secret: str = SECRET
) -> Collector:
    got = Collector()
    stream = TradingStream(key, secret, paper=True, url_override=emu.trading_stream_url)
    stream.subscribe_trade_updates(got.handler)
    runner.start(stream, STREAM, key)
    return got


def listening(emu: AlpacaEmulator, key: str = KEY) -> None:
    emu.wait_until(lambda: emu.counters(key, STREAM).subscribe_messages >= 1)


def test_orders_through_trading_client_produce_trade_updates(
    emu: AlpacaEmulator, runner: StreamRunner
) -> None:
    got = start_trading_stream(emu, runner)
    listening(emu)
    client = TradingClient(KEY, SECRET, paper=True, url_override=emu.api_url)
    assert float(client.get_account().cash or 0) == 100_000.0
    assert client.get_clock().is_open
    assert client.get_asset("AAPL").symbol == "AAPL"

    emu.set_price("AAPL", 150.0)
    order = client.submit_order(MarketOrderRequest(
        symbol="AAPL", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
        client_order_id="conf-1",
    ))
    assert order.status == OrderStatus.NEW
    new, fill = got.wait_count(2)
    assert isinstance(new, TradeUpdate)
    assert (new.event, new.order.id) == ("new", order.id)
    assert (fill.event, fill.order.status, fill.price, fill.qty, fill.position_qty) == (
        "fill", OrderStatus.FILLED, 150.0, 5.0, 5.0,
    )
    assert client.get_order_by_client_id("conf-1").status == OrderStatus.FILLED
    position = client.get_open_position("AAPL")
    assert (position.qty, position.avg_entry_price) == ("5", "150")

    limit = client.submit_order(LimitOrderRequest(
        symbol="AAPL", qty=2, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
        limit_price=155.0,
    ))
    got.wait_count(3)
    open_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert [o.id for o in open_orders] == [limit.id]
    emu.set_price("AAPL", 155.5)
    sold = got.wait_count(4)[3]
    assert (sold.event, sold.order.id, sold.price, sold.position_qty) == (
        "fill", limit.id, 155.5, 3.0,
    )

    resting = client.submit_order(LimitOrderRequest(
        symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
        limit_price=100.0,
    ))
    client.cancel_order_by_id(resting.id)
    canceled = got.wait_count(6)[5]
    assert (canceled.event, canceled.order.status) == ("canceled", OrderStatus.CANCELED)
    assert client.cancel_orders() == []
    assert [p.symbol for p in client.get_all_positions()] == ["AAPL"]


def test_rest_errors_surface_as_alpaca_api_errors(emu: AlpacaEmulator) -> None:
    client = TradingClient(KEY, SECRET, paper=True, url_override=emu.api_url)
    with pytest.raises(APIError) as info:
        client.submit_order(MarketOrderRequest(
            symbol="NOTREAL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        ))
    assert info.value.status_code == 422
    assert "NOTREAL" in json.loads(str(info.value))["message"]
    emu.fail_rest(500, "internal server error")
    with pytest.raises(APIError) as info:
        client.get_account()
    assert info.value.status_code == 500
    assert client.get_account().status == "ACTIVE"


def test_second_trading_stream_same_key_is_rejected_and_retries(
    emu: AlpacaEmulator, runner: StreamRunner
) -> None:
    first = start_trading_stream(emu, runner)
    listening(emu)
    start_trading_stream(emu, runner)
    emu.wait_until(lambda: emu.counters(KEY, STREAM).rejections.get(406, 0) >= 2)
    client = TradingClient(KEY, SECRET, paper=True, url_override=emu.api_url)
    client.submit_order(MarketOrderRequest(
        symbol="MSFT", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
    ))
    assert [u.event for u in first.wait_count(2)] == ["new", "fill"]
    emu.push_trade_update(KEY, {
        "event": "done_for_day", "timestamp": "2024-01-02T21:00:00Z", "order": emu.orders(KEY)[0],
    })
    assert first.wait_count(3)[2].event == "done_for_day"
    counters = emu.counters(KEY, STREAM)
    assert counters.open == 1
    assert counters.max_concurrent == 1


def test_bad_trading_credentials_keep_alpaca_py_retrying(
    emu: AlpacaEmulator, runner: StreamRunner
) -> None:
    emu.add_account(KEY, SECRET)
    start_trading_stream(emu, runner, secret="wrong")
    emu.wait_until(lambda: emu.counters(KEY, STREAM).rejections.get(402, 0) >= 2)
    assert emu.counters(KEY, STREAM).connections_accepted == 0


def test_text_frame_knob_is_accepted_by_alpaca_py() -> None:
    with AlpacaEmulator(trading_text_frames=True) as emu:
        text_runner = StreamRunner(emu)
        try:
            got = start_trading_stream(emu, text_runner)
            listening(emu)
            client = TradingClient(KEY, SECRET, paper=True, url_override=emu.api_url)
            client.submit_order(MarketOrderRequest(
                symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            ))
            assert [u.event for u in got.wait_count(2)] == ["new", "fill"]
        finally:
            text_runner.stop_all()
