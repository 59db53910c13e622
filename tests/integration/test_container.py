"""AlpacaContainer against the emulator over real sockets: config, sharing, lifecycle, fakes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alpaca.trading.client import TradingClient
from dependency_injector import containers, providers
from pytest_mock import MockerFixture

from alpaca_di import (
    AlpacaContainer,
    AlpacaManager,
    AlpacaSettings,
    ConfigurationError,
    ConnectionRegistry,
    ConnectionState,
    Credentials,
    HealthReport,
    PricingService,
    SharedCryptoDataStream,
    SharedNewsDataStream,
    SharedOptionDataStream,
    SharedStockDataStream,
    SharedTradingStream,
    StreamHub,
    StreamKind,
    StreamResource,
    TradingService,
)
from alpaca_di.containers import settings_from_config
from alpaca_di.hub import Lease
from alpaca_di.settings import endpoint_for
from alpaca_di.testing import AlpacaEmulator, Recorder
from alpaca_di.testing.fakes import FakeStreamHub, trade_update_message
from alpaca_di.testing.messages import quote

KEY = "PKCONTAINER00001"
SECRET = "container-secret-one-do-not-leak"
KEY_2 = "PKCONTAINER00002"
SECRET_2 = "container-secret-two-do-not-leak"
IEX = "/v2/iex"
PATHS = {
    "stock_stream": "/v2/iex",
    "crypto_stream": "/v1beta3/crypto/us",
    "option_stream": "/v1beta1/indicative",
    "news_stream": "/v1beta1/news",
    "trading_stream": "/stream",
}
STREAMS = tuple(PATHS)
DEADLINE = 10.0


def config_for(emu: AlpacaEmulator, key: str = KEY, secret: str = SECRET) -> dict[str, Any]:
    return {
        "api_key": key,
        "secret_key": secret,
        "data_stream_url": emu.ws_url,
        "trading_stream_url": emu.trading_stream_url,
        "api_url": emu.api_url,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "open_timeout": 5.0,
    }


class App(containers.DeclarativeContainer):
    """A host application embedding the Alpaca container, as users do."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emulator:
        yield emulator


@pytest.fixture
def registry() -> Iterator[ConnectionRegistry]:
    registry = ConnectionRegistry()
    yield registry
    registry.close_all()


@pytest.fixture
def container(emu: AlpacaEmulator, registry: ConnectionRegistry) -> Iterator[AlpacaContainer]:
    container = AlpacaContainer()
    container.config.from_dict(config_for(emu))
    container.registry.override(registry)
    yield container
    container.shutdown_resources()


def wait_subscribed(emu: AlpacaEmulator, symbol: str, key: str = KEY, path: str = IEX) -> None:
    emu.wait_until(
        lambda: symbol in emu.subscriptions(key, path)["quotes"],
        DEADLINE,
        message=f"{symbol} quotes never subscribed for {key}",
    )


def receive_one_quote(hub: StreamHub, emu: AlpacaEmulator, symbol: str, key: str = KEY) -> Any:
    recorder = Recorder()
    with hub.subscribe(recorder, quotes=[symbol]) as sub:
        sub.wait_confirmed(DEADLINE)
        emu.publish(IEX, [quote(symbol, bid=10.0, ask=10.2)], key_id=key)
        [received] = recorder.wait_for(1, DEADLINE)
    return received


def open_all(container: AlpacaContainer) -> list[StreamHub]:
    hubs = [getattr(container, name)() for name in STREAMS]
    for hub in hubs:
        hub.wait_ready(DEADLINE)
    return hubs


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- configuration -----------------------------------------------------------------------------


def test_configured_from_dict_reaches_the_emulator(container, emu):
    hub = container.stock_stream()

    assert container.credentials() == Credentials(KEY, SECRET)
    assert hub.endpoint == emu.data_url(IEX)
    assert receive_one_quote(hub, emu, "AAPL").bid_price == 10.0


def test_configured_from_pydantic_settings(emu, registry):
    container = AlpacaContainer()
    container.config.from_pydantic(AlpacaSettings(**config_for(emu), feed="sip"))
    container.registry.override(registry)
    try:
        assert container.settings().feed == "sip"
        hub = container.stock_stream()
        assert hub.endpoint == emu.data_url("/v2/sip")
        hub.wait_ready(DEADLINE)
        assert emu.counters(KEY, "/v2/sip").open == 1
    finally:
        container.shutdown_resources()


