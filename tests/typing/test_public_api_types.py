"""The public API as mypy --strict sees it (also run by pytest; no network is touched).

``assert_type`` is checked statically by mypy and is a no-op at runtime, so every
function below both documents and pins the types users get from the container.
"""

from __future__ import annotations

from collections.abc import Generator

from dependency_injector import containers, providers
from typing_extensions import assert_type

from alpaca_di import (
    AlpacaContainer,
    AlpacaManager,
    AlpacaSettings,
    ConnectionRegistry,
    Credentials,
    HealthReport,
    HealthServer,
    LoggingSetup,
    OrderUpdates,
    PriceSource,
    PriceTracker,
    PricingService,
    SharedStockDataStream,
    SharedTradingStream,
    StreamHub,
    StreamResource,
    Subscription,
    SubscriptionStats,
    TradingService,
    configure_logging,
    init_health_server,
    init_metrics,
    metrics_exposition,
    register_metrics,
    serve_health,
)
from alpaca_di.protocol.models import ModelMessage
from alpaca_di.providers.metrics import AlpacaMetrics
from alpaca_di.providers.streams import init_stock_stream
from alpaca_di.testing import FakeOrderUpdates, FakePriceSource, FakeStreamHub, FakeSubscription
from alpaca_di.testing.fakes import FakeStreams, fake_container, fake_streams, reset_fake_container


class Strategy:
    """A component typed against the protocols, as the design recommends."""

    def __init__(self, prices: PriceSource, orders: OrderUpdates) -> None:
        self.prices = prices
        self.orders = orders


class App(containers.DeclarativeContainer):
    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
    strategy = providers.Factory(
        Strategy, prices=alpaca.pricing_service, orders=alpaca.trading_service
    )


def test_provider_types() -> None:
    container = fake_container()
    try:
        assert_type(container, AlpacaContainer)
        assert_type(container.stock_stream, StreamResource[StreamHub])
        assert_type(container.stock_stream(), StreamHub)
        assert_type(container.crypto_stream(), StreamHub)
        assert_type(container.option_stream(), StreamHub)
        assert_type(container.news_stream(), StreamHub)
        assert_type(container.trading_stream(), StreamHub)
        assert_type(container.pricing_service(), PricingService)
        assert_type(container.trading_service(), TradingService)
        assert_type(container.alpaca_manager(), AlpacaManager)
        assert_type(container.settings(), AlpacaSettings)
        assert_type(container.credentials(), Credentials)
        assert_type(container.registry(), ConnectionRegistry)
        assert_type(container.health(), HealthReport)
        assert_type(container.shared_stock_stream(), SharedStockDataStream)
        assert_type(container.shared_trading_stream(), SharedTradingStream)
    finally:
        reset_fake_container(container)


def test_services_satisfy_the_protocols() -> None:
    container = fake_container()
    try:
        prices: PriceTracker = container.pricing_service()
        orders: OrderUpdates = container.trading_service()
        strategy = Strategy(prices=prices, orders=orders)
        assert strategy.prices is prices
    finally:
        reset_fake_container(container)


def test_fakes_satisfy_the_protocols() -> None:
    source: PriceSource = FakePriceSource({"AAPL": 1.0})
    tracker: PriceTracker = FakePriceSource()
    orders: OrderUpdates = FakeOrderUpdates()
    strategy = Strategy(prices=source, orders=orders)
    tracker.track("AAPL", owner="typing")
    assert strategy.prices.price("AAPL") == 1.0


def test_fake_hub_api_mirrors_the_hub() -> None:
    hub = FakeStreamHub("stock")
    sub = hub.subscribe(print, quotes=["AAPL"], maxsize=None, overflow="conflate")
    assert_type(sub, FakeSubscription[ModelMessage])
    assert_type(sub.stats, SubscriptionStats)
    assert_type(hub.push_quote("AAPL"), int)
    hub.wait_ready(1.0)
    remove = hub.add_state_listener(lambda state, previous: None)
    remove()
    hub.close()


def test_fake_streams_are_typed() -> None:
    container = fake_container(feed="sip")
    try:
        fakes = fake_streams(container)
        assert_type(fakes, FakeStreams)
        assert_type(fakes.stock, FakeStreamHub)
    finally:
        reset_fake_container(container)


def test_resource_functions_are_generators() -> None:
    iterator: Generator[StreamHub, None, None] = init_stock_stream(
        ConnectionRegistry(),
        Credentials("PKTYPING", "typing-secret-placeholder"),
        AlpacaSettings(api_key="PKTYPING", secret_key="typing-secret-placeholder"),
    )
    iterator.close()  # never started: no lease was taken


def test_a_real_subscription_type_is_exported() -> None:
    def consume(sub: Subscription) -> SubscriptionStats:
        return sub.stats

    assert callable(consume)


def test_host_container_composes() -> None:
    app = App()
    fake_container(app.alpaca)
    try:
        strategy = app.strategy()
        assert isinstance(strategy, Strategy)
    finally:
        reset_fake_container(app.alpaca)


class ServedApp(App):
    health_server = providers.Resource(init_health_server, App.alpaca, port=0)


def _serve_probes(app: App) -> None:
    """Checked by mypy, never run (it would bind a port)."""
    with serve_health(app.alpaca, host="127.0.0.1", port=0) as server:
        assert_type(server, HealthServer)
        assert_type(server.url, str)
        assert_type(server.port, int)


def test_readiness_fields_are_typed() -> None:
    report = HealthReport.of([])
    assert_type(report.ready, bool)
    assert_type(report.healthy, bool)
    assert report.ready
    assert callable(_serve_probes)


def _metrics_and_logging(hub: StreamHub, trading: TradingService) -> None:
    """Checked by mypy, never run (it would configure logging and register metrics)."""
    sub = hub.subscribe(print, quotes=["AAPL"], name="momentum")
    assert_type(sub.name, str | None)
    assert_type(trading.subscribe(print, name="risk").name, str | None)
    metrics = register_metrics(interval=5.0)
    assert_type(metrics, AlpacaMetrics)
    assert_type(metrics.multiprocess, bool)
    body, content_type = metrics_exposition()
    assert_type(body, bytes)
    assert_type(content_type, str)
    assert_type(configure_logging(json=None, level="info"), LoggingSetup)


class MeasuredApp(App):
    metrics = providers.Resource(init_metrics)


def test_metrics_and_logging_are_typed() -> None:
    assert callable(_metrics_and_logging)
    assert MeasuredApp.metrics is not None


def test_awaitable_init_and_shutdown_helpers_type_check() -> None:
    """``await init_resources(app)`` needs no ``type: ignore`` (the stubs' call does)."""
    import asyncio

    from alpaca_di.containers import init_resources, shutdown_resources

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

    async def main() -> None:
        app = App()
        app.config.alpaca.from_dict(
            {"api_key": "PKTYPING00000001", "secret_key": "typing-secret-placeholder-1234"}
        )
        assert_type(await init_resources(app), None)
        assert app.alpaca().stock_stream().closed is False
        await shutdown_resources(app)
        assert app.alpaca().stock_stream.initialized is False

    asyncio.run(main())
