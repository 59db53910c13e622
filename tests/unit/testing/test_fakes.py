"""alpaca_di.testing.fakes: synchronous in-memory hubs, service fakes, fake containers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from alpaca.data.models import Bar, News, Quote, Trade
from alpaca.trading.models import TradeUpdate

from alpaca_di import (
    AuthenticationError,
    ConnectionClosedError,
    ConnectionState,
    HealthReport,
    PricingService,
    SharedStockDataStream,
    StreamKind,
    SubscriptionStats,
    TradingService,
)
from alpaca_di.errors import SubscriptionOverflowError
from alpaca_di.services.interfaces import OrderUpdates, PriceSource, PriceTracker
from alpaca_di.testing import Recorder, messages
from alpaca_di.testing.fakes import (
    FAKE_SECRET,
    FakeOrderUpdates,
    FakePriceSource,
    FakeStreamHub,
    fake_container,
    fake_streams,
    override_streams,
    reset_fake_container,
    trade_update_message,
)

DEADLINE = 5.0


@pytest.fixture
def hub() -> Any:
    hub = FakeStreamHub("stock")
    yield hub
    hub.close()


# -- delivery ---------------------------------------------------------------------------------


def test_push_calls_matching_sync_handlers_before_returning(hub):
    loop_thread = hub._thread.ident  # the real hub: sync handlers run on its workers, never here
    seen: list[tuple[Any, int]] = []
    hub.subscribe(lambda m: seen.append((m, threading.get_ident())), quotes=["AAPL"])
    hub.subscribe(lambda m: seen.append((m, threading.get_ident())), quotes="*")
    hub.subscribe(lambda m: seen.append((m, -1)), quotes=["MSFT"], trades=["AAPL"])

    assert hub.push_quote("AAPL", bid=189.9, ask=190.1) == 2

    assert len(seen) == 2
    for message, thread in seen:
        assert isinstance(message, Quote)
        assert message.bid_price == 189.9
        assert thread not in (loop_thread, threading.get_ident())
    assert seen[0][0] is seen[1][0]  # parsed once, shared


def test_every_builder_yields_the_real_alpaca_model(hub):
    recorder = Recorder()
    hub.subscribe(recorder, quotes="AAPL", trades="AAPL", bars="AAPL")
    hub.push_quote("AAPL")
    hub.push_trade("AAPL", price=12.5)
    hub.push_bar("AAPL", close=13.0)

    quote, trade, bar = recorder.items
    assert isinstance(quote, Quote)
    assert isinstance(trade, Trade)
    assert trade.price == 12.5
    assert isinstance(bar, Bar)
    assert bar.close == 13.0


def test_news_routes_by_any_of_its_symbols():
    news = FakeStreamHub("news")
    tsla, everything = Recorder(), Recorder()
    news.subscribe(tsla, news=["TSLA"])
    news.subscribe(everything, news="*")

    assert news.push_news("Cars", ["TSLA", "F"]) == 2
    assert news.push_news("Chips", ["NVDA"]) == 1

    assert isinstance(tsla.items[0], News)
    assert [n.headline for n in everything.items] == ["Cars", "Chips"]
    news.close()


def test_raw_subscriptions_get_the_wire_dict(hub):
    raw, models = Recorder(), Recorder()
    hub.subscribe(raw, quotes="AAPL", raw=True)
    hub.subscribe(models, quotes="AAPL")
    wire = messages.quote("AAPL", bid=1.0)

    hub.push("quotes", wire)

    assert raw.items == [wire]
    assert isinstance(models.items[0], Quote)


def test_iterators_hold_the_item_when_push_returns(hub):
    sub = hub.subscribe(trades=["AAPL"])
    hub.push_trade("AAPL", price=1.0)
    hub.push_trade("AAPL", price=2.0)

    assert sub.stats == SubscriptionStats(delivered=0, dropped=0, queued=2, errors=0)
    assert [sub.get(timeout=0).price for _ in range(2)] == [1.0, 2.0]
    with pytest.raises(TimeoutError):
        sub.get(timeout=0)
    sub.close()
    assert list(sub) == []


async def test_async_iteration_receives_pushes_from_another_thread(hub):
    sub = hub.subscribe(quotes=["AAPL"])
    pusher = threading.Thread(target=lambda: [hub.push_quote("AAPL", bid=b) for b in (1, 2)])
    received = []

    async def consume() -> None:
        async for quote in sub:
            received.append(quote.bid_price)
            if len(received) == 2:
                sub.close()

    task = asyncio.ensure_future(consume())
    pusher.start()
    await asyncio.wait_for(task, DEADLINE)
    pusher.join(DEADLINE)
    assert received == [1.0, 2.0]


async def test_async_handlers_on_the_pushing_loop_are_drained(hub):
    seen = []

    async def handler(quote: Quote) -> None:
        await asyncio.sleep(0)
        seen.append(quote.symbol)

    hub.subscribe(handler, quotes=["AAPL"])
    hub.push_quote("AAPL")
    await hub.drain(DEADLINE)

    assert seen == ["AAPL"]


def test_async_handlers_subscribed_from_sync_code_complete_before_push_returns(hub):
    seen = []

    async def handler(quote: Quote) -> None:
        seen.append((quote.symbol, asyncio.get_running_loop()))

    hub.subscribe(handler, quotes=["AAPL"])
    hub.push_quote("AAPL")

    assert seen == [("AAPL", hub.loop)]


def test_handler_errors_are_counted_not_raised_unless_asked():
    hub = FakeStreamHub("stock")
    ok = Recorder()

    def broken(_message: Any) -> None:
        raise RuntimeError("handler bug")

    failing = hub.subscribe(broken, quotes="AAPL")
    hub.subscribe(ok, quotes="AAPL")
    hub.push_quote("AAPL")

    assert failing.stats.errors == 1
    assert len(ok) == 1
    assert isinstance(hub.handler_errors[0], RuntimeError)
    assert hub.health().handler_errors == 1

    strict = FakeStreamHub("stock", raise_handler_errors=True)
    strict.subscribe(broken, quotes="AAPL")
    with pytest.raises(RuntimeError, match="handler bug"):
        strict.push_quote("AAPL")
    hub.close()
    strict.close()


@pytest.mark.parametrize(
    ("overflow", "kept", "dropped"),
    [("drop_oldest", [2.0, 3.0], 1), ("drop_newest", [1.0, 2.0], 1), ("conflate", [3.0], 2)],
)
def test_iterator_queues_follow_the_overflow_policy(hub, overflow, kept, dropped):
    sub = hub.subscribe(trades="AAPL", maxsize=2, overflow=overflow)
    for price in (1.0, 2.0, 3.0):
        hub.push_trade("AAPL", price=price)

    assert sub.stats.dropped == dropped
    assert [sub.get(timeout=0).price for _ in kept] == kept


def test_overflow_error_closes_the_subscription(hub):
    sub = hub.subscribe(trades="AAPL", maxsize=1, overflow="error")
    hub.push_trade("AAPL")
    hub.push_trade("AAPL")

    assert sub.closed
    with pytest.raises(SubscriptionOverflowError):
        sub.get(timeout=0)


# -- the StreamHub API --------------------------------------------------------------------------


def test_validation_matches_the_real_hub(hub):
    with pytest.raises(ValueError, match="upper"):
        hub.subscribe(quotes=["aapl"])
    with pytest.raises(ValueError, match="orderbooks"):
        hub.subscribe(orderbooks=["AAPL"])
    with pytest.raises(ValueError, match="trade_updates"):
        hub.subscribe(trade_updates=True)
    with pytest.raises(ValueError, match="maxsize"):
        hub.subscribe(quotes="AAPL", maxsize=0)


def test_add_remove_close_and_wanted(hub):
    sub = hub.subscribe(quotes=["AAPL"])
    sub.add(quotes=["MSFT"], trades=["MSFT"])
    assert hub.wanted("quotes") == {"AAPL", "MSFT"}
    assert sub.symbols == {"quotes": {"AAPL", "MSFT"}, "trades": {"MSFT"}}

    sub.remove(quotes=["AAPL"])
    assert hub.push_quote("AAPL") == 0
    assert hub.push_quote("MSFT") == 1

    with sub:
        pass
    assert sub.closed
    assert hub.subscriptions == []
    with pytest.raises(ConnectionClosedError):
        sub.add(quotes=["TSLA"])


def test_state_transitions_call_listeners_and_fail_subscriptions(hub):
    seen: list[tuple[ConnectionState, ConnectionState]] = []
    remove = hub.add_state_listener(lambda state, previous: seen.append((state, previous)))
    sub = hub.subscribe(quotes="AAPL")
    hub.wait_ready(DEADLINE)
    sub.wait_confirmed(DEADLINE)

    hub.set_state("reconnecting")
    hub.set_state("connected")
    error = AuthenticationError(402, "auth failed")
    hub.fail(error)

    assert seen == [
        (ConnectionState.RECONNECTING, ConnectionState.CONNECTED),
        (ConnectionState.CONNECTED, ConnectionState.RECONNECTING),
        (ConnectionState.FAILED, ConnectionState.CONNECTED),
    ]
    with pytest.raises(AuthenticationError):
        hub.wait_ready(DEADLINE)
    with pytest.raises(AuthenticationError):
        sub.get(timeout=0)
    health = hub.health()
    assert health.state == "failed"
    assert health.healthy is False
    assert health.last_error == "AuthenticationError: auth failed (402)"
    assert health.reconnects == 1
    remove()
    hub.set_state("connected")
    assert len(seen) == 3


async def test_ready_and_confirmed_are_awaitable(hub):
    sub = hub.subscribe(quotes="AAPL")
    await hub.ready(DEADLINE)
    await sub.confirmed(DEADLINE)
    await hub.aclose()
    assert hub.closed
    with pytest.raises(ConnectionClosedError):
        await hub.ready(DEADLINE)


def test_health_counts_consumers_and_messages(hub):
    sub = hub.subscribe(quotes=["AAPL", "MSFT"], trades=["AAPL"])
    hub.push_quote("AAPL")
    sub.get(timeout=0)

    health = hub.health()
    assert health.kind == "stock"
    assert health.endpoint == "fake://stock"
    assert health.consumers == 1
    assert health.subscriptions == {"quotes": 2, "trades": 1}
    assert health.messages_received == 1
    assert health.messages_delivered == 1
    assert health.healthy


def test_close_closes_subscriptions_and_the_private_loop():
    hub = FakeStreamHub("crypto")
    sub = hub.subscribe(quotes="BTC/USD")
    loop = hub.loop
    thread = hub._thread
    assert thread is not None

    hub.close()

    assert sub.closed
    assert hub.state is ConnectionState.CLOSED
    assert not thread.is_alive()
    assert loop.is_closed()
    with pytest.raises(ConnectionClosedError):
        hub.subscribe(quotes="BTC/USD")
    with pytest.raises(ConnectionClosedError):
        hub.push_quote("BTC/USD")


# -- the real services on fakes ------------------------------------------------------------------


def test_pricing_service_runs_on_fake_hubs():
    stock, crypto = FakeStreamHub("stock"), FakeStreamHub("crypto")
    pricing = PricingService(stock_stream=stock, crypto_stream=crypto)
    pricing.track("AAPL", "BTC/USD")

    assert stock.wanted("quotes") == {"AAPL"}
    assert crypto.wanted("trades") == {"BTC/USD"}
    stock.push_quote("AAPL", bid=10.0, ask=10.2)
    crypto.push_trade("BTC/USD", price=60_000.0)
    assert pricing.price("AAPL") == pytest.approx(10.1)
    assert pricing.price("BTC/USD") == 60_000.0

    pricing.untrack("AAPL")
    assert stock.wanted("quotes") == frozenset()
    pricing.close()
    stock.close()
    crypto.close()


def test_trading_service_runs_on_a_fake_hub():
    hub = FakeStreamHub("trading")
    trading = TradingService(trading_stream=hub)
    trading.listen(DEADLINE)
    recorder = Recorder()
    sub = trading.subscribe(recorder)

    update = hub.push_trade_update("fill", symbol="AAPL", qty=3, price=190.0)

    assert isinstance(update, TradeUpdate)
    assert trading.wait_for_order(update.order.id, timeout=DEADLINE) == update
    [delivered] = recorder.wait_for(1, DEADLINE)
    assert delivered.order.id == update.order.id
    sub.close()
    trading.close()
    hub.close()


def test_trade_update_message_parses_for_every_common_event():
    hub = FakeStreamHub("trading")
    for event in ("new", "partial_fill", "fill", "canceled", "rejected", "expired"):
        update = hub.push_trade_update(event, symbol="MSFT", side="sell")
        assert update.event == event
        assert update.order.symbol == "MSFT"
    raw = trade_update_message("fill", qty=2, price=5.0)
    assert raw["price"] == "5"
    assert raw["order"]["status"] == "filled"
    hub.close()


# -- protocol fakes --------------------------------------------------------------------------------


def test_fake_price_source_satisfies_the_price_protocols():
    prices = FakePriceSource({"AAPL": 190.0})
    assert isinstance(prices, PriceSource)
    assert isinstance(prices, PriceTracker)
    assert prices.price("AAPL") == 190.0
    assert prices.price("MSFT") is None
    with pytest.raises(TimeoutError):
        prices.wait_for_price("MSFT", timeout=0.01)

    threading.Thread(target=prices.set_price, args=("MSFT", 420.0)).start()
    assert prices.wait_for_price("MSFT", DEADLINE) == 420.0

    prices.track("AAPL", owner="a")
    prices.track("AAPL", owner="b")
    prices.untrack("AAPL", owner="a")
    assert prices.tracked() == {"AAPL"}
    prices.untrack("AAPL", owner="b")
    assert prices.tracked() == frozenset()


def test_fake_order_updates_resolve_past_and_future_updates():
    orders = FakeOrderUpdates()
    assert isinstance(orders, OrderUpdates)
    early = orders.push("fill", symbol="AAPL")
    assert orders.wait_for_order(early.order.id, timeout=0.01) is early

    order_id = "5f1c1a3e-0000-4000-8000-000000000001"
    threading.Thread(target=lambda: orders.push("canceled", order_id=order_id)).start()
    update = orders.wait_for_order(order_id, events=["canceled"], timeout=DEADLINE)
    assert update.event == "canceled"
    with pytest.raises(TimeoutError):
        orders.wait_for_order(order_id, events=["fill"], timeout=0.01)


# -- containers ----------------------------------------------------------------------------------


def test_fake_container_runs_every_service_in_memory():
    container = fake_container()
    try:
        fakes = fake_streams(container)
        assert container.stock_stream() is fakes.stock
        assert [hub.kind for hub in fakes] == list(StreamKind)
        assert fakes[StreamKind.NEWS] is fakes.news

        pricing = container.pricing_service()
        pricing.track("AAPL")
        fakes.stock.push_quote("AAPL", bid=1.0, ask=1.2)
        assert pricing.price("AAPL") == pytest.approx(1.1)

        trading = container.trading_service()
        trading.listen(DEADLINE)
        update = fakes.trading.push_trade_update("fill", symbol="AAPL")
        assert trading.wait_for_order(update.order.id, timeout=DEADLINE) == update

        shared = container.shared_stock_stream()
        assert isinstance(shared, SharedStockDataStream)

        report = container.health()
        assert isinstance(report, HealthReport)
        assert sorted(c.endpoint for c in report.connections) == sorted(
            f"fake://{kind.value}" for kind in StreamKind
        )
        assert FAKE_SECRET not in report.model_dump_json()
    finally:
        reset_fake_container(container)

    assert all(hub.closed for hub in fakes)
    assert pricing.closed
    with pytest.raises(LookupError):
        fake_streams(container)


def test_fake_container_overrides_an_embedded_container_in_place():
    from dependency_injector import containers, providers

    from alpaca_di import AlpacaContainer

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

    app = App()
    fake_container(app.alpaca, api_key="PKAPP", secret_key="app-secret-placeholder")
    try:
        prices = app.alpaca.pricing_service()
        prices.track("MSFT")
        fake_streams(app.alpaca).stock.push_trade("MSFT", price=400.0)
        assert prices.price("MSFT") == 400.0
        assert app.alpaca.credentials().key_id == "PKAPP"
    finally:
        reset_fake_container(app.alpaca)


async def test_reset_fake_container_works_inside_a_running_loop():
    container = fake_container()
    fakes = override_streams(container)  # a second layer of fakes on top
    pricing = container.pricing_service()
    assert container.stock_stream() is fakes.stock

    reset_fake_container(container)

    assert pricing.closed
    assert fakes.stock.closed
    assert not container.stock_stream.overridden


def test_plugin_fixture_gives_a_fake_container(alpaca_fake_container):
    fakes = fake_streams(alpaca_fake_container)
    orders = alpaca_fake_container.trading_service()
    orders.listen(DEADLINE)
    update = fakes.trading.push_trade_update("fill")
    assert orders.wait_for_order(str(update.order.id), timeout=DEADLINE).event == "fill"


# -- async waits and the whole protocols (issue 14, items 1-2) ---------------------------------


async def test_fake_price_source_async_wait_resolves_from_another_thread() -> None:
    prices = FakePriceSource()
    waiter = asyncio.ensure_future(prices.wait_for_price_async("AAPL", timeout=30))
    await asyncio.sleep(0)  # let the waiter register before the price arrives
    assert not waiter.done()
    threading.Thread(target=prices.set_price, args=("AAPL", 190.5)).start()
    assert await waiter == 190.5
    assert await prices.wait_for_price_async("AAPL", timeout=0.01) == 190.5


async def test_fake_price_source_async_wait_times_out_naming_the_symbol() -> None:
    with pytest.raises(TimeoutError, match="no price for 'MSFT'"):
        await FakePriceSource().wait_for_price_async("MSFT", timeout=0.01)


async def test_fake_order_updates_async_wait_sees_earlier_and_later_updates() -> None:
    orders = FakeOrderUpdates()
    early = orders.push("fill", symbol="AAPL", price=190.0)
    assert await orders.wait_for_order_async(early.order.id, timeout=0.01) is early
    with pytest.raises(TimeoutError, match="reached none of"):
        await orders.wait_for_order_async("nope", timeout=0.01)


async def test_fake_order_updates_async_wait_resolves_on_push() -> None:
    orders = FakeOrderUpdates()
    order_id = "00000000-0000-4000-8000-000000000003"
    waiter = asyncio.ensure_future(orders.wait_for_order_async(order_id, timeout=30))
    await asyncio.sleep(0)
    assert not waiter.done()
    update = orders.push("fill", symbol="MSFT", order_id=order_id)
    assert await waiter is update


def test_fake_price_source_untrack_all_gives_back_every_claim_of_one_owner() -> None:
    prices = FakePriceSource()
    prices.track("AAPL", "MSFT", owner="a")
    prices.track("AAPL", owner="a")
    prices.track("MSFT", owner="b")
    prices.untrack_all(owner="a")
    assert prices.tracked() == frozenset({"MSFT"})


def test_the_fakes_satisfy_the_whole_protocols() -> None:
    assert isinstance(FakePriceSource(), PriceTracker)
    assert isinstance(FakeOrderUpdates(), OrderUpdates)


def test_an_async_fastapi_route_works_with_the_price_fake() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    prices = FakePriceSource({"AAPL": 190.25})
    app = FastAPI()

    @app.get("/price/{symbol}")
    async def price(symbol: str) -> dict[str, float]:
        source: PriceSource = prices
        return {"price": await source.wait_for_price_async(symbol, timeout=5)}

    with TestClient(app) as client:
        response = client.get("/price/AAPL")
    assert response.status_code == 200
    assert response.json() == {"price": 190.25}
