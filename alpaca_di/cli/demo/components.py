"""The demo's components: a small trading application, each part asking for what it needs.

Strategies, watchers, a risk monitor, a trade tape, an order log, a news desk
and an executor; none of them knows about connections (see
:mod:`alpaca_di.cli.demo.app` for the container that wires them)::

    strategy = MomentumStrategy(pricing=pricing_service)
    strategy.start()
    ...
    strategy.stop()
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from alpaca.data.models import Quote, Trade
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, OrderRequest

from alpaca_di.errors import AlpacaDIError
from alpaca_di.hub.hub import StreamHub
from alpaca_di.hub.subscription import Subscription
from alpaca_di.services.interfaces import PriceSource, PriceTracker
from alpaca_di.services.manager import AlpacaManager
from alpaca_di.services.trading import TradingService

__all__ = [
    "CRYPTO_PAIRS",
    "STOCK_SYMBOLS",
    "AccountView",
    "Component",
    "CryptoWatcher",
    "EventLog",
    "Executor",
    "LogEntry",
    "MomentumStrategy",
    "NewsDesk",
    "OrderLog",
    "PlannedOrder",
    "RiskMonitor",
    "Signal",
    "TradeTape",
    "default_plan",
]

STOCK_SYMBOLS: tuple[str, ...] = ("AAPL", "MSFT", "SPY", "TSLA", "NVDA")
"""The stocks every stock component watches."""
CRYPTO_PAIRS: tuple[str, ...] = ("BTC/USD", "ETH/USD")
"""The pairs the crypto watcher follows."""


class Component(Protocol):
    """What the demo runs: a named thing that starts, stops and says which streams it uses."""

    name: str
    streams: tuple[str, ...]

    def start(self) -> None:
        """Subscribe / start threads; must not block."""
        ...

    def stop(self) -> None:
        """Undo :meth:`start`; idempotent."""
        ...


# ---------------------------------------------------------------------------- event log


@dataclass(frozen=True)
class LogEntry:
    """One line of the demo's event log."""

    at: float  # time.monotonic()
    source: str
    text: str
    error: bool = False


class EventLog:
    """A short, thread-safe log of what the components did (newest last).

    Example::

        events = EventLog()
        events.add("executor", "submitted market buy 1 AAPL")
        events.recent(5)
    """

    def __init__(self, size: int = 200) -> None:
        self._lock = threading.Lock()
        self._entries: deque[LogEntry] = deque(maxlen=size)
        self._errors = 0

    def add(self, source: str, text: str, *, error: bool = False) -> None:
        """Append an entry (``error=True`` also counts it)."""
        with self._lock:
            self._entries.append(LogEntry(time.monotonic(), source, text, error))
            if error:
                self._errors += 1

    def recent(self, count: int) -> list[LogEntry]:
        """The last ``count`` entries, oldest first."""
        with self._lock:
            return list(self._entries)[-count:]

    @property
    def errors(self) -> int:
        """How many entries were errors."""
        with self._lock:
            return self._errors


# ---------------------------------------------------------------------------- momentum


@dataclass(frozen=True)
class Signal:
    """The momentum strategy's view of one symbol."""

    symbol: str
    first: float
    last: float
    fast: float
    slow: float
    updates: int

    @property
    def change_pct(self) -> float:
        """Change of the price since the first one seen, in percent."""
        return (self.last / self.first - 1.0) * 100.0 if self.first else 0.0

    @property
    def action(self) -> str:
        """``BUY``: fast average 2 bps above the slow one; ``SELL``: 2 bps below; else ``HOLD``."""
        if self.updates < 20:
            return "warming"
        edge = (self.fast / self.slow - 1.0) * 10_000 if self.slow else 0.0
        if edge > 2.0:
            return "BUY"
        if edge < -2.0:
            return "SELL"
        return "HOLD"