def test_configured_from_the_environment_alone(emu, registry, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in {
        "APCA_API_KEY_ID": KEY,
        "APCA_API_SECRET_KEY": SECRET,
        "ALPACA_DATA_STREAM_URL": emu.ws_url,
        "ALPACA_TRADING_STREAM_URL": emu.trading_stream_url,
        "ALPACA_API_URL": emu.api_url,
        "ALPACA_BACKOFF_INITIAL": "0.01",
        "ALPACA_BACKOFF_MAX": "0.05",
    }.items():
        monkeypatch.setenv(name, value)
    container = AlpacaContainer()
    container.registry.override(registry)
    try:
        assert container.config() == {}
        assert container.credentials() == Credentials(KEY, SECRET)
        assert container.settings().backoff_max == 0.05
        hub = container.trading_stream()
        assert hub.endpoint == emu.trading_stream_url
        hub.wait_ready(DEADLINE)
    finally:
        container.shutdown_resources()


@pytest.mark.parametrize(
    ("config", "named"),
    [
        pytest.param({"secret_key": SECRET}, ["'api_key'", "APCA_API_KEY_ID"], id="api_key"),
        pytest.param({"api_key": KEY}, ["'secret_key'", "APCA_API_SECRET_KEY"], id="secret_key"),
        pytest.param(
            {"feed": "iex"},
            ["'api_key'", "APCA_API_KEY_ID", "'secret_key'", "APCA_API_SECRET_KEY"],
            id="both",
        ),
        pytest.param(
            {"api_key": KEY, "secret_key": SECRET, "feed": "bogus"}, ["ALPACA_FEED"], id="feed"
        ),
        pytest.param(
            {"api_key": KEY, "secret_key": SECRET, "backoff_initial": -1},
            ["ALPACA_BACKOFF_INITIAL"],
            id="backoff",
        ),
        pytest.param(
            {"api_key": KEY, "secret_key": SECRET, "data_stream_url": "ws://example.com"},
            ["ALPACA_DATA_STREAM_URL"],
            id="insecure-url",
        ),
    ],
)
def test_config_errors_name_the_key_and_its_env_var_at_first_resolution(config, named):
    container = AlpacaContainer()
    container.config.from_dict(config)  # nothing is validated yet

    for provider in (container.settings, container.credentials, container.stock_stream):
        with pytest.raises(ConfigurationError) as excinfo:
            provider()
        message = str(excinfo.value)
        for text in named:
            assert text in message
        assert SECRET not in message
        assert excinfo.value.__cause__ is None
        assert excinfo.value.__suppress_context__
    assert not container.stock_stream.initialized


def test_missing_environment_names_both_env_vars(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "ALPACA_API_KEY", "ALPACA_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    container = AlpacaContainer()

    with pytest.raises(ConfigurationError, match="APCA_API_KEY_ID") as excinfo:
        container.credentials()
    assert "APCA_API_SECRET_KEY" in str(excinfo.value)


def test_a_feed_without_a_stream_path_is_a_configuration_error_naming_its_env_var():
    settings = AlpacaSettings(api_key=KEY, secret_key=SECRET)
    # Valid for the settings model but unknown to data_path(): built without validation.
    for field, kind, env in (
        ("feed", "stock", "ALPACA_FEED"),
        ("crypto_feed", "crypto", "ALPACA_CRYPTO_FEED"),
        ("option_feed", "option", "ALPACA_OPTION_FEED"),
    ):
        odd = settings.model_copy(update={field: "nowhere"})
        with pytest.raises(ConfigurationError, match=env) as excinfo:
            endpoint_for(odd, kind)
        assert SECRET not in str(excinfo.value)
    assert endpoint_for(settings, "news") == "wss://stream.data.alpaca.markets/v1beta1/news"
    assert endpoint_for(settings, "trading") == "wss://paper-api.alpaca.markets/stream"


@pytest.mark.parametrize("location", ["us", "us-1", "eu-1"])
def test_every_crypto_location_alpaca_serves_streams_from_the_emulator(emu, registry, location):
    container = AlpacaContainer()
    container.config.from_dict({**config_for(emu), "crypto_feed": location})
    container.registry.override(registry)
    path = f"/v1beta3/crypto/{location}"
    try:
        hub = container.crypto_stream()
        assert hub.endpoint == emu.data_url(path)
        recorder = Recorder()
        with hub.subscribe(recorder, quotes=["BTC/USD"]) as sub:
            sub.wait_confirmed(DEADLINE)
            emu.publish(path, [quote("BTC/USD", bid=10.0, ask=10.2)], key_id=KEY)
            [received] = recorder.wait_for(1, DEADLINE)
        assert received.symbol == "BTC/USD"
    finally:
        container.shutdown_resources()


def test_a_404_at_the_crypto_handshake_names_the_crypto_feed_setting(emu, registry):
    container = AlpacaContainer()
    container.config.from_dict({**config_for(emu), "crypto_feed": "eu-1"})
    container.registry.override(registry)
    emu.refuse_handshake(404, times=1, path="/v1beta3/crypto/eu-1")
    try:
        hub = container.crypto_stream()
        hub.subscribe(quotes=["BTC/USD"])
        with pytest.raises(ConfigurationError, match="ALPACA_CRYPTO_FEED") as excinfo:
            hub.wait_ready(DEADLINE)
        error = excinfo.value
        assert "'eu-1'" in str(error)
        assert "HTTP 404" in str(error)
        assert error.env_vars == ("ALPACA_CRYPTO_FEED", "ALPACA_DATA_STREAM_URL")
        assert hub.state is ConnectionState.FAILED  # a wrong setting is not retried
    finally:
        container.shutdown_resources()


# -- sharing -----------------------------------------------------------------------------------


def test_embedded_in_a_host_container(emu, registry):
    app = App()
    app.config.alpaca.from_dict(config_for(emu))
    app.alpaca.registry.override(registry)
    try:
        hub = app.alpaca.stock_stream()
        assert receive_one_quote(hub, emu, "MSFT").symbol == "MSFT"
        assert isinstance(app.alpaca.pricing_service(), PricingService)
    finally:
        app.shutdown_resources()
    assert hub.closed
    emu.wait_until(lambda: emu.counters(KEY, IEX).open == 0, DEADLINE)


def test_two_hosts_with_the_same_credentials_share_one_connection_per_endpoint(emu, registry):
    first, second = App(), App()
    for app in (first, second):
        app.config.alpaca.from_dict(config_for(emu))
        app.alpaca.registry.override(registry)
    try:
        hubs = [open_all(app.alpaca) for app in (first, second)]
        assert [a is b for a, b in zip(*hubs, strict=True)] == [True] * 5
        for path in PATHS.values():
            counters = emu.counters(KEY, path)
            assert (counters.connections_accepted, counters.max_concurrent) == (1, 1), path

        first.shutdown_resources()  # the second host still holds every lease
        assert receive_one_quote(second.alpaca.stock_stream(), emu, "AAPL").symbol == "AAPL"
        assert emu.counters(KEY, IEX).connections_accepted == 1
    finally:
        first.shutdown_resources()
        second.shutdown_resources()
    for path in PATHS.values():
        emu.wait_until(lambda path=path: emu.counters(KEY, path).open == 0, DEADLINE)
        assert emu.counters(KEY, path).close_frames_received == 1


def test_hosts_with_different_credentials_get_their_own_connections(emu, registry):
    first, second = App(), App()
    first.config.alpaca.from_dict(config_for(emu))
    second.config.alpaca.from_dict(config_for(emu, KEY_2, SECRET_2))
    for app in (first, second):
        app.alpaca.registry.override(registry)
    try:
        one, two = first.alpaca.stock_stream(), second.alpaca.stock_stream()
        assert one is not two
        one.wait_ready(DEADLINE)
        two.wait_ready(DEADLINE)
        assert emu.counters(KEY, IEX).open == 1
        assert emu.counters(KEY_2, IEX).open == 1
        assert receive_one_quote(two, emu, "TSLA", key=KEY_2).symbol == "TSLA"
    finally:
        first.shutdown_resources()
        second.shutdown_resources()


def test_containers_share_the_process_wide_registry_by_default(emu):
    first, second = AlpacaContainer(), AlpacaContainer()
    for container in (first, second):
        container.config.from_dict(config_for(emu))
    try:
        assert first.registry() is ConnectionRegistry.default() is second.registry()
        assert first.stock_stream() is second.stock_stream()
        assert ConnectionRegistry.default().leases(first.credentials(), emu.data_url(IEX)) == 2
    finally:
        first.shutdown_resources()
        second.shutdown_resources()
    assert ConnectionRegistry.default().leases(Credentials(KEY, SECRET), emu.data_url(IEX)) == 0


def test_twenty_threads_at_first_use_get_one_init_one_connection_one_shutdown(
    container, registry, emu, mocker: MockerFixture
):
    acquire = mocker.spy(registry, "acquire")
    barrier = threading.Barrier(20, timeout=DEADLINE)
    results: list[StreamHub] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            hub = container.stock_stream()
            hub.subscribe(quotes=["AAPL"]).close()
            results.append(hub)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)

    assert not errors
    assert len(results) == 20
    assert len({id(hub) for hub in results}) == 1
    assert acquire.call_count == 1
    [lease] = acquire.spy_return_list
    release = mocker.spy(lease, "release")
    results[0].wait_ready(DEADLINE)
    assert emu.counters(KEY, IEX).connections_accepted == 1

    container.shutdown_resources()

    assert release.call_count == 1
    emu.wait_until(lambda: emu.counters(KEY, IEX).open == 0, DEADLINE)
    assert emu.counters(KEY, IEX).close_frames_received == 1
    assert emu.counters(KEY, IEX).max_concurrent == 1


# -- lifecycle ---------------------------------------------------------------------------------


def test_init_resources_touches_no_network(container, emu):
    container.init_resources()
    # Every service and adapter resolves without a socket, too.
    container.alpaca_manager()
    container.shared_stock_stream()
    container.shared_trading_stream()

    assert emu.stats().handshakes == 0
    report = container.health()
    assert sorted(c.kind for c in report.connections) == sorted(k.value for k in StreamKind)
    assert {c.state for c in report.connections} == {"idle"}

    _kept2 = container.stock_stream().subscribe(
        quotes=["AAPL"]
    )  # kept: unreachable ones are reclaimed
    emu.wait_until(lambda: emu.stats().handshakes == 1, DEADLINE)


def test_sync_init_and_shutdown_close_every_connection_with_a_close_frame(container, emu):
    container.init_resources()
    hubs = open_all(container)
    assert emu.stats().open_connections == 5

    started = time.perf_counter()
    result = container.shutdown_resources()
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"shutdown_resources() with five open connections: {elapsed_ms:.1f} ms")

    assert result is None
    assert all(hub.closed for hub in hubs)
    for path in PATHS.values():
        emu.wait_until(lambda path=path: emu.counters(KEY, path).open == 0, DEADLINE)
        assert emu.counters(KEY, path).close_frames_received == 1, path
    assert container.health().connections == []


