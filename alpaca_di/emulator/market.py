"""The emulator's synthetic market: a seeded random walk that speaks Alpaca's wire format.

One :class:`SyntheticMarket` holds the current price of every symbol the
emulator knows. Generating a trade or quote steps that symbol's walk; the
broker fills orders at :meth:`SyntheticMarket.price`. Messages are built in
wire form (``"T"`` first, msgpack Timestamps) so they can be encoded as is::

    from alpaca_di.emulator.market import SyntheticMarket

    market = SyntheticMarket(seed=7)
    market.price("AAPL")                       # 190.0
    msg = market.message("q", "AAPL", "stock", market.now())
    msg["T"], msg["S"]                         # ('q', 'AAPL')
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Callable
from typing import Any

import msgpack

from alpaca_di.emulator.clock import EmulatorClock

__all__ = [
    "CRYPTO_UNIVERSE",
    "OPTION_UNIVERSE",
    "STOCK_UNIVERSE",
    "SyntheticMarket",
    "asset_class_of",
]

STOCK_UNIVERSE: dict[str, float] = {
    "AAPL": 190.0,
    "MSFT": 410.0,
    "SPY": 500.0,
    "TSLA": 250.0,
    "NVDA": 120.0,
    "AMZN": 180.0,
    "GOOGL": 170.0,
    "META": 500.0,
    "QQQ": 440.0,
}
CRYPTO_UNIVERSE: dict[str, float] = {"BTC/USD": 60_000.0, "ETH/USD": 3_000.0, "SOL/USD": 150.0}


def _option_universe() -> dict[str, float]:
    # Third Friday-ish of January next year: always a future expiry.
    year = (_dt.date.today().year + 1) % 100
    return {
        f"AAPL{year:02d}0117C00150000": 42.5,
        f"AAPL{year:02d}0117P00150000": 3.2,
        f"SPY{year:02d}0117C00500000": 35.0,
        f"TSLA{year:02d}0117C00250000": 48.0,
    }


OPTION_UNIVERSE: dict[str, float] = _option_universe()
_TEST_UNIVERSE: dict[str, float] = {"FAKEPACA": 100.0}

_HEADLINES = (
    "{s} shares move after analyst update",
    "{s} announces product event",
    "Options activity picks up in {s}",
    "{s} added to momentum watchlist",
    "Why {s} is trending today",
)


def asset_class_of(symbol: str) -> str:
    """Alpaca's asset class of a symbol: ``crypto`` (A/B), ``us_option`` (OCC), ``us_equity``."""
    if "/" in symbol:
        return "crypto"
    if len(symbol) > 15 and symbol[-9] in "CP" and symbol[-8:].isdigit():
        return "us_option"
    return "us_equity"


