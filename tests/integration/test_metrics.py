"""Prometheus metrics scraped over real sockets, checked against what the emulator sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
import requests
from _integration_support import wait_until
from _metrics_support import Scrape
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide
from alpaca.trading.requests import MarketOrderRequest
from prometheus_client import CollectorRegistry

from alpaca_di import (
    ConnectionRegistry,
    Credentials,
    Lease,
    StreamHub,
    StreamKind,
    TradingService,
    metrics_exposition,
    register_metrics,
    serve_health,
)
from alpaca_di.providers.metrics import METRICS, endpoint_label, init_metrics, metric_names
from alpaca_di.testing import AlpacaEmulator, Recorder, register_secret
from alpaca_di.testing.messages import quote

KEY = "PKINTEGRATION01"  # the conftest's stock_lease key
SECRET = "integration-secret-do-not-leak"
FINGERPRINT = Credentials(KEY, SECRET).fingerprint
IEX = "/v2/iex"
DEADLINE = 10.0
register_secret(SECRET)


@pytest.fixture
def hub(stock_lease: Lease) -> StreamHub:
    return stock_lease.hub


@pytest.fixture
def collectors() -> Iterator[CollectorRegistry]:
    """A registry of its own with alpaca-di's metrics, unregistered after the test."""
    collectors = CollectorRegistry()
    metrics = register_metrics(collectors)
    yield collectors
    metrics.close()


def scrape(collectors: CollectorRegistry | None = None) -> Scrape:
    return Scrape(metrics_exposition(collectors)[0].decode())


def ours(emulator: AlpacaEmulator) -> dict[str, str]:
    return {"fingerprint": FINGERPRINT, "endpoint": endpoint_label(emulator.ws_url + IEX)}


def failing(_message: Any) -> None:
    raise RuntimeError("this consumer always fails")


def test_the_default_registry_shows_what_the_emulator_sent(
    emulator: AlpacaEmulator, hub: StreamHub
) -> None:
    register_metrics()  # the default registry; idempotent (other tests may have done it)
    assert register_metrics() is register_metrics(prometheus_client.REGISTRY)
    strategy, faulty = Recorder(), Recorder()
    named = hub.subscribe(strategy, quotes=["AAPL"], name="strategy")
    hub.subscribe(lambda m: (faulty(m), failing(m)), quotes=["AAPL"], name="faulty")
    waiting = hub.subscribe(quotes=["AAPL"], raw=True)  # nobody reads it: its queue fills
    named.wait_confirmed(DEADLINE)
    waiting.wait_confirmed(DEADLINE)
    emulator.publish(IEX, [quote("AAPL", bid=100.0 + i) for i in range(25)])
    emulator.send_raw(IEX, b"\xc1 not msgpack")
    strategy.wait_for(25, DEADLINE)
    faulty.wait_for(25, DEADLINE)
    labels = ours(emulator)
    sent = emulator.counters(KEY, IEX).messages_sent
    assert sent == 25

    def settled() -> bool:
        s = scrape()
        return (
            s.value("alpaca_di_consumer_errors_total", consumer="faulty", **labels) == 25
            and s.value("alpaca_di_messages_malformed_total", **labels) == 1
        )

    wait_until(settled, DEADLINE, "errors and the malformed frame counted")
    s = scrape()
    assert s.value("alpaca_di_messages_received_total", kind="stock", **labels) == sent
    assert s.value("alpaca_di_messages_parsed_total", **labels) == sent
    assert s.value("alpaca_di_reconnects_total", **labels) == 0
    assert s.value("alpaca_di_connection_state", state="connected", **labels) == 1
    assert s.value("alpaca_di_connection_state", state="reconnecting", **labels) == 0
    assert s.value("alpaca_di_consumers", **labels) == 3
    assert s.value("alpaca_di_subscribed_symbols", channel="quotes", **labels) == 1
    assert s.value("alpaca_di_consumer_delivered_total", consumer="strategy", **labels) == 25
    assert s.value("alpaca_di_consumer_dropped_total", consumer="strategy", **labels) == 0
    assert s.value("alpaca_di_consumer_queue_depth", consumer="_unnamed", **labels) == 25
    assert s.value("alpaca_di_consumer_delivered_total", consumer="_unnamed", **labels) == 0
    assert s.value("alpaca_di_consumer_subscriptions", consumer="faulty", **labels) == 1
    assert s.label_values("alpaca_di_consumer_delivered_total", "consumer", **labels) == {
        "strategy",
        "faulty",
        "_unnamed",
    }
    count = s.value(
        "alpaca_di_delivery_latency_seconds_count", kind="stock", endpoint=labels["endpoint"]
    )
    assert count >= 1  # the first batch of each consumer is sampled, then one in 64

    # A closed consumer's counts stay in its series; the subscription count drops.
    named.close()
    wait_until(lambda: scrape().value("alpaca_di_consumers", **labels) == 2, DEADLINE, "closed")
    s = scrape()
    assert s.value("alpaca_di_consumer_delivered_total", consumer="strategy", **labels) == 25
    assert s.value("alpaca_di_consumer_subscriptions", consumer="strategy", **labels) == 0