class MomentumStrategy:
    """Fast and slow exponential averages of each symbol's price.

    Depends on a :class:`~alpaca_di.services.interfaces.PriceTracker` (the
    container injects the shared ``PricingService``): it tracks its symbols
    under its own owner name and listens to price changes; it opens nothing.

    Example::

        strategy = MomentumStrategy(pricing, symbols=("AAPL",))
        strategy.start()
        strategy.signals()["AAPL"].action
    """

    name = "momentum"
    streams = ("stock",)

    def __init__(
        self,
        pricing: PriceTracker,
        symbols: Iterable[str] = STOCK_SYMBOLS,
        fast: float = 0.2,
        slow: float = 0.02,
    ) -> None:
        self._pricing = pricing
        self._symbols = tuple(symbols)
        self._fast_alpha = fast
        self._slow_alpha = slow
        self._lock = threading.Lock()
        self._signals: dict[str, Signal] = {}
        self._remove: Callable[[], None] | None = None

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols this strategy follows."""
        return self._symbols

    def start(self) -> None:
        """Track the symbols and listen to their prices."""
        add_listener = getattr(self._pricing, "add_listener", None)
        if callable(add_listener):
            self._remove = add_listener(self._on_price)
        self._pricing.track(*self._symbols, owner=self.name)

    def stop(self) -> None:
        """Stop listening and give the symbols back."""
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()
        untrack_all = getattr(self._pricing, "untrack_all", None)
        if callable(untrack_all) and not getattr(self._pricing, "closed", False):
            untrack_all(owner=self.name)

    def signals(self) -> dict[str, Signal]:
        """The latest :class:`Signal` per symbol (only symbols with a price yet)."""
        with self._lock:
            return dict(self._signals)

    def _on_price(self, symbol: str, price: float) -> None:
        if symbol not in self._symbols:
            return  # the pricing service is shared: other components' symbols pass by
        with self._lock:
            previous = self._signals.get(symbol)
            if previous is None:
                self._signals[symbol] = Signal(symbol, price, price, price, price, 1)
                return
            fast = previous.fast + self._fast_alpha * (price - previous.fast)
            slow = previous.slow + self._slow_alpha * (price - previous.slow)
            self._signals[symbol] = Signal(
                symbol, previous.first, price, fast, slow, previous.updates + 1
            )


# ---------------------------------------------------------------------------- crypto


class CryptoWatcher:
    """Crypto prices (through the shared pricing service) and trade flow (own subscription).

    Example::

        watcher = CryptoWatcher(pricing, crypto_stream, pairs=("BTC/USD",))
        watcher.start()
        watcher.trades()["BTC/USD"]
    """

    name = "crypto"
    streams = ("crypto",)

    def __init__(
        self, pricing: PriceTracker, crypto_stream: StreamHub, pairs: Iterable[str] = CRYPTO_PAIRS
    ) -> None:
        self._pricing = pricing
        self._hub = crypto_stream
        self._pairs = tuple(pairs)
        self._lock = threading.Lock()
        self._trades: dict[str, int] = {}
        self._volume: dict[str, float] = {}
        self._sub: Subscription | None = None

    @property
    def pairs(self) -> tuple[str, ...]:
        """The pairs watched."""
        return self._pairs

    def start(self) -> None:
        """Track the pairs' prices and subscribe to their trades."""
        self._pricing.track(*self._pairs, owner=self.name)
        self._sub = self._hub.subscribe(self._on_trade, trades=self._pairs)

    def stop(self) -> None:
        """Close the subscription and give the pairs back."""
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        untrack_all = getattr(self._pricing, "untrack_all", None)
        if callable(untrack_all) and not getattr(self._pricing, "closed", False):
            untrack_all(owner=self.name)

    def trades(self) -> dict[str, int]:
        """Trades seen per pair."""
        with self._lock:
            return dict(self._trades)

    def volume(self) -> dict[str, float]:
        """Traded size per pair."""
        with self._lock:
            return dict(self._volume)

    def _on_trade(self, trade: Trade) -> None:
        with self._lock:
            self._trades[trade.symbol] = self._trades.get(trade.symbol, 0) + 1
            self._volume[trade.symbol] = self._volume.get(trade.symbol, 0.0) + trade.size


# ---------------------------------------------------------------------------- risk


@dataclass(frozen=True)
class AccountView:
    """What the risk monitor last read from the account."""

    equity: float
    cash: float
    buying_power: float
    positions: int
    reads: int