class SyntheticMarket:
    """Seeded random walks of prices plus Alpaca-shaped message builders.

    Not thread-safe: the emulator only touches it from its event loop (reads of
    :meth:`price` from other threads are atomic dict reads).

    Example::

        market = SyntheticMarket(seed=1)
        market.set_price("AAPL", 100.0)
        trade = market.message("t", "AAPL", "stock", market.now())
        trade["p"]          # close to 100.0
    """

    def __init__(self, seed: int | None = None, clock: EmulatorClock | None = None) -> None:
        self.clock = clock if clock is not None else EmulatorClock()  # stamps every message
        self._rng = random.Random(seed)
        self._prices: dict[str, float] = {
            **STOCK_UNIVERSE,
            **CRYPTO_UNIVERSE,
            **OPTION_UNIVERSE,
            **_TEST_UNIVERSE,
        }
        self._known: set[str] = set(self._prices)
        self._trade_id = 1
        self._news_id = 1
        self.on_price: Callable[[str, float], None] | None = None
        self._builders: dict[str, Callable[[str, str, msgpack.Timestamp], dict[str, Any]]] = {
            "t": self._trade,
            "q": self._quote,
            "b": self._bar,
            "u": self._bar,
            "d": self._bar,
            "s": self._status,
            "l": self._luld,
            "o": self._orderbook,
            "n": self._news,
            "c": self._correction,
            "x": self._cancel,
        }

    # -- universe and prices ------------------------------------------------------------------

    @staticmethod
    def universe(kind: str, feed: str = "") -> tuple[str, ...]:
        """The symbols a ``"*"`` subscription covers on a feed of this kind."""
        if kind == "crypto":
            return tuple(CRYPTO_UNIVERSE)
        if kind == "option":
            return tuple(OPTION_UNIVERSE)
        if feed == "test":
            return tuple(_TEST_UNIVERSE)
        return tuple(STOCK_UNIVERSE)

    def pick(self, symbols: tuple[str, ...]) -> str:
        """One of ``symbols``, drawn from the market's seeded random generator."""
        return self._rng.choice(symbols)

    def is_known(self, symbol: str) -> bool:
        """True for the default universe and every symbol given a price with :meth:`set_price`."""
        return symbol in self._known

    def price(self, symbol: str) -> float:
        """The current price (100.0 for a symbol never seen before)."""
        return self._prices.get(symbol, 100.0)

    def set_price(self, symbol: str, price: float) -> None:
        """Set the current price; the symbol becomes known (tradable) if it was not."""
        if not price > 0:
            raise ValueError(f"price for {symbol!r} must be > 0, got {price!r}")
        self._known.add(symbol)
        self._prices[symbol] = float(price)
        if self.on_price is not None:
            self.on_price(symbol, float(price))

    def step(self, symbol: str) -> float:
        """Advance the symbol's random walk by one tick and return the new price."""
        old = self._prices.get(symbol, 100.0)
        new = old * (1.0 + self._rng.gauss(0.0, 0.0005))
        new = round(new, 2) if new >= 1.0 else round(new, 4)
        if new <= 0:
            new = old
        self._prices[symbol] = new
        if self.on_price is not None and new != old:
            self.on_price(symbol, new)
        return new

    def now(self) -> msgpack.Timestamp:
        """The emulator clock's now as a msgpack Timestamp."""
        return msgpack.Timestamp.from_unix_nano(self.clock.now_ns())

    # -- message builders -----------------------------------------------------------------------

    def message(
        self, type_code: str, symbol: str, kind: str, ts: msgpack.Timestamp
    ) -> dict[str, Any]:
        """Build one synthetic wire message of type ``type_code`` for ``symbol`` (``kind`` feed)."""
        return self._builders[type_code](symbol, kind, ts)

    def _next_trade_id(self) -> int:
        self._trade_id += 1
        return self._trade_id

    def _size(self) -> int:
        if self._rng.random() < 0.5:
            return self._rng.randint(1, 5) * 100
        return self._rng.randint(1, 99)

    def _trade(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        price = self.step(symbol)
        if kind == "crypto":
            return {
                "T": "t",
                "S": symbol,
                "p": price,
                "s": round(self._rng.random(), 6),
                "t": ts,
                "i": self._next_trade_id(),
                "tks": "B" if self._rng.random() < 0.5 else "S",
            }
        if kind == "option":
            return {
                "T": "t",
                "S": symbol,
                "t": ts,
                "p": price,
                "s": self._rng.randint(1, 20),
                "x": "C",
                "c": "I",
            }
        return {
            "T": "t",
            "S": symbol,
            "i": self._next_trade_id(),
            "x": "V",
            "p": price,
            "s": self._size(),
            "c": ["@"],
            "z": "B" if symbol == "SPY" else "C",
            "t": ts,
        }

    def _quote(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        price = self.step(symbol)
        half = max(0.01, round(price * 0.0002, 2))
        bid, ask = round(price - half, 4), round(price + half, 4)
        if kind == "crypto":
            return {
                "T": "q",
                "S": symbol,
                "bp": bid,
                "bs": round(self._rng.random(), 6),
                "ap": ask,
                "as": round(self._rng.random(), 6),
                "t": ts,
            }
        if kind == "option":
            return {
                "T": "q",
                "S": symbol,
                "t": ts,
                "bx": "C",
                "bp": bid,
                "bs": self._rng.randint(1, 50),
                "ax": "C",
                "ap": ask,
                "as": self._rng.randint(1, 50),
                "c": "A",
            }
        return {
            "T": "q",
            "S": symbol,
            "bx": "V",
            "bp": bid,
            "bs": self._rng.randint(1, 9),
            "ax": "V",
            "ap": ask,
            "as": self._rng.randint(1, 9),
            "c": ["R"],
            "z": "C",
            "t": ts,
        }

    def _bar(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        close = self._prices.get(symbol, 100.0)
        spread = close * 0.001
        open_ = round(close + self._rng.uniform(-spread, spread), 4)
        high = round(max(open_, close) + self._rng.uniform(0, spread), 4)
        low = round(min(open_, close) - self._rng.uniform(0, spread), 4)
        minute = msgpack.Timestamp(ts.seconds - ts.seconds % 60, 0)
        bar: dict[str, Any] = {
            "T": "b",
            "S": symbol,
            "o": open_,
            "h": high,
            "l": low,
            "c": close,
            "v": self._rng.randint(100, 100_000),
            "t": minute,
            "n": self._rng.randint(1, 500),
            "vw": round((open_ + high + low + close) / 4, 4),
        }
        return bar

    def closed_bar(
        self, type_code: str, symbol: str, kind: str, start: msgpack.Timestamp, ticks: int = 8
    ) -> dict[str, Any]:
        """A bar (``b`` minute, ``d`` daily) that opened at ``start`` and just closed.

        The symbol's price walks ``ticks`` steps: the bar opens at the price before
        them, closes at the price after them, and its high and low are the walk's
        extremes, so consecutive bars join up and fills see the same prices.

        Example::

            bar = market.closed_bar("b", "AAPL", "stock", msgpack.Timestamp(1704205800, 0))
            bar["o"], bar["c"]       # the close is AAPL's price now
        """
        open_ = self.price(symbol)
        path = [open_] + [self.step(symbol) for _ in range(ticks)]
        close = path[-1]
        volume: float
        if kind == "crypto":
            volume = round(self._rng.uniform(0.01, 50.0), 6)
        else:
            volume = self._rng.randint(100, 100_000) * (10 if type_code == "d" else 1)
        return {
            "T": type_code,
            "S": symbol,
            "o": open_,
            "h": max(path),
            "l": min(path),
            "c": close,
            "v": volume,
            "t": start,
            "n": self._rng.randint(1, 500),
            "vw": round(sum(path) / len(path), 4),
        }

    def _status(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        return {
            "T": "s",
            "S": symbol,
            "sc": "T",
            "sm": "Trading Resumption",
            "rc": "",
            "rm": "",
            "t": ts,
            "z": "C",
        }

    def _luld(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        price = self._prices.get(symbol, 100.0)
        return {
            "T": "l",
            "S": symbol,
            "u": round(price * 1.05, 2),
            "d": round(price * 0.95, 2),
            "i": "B",
            "t": ts,
            "z": "C",
        }

    def _orderbook(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        price = self.step(symbol)
        tick = max(0.01, round(price * 0.0001, 2))
        bids = [
            {"p": round(price - tick * (i + 1), 4), "s": round(self._rng.random(), 6)}
            for i in range(3)
        ]
        asks = [
            {"p": round(price + tick * (i + 1), 4), "s": round(self._rng.random(), 6)}
            for i in range(3)
        ]
        return {"T": "o", "S": symbol, "t": ts, "b": bids, "a": asks, "r": False}

    def _news(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        if symbol == "*" or not symbol:
            symbol = self._rng.choice(tuple(STOCK_UNIVERSE))
        self._news_id += 1
        headline = self._rng.choice(_HEADLINES).format(s=symbol)
        return {
            "T": "n",
            "id": self._news_id,
            "headline": headline,
            "summary": f"{headline}. Synthetic story from the alpaca-di emulator.",
            "author": "alpaca-di emulator",
            "created_at": ts,
            "updated_at": ts,
            "url": f"https://example.invalid/news/{self._news_id}",
            "content": "",
            "symbols": [symbol],
            "source": "emulator",
        }

    def _correction(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        price = self._prices.get(symbol, 100.0)
        original = self._next_trade_id()
        return {
            "T": "c",
            "S": symbol,
            "x": "V",
            "oi": original,
            "op": price,
            "os": 100,
            "oc": ["@"],
            "ci": self._next_trade_id(),
            "cp": round(price * 1.0001, 2),
            "cs": 100,
            "cc": ["@"],
            "z": "C",
            "t": ts,
        }

    def _cancel(self, symbol: str, kind: str, ts: msgpack.Timestamp) -> dict[str, Any]:
        return {
            "T": "x",
            "S": symbol,
            "i": self._next_trade_id(),
            "x": "V",
            "p": self._prices.get(symbol, 100.0),
            "s": 100,
            "a": "C",
            "z": "C",
            "t": ts,
        }
