"""AlpacaManager against the emulator: REST facade, submit_and_wait, limit pricing, errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.errors import AlpacaAPIError
from alpaca_di.hub import ConnectionRegistry
from alpaca_di.protocol import StreamKind
from alpaca_di.services.manager import AlpacaManager
from alpaca_di.services.pricing import PricingService
from alpaca_di.services.trading import TradingService
from alpaca_di.testing.messages import quote
from alpaca_di.transport import ConnectionOptions

KEY = "PKINTEGRATION01"
SECRET = "integration-secret-do-not-leak"
IEX = "/v2/iex"


@pytest.fixture
def client(emulator: AlpacaEmulator) -> TradingClient:
    return TradingClient(KEY, SECRET, paper=True, url_override=emulator.api_url)


@pytest.fixture
def manager(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
    client: TradingClient,
) -> Iterator[AlpacaManager]:
    trading_lease = registry.acquire(
        creds, StreamKind.TRADING, emulator.trading_stream_url, fast_options
    )
    stock_lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), fast_options)
    trading = TradingService(trading_stream=trading_lease.hub, trading_client=client)
    pricing = PricingService(stock_stream=stock_lease.hub)
    yield AlpacaManager(trading_client=client, trading_service=trading, pricing_service=pricing)
    pricing.close()
    trading.close()
    stock_lease.release()
    trading_lease.release()


def market(
    symbol: str = "AAPL", qty: float = 1, side: OrderSide = OrderSide.BUY
) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY)


def resting_limit(emulator: AlpacaEmulator, symbol: str = "MSFT") -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol=symbol,
        qty=1,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.GTC,
        limit_price=round(emulator.price(symbol) * 0.5, 2),
    )


def test_submit_and_wait_returns_the_fill(manager: AlpacaManager, emulator: AlpacaEmulator) -> None:
    update = manager.submit_and_wait(market("AAPL", qty=2), timeout=10)
    assert update.event == "fill"
    assert update.order.symbol == "AAPL"
    assert update.qty == 2
    assert not getattr(update, "reconciled", False)
    assert emulator.positions(KEY) == {"AAPL": 2.0}
    [position] = manager.positions()
    assert (position.symbol, float(position.qty)) == ("AAPL", 2.0)
    account = manager.account()
    assert float(account.cash) < 100_000
    order = manager.get_order(update.order.id)
    assert order.status == "filled"


def test_cancel_order_and_wait_for_the_canceled_update(
    manager: AlpacaManager, emulator: AlpacaEmulator
) -> None:
    order = manager.submit_order(resting_limit(emulator))
    assert order.status == "new"
    manager.cancel_order(order.id)
    trading = manager.trading_service
    assert trading is not None
    update = trading.wait_for_order(order.id, events=["canceled"], timeout=10)
    assert update.event == "canceled"
    assert manager.get_order(str(order.id)).status == "canceled"


def test_submit_and_wait_times_out_naming_the_order(
    manager: AlpacaManager, emulator: AlpacaEmulator
) -> None:
    with pytest.raises(
        TimeoutError, match=r"order [0-9a-f-]{36} reached none of .*last event seen: new"
    ):
        manager.submit_and_wait(resting_limit(emulator, "SPY"), timeout=0.5)


async def test_submit_and_wait_async(manager: AlpacaManager) -> None:
    update = await manager.submit_and_wait_async(market("TSLA"), timeout=10)
    assert update.event == "fill"
    order = await manager.get_order_async(update.order.id)
    assert order.status == "filled"
    assert [p.symbol for p in await manager.positions_async()] == ["TSLA"]
    assert (await manager.account_async()).status == "ACTIVE"


def test_marketable_limit_price_from_the_live_mid(
    manager: AlpacaManager, emulator: AlpacaEmulator
) -> None:
    pricing = manager.pricing_service
    assert isinstance(pricing, PricingService)
    pricing.track("AAPL", "PENNY", owner="test")
    emulator.wait_until(lambda: "PENNY" in emulator.subscriptions(KEY, IEX)["quotes"], 5)
    emulator.publish(
        IEX, [quote("AAPL", bid=100.0, ask=100.02), quote("PENNY", bid=0.5, ask=0.5002)]
    )
    pricing.wait_for_price("PENNY", timeout=5)
    # mid 100.01: buy * 1.001 = 100.11001 -> up to 100.12; sell * 0.999 = 99.90999 -> down to 99.90
    assert manager.marketable_limit_price("AAPL", "buy") == 100.12
    assert manager.marketable_limit_price("AAPL", OrderSide.SELL) == 99.90
    assert manager.marketable_limit_price("AAPL", "buy", offset_bps=0) == 100.01
    # below $1: 4 decimals. mid 0.5001 -> 0.5006001 -> 0.5007 ; 0.4995999 -> 0.4995
    assert manager.marketable_limit_price("PENNY", "buy") == 0.5007
    assert manager.marketable_limit_price("PENNY", "sell") == 0.4995


def test_marketable_limit_price_waits_for_a_first_price(
    manager: AlpacaManager, emulator: AlpacaEmulator
) -> None:
    with pytest.raises(TimeoutError, match="no price for 'NVDA'"):
        manager.marketable_limit_price("NVDA", "buy", timeout=0.2)
    with pytest.raises(ValueError, match="side must be 'buy' or 'sell'"):
        manager.marketable_limit_price("NVDA", "long")
    with pytest.raises(ValueError, match="offset_bps must be within"):
        manager.marketable_limit_price("NVDA", "buy", offset_bps=-1)
    with pytest.raises(ValueError, match="'nvda'"):
        manager.marketable_limit_price("nvda", "buy")


def test_unknown_asset_is_a_422_api_error(manager: AlpacaManager) -> None:
    with pytest.raises(AlpacaAPIError) as info:
        manager.submit_order(market("NOPE"))
    assert info.value.status_code == 422
    assert info.value.api_message == 'asset "NOPE" not found'
    assert str(info.value) == 'HTTP 422: asset "NOPE" not found'
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_forbidden_rest_call_is_a_403_api_error_without_the_secret(
    manager: AlpacaManager, emulator: AlpacaEmulator
) -> None:
    emulator.fail_rest(403, "forbidden: this key may not trade", code=40310000)
    with pytest.raises(AlpacaAPIError) as info:
        manager.account()
    error = info.value
    assert error.status_code == 403
    assert error.api_message == "forbidden: this key may not trade"
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


def test_error_messages_never_carry_the_secret(
    manager: AlpacaManager, emulator: AlpacaEmulator
) -> None:
    emulator.fail_rest(500, f"echoing {SECRET} back")
    with pytest.raises(AlpacaAPIError) as info:
        manager.positions()
    assert info.value.status_code == 500
    assert SECRET not in str(info.value)
    assert "<secret>" in info.value.api_message


def test_cancel_and_get_of_unknown_orders(manager: AlpacaManager) -> None:
    missing = uuid.uuid4()
    with pytest.raises(AlpacaAPIError) as info:
        manager.get_order(missing)
    assert info.value.status_code == 404
    with pytest.raises(AlpacaAPIError) as info:
        manager.cancel_order(missing)
    assert info.value.status_code == 404
    with pytest.raises(ValueError, match="order_id must be an order UUID"):
        manager.cancel_order("not-a-uuid")


async def test_async_rest_errors(manager: AlpacaManager) -> None:
    with pytest.raises(AlpacaAPIError) as info:
        await manager.submit_order_async(market("NOPE"))
    assert info.value.status_code == 422
    with pytest.raises(AlpacaAPIError):
        await manager.cancel_order_async(uuid.uuid4())


def test_bad_requests_and_missing_services(client: TradingClient) -> None:
    bare = AlpacaManager(trading_client=client)
    with pytest.raises(TypeError, match="OrderRequest"):
        bare.submit_order({"symbol": "AAPL"})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="needs a trading_service"):
        bare.submit_and_wait(market())
    with pytest.raises(RuntimeError, match="needs a pricing_service"):
        bare.marketable_limit_price("AAPL", "buy")
    with pytest.raises(TypeError, match="TradingClient"):
        AlpacaManager(trading_client=None)  # type: ignore[arg-type]


def test_submit_and_wait_validates_its_timeout(manager: AlpacaManager) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive, finite number"):
        manager.submit_and_wait(market(), timeout=0)
    with pytest.raises(ValueError, match="unknown trade event"):
        manager.submit_and_wait(market(), events=["done"])
