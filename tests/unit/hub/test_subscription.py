"""The subscription queue and its overflow policies, without sockets.

The hub is real but never started: items are pushed the way its reader pushes them.
"""

import asyncio
import threading

import pytest

from alpaca_di.credentials import Credentials
from alpaca_di.errors import ConnectionClosedError, SubscriptionOverflowError
from alpaca_di.hub import StreamHub
from alpaca_di.protocol import StreamKind
from alpaca_di.transport import ConnectionOptions


@pytest.fixture
def hub():
    loop = asyncio.new_event_loop()
    hub = StreamHub(
        kind=StreamKind.STOCK,
        endpoint="ws://127.0.0.1:9/v2/iex",
        credentials=Credentials("PKUNIT0001", "unit-secret"),
        options=ConnectionOptions(),
        loop=loop,
    )
    yield hub
    loop.close()


def items(symbols, channel="quotes"):
    return [(channel, symbol, f"{channel}:{symbol}:{n}") for n, symbol in enumerate(symbols)]


def drain(sub):
    out = []
    while True:
        try:
            out.append(sub.get(timeout=0))
        except TimeoutError:
            return out


def test_drop_oldest_keeps_the_newest_and_counts_drops(hub):
    sub = hub.subscribe(quotes=["AAPL"], maxsize=3)
    sub._inbox.push(items(["A", "B"]))
    sub._inbox.push(items(["C", "D", "E"]))
    assert drain(sub) == ["quotes:C:0", "quotes:D:1", "quotes:E:2"]
    assert sub.stats.dropped == 2
    assert sub.stats.delivered == 3


def test_drop_oldest_with_a_batch_larger_than_the_queue(hub):
    sub = hub.subscribe(quotes=["AAPL"], maxsize=2)
    sub._inbox.push(items(["A"]))
    sub._inbox.push(items(["B", "C", "D", "E"]))
    assert drain(sub) == ["quotes:D:2", "quotes:E:3"]
    assert sub.stats.dropped == 3


def test_drop_newest_keeps_the_oldest(hub):
    sub = hub.subscribe(quotes=["AAPL"], maxsize=2, overflow="drop_newest")
    sub._inbox.push(items(["A", "B", "C"]))
    assert drain(sub) == ["quotes:A:0", "quotes:B:1"]
    assert sub.stats.dropped == 1


def test_conflate_keeps_the_latest_per_channel_and_symbol(hub):
    sub = hub.subscribe(quotes=["*"], trades=["*"], overflow="conflate")
    sub._inbox.push([("quotes", "AAPL", 1), ("quotes", "MSFT", 2), ("trades", "AAPL", 3)])
    sub._inbox.push([("quotes", "AAPL", 4)])
    assert drain(sub) == [4, 2, 3]
    assert sub.stats.dropped == 1


def test_conflate_bounds_distinct_keys(hub):
    sub = hub.subscribe(quotes=["*"], overflow="conflate", maxsize=2)
    sub._inbox.push([("quotes", "A", 1), ("quotes", "B", 2), ("quotes", "C", 3)])
    assert drain(sub) == [2, 3]
    assert sub.stats.dropped == 1


def test_error_policy_closes_the_subscription_with_a_named_error(hub):
    sub = hub.subscribe(quotes=["AAPL"], maxsize=2, overflow="error")
    sub._inbox.push(items(["A", "B", "C"]))
    assert sub.closed
    with pytest.raises(SubscriptionOverflowError, match="overflow='error'"):
        sub.get(timeout=0)
    assert sub.stats.dropped == 1


def test_unbounded_queue_drops_nothing(hub):
    sub = hub.subscribe(quotes=["AAPL"], maxsize=None)
    sub._inbox.push(items([str(n) for n in range(50_000)]))
    assert sub.stats.queued == 50_000
    assert sub.stats.dropped == 0


def test_trading_subscriptions_never_drop_whatever_maxsize():
    loop = asyncio.new_event_loop()
    hub = StreamHub(
        kind=StreamKind.TRADING,
        endpoint="ws://127.0.0.1:9/stream",
        credentials=Credentials("PKUNIT0001", "unit-secret"),
        options=ConnectionOptions(),
        loop=loop,
    )
    sub = hub.subscribe(trade_updates=True, maxsize=1)
    sub._inbox.push(items(["A", "B", "C"], channel="trade_updates"))
    assert sub.stats.queued == 3
    assert sub.stats.dropped == 0
    loop.close()


def test_nothing_is_delivered_after_close(hub):
    sub = hub.subscribe(quotes=["AAPL"])
    sub._inbox.push(items(["A", "B"]))
    sub.close()
    sub._inbox.push(items(["C"]))
    with pytest.raises(ConnectionClosedError):
        sub.get(timeout=0)
    assert sub.stats.queued == 0
    assert list(sub) == []


def test_get_waits_for_a_push_from_another_thread(hub):
    sub = hub.subscribe(quotes=["AAPL"])
    pushed = threading.Event()

    def push():
        pushed.wait(5)
        sub._inbox.push(items(["A"]))

    threading.Thread(target=push).start()
    pushed.set()
    assert sub.get(timeout=5) == "quotes:A:0"


def test_get_times_out_with_timeout_error(hub):
    sub = hub.subscribe(quotes=["AAPL"])
    with pytest.raises(TimeoutError, match="no message"):
        sub.get(timeout=0.01)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"quotes": ["aapl"]}, ValueError, "aapl"),
        ({"quotes": [""]}, ValueError, "empty"),
        ({"quotes": [42]}, TypeError, "int"),
        ({"orderbooks": ["AAPL"]}, ValueError, "orderbooks"),
        ({"trade_updates": True}, ValueError, "trade_updates"),
        ({"quotes": ["AAPL"], "maxsize": 0}, ValueError, "maxsize"),
        ({"quotes": ["AAPL"], "maxsize": -5}, ValueError, "maxsize"),
        ({"quotes": ["AAPL"], "overflow": "drop_all"}, ValueError, "drop_all"),
        ({"quotes": 7}, TypeError, "quotes"),
    ],
)
def test_bad_arguments_fail_at_the_call(hub, kwargs, error, match):
    with pytest.raises(error, match=match):
        hub.subscribe(**kwargs)


def test_handler_must_be_callable(hub):
    with pytest.raises(TypeError, match="callable"):
        hub.subscribe("not a function", quotes=["AAPL"])


def test_get_is_refused_on_handler_subscriptions(hub):
    sub = hub.subscribe(lambda message: None, quotes=["AAPL"])
    with pytest.raises(TypeError, match="handler"):
        sub.get(timeout=0)
    sub.close()


def test_a_subscription_reports_its_bound_and_policy(hub):
    sub = hub.subscribe(quotes=["AAPL"], maxsize=7, overflow="drop_newest")
    assert (sub.maxsize, sub.overflow, sub.raw) == (7, "drop_newest", False)
