"""A FastAPI application using AlpacaContainer: lifespan, @inject wiring, a /health endpoint."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dependency_injector import containers, providers
from dependency_injector.ext.starlette import Lifespan
from dependency_injector.wiring import Provide, inject
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from alpaca_di import (
    AlpacaContainer,
    ConnectionRegistry,
    HealthReport,
    PricingService,
    StreamHub,
)
from alpaca_di.containers import lifespan
from alpaca_di.testing import AlpacaEmulator
from alpaca_di.testing.messages import quote

KEY = "PKCONTAINER00001"
SECRET = "container-secret-one-do-not-leak"
IEX = "/v2/iex"
DEADLINE = 10.0


class Application(containers.DeclarativeContainer):
    """The web application's container."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)


@inject
def health(
    report: HealthReport = Depends(Provide[Application.alpaca.health]),  # noqa: B008
) -> dict[str, Any]:
    return report.model_dump(mode="json")


@inject
async def price(
    symbol: str,
    pricing: PricingService = Depends(Provide[Application.alpaca.pricing_service]),  # noqa: B008
) -> dict[str, Any]:
    pricing.track(symbol, owner="web")
    return {"symbol": symbol, "price": await pricing.wait_for_price_async(symbol, DEADLINE)}


@inject
async def tracking(
    pricing: PricingService = Depends(Provide[Application.alpaca.pricing_service]),  # noqa: B008
) -> dict[str, Any]:
    return {"tracked": sorted(pricing.tracked())}


def dependency_injector_lifespan(container: Application) -> Any:
    return Lifespan(container)


LIFESPANS: dict[str, Callable[[Application], Any]] = {
    "dependency_injector.ext.starlette.Lifespan": dependency_injector_lifespan,
    "alpaca_di.containers.lifespan": lifespan,
}


def build_app(container: Application, make_lifespan: Callable[[Application], Any]) -> FastAPI:
    app = FastAPI(lifespan=make_lifespan(container))
    app.add_api_route("/health", health)
    app.add_api_route("/price/{symbol}", price)
    app.add_api_route("/tracking", tracking)
    container.wire(modules=[sys.modules[__name__]])
    return app


@pytest.fixture
def emu() -> Iterator[AlpacaEmulator]:
    with AlpacaEmulator() as emulator:
        yield emulator


@pytest.fixture
def container(emu: AlpacaEmulator) -> Iterator[Application]:
    registry = ConnectionRegistry()
    container = Application()
    container.config.alpaca.from_dict(
        {
            "api_key": KEY,
            "secret_key": SECRET,
            "data_stream_url": emu.ws_url,
            "trading_stream_url": emu.trading_stream_url,
            "api_url": emu.api_url,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
        }
    )
    container.alpaca.registry.override(registry)
    yield container
    container.unwire()
    container.shutdown_resources()
    registry.close_all()


@pytest.mark.parametrize("make_lifespan", LIFESPANS.values(), ids=LIFESPANS.keys())
def test_health_endpoint_serves_the_containers_report(container, emu, make_lifespan):
    app = build_app(container, make_lifespan)

    with TestClient(app) as client:
        response = client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["healthy"] is True
        assert sorted(c["kind"] for c in body["connections"]) == [
            "crypto",
            "news",
            "option",
            "stock",
            "trading",
        ]
        assert {c["state"] for c in body["connections"]} == {"idle"}
        assert emu.stats().handshakes == 0  # the lifespan initialised, nothing connected
        assert SECRET not in response.text
        assert KEY not in response.text
        hub: StreamHub = container.alpaca.stock_stream()

    assert hub.closed
    assert not container.alpaca.stock_stream.initialized


@pytest.mark.parametrize("make_lifespan", LIFESPANS.values(), ids=LIFESPANS.keys())
def test_an_async_endpoint_gets_live_prices_from_the_shared_stream(
    container, emu, make_lifespan
):
    app = build_app(container, make_lifespan)

    with TestClient(app) as client:
        pricing = container.alpaca.pricing_service()
        pricing.track("AAPL", owner="test")
        emu.wait_until(lambda: "AAPL" in emu.subscriptions(KEY, IEX)["quotes"], DEADLINE)
        emu.publish(IEX, [quote("AAPL", bid=10.0, ask=10.2)])
        pricing.wait_for_price("AAPL", DEADLINE)

        response = client.get("/price/AAPL")
        assert response.json() == {"symbol": "AAPL", "price": pytest.approx(10.1)}
        assert client.get("/tracking").json() == {"tracked": ["AAPL"]}
        report = client.get("/health").json()
        [stock] = [c for c in report["connections"] if c["kind"] == "stock"]
        assert stock["state"] == "connected"
        assert emu.counters(KEY, IEX).connections_accepted == 1

    emu.wait_until(lambda: emu.counters(KEY, IEX).open == 0, DEADLINE)
    assert emu.counters(KEY, IEX).close_frames_received == 1
