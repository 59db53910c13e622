"""The alpaca-py-compatible shared stream classes against the emulator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from alpaca.data.models import Quote, Trade
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from alpaca_di.compat.streams import (
    SharedCryptoDataStream,
    SharedNewsDataStream,
    SharedOptionDataStream,
    SharedStockDataStream,
    SharedTradingStream,
)
from alpaca_di.credentials import Credentials
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry, StreamHub
from alpaca_di.protocol import StreamKind
from alpaca_di.testing.messages import news, quote, trade
from alpaca_di.transport import ConnectionOptions

KEY = "PKINTEGRATION01"
SECRET = "integration-secret-do-not-leak"
IEX = "/v2/iex"
CRYPTO = "/v1beta3/crypto/us"
NEWS = "/v1beta1/news"

Acquire = Callable[[StreamKind, str], StreamHub]


@pytest.fixture
def acquire(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
) -> Iterator[Acquire]:
    leases = []

    def acquire(kind: StreamKind, path: str) -> StreamHub:
        url = emulator.trading_stream_url if kind is StreamKind.TRADING else emulator.data_url(path)
        lease = registry.acquire(creds, kind, url, fast_options)
        leases.append(lease)
        return lease.hub

    yield acquire
    for lease in leases:
        lease.release()


@pytest.fixture
def stock_hub(acquire: Acquire) -> StreamHub:
    return acquire(StreamKind.STOCK, IEX)


class Inbox:
    """An async handler that records what it gets and lets the test thread wait for it."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    async def __call__(self, message: Any) -> None:
        with self._cond:
            self.items.append(message)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise TimeoutError(f"got {len(self.items)} of {count} messages")
            return list(self.items)


class Runner:
    """Runs ``stream.run()`` on a plain thread, the way alpaca-py code usually does."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.thread = threading.Thread(target=stream.run, name="stream-run", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stream.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "run() did not return after stop()"


@pytest.fixture
def runners() -> Iterator[list[Runner]]:
    started: list[Runner] = []
    yield started
    for runner in started:
        runner.stop()


def start(runners: list[Runner], stream: Any) -> Any:
    runners.append(Runner(stream))
    stream.wait_subscribed(10)
    return stream


def written_for_alpaca_py(stream: Any, done: threading.Event, seen: list[Any]) -> None:
    """Code that only uses alpaca-py's public StockDataStream API."""

    async def on_quote(q: Any) -> None:
        seen.append(q)

    async def on_trade(t: Any) -> None:
        seen.append(t)
        if t.symbol == "MSFT":
            stream.stop()  # stopping from inside a handler must not deadlock
            done.set()

    stream.subscribe_quotes(on_quote, "AAPL")
    stream.subscribe_trades(on_trade, "AAPL", "MSFT")
    stream.run()


def test_code_written_against_alpaca_py_runs_unchanged(
    stock_hub: StreamHub, emulator: AlpacaEmulator
) -> None:
    stream = SharedStockDataStream(stock_hub)
    done = threading.Event()
    seen: list[Any] = []
    thread = threading.Thread(target=written_for_alpaca_py, args=(stream, done, seen))
    thread.start()
    emulator.wait_until(lambda: not thread.is_alive() or stream.running, 5)
    stream.wait_subscribed(10)
    emulator.publish(
        IEX,
        [
            quote("AAPL", bid=190.0),
            trade("AAPL", price=190.01),
            quote("MSFT", bid=1.0),  # not subscribed to MSFT quotes: never delivered
            trade("MSFT", price=410.0),
        ],
    )
    assert done.wait(10)
    thread.join(5)
    assert not thread.is_alive()
    assert [type(m).__name__ for m in seen] == ["Quote", "Trade", "Trade"]
    assert isinstance(seen[0], Quote)
    assert isinstance(seen[2], Trade)
    assert seen[2].symbol == "MSFT"
    # stop() released this object's symbols; nothing else held them
    emulator.wait_until(lambda: emulator.subscriptions(KEY, IEX)["trades"] == frozenset(), 5)


