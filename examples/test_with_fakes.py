"""Testing code that uses alpaca-di: fakes, provider overrides and the pytest plugin's fixtures.

The code under test is ``SpreadTrader``, a component of *your* application: it
depends on the small :class:`~alpaca_di.PriceSource` and
:class:`~alpaca_di.OrderUpdates` protocols, not on connections. The tests go
from the fastest to the most realistic:

1. plain unit tests with :class:`~alpaca_di.testing.FakePriceSource` and
   :class:`~alpaca_di.testing.FakeOrderUpdates` (no container, no socket);
2. your application container with one provider overridden
   (``app.alpaca.pricing_service.override(providers.Object(fake))``);
3. the plugin's ``alpaca_fake_container`` fixture: the *real* ``PricingService``
   and ``TradingService`` running on in-memory ``FakeStreamHub`` objects that
   you push quotes and order updates into (still no socket);
4. the plugin's ``alpaca_container`` and ``alpaca_emulator`` fixtures: real
   sockets to the loopback emulator, with a private connection registry.

The fixtures come with alpaca-di (a ``pytest11`` plugin): nothing to import or
register. Run it::

    pytest examples/test_with_fakes.py
"""

from __future__ import annotations

from dependency_injector import containers, providers

from alpaca_di import AlpacaContainer, OrderUpdates, PriceSource
from alpaca_di.testing import (
    AlpacaEmulator,
    FakeOrderUpdates,
    FakePriceSource,
    fake_container,
    fake_streams,
    reset_fake_container,
)
from alpaca_di.testing.messages import quote
from alpaca_di.testing.pytest_plugin import TEST_KEY_ID

# -- the application code under test ---------------------------------------------------------


class SpreadTrader:
    """Buys when a symbol trades below its fair value by more than ``edge`` (in dollars)."""

    def __init__(self, prices: PriceSource, orders: OrderUpdates, edge: float = 0.5) -> None:
        self.prices = prices
        self.orders = orders
        self.edge = edge

    def should_buy(self, symbol: str, fair_value: float) -> bool:
        price = self.prices.price(symbol, max_age=5.0)
        return price is not None and fair_value - price > self.edge

    def filled_price(self, order_id: str) -> float | None:
        update = self.orders.wait_for_order(order_id, events=("fill",), timeout=5.0)
        return update.price


class App(containers.DeclarativeContainer):
    """Your application's container."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
    trader = providers.Factory(
        SpreadTrader, prices=alpaca.pricing_service, orders=alpaca.trading_service
    )


# -- 1. plain unit tests: fakes of the protocols ---------------------------------------------


def test_buys_below_fair_value() -> None:
    trader = SpreadTrader(FakePriceSource({"AAPL": 189.0}), FakeOrderUpdates())
    assert trader.should_buy("AAPL", fair_value=190.0)
    assert not trader.should_buy("AAPL", fair_value=189.2)
    assert not trader.should_buy("MSFT", fair_value=500.0)  # no price: no trade


def test_reads_the_fill_price() -> None:
    orders = FakeOrderUpdates()
    update = orders.push("fill", symbol="AAPL", qty=1, price=189.5)
    trader = SpreadTrader(FakePriceSource(), orders)
    assert trader.filled_price(str(update.order.id)) == 189.5


# -- 2. your container, one provider overridden ----------------------------------------------


def test_override_the_pricing_service_in_the_app_container() -> None:
    app = App()
    fake_container(app.alpaca)  # no socket anywhere: every stream of app.alpaca is a fake
    try:
        with app.alpaca.pricing_service.override(providers.Object(FakePriceSource({"SPY": 99.0}))):
            trader: SpreadTrader = app.trader()
            assert trader.should_buy("SPY", fair_value=100.0)
    finally:
        reset_fake_container(app.alpaca)


# -- 3. real services on fake streams: the alpaca_fake_container fixture ---------------------


def test_real_pricing_service_on_a_fake_stream(alpaca_fake_container: AlpacaContainer) -> None:
    pricing = alpaca_fake_container.pricing_service()
    trader = SpreadTrader(pricing, alpaca_fake_container.trading_service())
    pricing.track("AAPL", owner="test")
    stock = fake_streams(alpaca_fake_container).stock
    stock.push_quote("AAPL", bid=188.9, ask=189.1)  # delivered before push_quote returns
    assert pricing.price("AAPL") == 189.0
    assert trader.should_buy("AAPL", fair_value=190.0)


def test_real_trading_service_on_a_fake_stream(alpaca_fake_container: AlpacaContainer) -> None:
    trading = alpaca_fake_container.trading_service()
    trader = SpreadTrader(alpaca_fake_container.pricing_service(), trading)
    trading.listen()  # the trader's service now receives the account's updates
    update = fake_streams(alpaca_fake_container).trading.push_trade_update(
        "fill", symbol="AAPL", qty=1, price=189.25
    )
    assert trader.filled_price(str(update.order.id)) == 189.25


# -- 4. real sockets: the alpaca_container and alpaca_emulator fixtures ----------------------


def test_against_the_emulator(
    alpaca_container: AlpacaContainer, alpaca_emulator: AlpacaEmulator
) -> None:
    pricing = alpaca_container.pricing_service()
    trader = SpreadTrader(pricing, alpaca_container.trading_service())
    pricing.track("MSFT", owner="test")
    # wait (bounded, no sleep) until the server has the subscription, then publish
    alpaca_emulator.wait_until(
        lambda: "MSFT" in alpaca_emulator.subscriptions(TEST_KEY_ID, "/v2/iex")["quotes"]
    )
    alpaca_emulator.publish("/v2/iex", [quote("MSFT", bid=409.0, ask=409.2)])
    assert pricing.wait_for_price("MSFT", timeout=5.0) == 409.1
    assert trader.should_buy("MSFT", fair_value=410.0)
    # one socket for the stock endpoint, whatever the number of consumers
    assert alpaca_emulator.counters(TEST_KEY_ID, "/v2/iex").open == 1
