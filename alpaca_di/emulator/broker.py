"""The emulator's paper broker: accounts, orders, fills and positions in Alpaca's REST shapes.

The :class:`Broker` keeps one book per key id. Market orders fill at the
synthetic market's current price; limit and stop orders rest until the price
crosses them (:meth:`Broker.on_price` is wired to the market). Every order event
is handed to ``emit(key_id, data)`` as the ``data`` of a ``trade_updates``
message, which the emulator fans out to that key's trading streams::

    from alpaca_di.emulator.broker import Broker
    from alpaca_di.emulator.market import SyntheticMarket

    market = SyntheticMarket(seed=1)
    updates = []
    broker = Broker(market, lambda key, data: updates.append(data["event"]))
    broker.submit_order("PK1", {"symbol": "AAPL", "qty": 1, "side": "buy",
                                "type": "market", "time_in_force": "day"})
    updates            # ['new', 'fill']

Errors are raised as :class:`RestError` carrying the HTTP status and Alpaca's
``{"code", "message"}`` body.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from alpaca_di.emulator.market import SyntheticMarket, asset_class_of

__all__ = ["OPEN_STATUSES", "Broker", "RestError", "iso_now"]

OPEN_STATUSES = frozenset(
    {
        "new",
        "accepted",
        "pending_new",
        "partially_filled",
        "held",
        "accepted_for_bidding",
        "pending_cancel",
        "pending_replace",
        "calculated",
        "stopped",
        "suspended",
    }
)
_TYPES = ("market", "limit", "stop", "stop_limit")
_TIFS = ("day", "gtc", "opg", "cls", "ioc", "fok")
_NAMESPACE = uuid.UUID("6f1d1c0e-2a53-4d0b-9a57-0c1f5e6a7d11")

try:  # pragma: no branch - zoneinfo data may be missing on minimal systems
    from zoneinfo import ZoneInfo

    _NEW_YORK: _dt.tzinfo = ZoneInfo("America/New_York")
except Exception:  # pragma: no cover
    _NEW_YORK = _dt.timezone(_dt.timedelta(hours=-5))


class RestError(Exception):
    """An Alpaca-shaped REST error: HTTP ``status`` and body ``{"code", "message"}``."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code if code is not None else status * 100_000

    def body(self) -> dict[str, Any]:
        """The JSON body Alpaca sends with this error."""
        return {"code": self.code, "message": self.message}


