"""AlpacaEmulator's REST API (account, clock, assets, orders, positions) and its trade updates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from alpaca.trading.models import Asset, Clock, Order, Position, TradeAccount, TradeUpdate
from websockets.asyncio.client import connect

from alpaca_di.emulator import AlpacaEmulator

KEY, SECRET = "PKREST0001", "rest-secret"
HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


class Api:
    def __init__(self, emu: AlpacaEmulator) -> None:
        self.base = emu.api_url + "/v2"
        self.session = requests.Session()
        self.session.headers.update(HEADERS)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=5, **kwargs)

    def order(self, **body: Any) -> requests.Response:
        body.setdefault("time_in_force", "day")
        body.setdefault("type", "market")
        return self.call("POST", "/orders", json=body)


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator(seed=5) as emulator:
        yield emulator


@pytest.fixture
def api(emu: AlpacaEmulator) -> Iterator[Api]:
    client = Api(emu)
    yield client
    client.session.close()


def test_account_clock_asset_parse_as_alpaca_models(api: Api) -> None:
    account = TradeAccount(**api.call("GET", "/account").json())
    assert account.cash == "100000.00"
    assert account.status == "ACTIVE"
    clock = Clock(**api.call("GET", "/clock").json())
    assert clock.is_open is True
    asset = Asset(**api.call("GET", "/assets/AAPL").json())
    assert asset.symbol == "AAPL"
    assert asset.tradable
    crypto = api.call("GET", "/assets/BTC/USD").json()
    assert crypto["class"] == "crypto"
    assert crypto["exchange"] == "CRYPTO"
    missing = api.call("GET", "/assets/NOPE")
    assert missing.status_code == 404
    assert "NOPE" in missing.json()["message"]


def test_auth_headers(emu: AlpacaEmulator, api: Api) -> None:
    bare = requests.get(api.base + "/account", timeout=5)
    assert bare.status_code == 401
    assert bare.json() == {"code": 40110000, "message": "request is not authorized"}
    assert api.call("GET", "/account").status_code == 200  # open mode: any key
    emu.add_account("PKOTHER", "other")
    forbidden = api.call("GET", "/account")
    assert forbidden.status_code == 403
    assert set(forbidden.json()) == {"code", "message"}
    emu.add_account(KEY, SECRET)
    assert api.call("GET", "/account").status_code == 200


def test_unknown_symbol_is_422_naming_the_asset(api: Api) -> None:
    response = api.order(symbol="ZZZZ", qty=1, side="buy")
    assert response.status_code == 422
    assert 'asset "ZZZZ" not found' in response.json()["message"]


def test_invalid_orders_are_422(api: Api) -> None:
    assert api.order(symbol="AAPL", qty=1, side="hold").status_code == 422
    assert api.order(symbol="AAPL", side="buy").status_code == 422
    assert api.order(symbol="AAPL", qty=1, side="buy", type="limit").status_code == 422
    assert api.call("POST", "/orders", data=b"{not json").status_code == 400


def test_market_order_fills_and_updates_positions_and_cash(emu: AlpacaEmulator, api: Api) -> None:
    emu.set_price("AAPL", 200.0)
    placed = api.order(symbol="AAPL", qty=10, side="buy", client_order_id="mine-1")
    assert placed.status_code == 200
    order = Order(**placed.json())
    assert order.status == "new"
    assert order.client_order_id == "mine-1"
    filled = Order(**api.call("GET", f"/orders/{order.id}").json())
    assert filled.status == "filled"
    assert float(filled.filled_avg_price or 0) == 200.0
    by_client = api.call("GET", "/orders:by_client_order_id", params={"client_order_id": "mine-1"})
    assert by_client.json()["id"] == str(order.id)
    position = Position(**api.call("GET", "/positions/AAPL").json())
    assert position.qty == "10"
    assert position.avg_entry_price == "200"
    assert api.call("GET", "/account").json()["cash"] == "98000.00"
    api.order(symbol="AAPL", qty=4, side="sell")
    assert [Position(**p).qty for p in api.call("GET", "/positions").json()] == ["6"]
    assert emu.positions(KEY) == {"AAPL": 6.0}
    duplicate = api.order(symbol="AAPL", qty=1, side="buy", client_order_id="mine-1")
    assert duplicate.status_code == 422


def test_limit_order_rests_until_price_crosses(emu: AlpacaEmulator, api: Api) -> None:
    emu.set_price("MSFT", 400.0)
    body = api.order(symbol="MSFT", qty=2, side="buy", type="limit", limit_price=390).json()
    assert api.call("GET", f"/orders/{body['id']}").json()["status"] == "new"
    assert [o["id"] for o in api.call("GET", "/orders").json()] == [body["id"]]
    emu.set_price("MSFT", 395.0)
    assert api.call("GET", f"/orders/{body['id']}").json()["status"] == "new"
    emu.set_price("MSFT", 389.5)
    order = api.call("GET", f"/orders/{body['id']}").json()
    assert order["status"] == "filled"
    assert order["filled_avg_price"] == "389.5"
    assert api.call("GET", "/orders").json() == []
    assert len(api.call("GET", "/orders", params={"status": "closed"}).json()) == 1


def test_cancel_one_and_all(emu: AlpacaEmulator, api: Api) -> None:
    emu.set_price("SPY", 500.0)
    ids = [
        api.order(symbol="SPY", qty=1, side="buy", type="limit", limit_price=400 + i).json()["id"]
        for i in range(3)
    ]
    response = api.call("DELETE", f"/orders/{ids[0]}")
    assert response.status_code == 204
    assert response.text == ""
    assert api.call("GET", f"/orders/{ids[0]}").json()["status"] == "canceled"
    assert api.call("DELETE", f"/orders/{ids[0]}").status_code == 422
    assert api.call("DELETE", "/orders/00000000-0000-0000-0000-000000000000").status_code == 404
    response = api.call("DELETE", "/orders")
    assert response.status_code == 207
    assert sorted(r["id"] for r in response.json()) == sorted(ids[1:])
    newest = api.call("GET", "/orders", params={"status": "all", "limit": 2}).json()
    assert [o["id"] for o in newest] == [ids[2], ids[1]]


def test_no_position_is_404_and_insufficient_buying_power_is_403(api: Api) -> None:
    assert api.call("GET", "/positions/TSLA").status_code == 404
    response = api.order(symbol="TSLA", qty=1_000_000, side="buy")
    assert response.status_code == 403
    assert response.json()["message"] == "insufficient buying power"


def test_fail_rest_injects_errors(emu: AlpacaEmulator, api: Api) -> None:
    emu.fail_rest(500, "boom", times=2)
    for _ in range(2):
        response = api.call("GET", "/clock")
        assert response.status_code == 500
        assert response.json() == {
            "code": 50000000, "message": "boom",
        }
    assert api.call("GET", "/clock").status_code == 200
    emu.fail_rest(429, "rate limit exceeded", code=42910000)
    assert api.call("GET", "/account").json() == {
        "code": 42910000, "message": "rate limit exceeded",
    }


def test_connection_close_and_unknown_endpoint(emu: AlpacaEmulator) -> None:
    with httpx.Client(headers=HEADERS | {"Connection": "close"}, timeout=5) as client:
        assert client.get(emu.api_url + "/v2/clock").status_code == 200
        assert client.get(emu.api_url + "/v2/watchlists").status_code == 404
        assert client.get(emu.api_url + "/other").status_code == 404
    assert emu.stats().rest_requests == 3


async def test_trade_updates_for_market_limit_and_cancel() -> None:
    async with AlpacaEmulator(seed=1) as emu:
        ws = await connect(emu.trading_stream_url, ping_interval=None)
        await ws.send(json.dumps({"action": "authenticate",
                                  "data": {"key_id": KEY, "secret_key": SECRET}}))
        await ws.recv()
        await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        await ws.recv()

        async def update() -> TradeUpdate:
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert message["stream"] == "trade_updates"
            return TradeUpdate(**message["data"])

        async with httpx.AsyncClient(base_url=emu.api_url + "/v2", headers=HEADERS) as client:
            emu.set_price("NVDA", 100.0)
            placed = (await client.post("/orders", json={
                "symbol": "NVDA", "qty": "3", "side": "buy", "type": "market",
                "time_in_force": "day"})).json()
            new, fill = await update(), await update()
            assert (new.event, new.order.status) == ("new", "new")
            assert str(new.order.id) == placed["id"]
            assert (fill.event, fill.price, fill.qty, fill.position_qty) == ("fill", 100.0, 3, 3)
            assert fill.order.status == "filled"
            assert fill.execution_id is not None
            limit = (await client.post("/orders", json={
                "symbol": "NVDA", "qty": 1, "side": "sell", "type": "limit",
                "limit_price": 120, "time_in_force": "gtc"})).json()
            assert (await update()).event == "new"
            emu.set_price("NVDA", 121.0)
            sold = await update()
            assert (sold.event, sold.price, sold.position_qty) == ("fill", 121.0, 2)
            assert str(sold.order.id) == limit["id"]
            resting = (await client.post("/orders", json={
                "symbol": "NVDA", "qty": 1, "side": "buy", "type": "limit",
                "limit_price": 50, "time_in_force": "day"})).json()
            assert (await update()).event == "new"
            assert (await client.delete(f"/orders/{resting['id']}")).status_code == 204
            canceled = await update()
            assert canceled.event == "canceled"
            assert canceled.order.status == "canceled"
        assert emu.counters(KEY, "/stream").messages_sent == 6
        await ws.close()
