"""FakeTradingClient: alpaca-py's ``TradingClient`` in memory, whose orders produce trade updates.

Every order submitted to it is answered as Alpaca's paper broker would, and
its trade updates (``new``, ``partial_fill``..., ``fill``; or ``rejected``) are
pushed into a :class:`~alpaca_di.testing.FakeOrderUpdates` *before*
``submit_order`` returns (the fill is faster than the REST reply, the case a
real service must not miss). No socket, no thread, no mock::

    from alpaca_di.testing import FakeOrderUpdates, FakeTradingClient

    client = FakeTradingClient()                     # client.updates: a FakeOrderUpdates
    manager = AlpacaManager(trading_client=client, trading_service=client.updates)
    update = manager.submit_and_wait(MarketOrderRequest(
        symbol="AAPL", qty=10, side="buy", time_in_force="day"), timeout=1)
    assert update.event == "fill" and client.position_qty("AAPL") == 10

In a container, override the one provider the component uses::

    container.alpaca.trading_client.override(providers.Object(FakeTradingClient()))

The outcome is configurable, for every order or per symbol: ``"fill"`` (the
default, after ``partial_fills`` partial fills), ``"reject"`` (a ``rejected``
update), ``"accept"`` (``new`` only: the order rests until :meth:`fill` or a
cancel), ``"refuse"`` (``submit_order`` raises alpaca-py's ``APIError`` with
HTTP 403, as Alpaca does for insufficient buying power).
"""

from __future__ import annotations

import datetime as _dt
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Literal
from uuid import UUID

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import Order, Position, TradeAccount, TradeUpdate
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    OrderRequest,
)

from alpaca_di.protocol.models import parse
from alpaca_di.services.interfaces import PriceSource
from alpaca_di.testing.fakes import FakeOrderUpdates

__all__ = ["FakeTradingClient", "Outcome"]

Outcome = Literal["fill", "reject", "accept", "refuse"]
"""What happens to a submitted order (see :class:`FakeTradingClient`)."""

_OUTCOMES = ("fill", "reject", "accept", "refuse")
_FAKE_KEY = "FAKE-TRADING-CLIENT"
_NO_NETWORK = "memory://fake-trading-client"  # never requested: _request() refuses
_OPEN = frozenset({"new", "accepted", "pending_new", "partially_filled"})


