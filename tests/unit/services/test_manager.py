"""AlpacaManager helpers without sockets: limit-price rounding and REST error mapping."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError

from alpaca_di.errors import AlpacaAPIError
from alpaca_di.services.manager import AlpacaManager, _limit_price
from alpaca_di.services.rest import rest_call

SECRET = "sk-unit-secret-value"


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status


class _HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"{status} error")
        self.response = _Response(status)


class FakeClient:
    """Stands in for TradingClient; every call fails the way it is told to."""

    def __init__(self, error: BaseException) -> None:
        self._secret_key = SECRET
        self._error = error

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error

    submit_order = get_account = get_all_positions = get_order_by_id = cancel_order_by_id = _fail


@pytest.mark.parametrize(
    ("mid", "buy", "bps", "expected"),
    [
        (100.01, True, 10.0, 100.12),  # 100.11001 rounded up
        (100.01, False, 10.0, 99.90),  # 99.90999 rounded down
        (100.0, True, 0.0, 100.0),
        (190.0, True, 10.0, 190.19),
        (190.0, False, 10.0, 189.81),
        (0.5001, True, 10.0, 0.5007),  # 0.5006001 -> 4 decimals, up
        (0.5001, False, 10.0, 0.4995),  # 0.4995999 -> 4 decimals, down
        (0.9995, True, 10.0, 1.01),  # 1.0004995 is >= $1: cents, up
        (1.0, False, 10.0, 0.999),  # 0.999 < $1: 4 decimals
        (60_000.0, True, 5.0, 60_030.0),
    ],
)
def test_limit_price_rounding(mid: float, buy: bool, bps: float, expected: float) -> None:
    assert _limit_price(mid, buy, bps) == expected


def test_limit_price_refuses_unpriceable_mids() -> None:
    with pytest.raises(ValueError, match="non-positive mid"):
        _limit_price(0.0, True, 10)
    with pytest.raises(ValueError, match="cannot be expressed"):
        _limit_price(0.00001, False, 10)


def test_api_error_keeps_message_and_status_drops_the_cause() -> None:
    error = APIError('{"code": 42210000, "message": "order is not cancelable"}', _HTTPError(422))
    with pytest.raises(AlpacaAPIError) as info:
        rest_call(FakeClient(error), lambda: FakeClient(error)._fail())
    assert info.value.status_code == 422
    assert info.value.api_message == "order is not cancelable"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_non_json_error_bodies_and_missing_status() -> None:
    error = APIError("<html>bad gateway</html>", None)
    with pytest.raises(AlpacaAPIError) as info:
        rest_call(FakeClient(error), lambda: FakeClient(error)._fail())
    assert info.value.status_code is None
    assert info.value.api_message == "<html>bad gateway</html>"


def test_the_secret_is_redacted_from_api_and_transport_errors() -> None:
    leaky = APIError(f'{{"message": "bad key pair PK/{SECRET}"}}', _HTTPError(401))
    manager = AlpacaManager(trading_client=FakeClient(leaky))  # type: ignore[arg-type]
    with pytest.raises(AlpacaAPIError) as info:
        manager.account()
    assert SECRET not in str(info.value)
    assert info.value.status_code == 401
    transport = requests.ConnectionError(f"cannot reach host (secret {SECRET})")
    manager = AlpacaManager(trading_client=FakeClient(transport))  # type: ignore[arg-type]
    with pytest.raises(AlpacaAPIError, match="request to Alpaca failed: ConnectionError") as info:
        manager.positions()
    assert SECRET not in str(info.value)
    assert info.value.status_code is None


def test_other_exceptions_pass_through() -> None:
    manager = AlpacaManager(trading_client=FakeClient(KeyError("x")))  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        manager.account()


# -- dependencies: protocols, resolved lazily -------------------------------------------------


class _OrderClient:
    """Stands in for TradingClient: accepts orders, and pushes their fill to ``updates``."""

    def __init__(self, updates: Any) -> None:
        self.updates = updates
        self.submitted: list[Any] = []

    def submit_order(self, order_data: Any) -> Any:
        self.submitted.append(order_data)
        update = self.updates.push("fill", symbol=order_data.symbol)
        return update.order


def _market() -> Any:
    from alpaca.trading.requests import MarketOrderRequest

    return MarketOrderRequest(symbol="AAPL", qty=1, side="buy", time_in_force="day")


def test_submit_and_wait_on_fake_order_updates() -> None:
    from alpaca_di.testing import FakeOrderUpdates

    updates = FakeOrderUpdates()
    manager = AlpacaManager(trading_client=_OrderClient(updates), trading_service=updates)  # type: ignore[arg-type]
    update = manager.submit_and_wait(_market(), timeout=5)
    assert update.event == "fill"
    assert updates.listens == 1  # listened before the order went out


async def test_submit_and_wait_async_on_fake_order_updates() -> None:
    from alpaca_di.testing import FakeOrderUpdates

    updates = FakeOrderUpdates()
    manager = AlpacaManager(trading_client=_OrderClient(updates), trading_service=updates)  # type: ignore[arg-type]
    update = await manager.submit_and_wait_async(_market(), timeout=5)
    assert update.event == "fill"
    assert updates.listens == 1


class _PlainOrderUpdates:
    """Only the OrderUpdates protocol: no listen(), no catch_up."""

    def __init__(self) -> None:
        from alpaca_di.testing import FakeOrderUpdates

        self._inner = FakeOrderUpdates()
        self.push = self._inner.push

    def wait_for_order(self, order_id: Any, events: Any = ("fill",), timeout: float = 30.0) -> Any:
        return self._inner.wait_for_order(order_id, events, timeout)

    async def wait_for_order_async(
        self, order_id: Any, events: Any = ("fill",), timeout: float = 30.0
    ) -> Any:
        return await self._inner.wait_for_order_async(order_id, events, timeout)


def test_submit_and_wait_on_a_plain_order_updates() -> None:
    updates = _PlainOrderUpdates()
    manager = AlpacaManager(trading_client=_OrderClient(updates), trading_service=updates)  # type: ignore[arg-type]
    assert manager.submit_and_wait(_market(), timeout=5).event == "fill"


def test_the_user_report_override_trading_service_and_client_only() -> None:
    """Reported: ConfigurationError (pricing built from settings), then no ``listen``."""
    from dependency_injector import providers

    from alpaca_di import AlpacaContainer
    from alpaca_di.testing import FakeOrderUpdates

    container = AlpacaContainer()  # no settings anywhere
    updates = FakeOrderUpdates()
    container.trading_service.override(providers.Object(updates))
    container.trading_client.override(providers.Object(_OrderClient(updates)))
    try:
        manager = container.alpaca_manager()
        assert manager.submit_and_wait(_market(), timeout=5).event == "fill"
        assert manager.trading_service is updates
    finally:
        container.reset_override()


def test_deferred_resolves_nothing_until_used() -> None:
    calls: list[str] = []

    def boom() -> Any:
        calls.append("client")
        raise AssertionError("resolved")

    manager = AlpacaManager.deferred(trading_client=boom)
    assert repr(manager) == "<AlpacaManager closed=False>"
    assert manager.pricing_service is None
    with pytest.raises(RuntimeError, match="needs a pricing_service"):
        manager.marketable_limit_price("AAPL", "buy")
    assert calls == []
    with pytest.raises(AssertionError, match="resolved"):
        manager.account()
    with pytest.raises(TypeError, match="zero-argument callable"):
        AlpacaManager.deferred(trading_client=object())  # type: ignore[arg-type]
    bad = AlpacaManager.deferred(trading_client=lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="TradingClient"):
        bad.account()


def test_override_pricing_service_alone_prices_without_settings() -> None:
    from dependency_injector import providers

    from alpaca_di import AlpacaContainer
    from alpaca_di.testing import FakePriceSource

    container = AlpacaContainer()
    container.pricing_service.override(providers.Object(FakePriceSource({"AAPL": 100.0})))
    try:
        assert container.alpaca_manager().marketable_limit_price("AAPL", "buy") == 100.1
    finally:
        container.reset_override()