def test_async_init_and_shutdown_inside_asyncio_run_touch_no_network_and_do_not_block(
    emu, registry
):
    async def main() -> float:
        container = AlpacaContainer()
        container.config.from_dict(config_for(emu))
        container.registry.override(registry)
        await container.init_resources()
        assert emu.stats().handshakes == 0
        hubs = [getattr(container, name)() for name in STREAMS]
        for hub in hubs:
            await hub.ready(DEADLINE)
        started = time.perf_counter()
        await container.shutdown_resources()
        elapsed = (time.perf_counter() - started) * 1000
        assert all(hub.closed for hub in hubs)
        return elapsed

    elapsed_ms = asyncio.run(main())
    print(f"await shutdown_resources() with five open connections: {elapsed_ms:.1f} ms")


def test_async_shutdown_inside_asyncio_run_sends_every_close_frame(emu, registry):
    hubs: list[StreamHub] = []

    async def main() -> None:
        container = AlpacaContainer()
        container.config.from_dict(config_for(emu))
        container.registry.override(registry)
        await container.init_resources()
        for name in STREAMS:
            hubs.append(getattr(container, name)())
            await hubs[-1].ready(DEADLINE)
        await container.shutdown_resources()

    asyncio.run(main())
    # The close handshakes completed before asyncio.run() cancelled what was left.
    assert [hub.state for hub in hubs] == [ConnectionState.CLOSED] * 5
    for path in PATHS.values():
        emu.wait_until(lambda path=path: emu.counters(KEY, path).open == 0, 2.0)
        assert emu.counters(KEY, path).close_frames_received == 1, path