def iso_now(moment: _dt.datetime | None = None) -> str:
    """``moment`` (default: the wall clock's now) as Alpaca's REST APIs write it (µs, ``Z``)."""
    if moment is None:
        moment = _dt.datetime.now(_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fmt(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _money(value: float) -> str:
    return f"{value:.2f}"


def _number(body: Mapping[str, Any], name: str) -> float | None:
    raw = body.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise RestError(422, f"invalid {name}: {raw!r}", 40010001) from None
    if not value > 0:
        raise RestError(422, f"{name} must be > 0", 40010001)
    return value


def asset_id(symbol: str) -> str:
    """A stable asset UUID for a symbol."""
    return str(uuid.uuid5(_NAMESPACE, symbol))


class _Position:
    __slots__ = ("avg_price", "qty")

    def __init__(self) -> None:
        self.qty = 0.0
        self.avg_price = 0.0


class _Book:
    __slots__ = ("by_client_id", "cash", "key_id", "orders", "positions")

    def __init__(self, key_id: str, cash: float) -> None:
        self.key_id = key_id
        self.cash = cash
        self.positions: dict[str, _Position] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.by_client_id: dict[str, str] = {}


class Broker:
    """Paper trading state for every key the emulator has seen.

    ``emit(key_id, data)`` receives each trade update's ``data`` (event, order,
    timestamp, ...). Single-threaded: the emulator calls it from its loop only.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        emit: Callable[[str, dict[str, Any]], object],
        *,
        starting_cash: float = 100_000.0,
    ) -> None:
        self._market = market
        self._emit = emit
        self._starting_cash = starting_cash
        self._books: dict[str, _Book] = {}
        self._resting: dict[str, dict[str, tuple[_Book, dict[str, Any]]]] = {}

    # -- helpers ------------------------------------------------------------------------------

    def _book(self, key_id: str) -> _Book:
        book = self._books.get(key_id)
        if book is None:
            book = self._books[key_id] = _Book(key_id, self._starting_cash)
        return book

    def _resolve_symbol(self, symbol: Any) -> str:
        if not isinstance(symbol, str) or not symbol:
            raise RestError(422, "symbol is required", 40010001)
        if self._market.is_known(symbol):
            return symbol
        upper = symbol.upper()
        if self._market.is_known(upper):
            return upper
        if len(upper) > 3 and "/" not in upper:
            for quote in ("USD", "USDT", "USDC", "BTC"):
                pair = f"{upper[: -len(quote)]}/{quote}"
                if upper.endswith(quote) and self._market.is_known(pair):
                    return pair
        raise RestError(422, f'asset "{symbol}" not found', 40010001)

    @staticmethod
    def _exchange(symbol: str, asset_class: str) -> str:
        if asset_class == "crypto":
            return "CRYPTO"
        if asset_class == "us_option":
            return ""
        return "ARCA" if symbol == "SPY" else "NASDAQ"

    def _update(self, book: _Book, order: dict[str, Any], event: str, **extra: Any) -> None:
        data: dict[str, Any] = {
            "event": event,
            "execution_id": str(uuid.uuid4()),
            "order": dict(order),
            "timestamp": order["updated_at"],
        }
        data.update(extra)
        self._emit(book.key_id, data)

    def _fill(self, book: _Book, order: dict[str, Any], price: float) -> None:
        qty = float(order["qty"])
        signed = qty if order["side"] == "buy" else -qty
        symbol = order["symbol"]
        position = book.positions.get(symbol)
        if position is None:
            position = book.positions[symbol] = _Position()
        old = position.qty
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            position.avg_price = (abs(old) * position.avg_price + qty * price) / abs(new)
        elif (old > 0) != (new > 0) and new != 0:
            position.avg_price = price
        position.qty = new
        if abs(new) < 1e-12:
            del book.positions[symbol]
        book.cash -= signed * price
        now = iso_now(self._market.clock.now())
        order.update(
            status="filled",
            filled_qty=order["qty"],
            filled_avg_price=_fmt(price),
            filled_at=now,
            updated_at=now,
        )
        self._resting.get(symbol, {}).pop(order["id"], None)
        self._update(
            book, order, "fill", price=_fmt(price), qty=order["qty"], position_qty=_fmt(new)
        )

    @staticmethod
    def _crosses(order: dict[str, Any], price: float) -> bool:
        buy = order["side"] == "buy"
        kind = order["type"]
        if kind in ("stop", "stop_limit"):
            stop = float(order["stop_price"])
            if (price < stop) if buy else (price > stop):
                return False
            if kind == "stop":
                return True
        limit = float(order["limit_price"])
        return price <= limit if buy else price >= limit

    # -- price feed ---------------------------------------------------------------------------

    def on_price(self, symbol: str, price: float) -> None:
        """Fill the resting orders on ``symbol`` that ``price`` crosses."""
        resting = self._resting.get(symbol)
        if not resting:
            return
        for book, order in [v for v in resting.values() if self._crosses(v[1], price)]:
            self._fill(book, order, price)

    # -- REST operations ----------------------------------------------------------------------

    def account(self, key_id: str) -> dict[str, Any]:
        """``GET /v2/account``."""
        book = self._book(key_id)
        long_value = short_value = 0.0
        for symbol, position in book.positions.items():
            value = position.qty * self._market.price(symbol)
            if value >= 0:
                long_value += value
            else:
                short_value += value
        equity = book.cash + long_value + short_value
        buying_power = max(0.0, book.cash)
        number = str(uuid.uuid5(_NAMESPACE, "acct:" + key_id).int)[:9]
        return {
            "id": str(uuid.uuid5(_NAMESPACE, "account:" + key_id)),
            "account_number": "PA" + number,
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": _money(buying_power),
            "regt_buying_power": _money(buying_power),
            "daytrading_buying_power": _money(buying_power),
            "non_marginable_buying_power": _money(buying_power),
            "options_buying_power": _money(buying_power),
            "cash": _money(book.cash),
            "accrued_fees": "0",
            "pending_transfer_out": "0",
            "pending_transfer_in": "0",
            "portfolio_value": _money(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T14:30:00.000000Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": True,
            "equity": _money(equity),
            "last_equity": _money(self._starting_cash),
            "long_market_value": _money(long_value),
            "short_market_value": _money(short_value),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "options_approved_level": 2,
            "options_trading_level": 2,
        }

    def clock(self) -> dict[str, Any]:
        """``GET /v2/clock`` at the emulator clock's now: the emulated market is always open."""
        now = self._market.clock.now().astimezone(_NEW_YORK)
        close = now.replace(hour=16, minute=0, second=0, microsecond=0)
        if close <= now:
            close += _dt.timedelta(days=1)
        next_open = (now + _dt.timedelta(days=1)).replace(
            hour=9, minute=30, second=0, microsecond=0
        )
        return {
            "timestamp": now.isoformat(),
            "is_open": True,
            "next_open": next_open.isoformat(),
            "next_close": close.isoformat(),
        }

    def asset(self, symbol_or_id: str) -> dict[str, Any]:
        """``GET /v2/assets/{symbol}``."""
        try:
            symbol = self._resolve_symbol(symbol_or_id)
        except RestError:
            raise RestError(404, f'asset "{symbol_or_id}" not found', 40410000) from None
        asset_class = asset_class_of(symbol)
        return {
            "id": asset_id(symbol),
            "class": asset_class,
            "exchange": self._exchange(symbol, asset_class),
            "symbol": symbol,
            "name": f"{symbol} (emulated)",
            "status": "active",
            "tradable": True,
            "marginable": asset_class == "us_equity",
            "shortable": asset_class == "us_equity",
            "easy_to_borrow": asset_class == "us_equity",
            "fractionable": asset_class != "us_option",
            "min_order_size": None,
            "min_trade_increment": None,
            "price_increment": None,
            "maintenance_margin_requirement": 30.0,
            "attributes": [],
        }

    def submit_order(self, key_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/orders``: returns the order as accepted; fills follow as trade updates."""
        if not isinstance(body, Mapping):
            raise RestError(422, "request body must be a JSON object", 40010001)
        book = self._book(key_id)
        symbol = self._resolve_symbol(body.get("symbol"))
        side = body.get("side")
        if side not in ("buy", "sell"):
            raise RestError(422, f"invalid side: {side!r}", 40010001)
        order_type = body.get("type", body.get("order_type"))
        if order_type not in _TYPES:
            raise RestError(
                422, f"order type {order_type!r} is not supported by the emulator", 40010001
            )
        tif = body.get("time_in_force")
        if tif not in _TIFS:
            raise RestError(422, f"invalid time_in_force: {tif!r}", 40010001)
        qty = _number(body, "qty")
        notional = _number(body, "notional")
        if (qty is None) == (notional is None):
            raise RestError(422, "qty or notional is required (exactly one)", 40010001)
        if notional is not None and order_type != "market":
            raise RestError(422, "notional is only allowed for market orders", 40010001)
        limit = _number(body, "limit_price")
        stop = _number(body, "stop_price")
        if order_type in ("limit", "stop_limit") and limit is None:
            raise RestError(422, f"limit_price is required for {order_type} orders", 40010001)
        if order_type in ("stop", "stop_limit") and stop is None:
            raise RestError(422, f"stop_price is required for {order_type} orders", 40010001)
        client_id = body.get("client_order_id") or str(uuid.uuid4())
        if not isinstance(client_id, str):
            raise RestError(422, "client_order_id must be a string", 40010001)
        if client_id in book.by_client_id:
            raise RestError(422, "client_order_id must be unique", 40010001)
        price = self._market.price(symbol)
        if qty is None:
            assert notional is not None
            qty = round(notional / price, 9)
        if side == "buy" and qty * (limit or price) > book.cash + 1e-9:
            raise RestError(403, "insufficient buying power", 40310000)
        now = iso_now(self._market.clock.now())
        asset_class = asset_class_of(symbol)
        order: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "client_order_id": client_id,
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "expired_at": None,
            "expires_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": asset_id(symbol),
            "symbol": symbol,
            "asset_class": asset_class,
            "notional": _fmt(notional) if notional is not None else None,
            "qty": _fmt(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "simple",
            "order_type": order_type,
            "type": order_type,
            "side": side,
            "position_intent": body.get("position_intent")
            or ("buy_to_open" if side == "buy" else "sell_to_close"),
            "time_in_force": tif,
            "limit_price": _fmt(limit) if limit is not None else None,
            "stop_price": _fmt(stop) if stop is not None else None,
            "status": "new",
            "extended_hours": bool(body.get("extended_hours") or False),
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
        }
        book.orders[order["id"]] = order
        book.by_client_id[client_id] = order["id"]
        accepted = dict(order)
        self._update(book, order, "new")
        if order_type == "market" or self._crosses(order, price):
            self._fill(book, order, price)
        elif tif in ("ioc", "fok"):
            self._cancel(book, order)
        else:
            self._resting.setdefault(symbol, {})[order["id"]] = (book, order)
        return accepted

    def _cancel(self, book: _Book, order: dict[str, Any]) -> None:
        now = iso_now(self._market.clock.now())
        order.update(status="canceled", canceled_at=now, updated_at=now)
        self._resting.get(order["symbol"], {}).pop(order["id"], None)
        self._update(book, order, "canceled")

    def list_orders(self, key_id: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """``GET /v2/orders``: ``status`` open/closed/all, ``limit``, ``direction``, ``symbols``."""
        status = params.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise RestError(422, f"invalid status: {status!r}", 40010001)
        try:
            limit = min(500, int(params.get("limit", "50")))
        except ValueError:
            raise RestError(422, "invalid limit", 40010001) from None
        symbols = {s for s in params.get("symbols", "").split(",") if s}
        side = params.get("side")
        orders = [
            o
            for o in self._book(key_id).orders.values()
            if (status == "all" or (o["status"] in OPEN_STATUSES) == (status == "open"))
            and (not symbols or o["symbol"] in symbols)
            and (side is None or o["side"] == side)
        ]
        if params.get("direction", "desc") == "desc":
            orders.reverse()
        return [dict(o) for o in orders[:limit]]

    def get_order(self, key_id: str, order_id: str) -> dict[str, Any]:
        """``GET /v2/orders/{id}``."""
        order = self._book(key_id).orders.get(order_id)
        if order is None:
            raise RestError(404, "order not found", 40410000)
        return dict(order)

    def get_order_by_client_id(self, key_id: str, client_id: str) -> dict[str, Any]:
        """``GET /v2/orders:by_client_order_id?client_order_id=...``."""
        book = self._book(key_id)
        order_id = book.by_client_id.get(client_id)
        if order_id is None:
            raise RestError(404, "order not found", 40410000)
        return dict(book.orders[order_id])

    def cancel_order(self, key_id: str, order_id: str) -> None:
        """``DELETE /v2/orders/{id}``: 204, or 404 / 422 when not cancelable."""
        book = self._book(key_id)
        order = book.orders.get(order_id)
        if order is None:
            raise RestError(404, "order not found", 40410000)
        if order["status"] not in OPEN_STATUSES:
            raise RestError(422, f"order is not cancelable (status {order['status']})", 42210000)
        self._cancel(book, order)

    def cancel_all(self, key_id: str) -> list[dict[str, Any]]:
        """``DELETE /v2/orders``: 207 with one ``{id, status}`` per canceled order."""
        book = self._book(key_id)
        results = []
        for order in [o for o in book.orders.values() if o["status"] in OPEN_STATUSES]:
            self._cancel(book, order)
            results.append({"id": order["id"], "status": 200, "body": None})
        return results

    def _position(self, symbol: str, position: _Position) -> dict[str, Any]:
        price = self._market.price(symbol)
        asset_class = asset_class_of(symbol)
        cost = position.qty * position.avg_price
        value = position.qty * price
        pl = value - cost
        plpc = pl / abs(cost) if cost else 0.0
        return {
            "asset_id": asset_id(symbol),
            "symbol": symbol,
            "exchange": self._exchange(symbol, asset_class),
            "asset_class": asset_class,
            "asset_marginable": asset_class == "us_equity",
            "qty": _fmt(position.qty),
            "qty_available": _fmt(position.qty),
            "avg_entry_price": _fmt(position.avg_price),
            "side": "long" if position.qty > 0 else "short",
            "market_value": _money(value),
            "cost_basis": _money(cost),
            "unrealized_pl": _money(pl),
            "unrealized_plpc": _fmt(round(plpc, 6)),
            "unrealized_intraday_pl": _money(pl),
            "unrealized_intraday_plpc": _fmt(round(plpc, 6)),
            "current_price": _fmt(price),
            "lastday_price": _fmt(price),
            "change_today": "0",
        }

    def positions(self, key_id: str) -> list[dict[str, Any]]:
        """``GET /v2/positions``."""
        return [self._position(s, p) for s, p in self._book(key_id).positions.items()]

    def position(self, key_id: str, symbol_or_id: str) -> dict[str, Any]:
        """``GET /v2/positions/{symbol_or_asset_id}``."""
        book = self._book(key_id)
        for symbol, position in book.positions.items():
            if symbol_or_id in (symbol, symbol.replace("/", ""), asset_id(symbol)):
                return self._position(symbol, position)
        raise RestError(404, "position does not exist", 40410000)

    def orders_snapshot(self, key_id: str) -> list[dict[str, Any]]:
        """Every order of the key, oldest first (copies)."""
        return [dict(o) for o in self._book(key_id).orders.values()]

    def positions_snapshot(self, key_id: str) -> dict[str, float]:
        """Signed position quantity per symbol."""
        return {s: p.qty for s, p in self._book(key_id).positions.items()}
