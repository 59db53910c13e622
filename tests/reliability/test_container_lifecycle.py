"""Container lifecycle: 200 init/shutdown cycles of ``AlpacaContainer``, sync and async.

Each cycle initialises every resource, opens the stock and trading sockets
through the services (``pricing_service().track``, ``trading_service().listen``),
receives a price, and shuts everything down. Across the cycles: no thread, file
descriptor or task is left behind, traced memory grows by less than 1 MB, every
socket ended with a close frame, and services resolved after a re-init work on
the new connection.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import tracemalloc
from typing import Any

from _reliability_support import (
    FIGURES,
    IEX,
    KEY,
    MEMORY_GROWTH_LIMIT,
    NOTES,
    SECRET,
    await_for,
    open_fds,
    scaled,
    top_growth,
    traced_bytes,
    wait_for,
)
from dependency_injector import providers

from alpaca_di.containers import AlpacaContainer
from alpaca_di.emulator import AlpacaEmulator
from alpaca_di.hub import ConnectionRegistry
from alpaca_di.testing.messages import quote
from alpaca_di.testing.pytest_plugin import emulator_config

CYCLES = int(scaled(200))
WARMUP = 5
WAIT = 10.0
STREAM = "/stream"
def _container(emulator: AlpacaEmulator, registry: ConnectionRegistry) -> AlpacaContainer:
    container = AlpacaContainer()
    container.config.from_dict(emulator_config(emulator, api_key=KEY, secret_key=SECRET))
    container.registry.override(providers.Object(registry))
    return container


def _closed(emulator: AlpacaEmulator) -> bool:
    return (
        emulator.stats().open_connections == 0
        and emulator.counters(KEY, IEX).slots_held == 0
        and emulator.counters(KEY, STREAM).slots_held == 0
    )


def _publisher(emulator: AlpacaEmulator, stop: threading.Event) -> threading.Thread:
    """Keeps quoting AAPL so each cycle's pricing service gets a price (load, not sync)."""

    def run() -> None:
        n = 0
        while not stop.wait(0.002):
            n += 1
            emulator.publish(IEX, [quote("AAPL", bid=100.0 + n % 7, ask=100.2 + n % 7)])

    thread = threading.Thread(target=run, name="quotes", daemon=True)
    thread.start()
    return thread


def test_sync_container_cycles_leak_nothing(
    emulator: AlpacaEmulator, tracing: None, registry: ConnectionRegistry
) -> None:
    container = _container(emulator, registry)
    stop = threading.Event()
    publisher = _publisher(emulator, stop)

    def cycle() -> None:
        container.init_resources()
        pricing = container.pricing_service()
        pricing.track("AAPL")
        assert pricing.wait_for_price("AAPL", timeout=WAIT) > 0
        container.trading_service().listen(WAIT)
        assert container.pricing_service() is pricing
        container.shutdown_resources()
        assert pricing.closed
        emulator.wait_until(lambda: _closed(emulator), WAIT, message="cycle closed")

    try:
        for _ in range(WARMUP):
            cycle()
        gc.collect()
        threads, fds = threading.active_count(), open_fds()
        before = tracemalloc.take_snapshot()
        started = time.monotonic()
        for _ in range(CYCLES):
            cycle()
        elapsed = time.monotonic() - started
        gc.collect()
        after = tracemalloc.take_snapshot()
        wait_for(
            lambda: threading.active_count() == threads, WAIT, f"threads: {threading.enumerate()}"
        )
        wait_for(lambda: open_fds() == fds, WAIT, "file descriptors back to the baseline")
    finally:
        stop.set()
        publisher.join(WAIT)
    growth = traced_bytes(after) - traced_bytes(before)
    assert growth < MEMORY_GROWTH_LIMIT, f"{growth} bytes more:\n{top_growth(before, after)}"
    assert registry.hubs() == []
    for path in (IEX, STREAM):
        counters = emulator.counters(KEY, path)
        assert counters.connections_accepted == WARMUP + CYCLES
        assert counters.close_frames_received == WARMUP + CYCLES
        assert counters.max_concurrent == 1
    FIGURES["lifecycle cycles (sync container)"] += CYCLES
    NOTES["lifecycle sync container memory growth bytes"] = growth
    NOTES["lifecycle sync container ms per cycle"] = round(elapsed / CYCLES * 1000, 1)


def test_async_container_cycles_leak_nothing(
    emulator: AlpacaEmulator, tracing: None, registry: ConnectionRegistry
) -> None:
    stop = threading.Event()
    publisher = _publisher(emulator, stop)

    async def main() -> dict[str, Any]:
        container = _container(emulator, registry)

        async def cycle() -> None:
            await container.init_resources()
            pricing = container.pricing_service()
            pricing.track("AAPL")
            hub = container.stock_stream()
            assert hub.loop is not asyncio.get_running_loop()  # sockets live on the runtime
            await hub.ready(WAIT)
            await container.trading_service().listen_async(WAIT)
            assert await pricing.wait_for_price_async("AAPL", timeout=WAIT) > 0
            await container.shutdown_resources()
            assert hub.closed
            await emulator.until(lambda: _closed(emulator), WAIT)

        for _ in range(WARMUP):
            await cycle()
        gc.collect()
        tasks, threads, fds = len(asyncio.all_tasks()), threading.active_count(), open_fds()
        before = tracemalloc.take_snapshot()
        started = time.monotonic()
        for _ in range(CYCLES):
            await cycle()
        elapsed = time.monotonic() - started
        gc.collect()
        after = tracemalloc.take_snapshot()
        growth = traced_bytes(after) - traced_bytes(before)
        await await_for(lambda: len(asyncio.all_tasks()) == tasks, WAIT, "tasks at the baseline")
        await await_for(
            lambda: threading.active_count() == threads, WAIT, "threads at the baseline"
        )
        await await_for(lambda: open_fds() == fds, WAIT, "file descriptors at the baseline")
        assert growth < MEMORY_GROWTH_LIMIT, f"{growth} bytes:\n{top_growth(before, after)}"
        return {"growth": growth, "elapsed": elapsed}

    try:
        result = asyncio.run(main())
    finally:
        stop.set()
        publisher.join(WAIT)
    assert registry.hubs() == []
    for path in (IEX, STREAM):
        assert emulator.counters(KEY, path).close_frames_received == WARMUP + CYCLES
    FIGURES["lifecycle cycles (async container)"] += CYCLES
    NOTES["lifecycle async container memory growth bytes"] = result["growth"]
    NOTES["lifecycle async container ms per cycle"] = round(result["elapsed"] / CYCLES * 1000, 1)
