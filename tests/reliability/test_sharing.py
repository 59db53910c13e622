"""Concurrent first use and sharing: the seed architecture's claims, proven on real sockets.

The seed document claims "20 concurrent threads all receive same instances",
"no duplicate instances under concurrent access", "zero connection limit
exceeded errors" and "100 % WebSocket connection reuse across components".
Here 50 threads race on the first use of one container, and ten containers
with the same key pair run side by side: one hub and one service instance per
container, one socket per endpoint in the process, no 406, leases counted, and
the socket closes (with a close frame) only when the last container shuts down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from _reliability_support import FIGURES, IEX, KEY, SECRET
from dependency_injector import providers

from alpaca_di.containers import AlpacaContainer
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry
from alpaca_di.testing.messages import quote
from alpaca_di.testing.pytest_plugin import emulator_config
from alpaca_di.testing.recorder import Recorder

WAIT = 10.0
THREADS = 50
CONTAINERS = 10
STREAM = "/stream"


def _container(emulator: AlpacaEmulator, registry: ConnectionRegistry) -> AlpacaContainer:
    container = AlpacaContainer()
    container.config.from_dict(emulator_config(emulator, api_key=KEY, secret_key=SECRET))
    container.registry.override(providers.Object(registry))
    return container


@pytest.fixture
def shared_registry() -> Iterator[ConnectionRegistry]:
    registry = ConnectionRegistry()
    yield registry
    registry.close_all()


def test_fifty_threads_racing_on_first_use_get_one_of_everything(
    emulator: AlpacaEmulator, shared_registry: ConnectionRegistry
) -> None:
    container = _container(emulator, shared_registry)
    barrier = threading.Barrier(THREADS)
    results: list[tuple[object, object, object, object]] = [None] * THREADS  # type: ignore[list-item]
    recorders = [Recorder() for _ in range(THREADS)]
    errors: list[BaseException] = []

    def first_use(n: int) -> None:
        try:
            barrier.wait(WAIT)
            hub = container.stock_stream()
            pricing = container.pricing_service()
            trading = container.trading_service()
            sub = hub.subscribe(recorders[n], quotes=["AAPL"])
            pricing.track("MSFT")
            trading.listen(WAIT)
            sub.wait_confirmed(WAIT)
            results[n] = (hub, pricing, trading, container.trading_stream())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert not errors, errors[:3]
    for index in range(4):
        assert len({id(result[index]) for result in results}) == 1, f"component {index}"
    emulator.publish(IEX, [quote("AAPL", bid_size=7)])
    for recorder in recorders:
        assert recorder.wait_for(1, WAIT)[0].bid_size == 7
    hub = results[0][0]
    for path in (IEX, STREAM):
        counters = emulator.counters(KEY, path)
        assert counters.connections_accepted == 1, path
        assert counters.max_concurrent == 1, path
        assert counters.rejections.get(406, 0) == 0, path
    assert shared_registry.leases(container.credentials(), hub.endpoint) == 1
    container.shutdown_resources()
    assert shared_registry.hubs() == []
    FIGURES["sharing: threads racing on first use"] += THREADS


def test_ten_containers_share_one_socket_per_endpoint_and_count_their_leases(
    emulator: AlpacaEmulator, shared_registry: ConnectionRegistry
) -> None:
    containers = [_container(emulator, shared_registry) for _ in range(CONTAINERS)]
    hubs = []
    for container in containers:
        container.init_resources()
        container.pricing_service().track("AAPL")
        container.trading_service().listen(WAIT)
        hubs.append(container.stock_stream())
    assert len({id(hub) for hub in hubs}) == 1, "one hub per endpoint in the process"
    assert len({id(c.pricing_service()) for c in containers}) == CONTAINERS  # per container
    credentials = containers[0].credentials()
    assert shared_registry.leases(credentials, hubs[0].endpoint) == CONTAINERS
    report = shared_registry.health()
    assert sorted(c.kind for c in report.connections) == [
        "crypto",
        "news",
        "option",
        "stock",
        "trading",
    ]
    assert containers[0].health().model_dump()["connections"]
    emulator.publish(IEX, [quote("AAPL", bid=10.0, ask=10.2)])
    for container in containers:
        assert container.pricing_service().wait_for_price("AAPL", timeout=WAIT) == 10.1
    for n, container in enumerate(containers[:-1]):
        container.shutdown_resources()
        assert shared_registry.leases(credentials, hubs[0].endpoint) == CONTAINERS - n - 1
        assert emulator.counters(KEY, IEX).open == 1, "still shared by the others"
    containers[-1].shutdown_resources()
    for path in (IEX, STREAM):
        emulator.wait_until(lambda p=path: emulator.counters(KEY, p).open == 0, WAIT)
        counters = emulator.counters(KEY, path)
        assert counters.connections_accepted == 1, path
        assert counters.close_frames_received == 1, path
        assert counters.rejections.get(406, 0) == 0, path
    assert shared_registry.hubs() == []
    FIGURES["sharing: containers on one socket per endpoint"] += CONTAINERS
