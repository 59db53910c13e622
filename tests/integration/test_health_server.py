"""serve_health / init_health_server: probes answered by the app's own process, real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from dependency_injector import containers, providers

from alpaca_di import (
    AlpacaContainer,
    ConnectionRegistry,
    HealthReport,
    HealthServer,
    init_health_server,
    serve_health,
)
from alpaca_di.testing import AlpacaEmulator

KEY = "PKHEALTHSERVER01"
SECRET = "health-server-secret-do-not-leak"
IEX = "/v2/iex"
DEADLINE = 10.0


def config_for(emu: AlpacaEmulator) -> dict[str, Any]:
    return {
        "api_key": KEY,
        "secret_key": SECRET,
        "data_stream_url": emu.ws_url,
        "trading_stream_url": emu.trading_stream_url,
        "api_url": emu.api_url,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "open_timeout": 5.0,
    }


class App(containers.DeclarativeContainer):
    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)


class ServedApp(App):
    health_server = providers.Resource(init_health_server, App.alpaca, port=0)


def get(server: HealthServer, path: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(server.url + path, timeout=DEADLINE)
    body: dict[str, Any] = response.json()
    return response.status_code, body


@pytest.fixture
def emulator() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emu:
        yield emu


@pytest.fixture
def app(emulator: AlpacaEmulator) -> Iterator[App]:
    app = App()
    app.config.alpaca.from_dict(config_for(emulator))
    registry = ConnectionRegistry()
    app.alpaca.registry.override(registry)
    app.init_resources()
    yield app
    app.shutdown_resources()
    registry.close_all()


def test_readyz_is_503_until_the_stream_in_use_connects_and_unused_ones_never_block(
    app: App, emulator: AlpacaEmulator
) -> None:
    with serve_health(app.alpaca) as server:
        status, body = get(server, "/readyz")
        assert status == 200
        assert body["ready"] is True
        assert sorted(c["kind"] for c in body["connections"]) == [
            "crypto", "news", "option", "stock", "trading",
        ]
        assert not any(c["in_use"] for c in body["connections"])

        emulator.pause_reading(IEX)  # the stock socket opens but its auth waits
        hub = app.alpaca.stock_stream()
        sub = hub.subscribe(quotes=["AAPL"])
        emulator.wait_until(lambda: hub.health().state == "authenticating", DEADLINE)

        status, body = get(server, "/readyz")
        assert status == 503
        assert body["ready"] is False
        (stock,) = [c for c in body["connections"] if c["kind"] == "stock"]
        assert stock["in_use"] is True
        assert stock["ever_connected"] is False
        assert stock["healthy"] is False
        assert get(server, "/healthz")[0] == 503  # in use, never connected: not healthy

        emulator.pause_reading(IEX, paused=False)
        sub.wait_confirmed(DEADLINE)
        emulator.wait_until(lambda: get(server, "/readyz")[0] == 200, DEADLINE)
        status, body = get(server, "/readyz")
        report = HealthReport.model_validate(body)
        assert report.ready
        assert report.healthy
        in_use = {c.kind for c in report.connections if c.in_use}
        assert in_use == {"stock"}  # the four others are idle and unused, truthfully
        assert all(c.state == "idle" for c in report.connections if not c.in_use)
        assert get(server, "/healthz")[0] == 200
        assert get(server, "/livez")[0] == 200
        sub.close()
        assert SECRET not in requests.get(server.url + "/readyz", timeout=DEADLINE).text


def test_the_resource_serves_from_init_resources_until_shutdown_resources(
    emulator: AlpacaEmulator,
) -> None:
    app = ServedApp()
    app.config.alpaca.from_dict(config_for(emulator))
    registry = ConnectionRegistry()
    app.alpaca.registry.override(registry)
    try:
        app.init_resources()
        server = app.health_server()
        assert isinstance(server, HealthServer)
        assert server.host == "127.0.0.1"
        status, body = get(server, "/healthz")
        assert status == 200
        assert len(body["connections"]) == 5
        app.shutdown_resources()
        assert server.closed
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/healthz", timeout=DEADLINE)
    finally:
        app.shutdown_resources()
        registry.close_all()


def test_unknown_paths_are_404_and_a_failing_report_is_503() -> None:
    def broken() -> HealthReport:
        raise RuntimeError("no report today")

    with serve_health(broken) as server:
        response = requests.get(server.url + "/status", timeout=DEADLINE)
        assert response.status_code == 404
        assert "/readyz" in response.json()["probes"]
        assert "/metrics" in response.json()["probes"]  # served since the metrics extra
        status, body = get(server, "/readyz")
        assert status == 503
        assert body["ready"] is False
        assert body["error"] == "RuntimeError: no report today"
        head = requests.head(server.url + "/healthz", timeout=DEADLINE)
        assert head.status_code == 503
        assert head.content == b""
    assert server.closed
    server.close()  # idempotent


def test_sources_that_cannot_report_are_refused_at_once() -> None:
    with pytest.raises(TypeError, match=r"alpaca\.health\.provider"):
        serve_health(HealthReport.of([]))
    with pytest.raises(TypeError, match="cannot serve"):
        serve_health(42)


def test_an_async_app_serves_probes_without_blocking_its_loop(emulator: AlpacaEmulator) -> None:
    async def main() -> tuple[int, int]:
        app = ServedApp()
        app.config.alpaca.from_dict(config_for(emulator))
        registry = ConnectionRegistry()
        app.alpaca.registry.override(registry)
        await app.init_resources()  # the hubs run on this loop
        try:
            server = app.health_server()
            hub = app.alpaca.stock_stream()
            sub = hub.subscribe(quotes=["AAPL"])
            await sub.confirmed(DEADLINE)
            ready = await asyncio.to_thread(get, server, "/readyz")
            live = await asyncio.to_thread(get, server, "/healthz")
            sub.close()
            return ready[0], live[0]
        finally:
            await app.shutdown_resources()
            registry.close_all()

    assert asyncio.run(main()) == (200, 200)