def test_a_failing_shutdown_step_does_not_stop_the_others(
    container, registry, emu, mocker: MockerFixture
):
    acquire = mocker.spy(registry, "acquire")
    container.init_resources()
    hubs = {name: getattr(container, name)() for name in STREAMS}
    for hub in hubs.values():
        hub.wait_ready(DEADLINE)
    leases: dict[str, Lease] = {lease.hub.kind.value: lease for lease in acquire.spy_return_list}
    failing = mocker.patch.object(
        leases["crypto"], "release", side_effect=RuntimeError("release failed")
    )
    mocker.patch.object(PricingService, "close", side_effect=RuntimeError("close failed"))

    container.shutdown_resources()  # never raises

    assert failing.call_count == 1
    assert isinstance(container.crypto_stream.last_shutdown_error, RuntimeError)
    assert isinstance(container.pricing_service.last_shutdown_error, RuntimeError)
    assert not container.crypto_stream.initialized
    for name, path in PATHS.items():
        if name == "crypto_stream":
            continue
        emu.wait_until(lambda path=path: emu.counters(KEY, path).open == 0, DEADLINE)
        assert emu.counters(KEY, path).close_frames_received == 1, path
    assert emu.counters(KEY, PATHS["crypto_stream"]).open == 1  # its release really failed
    registry.close_all()
    emu.wait_until(lambda: emu.counters(KEY, PATHS["crypto_stream"]).open == 0, DEADLINE)