def test_short_lived_unnamed_subscriptions_add_up_in_one_series(
    emulator: AlpacaEmulator, hub: StreamHub, collectors: CollectorRegistry
) -> None:
    labels = ours(emulator)
    total = 0
    for round_ in range(30):
        with hub.subscribe(quotes=["MSFT"]) as sub:
            sub.wait_confirmed(DEADLINE)
            emulator.publish(IEX, [quote("MSFT", bid=10.0 + round_)])
            sub.get(timeout=DEADLINE)
            total += 1
    s = scrape(collectors)
    assert s.label_values("alpaca_di_consumer_delivered_total", "consumer", **labels) == {
        "_unnamed"
    }
    assert s.value("alpaca_di_consumer_delivered_total", consumer="_unnamed", **labels) == total
    assert s.value("alpaca_di_consumer_subscriptions", consumer="_unnamed", **labels) == 0
    assert s.value("alpaca_di_messages_received_total", **labels) == (
        emulator.counters(KEY, IEX).messages_sent
    )


def test_reconnects_are_counted_like_the_emulator_saw_them(
    emulator: AlpacaEmulator, hub: StreamHub, collectors: CollectorRegistry
) -> None:
    labels = ours(emulator)
    sub = hub.subscribe(Recorder(), quotes=["AAPL"])
    sub.wait_confirmed(DEADLINE)
    for _ in range(2):
        accepted = emulator.counters(KEY, IEX).connections_accepted
        emulator.drop_connections(IEX, close_frame=False)
        wait_until(
            lambda accepted=accepted: emulator.counters(KEY, IEX).connections_accepted > accepted
            and scrape(collectors).value("alpaca_di_connection_state", state="connected", **labels)
            == 1,
            DEADLINE,
            "reconnected",
        )
    s = scrape(collectors)
    assert s.value("alpaca_di_reconnects_total", **labels) == (
        emulator.counters(KEY, IEX).connections_accepted - 1
    )


def test_no_label_carries_a_secret_or_the_key_id(
    emulator: AlpacaEmulator, hub: StreamHub, collectors: CollectorRegistry
) -> None:
    sub = hub.subscribe(Recorder(), quotes=["AAPL"], name="secret-scan")
    sub.wait_confirmed(DEADLINE)
    emulator.publish(IEX, [quote("AAPL")])
    text = scrape(collectors).text
    assert SECRET not in text
    assert KEY not in text
    assert FINGERPRINT in text
    for _name, labels, _value in Scrape(text).samples:
        for value in labels.values():
            assert KEY not in value
            assert SECRET not in value
            assert "://" not in value  # endpoints are host and path only


def test_every_metric_of_the_reference_is_emitted(
    emulator: AlpacaEmulator, hub: StreamHub, collectors: CollectorRegistry
) -> None:
    sub = hub.subscribe(Recorder(), quotes=["AAPL"])
    sub.wait_confirmed(DEADLINE)
    emulator.publish(IEX, [quote("AAPL")])
    wait_until(lambda: sub.stats.delivered == 1, DEADLINE, "delivered")
    # The text parser reads a histogram's _created line as a gauge family of its own.
    families = {
        name: kind
        for name, kind in scrape(collectors).families.items()
        if not name.endswith("_created")
    }
    assert families == {
        name.removesuffix("_total"): kind for name, kind in metric_names().items()
    }
    assert len(METRICS) + 1 == len(families)


def test_init_metrics_registers_for_the_resource_lifetime(hub: StreamHub) -> None:
    collectors = CollectorRegistry()
    resource = init_metrics(collectors)
    metrics = next(resource)
    assert register_metrics(collectors) is metrics  # idempotent while registered
    assert "alpaca_di_consumers" in scrape(collectors).families
    resource.close()  # shutdown_resources(): unregistered
    assert prometheus_client.generate_latest(collectors) == b""


def test_the_health_server_serves_metrics(
    emulator: AlpacaEmulator, registry: ConnectionRegistry, hub: StreamHub
) -> None:
    sub = hub.subscribe(Recorder(), quotes=["AAPL"], name="served")
    sub.wait_confirmed(DEADLINE)
    with serve_health(registry) as server:
        response = requests.get(server.url + "/metrics", timeout=DEADLINE)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        s = Scrape(response.text)
        labels = ours(emulator)
        assert s.value("alpaca_di_consumer_subscriptions", consumer="served", **labels) == 1
        assert requests.head(server.url + "/metrics", timeout=DEADLINE).status_code == 200


def test_a_bad_consumer_name_is_refused_at_subscribe(hub: StreamHub) -> None:
    with pytest.raises(ValueError, match="invalid consumer name 'bad name'"):
        hub.subscribe(print, quotes=["AAPL"], name="bad name")
    assert hub.health().consumers == 0


def test_trading_service_consumers_are_counted_by_name(
    emulator: AlpacaEmulator, registry: ConnectionRegistry, collectors: CollectorRegistry
) -> None:
    lease = registry.acquire(
        Credentials(KEY, SECRET), StreamKind.TRADING, emulator.trading_stream_url
    )
    client = TradingClient(KEY, SECRET, paper=True, url_override=emulator.api_url)
    service = TradingService(trading_stream=lease.hub, trading_client=client)
    try:
        risk = Recorder()
        sub = service.subscribe(risk, name="risk")
        assert sub.name == "risk"
        sub.wait_confirmed(DEADLINE)
        client.submit_order(
            MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force="day")
        )
        risk.wait_for(2, DEADLINE)  # new, fill
        labels = {"fingerprint": FINGERPRINT, "kind": "trading"}
        s = scrape(collectors)
        assert s.value("alpaca_di_consumer_delivered_total", consumer="risk", **labels) == 2
        service_totals = s.value(
            "alpaca_di_consumer_delivered_total", consumer="alpaca_di.trading_service", **labels
        )
        assert service_totals == emulator.counters(KEY, "/stream").messages_sent == 2
        with pytest.raises(ValueError, match="invalid consumer name"):
            service.subscribe(risk, name="")
    finally:
        service.close()
        lease.release()