class RiskMonitor:
    """Quoted spreads of the watched symbols and the account's equity and cash.

    Quotes come from its own subscription on the shared stock connection; the
    account is read through ``AlpacaManager.account()`` every ``interval`` s on
    a thread of its own. A spread above ``max_spread_bps`` is counted as an alert.

    Example::

        risk = RiskMonitor(stock_stream, manager, events)
        risk.start()
        risk.spreads()["AAPL"], risk.account()
    """

    name = "risk"
    streams = ("stock", "rest")

    def __init__(
        self,
        stock_stream: StreamHub,
        manager: AlpacaManager,
        events: EventLog,
        symbols: Iterable[str] = STOCK_SYMBOLS,
        max_spread_bps: float = 25.0,
        interval: float = 1.0,
    ) -> None:
        self._hub = stock_stream
        self._manager = manager
        self._events = events
        self._symbols = tuple(symbols)
        self._max_spread = max_spread_bps
        self._interval = interval
        self._lock = threading.Lock()
        self._spreads: dict[str, float] = {}
        self._alerts = 0
        self._account: AccountView | None = None
        self._reads = 0
        self._sub: Subscription | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe to quotes and start reading the account."""
        self._stop.clear()
        self._sub = self._hub.subscribe(self._on_quote, quotes=self._symbols)
        self._thread = threading.Thread(target=self._watch_account, name="demo-risk", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the account thread and close the subscription."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()

    def spreads(self) -> dict[str, float]:
        """The latest quoted spread per symbol, in basis points of the mid."""
        with self._lock:
            return dict(self._spreads)

    @property
    def alerts(self) -> int:
        """Quotes seen with a spread above the limit."""
        with self._lock:
            return self._alerts

    def account(self) -> AccountView | None:
        """The latest account reading, or ``None`` before the first one."""
        with self._lock:
            return self._account

    def _on_quote(self, quote: Quote) -> None:
        bid, ask = quote.bid_price, quote.ask_price
        if bid <= 0 or ask <= 0:
            return
        spread = (ask - bid) / ((ask + bid) / 2.0) * 10_000
        with self._lock:
            self._spreads[quote.symbol] = spread
            if spread > self._max_spread:
                self._alerts += 1

    def _watch_account(self) -> None:
        while not self._stop.is_set():
            try:
                account = self._manager.account()
                positions = self._manager.positions()
            except AlpacaDIError as exc:
                self._events.add(self.name, f"account read failed: {exc}", error=True)
            else:
                with self._lock:
                    self._reads += 1
                    self._account = AccountView(
                        equity=_number(account.equity),
                        cash=_number(account.cash),
                        buying_power=_number(account.buying_power),
                        positions=len(positions),
                        reads=self._reads,
                    )
            self._stop.wait(self._interval)  # the polling period, not synchronisation


# ---------------------------------------------------------------------------- tape


class TradeTape:
    """Every trade of the watched symbols, read by iterating a subscription in a thread.

    Shows the iterator style: no handler, ``for trade in subscription``; the
    loop ends when the subscription is closed.

    Example::

        tape = TradeTape(stock_stream)
        tape.start()
        tape.counts()["AAPL"], tape.vwap()["AAPL"]
    """

    name = "tape"
    streams = ("stock",)

    def __init__(self, stock_stream: StreamHub, symbols: Iterable[str] = STOCK_SYMBOLS) -> None:
        self._hub = stock_stream
        self._symbols = tuple(symbols)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._notional: dict[str, float] = {}
        self._size: dict[str, float] = {}
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Subscribe (no handler) and start the reading thread."""
        sub = self._hub.subscribe(trades=self._symbols, maxsize=5_000)
        self._sub = sub
        thread = threading.Thread(target=self._read, args=(sub,), name="demo-tape", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Close the subscription, which ends the reading loop."""
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)

    def counts(self) -> dict[str, int]:
        """Trades read per symbol."""
        with self._lock:
            return dict(self._counts)

    def vwap(self) -> dict[str, float]:
        """Volume-weighted average trade price per symbol."""
        with self._lock:
            return {s: self._notional[s] / size for s, size in self._size.items() if size}

    def _read(self, sub: Subscription) -> None:
        for trade in sub:
            if not isinstance(trade, Trade):
                continue
            with self._lock:
                symbol = trade.symbol
                self._counts[symbol] = self._counts.get(symbol, 0) + 1
                self._notional[symbol] = self._notional.get(symbol, 0.0) + trade.price * trade.size
                self._size[symbol] = self._size.get(symbol, 0.0) + trade.size


# ---------------------------------------------------------------------------- orders


class OrderLog:
    """Every order event of the account, from the shared trading connection.

    Example::

        log = OrderLog(trading_service, events)
        log.start()
        log.counts()            # {"new": 3, "fill": 3}
    """

    name = "order-log"
    streams = ("trading",)

    def __init__(self, trading: TradingService, events: EventLog) -> None:
        self._trading = trading
        self._events = events
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._sub: Subscription | None = None

    def start(self) -> None:
        """Subscribe to trade updates (this opens the trading socket)."""
        self._sub = self._trading.subscribe(self._on_update)

    def stop(self) -> None:
        """Close the subscription."""
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()

    def counts(self) -> dict[str, int]:
        """Events seen, by name."""
        with self._lock:
            return dict(self._counts)

    def _on_update(self, update: TradeUpdate) -> None:
        event = str(getattr(update.event, "value", update.event))
        order = update.order
        with self._lock:
            self._counts[event] = self._counts.get(event, 0) + 1
        side = str(getattr(order.side, "value", order.side))
        price = f" @ {update.price:,.2f}" if update.price else ""
        self._events.add(self.name, f"{event:<8} {side} {order.qty} {order.symbol}{price}")


@dataclass(frozen=True)
class PlannedOrder:
    """One order the executor places: ``limit_bps`` set means a marketable limit."""

    symbol: str
    qty: int
    side: OrderSide
    limit_bps: float | None = None

    def describe(self) -> str:
        """``market buy 1 AAPL`` or ``limit buy 1 SPY``."""
        kind = "market" if self.limit_bps is None else "limit"
        return f"{kind} {self.side.value} {self.qty} {self.symbol}"


def default_plan() -> tuple[PlannedOrder, ...]:
    """The orders of the demo: four market orders and one marketable limit."""
    return (
        PlannedOrder("AAPL", 2, OrderSide.BUY),
        PlannedOrder("MSFT", 1, OrderSide.BUY),
        PlannedOrder("SPY", 1, OrderSide.BUY, limit_bps=10.0),
        PlannedOrder("NVDA", 3, OrderSide.BUY),
        PlannedOrder("AAPL", 1, OrderSide.SELL),
    )


class Executor:
    """Places a short plan of orders once prices flow, one every ``pace`` seconds.

    Each order goes through ``AlpacaManager.submit_and_wait`` (the trading
    stream listens before the order is sent, so no fill is missed); the
    marketable limit is priced by ``AlpacaManager.marketable_limit_price`` from
    the live mid. With ``place_orders=False`` it only prices them (dry run).

    Example::

        executor = Executor(manager, pricing, events, place_orders=True, pace=0.5)
        executor.start()
        ...
        executor.filled
    """

    name = "executor"
    streams = ("trading", "stock", "rest")

    def __init__(
        self,
        manager: AlpacaManager,
        prices: PriceSource,
        events: EventLog,
        *,
        place_orders: bool = True,
        pace: float = 0.5,
        plan: Iterable[PlannedOrder] | None = None,
        order_timeout: float = 10.0,
    ) -> None:
        self._manager = manager
        self._prices = prices
        self._events = events
        self._place = place_orders
        self._pace = pace
        self._plan = tuple(plan) if plan is not None else default_plan()
        self._timeout = order_timeout
        self._lock = threading.Lock()
        self._submitted = 0
        self._filled = 0
        self._failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def planned(self) -> int:
        """Orders in the plan."""
        return len(self._plan)

    @property
    def submitted(self) -> int:
        """Orders submitted so far."""
        with self._lock:
            return self._submitted

    @property
    def filled(self) -> int:
        """Orders filled so far."""
        with self._lock:
            return self._filled

    @property
    def failed(self) -> int:
        """Orders refused, timed out or otherwise not filled."""
        with self._lock:
            return self._failed

    @property
    def place_orders(self) -> bool:
        """False in a dry run."""
        return self._place

    def start(self) -> None:
        """Start the order thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="demo-executor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the order in flight (if any)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self._timeout + 1.0)

    def _run(self) -> None:
        first = self._plan[0].symbol if self._plan else None
        if first is None or not self._wait_for_prices(first):
            return
        for planned in self._plan:
            if self._stop.is_set():
                return
            try:
                self._execute(planned)
            except (AlpacaDIError, TimeoutError, ValueError) as exc:
                with self._lock:
                    self._failed += 1
                self._events.add(self.name, f"{planned.describe()} failed: {exc}", error=True)
            if self._stop.wait(self._pace):  # pacing so the log is readable
                return

    def _wait_for_prices(self, symbol: str) -> bool:
        while not self._stop.is_set():
            try:
                self._prices.wait_for_price(symbol, timeout=0.5)
                return True
            except TimeoutError:
                continue
            except AlpacaDIError as exc:
                self._events.add(self.name, f"no price for {symbol}: {exc}", error=True)
                return False
        return False

    def _execute(self, planned: PlannedOrder) -> None:
        request: OrderRequest
        if planned.limit_bps is None:
            request = MarketOrderRequest(
                symbol=planned.symbol,
                qty=planned.qty,
                side=planned.side,
                time_in_force=TimeInForce.DAY,
            )
        else:
            limit = self._manager.marketable_limit_price(
                planned.symbol, planned.side, offset_bps=planned.limit_bps
            )
            request = LimitOrderRequest(
                symbol=planned.symbol,
                qty=planned.qty,
                side=planned.side,
                time_in_force=TimeInForce.DAY,
                limit_price=limit,
            )
        what = planned.describe()
        if isinstance(request, LimitOrderRequest):
            what += f" @ {request.limit_price:,.2f} (mid + {planned.limit_bps:g} bps)"
        if not self._place:
            self._events.add(self.name, f"dry run: would submit {what}")
            return
        self._events.add(self.name, f"submitting {what}")
        started = time.monotonic()
        with self._lock:
            self._submitted += 1
        update = self._manager.submit_and_wait(request, timeout=self._timeout)
        took = (time.monotonic() - started) * 1000
        event = str(getattr(update.event, "value", update.event))
        if event == "fill":
            with self._lock:
                self._filled += 1
            self._events.add(
                self.name, f"{what} filled at {update.price or 0:,.2f} in {took:.0f} ms"
            )
        else:
            with self._lock:
                self._failed += 1
            self._events.add(self.name, f"{what} ended {event} after {took:.0f} ms", error=True)


# ---------------------------------------------------------------------------- news


class NewsDesk:
    """Scores every headline with a deliberately slow model behind a small queue.

    The handler takes ``work_seconds`` per article (a stand-in for a call to a
    sentiment service) and the subscription holds at most ``maxsize`` articles
    (``overflow="drop_oldest"``). When news comes faster than that, this
    consumer's oldest articles are dropped and counted -- visible as
    ``messages_dropped`` on the news connection -- and nobody else is slowed.

    Example::

        desk = NewsDesk(news_stream, work_seconds=0.01, maxsize=20)
        desk.start()
        desk.processed, desk.dropped, desk.latest
    """

    name = "news"
    streams = ("news",)

    def __init__(
        self, news_stream: StreamHub, work_seconds: float = 0.01, maxsize: int = 20
    ) -> None:
        self._hub = news_stream
        self._work = work_seconds
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._processed = 0
        self._latest: str | None = None
        self._sub: Subscription | None = None

    @property
    def work_seconds(self) -> float:
        """Seconds the slow model takes per article."""
        return self._work

    @property
    def maxsize(self) -> int:
        """Queue bound of the news subscription."""
        return self._maxsize

    def start(self) -> None:
        """Subscribe to every headline."""
        self._sub = self._hub.subscribe(
            self._on_news, news=["*"], maxsize=self._maxsize, overflow="drop_oldest"
        )

    def stop(self) -> None:
        """Close the subscription."""
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()

    @property
    def processed(self) -> int:
        """Articles scored."""
        with self._lock:
            return self._processed

    @property
    def dropped(self) -> int:
        """Articles this consumer dropped (its queue was full)."""
        sub = self._sub
        return sub.stats.dropped if sub is not None else 0

    @property
    def latest(self) -> str | None:
        """The latest headline scored."""
        with self._lock:
            return self._latest

    def _on_news(self, article: Any) -> None:
        time.sleep(self._work)  # the stand-in for a slow sentiment model
        with self._lock:
            self._processed += 1
            self._latest = str(getattr(article, "headline", ""))


# ---------------------------------------------------------------------------- container


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    try:
        return float(Decimal(str(value)))
    except ArithmeticError:
        return 0.0