def test_services_are_closed_before_their_streams(container, mocker: MockerFixture):
    order: list[str] = []
    pricing = container.pricing_service()
    stock = container.stock_stream()
    mocker.patch.object(pricing, "close", side_effect=lambda: order.append("pricing"))
    hub_close = stock.start_close  # the one close path: release, close() and aclose()

    def start_close() -> concurrent.futures.Future[None]:
        order.append("stock")
        return hub_close()

    mocker.patch.object(stock, "start_close", side_effect=start_close)

    container.shutdown_resources()

    assert order == ["pricing", "stock"]


def test_one_hundred_cycles_leak_no_thread_or_fd_and_services_follow_the_new_connection(
    container, emu
):
    def cycle(index: int, check_services: bool) -> None:
        container.init_resources()
        hub = container.stock_stream()
        hub.wait_ready(DEADLINE)
        if check_services:
            symbol = f"S{index}"
            pricing = container.pricing_service()
            assert pricing.closed is False
            pricing.track(symbol)
            wait_subscribed(emu, symbol)
            emu.publish(IEX, [quote(symbol, bid=index + 1.0, ask=index + 1.2)])
            assert pricing.wait_for_price(symbol, DEADLINE) == pytest.approx(index + 1.1)
        container.shutdown_resources()
        assert hub.closed

    cycle(0, check_services=True)  # warm-up: lazy imports, pools, caches
    emu.wait_until(lambda: emu.stats().open_connections == 0, DEADLINE)
    threads, fds = threading.active_count(), fd_count()
    services: list[PricingService] = []

    for index in range(1, 101):
        cycle(index, check_services=index % 20 == 0)
        if index % 20 == 0:
            services.append(container.pricing_service())
            container.shutdown_resources()

    assert len({id(service) for service in services}) == len(services)
    assert all(service.closed for service in services)
    emu.wait_until(lambda: emu.stats().open_connections == 0, DEADLINE)
    emu.wait_until(
        lambda: threading.active_count() <= threads and fd_count() <= fds,
        DEADLINE,
        message="threads or file descriptors did not return to their baseline",
    )
    assert emu.counters(KEY, IEX).connections_accepted == 101
    assert emu.counters(KEY, IEX).close_frames_received == 101


# -- services, client, health ------------------------------------------------------------------


def test_services_client_and_adapters_are_wired_to_the_same_hubs(container, emu):
    pricing = container.pricing_service()
    trading = container.trading_service()
    manager = container.alpaca_manager()
    client = container.trading_client()

    assert pricing is container.pricing_service()
    assert trading is container.trading_service()
    assert trading.hub is container.trading_stream()
    assert isinstance(client, TradingClient)
    assert client is container.trading_client()
    assert isinstance(manager, AlpacaManager)
    assert manager.trading_service is trading
    assert manager.pricing_service is pricing
    assert manager.trading_client is client
    assert float(manager.account().cash) > 0  # REST through url_override
    adapters = {
        SharedStockDataStream: container.shared_stock_stream(),
        SharedCryptoDataStream: container.shared_crypto_stream(),
        SharedOptionDataStream: container.shared_option_stream(),
        SharedNewsDataStream: container.shared_news_stream(),
        SharedTradingStream: container.shared_trading_stream(),
    }
    for cls, adapter in adapters.items():
        assert isinstance(adapter, cls)


def test_trading_service_waits_for_an_order_pushed_by_the_emulator(container, emu):
    trading = container.trading_service()
    trading.listen(DEADLINE)
    update = trade_update_message("fill", symbol="AAPL", price=190.0)

    emu.push_trade_update(KEY, update)

    result = trading.wait_for_order(update["order"]["id"], timeout=DEADLINE)
    assert result.price == 190.0