def _iso(moment: _dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _num(value: float) -> str:
    return f"{value:.10g}"


def _value(field: Any) -> str:
    return str(getattr(field, "value", field))


def _api_error(status: int, message: str) -> APIError:
    response = requests.Response()
    response.status_code = status
    error = requests.HTTPError(f"{status} {message}", response=response)
    make: Any = APIError  # alpaca-py's constructor is untyped
    raised: APIError = make(f'{{"code": {status}00000, "message": "{message}"}}', error)
    return raised


class FakeTradingClient(TradingClient):
    """The ``TradingClient`` methods the manager and ``TradingService`` use, in memory.

    Args:
        updates: where the trade updates of submitted orders go; a new
            :class:`~alpaca_di.testing.FakeOrderUpdates` by default (:attr:`updates`).
        outcome: what happens to every order (``set_outcome`` per symbol).
        partial_fills: ``partial_fill`` updates before the ``fill`` (equal slices).
        fill_price: the price market orders fill at when ``prices`` knows none.
        prices: a :class:`~alpaca_di.services.interfaces.PriceSource` giving the
            market price (a :class:`~alpaca_di.testing.FakePriceSource`). Limit
            orders fill at their limit.
        cash: the account's starting cash.

    Implemented: ``submit_order``, ``get_order_by_id``, ``get_orders`` (status,
    after, until, symbols, side, limit, direction), ``cancel_order_by_id``,
    ``get_account``, ``get_all_positions``. They return alpaca-py models and
    raise alpaca-py's ``APIError`` (404 unknown order, 422 not cancelable, 403
    refused), which ``AlpacaManager`` turns into ``AlpacaAPIError`` as for the
    real client. Thread-safe; the methods are sync like alpaca-py's, and the
    manager's ``*_async`` twins and ``FakeOrderUpdates.wait_for_order_async``
    work on it from a running loop.

    It is a ``TradingClient`` (so it type-checks wherever one is expected) that
    never opens a connection: any other ``TradingClient`` method raises
    ``NotImplementedError`` naming the request it would have sent.

    Example::

        client = FakeTradingClient(partial_fills=1)
        client.set_outcome("reject", symbol="GME")
        order = client.submit_order(MarketOrderRequest(
            symbol="AAPL", qty=2, side="buy", time_in_force="day"))
        [u.event for u in client.updates.updates(order.id)]   # new, partial_fill, fill
        update = await client.updates.wait_for_order_async(order.id, timeout=1)
    """

    def __init__(
        self,
        updates: FakeOrderUpdates | None = None,
        *,
        outcome: Outcome = "fill",
        partial_fills: int = 0,
        fill_price: float = 100.0,
        prices: PriceSource | None = None,
        cash: float = 100_000.0,
    ) -> None:
        _check_outcome(outcome)
        super().__init__(api_key=_FAKE_KEY, secret_key=_FAKE_KEY, url_override=_NO_NETWORK)
        if (
            isinstance(partial_fills, bool)
            or not isinstance(partial_fills, int)
            or partial_fills < 0
        ):
            raise ValueError(f"partial_fills must be an int >= 0, got {partial_fills!r}")
        self.updates: FakeOrderUpdates = updates if updates is not None else FakeOrderUpdates()
        """The :class:`FakeOrderUpdates` this client's orders report to."""
        self._outcome: Outcome = outcome
        self._by_symbol: dict[str, Outcome] = {}
        self._partials = partial_fills
        self._fill_price = float(fill_price)
        self._prices = prices
        self._cash = float(cash)
        self._starting_cash = float(cash)
        self._lock = threading.RLock()
        self._orders: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, tuple[float, float]] = {}  # symbol -> (qty, avg price)
        self._last_price: dict[str, float] = {}
        self.submitted: list[OrderRequest] = []
        """Every request given to :meth:`submit_order`, refused ones included."""

    # -- configuration --------------------------------------------------------------------

    def set_outcome(self, outcome: Outcome, *, symbol: str | None = None) -> None:
        """What happens to orders from now on (of ``symbol`` only, when given).

        Example::

            client.set_outcome("reject", symbol="GME")
            client.set_outcome("accept")          # every other order rests
        """
        _check_outcome(outcome)
        with self._lock:
            if symbol is None:
                self._outcome = outcome
            else:
                self._by_symbol[symbol] = outcome

    def position_qty(self, symbol: str) -> float:
        """The filled quantity held in ``symbol`` (negative when short)."""
        with self._lock:
            return self._positions.get(symbol, (0.0, 0.0))[0]

    def _request(
        self, method: str, path: str, *args: Any, **kwargs: Any
    ) -> Any:
        raise NotImplementedError(
            f"FakeTradingClient does not fake {method} /v2{path}; faked: submit_order, "
            "get_order_by_id, get_orders, cancel_order_by_id, get_account, get_all_positions"
        )

    # -- TradingClient --------------------------------------------------------------------

    def submit_order(self, order_data: OrderRequest) -> Order:
        """``POST /v2/orders``: the order in its state after the outcome ran."""
        if not isinstance(order_data, OrderRequest):
            raise TypeError(f"order_data must be an OrderRequest, got {type(order_data).__name__}")
        with self._lock:
            self.submitted.append(order_data)
            symbol = str(order_data.symbol)
            outcome = self._by_symbol.get(symbol, self._outcome)
            if outcome == "refuse":
                raise _api_error(403, "insufficient buying power")
            order = self._new_order(order_data)
            self._orders[order["id"]] = order
            if outcome == "reject":
                self._emit(order, "rejected", status="rejected")
            else:
                self._emit(order, "new", status="new")
                if outcome == "fill":
                    self._fill_all(order, self._price_for(order_data, symbol))
            return Order(**_public(order))

    def fill(
        self, order_id: str | UUID, qty: float | None = None, price: float | None = None
    ) -> Order:
        """Fill a resting order (``"accept"`` outcome): all of it, or ``qty`` more.

        Example::

            client.set_outcome("accept")
            order = client.submit_order(request)
            client.fill(order.id, qty=1)      # partial_fill
            client.fill(order.id)             # fill
        """
        with self._lock:
            order = self._get(order_id)
            if order["status"] not in _OPEN:
                raise _api_error(422, f"order is already {order['status']}")
            left = float(order["qty"]) - float(order["filled_qty"])
            chunk = left if qty is None else min(float(qty), left)
            at = self._price_for(None, order["symbol"]) if price is None else float(price)
            if order.get("limit_price") is not None and price is None:
                at = float(order["limit_price"])
            self._fill_chunk(order, chunk, at)
            return Order(**_public(order))

    def get_order_by_id(
        self, order_id: str | UUID, filter: GetOrderByIdRequest | None = None
    ) -> Order:
        """``GET /v2/orders/{id}``; alpaca-py's ``APIError`` (404) for an unknown id."""
        with self._lock:
            return Order(**_public(self._get(order_id)))

    def get_orders(self, filter: GetOrdersRequest | None = None) -> list[Order]:
        """``GET /v2/orders``: open orders by default, newest first, like Alpaca."""
        request = filter or GetOrdersRequest()
        status = _value(request.status or QueryOrderStatus.OPEN)
        with self._lock:
            found = [
                order
                for order in self._orders.values()
                if status == "all" or (order["status"] in _OPEN) == (status == "open")
            ]
        if request.after is not None:
            found = [o for o in found if o["_submitted"] > request.after]
        if request.until is not None:
            found = [o for o in found if o["_submitted"] <= request.until]
        if request.symbols:
            found = [o for o in found if o["symbol"] in request.symbols]
        if request.side is not None:
            found = [o for o in found if o["side"] == _value(request.side)]
        found.sort(key=lambda o: o["_submitted"], reverse=_value(request.direction) != "asc")
        return [Order(**_public(o)) for o in found[: request.limit or 50]]

    def cancel_order_by_id(self, order_id: str | UUID) -> None:
        """``DELETE /v2/orders/{id}``: a ``canceled`` update; 422 when already final."""
        with self._lock:
            order = self._get(order_id)
            if order["status"] not in _OPEN:
                raise _api_error(422, f"order is already {order['status']}")
            self._emit(order, "canceled", status="canceled", canceled_at=True)

    def get_account(self) -> TradeAccount:
        """``GET /v2/account``: cash moves with fills; equity at the last fill prices."""
        with self._lock:
            value = sum(
                qty * self._last_price.get(s, avg) for s, (qty, avg) in self._positions.items()
            )
            cash, equity = self._cash, self._cash + value
        money = f"{max(cash, 0.0):.2f}"
        return TradeAccount.model_validate(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-di:fake-account")),
                "account_number": "PAFAKE0001",
                "status": "ACTIVE",
                "crypto_status": "ACTIVE",
                "currency": "USD",
                "buying_power": money,
                "regt_buying_power": money,
                "daytrading_buying_power": money,
                "non_marginable_buying_power": money,
                "cash": f"{cash:.2f}",
                "accrued_fees": "0",
                "portfolio_value": f"{equity:.2f}",
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "created_at": "2024-01-02T14:30:00Z",
                "trade_suspended_by_user": False,
                "multiplier": "1",
                "shorting_enabled": True,
                "equity": f"{equity:.2f}",
                "last_equity": f"{self._starting_cash:.2f}",
                "long_market_value": f"{max(value, 0.0):.2f}",
                "short_market_value": f"{min(value, 0.0):.2f}",
                "initial_margin": "0",
                "maintenance_margin": "0",
                "last_maintenance_margin": "0",
                "sma": "0",
                "daytrade_count": 0,
            }
        )

    def get_all_positions(self) -> list[Position]:
        """``GET /v2/positions``: one per symbol with a non-zero filled quantity."""
        with self._lock:
            held = [
                (s, q, a, self._last_price.get(s, a)) for s, (q, a) in self._positions.items() if q
            ]
        return [_position(symbol, qty, avg, price) for symbol, qty, avg, price in held]

    def __repr__(self) -> str:
        with self._lock:
            return f"<FakeTradingClient orders={len(self._orders)} outcome={self._outcome}>"

    # -- internals ------------------------------------------------------------------------

    def _get(self, order_id: str | UUID) -> dict[str, Any]:
        order = self._orders.get(str(order_id))
        if order is None:
            raise _api_error(404, "order not found")
        return order

    def _price_for(self, request: OrderRequest | None, symbol: str) -> float:
        if isinstance(request, LimitOrderRequest) and request.limit_price is not None:
            return float(request.limit_price)
        if self._prices is not None:
            known = self._prices.price(symbol)
            if known is not None:
                return float(known)
        return self._last_price.get(symbol, self._fill_price)

    def _new_order(self, request: OrderRequest) -> dict[str, Any]:
        now = _dt.datetime.now(_dt.timezone.utc)
        symbol = str(request.symbol)
        limit = getattr(request, "limit_price", None)
        return {
            "id": str(uuid.uuid4()),
            "client_order_id": request.client_order_id or str(uuid.uuid4()),
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "submitted_at": _iso(now),
            "filled_at": None,
            "canceled_at": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-di:{symbol}")),
            "symbol": symbol,
            "asset_class": "crypto" if "/" in symbol else "us_equity",
            "qty": _num(float(request.qty or 0)),
            "notional": None,
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "simple",
            "order_type": _value(request.type),
            "type": _value(request.type),
            "side": _value(request.side),
            "time_in_force": _value(request.time_in_force),
            "limit_price": None if limit is None else _num(float(limit)),
            "status": "pending_new",
            "extended_hours": bool(request.extended_hours),
            "_submitted": now,
        }

    def _fill_all(self, order: dict[str, Any], price: float) -> None:
        total = float(order["qty"])
        slices = self._partials + 1
        for index in range(slices):
            filled = float(order["filled_qty"])
            chunk = total - filled if index == slices - 1 else total / slices
            self._fill_chunk(order, chunk, price)

    def _fill_chunk(self, order: dict[str, Any], chunk: float, price: float) -> None:
        filled_before = float(order["filled_qty"])
        filled = filled_before + chunk
        done = filled >= float(order["qty"]) - 1e-12
        avg_before = float(order["filled_avg_price"] or 0.0)
        avg = (avg_before * filled_before + price * chunk) / filled if filled else price
        order["filled_qty"] = _num(filled)
        order["filled_avg_price"] = _num(avg)
        signed = chunk if order["side"] == "buy" else -chunk
        symbol = order["symbol"]
        qty, held_avg = self._positions.get(symbol, (0.0, 0.0))
        new_qty = qty + signed
        if new_qty and (qty == 0 or (qty > 0) == (signed > 0)):
            held_avg = (held_avg * abs(qty) + price * abs(signed)) / abs(new_qty)
        self._positions[symbol] = (new_qty, held_avg if new_qty else 0.0)
        self._last_price[symbol] = price
        self._cash -= signed * price
        event = "fill" if done else "partial_fill"
        self._emit(
            order,
            event,
            status="filled" if done else "partially_filled",
            filled_at=done,
            price=price,
            qty=chunk,
            position_qty=new_qty,
        )

    def _emit(
        self,
        order: dict[str, Any],
        event: str,
        *,
        status: str,
        filled_at: bool = False,
        canceled_at: bool = False,
        price: float | None = None,
        qty: float | None = None,
        position_qty: float | None = None,
    ) -> TradeUpdate:
        at = _iso(_dt.datetime.now(_dt.timezone.utc))
        order["status"] = status
        order["updated_at"] = at
        if filled_at:
            order["filled_at"] = at
        if canceled_at:
            order["canceled_at"] = at
        data: dict[str, Any] = {
            "event": event,
            "execution_id": str(uuid.uuid4()),
            "order": _public(order),
            "timestamp": at,
        }
        if price is not None and qty is not None:
            data.update(price=_num(price), qty=_num(qty), position_qty=_num(position_qty or 0.0))
        update = parse("trade_updates", order["symbol"], data)
        assert isinstance(update, TradeUpdate)
        self.updates.push_update(update)
        return update


def _public(order: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in order.items() if not key.startswith("_")}


def _check_outcome(outcome: object) -> None:
    if outcome not in _OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(_OUTCOMES)}, got {outcome!r}")


def _position(symbol: str, qty: float, avg: float, price: float) -> Position:
    cost, value = qty * avg, qty * price
    return Position.model_validate(
        {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-di:{symbol}")),
            "symbol": symbol,
            "exchange": "CRYPTO" if "/" in symbol else "NASDAQ",
            "asset_class": "crypto" if "/" in symbol else "us_equity",
            "avg_entry_price": _num(avg),
            "qty": _num(qty),
            "qty_available": _num(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": f"{value:.2f}",
            "cost_basis": f"{cost:.2f}",
            "unrealized_pl": f"{value - cost:.2f}",
            "unrealized_plpc": _num((value - cost) / abs(cost) if cost else 0.0),
            "unrealized_intraday_pl": f"{value - cost:.2f}",
            "unrealized_intraday_plpc": "0",
            "current_price": _num(price),
            "lastday_price": _num(price),
            "change_today": "0",
        }
    )