def test_two_objects_with_handlers_for_aapl_both_receive_it_over_one_connection(
    stock_hub: StreamHub, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    first, second = Inbox(), Inbox()
    a, b = SharedStockDataStream(stock_hub), SharedStockDataStream(stock_hub)
    a.subscribe_quotes(first, "AAPL")
    b.subscribe_quotes(second, "AAPL", "MSFT")
    start(runners, a)
    start(runners, b)
    emulator.publish(IEX, [quote("AAPL", bid=1.0), quote("MSFT", bid=2.0)])
    assert [q.symbol for q in second.wait_for(2)] == ["AAPL", "MSFT"]
    assert [q.symbol for q in first.wait_for(1)] == ["AAPL"]
    counters = emulator.counters(KEY, IEX)
    assert counters.connections_accepted == 1
    assert counters.max_concurrent == 1

    # one object leaving AAPL leaves the other's subscription in place
    a.unsubscribe_quotes("AAPL")
    a.unsubscribe_quotes("TSLA")  # not held: ignored (alpaca-py raises KeyError)
    a.wait_subscribed(5)
    assert emulator.subscriptions(KEY, IEX)["quotes"] == {"AAPL", "MSFT"}
    emulator.publish(IEX, [quote("AAPL", bid=3.0)])
    assert second.wait_for(3)[-1].bid_price == 3.0
    b.unsubscribe_quotes("AAPL", "MSFT")
    emulator.wait_until(lambda: emulator.subscriptions(KEY, IEX)["quotes"] == frozenset(), 5)
    assert len(first.items) == 1


def test_within_one_object_a_second_handler_replaces_the_first(
    stock_hub: StreamHub, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    old, new, star = Inbox(), Inbox(), Inbox()
    stream = SharedStockDataStream(stock_hub)
    stream.subscribe_quotes(old, "AAPL")
    stream.subscribe_quotes(new, "AAPL")
    stream.subscribe_quotes(star, "*")
    start(runners, stream)
    emulator.publish(IEX, [quote("AAPL", bid=1.0), quote("TSLA", bid=2.0)])
    assert [q.symbol for q in star.wait_for(1)] == ["TSLA"]  # the AAPL handler wins for AAPL
    assert [q.symbol for q in new.wait_for(1)] == ["AAPL"]
    assert old.items == []


def test_subscribing_while_running_from_another_thread(
    stock_hub: StreamHub, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    bars, daily = Inbox(), Inbox()
    stream = SharedStockDataStream(stock_hub)
    stream.subscribe_bars(bars, "SPY")
    start(runners, stream)
    stream.subscribe_daily_bars(daily, "SPY")
    stream.subscribe_bars(bars, "QQQ")
    stream.wait_subscribed(5)
    subs = emulator.subscriptions(KEY, IEX)
    assert subs["bars"] == {"SPY", "QQQ"}
    assert subs["dailyBars"] == {"SPY"}
    now = datetime.now(timezone.utc)
    emulator.publish(
        IEX,
        [
            {"T": "b", "S": "QQQ", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10, "n": 1,
             "vw": 1.2, "t": now},
            {"T": "d", "S": "SPY", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10, "n": 1,
             "vw": 1.2, "t": now},
        ],
    )  # fmt: skip
    assert [b.symbol for b in bars.wait_for(1)] == ["QQQ"]
    assert [b.symbol for b in daily.wait_for(1)] == ["SPY"]


def test_trade_corrections_follow_the_objects_trades(
    stock_hub: StreamHub, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    trades, corrections = Inbox(), Inbox()
    stream = SharedStockDataStream(stock_hub)
    stream.register_trade_corrections(corrections)
    stream.subscribe_trades(trades, "AAPL")
    start(runners, stream)
    now = datetime.now(timezone.utc)
    emulator.publish(
        IEX,
        [
            {"T": "c", "S": "AAPL", "x": "V", "oi": 1, "op": 1.0, "os": 1, "oc": ["@"],
             "ci": 2, "cp": 1.1, "cs": 1, "cc": ["@"], "z": "C", "t": now},
            trade("AAPL", price=1.1),
        ],
    )  # fmt: skip
    assert trades.wait_for(1)[0].price == 1.1
    [correction] = corrections.wait_for(1)
    assert correction.symbol == "AAPL"
    assert correction.corrected_price == 1.1
    assert emulator.subscriptions(KEY, IEX)["trades"] == {"AAPL"}  # no extra wire symbols


def test_raw_data_delivers_dicts(
    stock_hub: StreamHub, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    inbox = Inbox()
    stream = SharedStockDataStream(stock_hub, raw_data=True)
    stream.subscribe_quotes(inbox, "AAPL")
    start(runners, stream)
    emulator.publish(IEX, [quote("AAPL", bid=5.0)])
    [raw] = inbox.wait_for(1)
    assert isinstance(raw, dict)
    assert (raw["T"], raw["S"], raw["bp"]) == ("q", "AAPL", 5.0)


def test_stop_before_run_makes_run_return_at_once(stock_hub: StreamHub) -> None:
    stream = SharedStockDataStream(stock_hub)
    stream.subscribe_quotes(Inbox(), "AAPL")
    stream.stop()
    thread = threading.Thread(target=stream.run)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert stock_hub.health().consumers == 0


def test_stop_from_another_thread_wakes_run_and_releases_only_this_object(
    stock_hub: StreamHub, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    keep, leave = Inbox(), Inbox()
    staying = SharedStockDataStream(stock_hub)
    staying.subscribe_trades(keep, "AAPL")
    start(runners, staying)
    leaving = SharedStockDataStream(stock_hub)
    leaving.subscribe_trades(leave, "AAPL", "NVDA")
    runner = Runner(leaving)
    leaving.wait_subscribed(10)
    assert emulator.subscriptions(KEY, IEX)["trades"] == {"AAPL", "NVDA"}
    runner.stop()
    assert not leaving.running
    emulator.wait_until(lambda: emulator.subscriptions(KEY, IEX)["trades"] == {"AAPL"}, 5)
    emulator.publish(IEX, [trade("AAPL", price=7.0)])
    assert keep.wait_for(1)[0].price == 7.0
    assert leave.items == []
    leaving.stop()  # idempotent-ish: marks a pending stop, never blocks


async def test_run_forever_in_a_running_loop(
    stock_hub: StreamHub, emulator: AlpacaEmulator
) -> None:
    received = asyncio.Event()
    loop = asyncio.get_running_loop()
    seen_on: list[asyncio.AbstractEventLoop] = []

    async def on_quote(q: Any) -> None:
        seen_on.append(asyncio.get_running_loop())
        received.set()

    stream = SharedStockDataStream(stock_hub)
    stream.subscribe_quotes(on_quote, "TSLA")
    task = asyncio.create_task(stream._run_forever())
    await stream.subscribed(10)
    with pytest.raises(RuntimeError, match="running event loop"):
        stream.run()
    emulator.publish(IEX, [quote("TSLA", bid=9.0)])
    await asyncio.wait_for(received.wait(), 10)
    assert seen_on == [loop]  # handlers run on the loop that runs the stream
    await stream.stop_ws()
    await asyncio.wait_for(task, 5)
    assert not stream.running


def test_handlers_must_be_coroutines_and_symbols_valid(stock_hub: StreamHub) -> None:
    stream = SharedStockDataStream(stock_hub)

    def sync_handler(message: Any) -> None: ...

    with pytest.raises(ValueError, match="handler must be a coroutine function"):
        stream.subscribe_quotes(sync_handler, "AAPL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="handler must be a coroutine function"):
        stream.register_trade_cancels(sync_handler)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'aapl'"):
        stream.subscribe_quotes(Inbox(), "aapl")
    with pytest.raises(ValueError, match="needs a crypto hub, got a stock one"):
        SharedCryptoDataStream(stock_hub)
    with pytest.raises(TypeError, match="StreamHub"):
        SharedStockDataStream("wss://example")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a positive"):
        stream.wait_subscribed(0)
    with pytest.raises(TimeoutError, match="not running"):
        stream.wait_subscribed(0.05)


def test_crypto_option_and_news_streams(
    acquire: Acquire, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    crypto_inbox, news_inbox, star_inbox = Inbox(), Inbox(), Inbox()
    crypto = SharedCryptoDataStream(acquire(StreamKind.CRYPTO, CRYPTO))
    crypto.subscribe_quotes(crypto_inbox, "BTC/USD")
    crypto.subscribe_orderbooks(crypto_inbox, "ETH/USD")
    headlines = SharedNewsDataStream(acquire(StreamKind.NEWS, NEWS))
    headlines.subscribe_news(news_inbox, "AAPL", "TSLA")
    every = SharedNewsDataStream(acquire(StreamKind.NEWS, NEWS))
    every.subscribe_news(star_inbox, "*")
    option = SharedOptionDataStream(acquire(StreamKind.OPTION, "/v1beta1/indicative"))
    with pytest.raises(ValueError, match="invalid option symbol"):
        option.subscribe_quotes(Inbox(), "AAPL")
    for stream in (crypto, headlines, every):
        start(runners, stream)
    emulator.publish(CRYPTO, [{**quote("BTC/USD", bid=60_000, ask=60_010)}])
    assert crypto_inbox.wait_for(1)[0].symbol == "BTC/USD"
    emulator.publish(NEWS, [news("Apple and Tesla", ["AAPL", "TSLA"]), news("Other", ["IBM"])])
    [article] = news_inbox.wait_for(1)  # one delivery although both symbols match
    assert article.headline == "Apple and Tesla"
    assert [a.headline for a in star_inbox.wait_for(2)] == ["Apple and Tesla", "Other"]
    assert len(news_inbox.items) == 1
    assert emulator.counters(KEY, NEWS).connections_accepted == 1


def test_shared_trading_stream_receives_order_updates(
    acquire: Acquire, emulator: AlpacaEmulator, runners: list[Runner]
) -> None:
    hub = acquire(StreamKind.TRADING, "/stream")
    models, raws = Inbox(), Inbox()
    parsed = SharedTradingStream(hub)
    parsed.subscribe_trade_updates(models)
    raw = SharedTradingStream(hub, raw_data=True)
    raw.subscribe_trade_updates(raws)
    start(runners, parsed)
    start(runners, raw)
    client = TradingClient(KEY, SECRET, paper=True, url_override=emulator.api_url)
    order = client.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )
    updates = models.wait_for(2)
    assert [u.event for u in updates] == ["new", "fill"]
    assert str(updates[1].order.id) == str(order.id)
    messages = raws.wait_for(2)
    assert messages[1]["stream"] == "trade_updates"
    assert messages[1]["data"]["event"] == "fill"
    assert emulator.counters(KEY, "/stream").connections_accepted == 1
    parsed.unsubscribe_trade_updates()
    parsed.wait_subscribed(5)
    with pytest.raises(ValueError, match="coroutine"):
        parsed.subscribe_trade_updates(print)  # type: ignore[arg-type]


def test_run_returns_when_the_hub_is_closed(
    registry: ConnectionRegistry,
    emulator: AlpacaEmulator,
    creds: Credentials,
    fast_options: ConnectionOptions,
) -> None:
    lease = registry.acquire(creds, StreamKind.STOCK, emulator.data_url(IEX), fast_options)
    stream = SharedStockDataStream(lease.hub)
    stream.subscribe_quotes(Inbox(), "AAPL")
    runner = Runner(stream)
    stream.wait_subscribed(10)
    lease.release()  # the container shutting down
    runner.thread.join(5)
    assert not runner.thread.is_alive()
    assert not stream.running