def test_health_reports_only_this_containers_initialised_connections(emu, registry):
    first, second = AlpacaContainer(), AlpacaContainer()
    for container in (first, second):
        container.config.from_dict(config_for(emu))
        container.registry.override(registry)
    try:
        assert first.health().connections == []
        assert not any(getattr(first, name).initialized for name in STREAMS)

        first.stock_stream().wait_ready(DEADLINE)
        second.crypto_stream()

        report = first.health()
        assert isinstance(report, HealthReport)
        assert [c.kind for c in report.connections] == ["stock"]
        assert report.connections[0].state == "connected"
        assert [c.kind for c in second.health().connections] == ["crypto"]
        text = report.model_dump_json()
        assert SECRET not in text
        assert KEY not in text
        assert not first.crypto_stream.initialized  # health() initialised nothing
    finally:
        first.shutdown_resources()
        second.shutdown_resources()


@pytest.mark.parametrize("name", STREAMS)
def test_each_stream_provider_can_be_overridden_with_a_fake(container, emu, name):
    kind = StreamKind(name.removesuffix("_stream"))
    fake = FakeStreamHub(kind)
    getattr(container, name).override(providers.Object(fake))

    assert getattr(container, name)() is fake
    assert [c.endpoint for c in container.health().connections] == [f"fake://{kind.value}"]
    if kind is StreamKind.STOCK:
        pricing = container.pricing_service()
        pricing.track("AAPL")
        fake.push_quote("AAPL", bid=10.0, ask=10.2)
        assert pricing.price("AAPL") == pytest.approx(10.1)
    elif kind is StreamKind.TRADING:
        trading = container.trading_service()
        assert trading.hub is fake
        trading.listen(DEADLINE)
        update = fake.push_trade_update("fill", symbol="MSFT")
        assert trading.wait_for_order(update.order.id, timeout=DEADLINE) == update
    container.shutdown_resources()
    assert emu.stats().handshakes == 0
    fake.close()


def test_stream_resources_are_stream_resources_and_init_alone(container, emu):
    assert all(isinstance(getattr(container, name), StreamResource) for name in STREAMS)
    container.init_resources(StreamResource)
    assert all(getattr(container, name).initialized for name in STREAMS)
    assert isinstance(container.pricing_service(), PricingService)
    assert isinstance(container.trading_service(), TradingService)
    container.shutdown_resources(StreamResource)
    assert not any(getattr(container, name).initialized for name in STREAMS)


def test_plugin_fixture_container_talks_to_the_plugin_emulator(alpaca_container, alpaca_emulator):
    from alpaca_di.testing.pytest_plugin import TEST_KEY_ID

    prices = alpaca_container.pricing_service()
    prices.track("NVDA")
    wait_subscribed(alpaca_emulator, "NVDA", key=TEST_KEY_ID)
    alpaca_emulator.publish(IEX, [quote("NVDA", bid=100.0, ask=100.2)])
    assert prices.wait_for_price("NVDA", DEADLINE) == pytest.approx(100.1)
    assert alpaca_container.settings().backoff_initial == 0.01


async def test_plugin_fixture_container_in_an_async_test(alpaca_container, alpaca_emulator):
    from alpaca_di.testing.pytest_plugin import TEST_KEY_ID

    hub = alpaca_container.stock_stream()
    assert hub.loop is not asyncio.get_running_loop()  # sockets live on the runtime thread
    await hub.ready(DEADLINE)
    await alpaca_container.shutdown_resources()  # as the plugin documents for async tests

    await alpaca_emulator.until(
        lambda: alpaca_emulator.counters(TEST_KEY_ID, IEX).close_frames_received == 1, DEADLINE
    )


def test_plugin_fake_container_runs_the_real_services_on_fakes(alpaca_fake_container):
    prices = alpaca_fake_container.pricing_service()
    prices.track("AAPL")
    alpaca_fake_container.stock_stream().push_quote("AAPL", bid=1.0, ask=1.2)
    assert prices.price("AAPL") == pytest.approx(1.1)
    assert len(alpaca_fake_container.health().connections) == 5


def test_a_config_of_only_none_values_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APCA_API_KEY_ID", KEY_2)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_2)

    assert settings_from_config(None).api_key == KEY_2
    assert settings_from_config({"api_key": None, "feed": None}).api_key == KEY_2
    # A configured mapping is the single source of truth: the environment is not read.
    with pytest.raises(ConfigurationError, match="'secret_key' is missing"):
        settings_from_config({"api_key": KEY})
