"""Migrating from hand-rolled singletons (``WebSocketConnectionManager``) to a container.

Before: class-level singletons
==============================

The hand-rolled design keeps one instance per credentials in a class
dictionary, guarded by ``__new__`` locks, a ``_cleanup_in_progress`` flag and a
``time.sleep(0.001)`` spin; every component re-creates "the" manager from the
raw keys, and shutdown means remembering two ``cleanup_all_instances()``::

    # strategy components
    ws_manager = WebSocketConnectionManager(api_key, secret_key, paper_trading=True)
    pricing_service = ws_manager.get_pricing_service()
    orchestrator = create_orchestrator(api_key, secret_key, paper=True)

    # execution components
    alpaca_manager = AlpacaManager(api_key, secret_key, paper=True)  # owns a TradingStream
    executor = Executor(alpaca_manager, enable_smart_execution=True)

    # somewhere else, code that bypasses the managers (the "don't" of the docs)
    stream = StockDataStream(api_key, secret_key)                   # a 2nd socket: 406

    # health
    ws_health = WebSocketConnectionManager.get_connection_health()
    alpaca_health = AlpacaManager.get_connection_health()

    # application shutdown
    ws_manager.release_pricing_service()
    WebSocketConnectionManager.cleanup_all_instances()
    AlpacaManager.cleanup_all_instances()

After: one container
====================

The container is the single owner of every connection (data *and* trading
streams: the seed's "target state"), components receive what they need, and
one call closes everything::

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
        orchestrator = providers.Factory(Orchestrator, prices=alpaca.pricing_service)
        executor = providers.Factory(Executor, manager=alpaca.alpaca_manager,
                                     enable_smart_execution=True)
        legacy_feed = providers.Factory(LegacyQuoteFeed, stream=alpaca.shared_stock_stream)

    app = App()
    app.config.alpaca.from_pydantic(AlpacaSettings())   # APCA_API_KEY_ID, APCA_API_SECRET_KEY
    orchestrator, executor = app.orchestrator(), app.executor()
    report = app.alpaca.health()                         # HealthReport (JSON-ready)
    app.shutdown_resources()                             # every socket, with close frames

Side by side
============

* ``WebSocketConnectionManager(key, secret, paper_trading=True)`` ->
  ``app.alpaca``, an ``AlpacaContainer``; sockets are shared per ``(Credentials, endpoint)``.
* ``ws_manager.get_pricing_service()`` -> inject ``alpaca.pricing_service``.
* ``get_trading_service()`` / ``get_trading_stream()`` (the seed's target state) ->
  ``alpaca.trading_service`` / ``alpaca.trading_stream``.
* ``AlpacaManager(key, secret, paper=True)`` -> ``alpaca.alpaca_manager``: the REST
  facade; the streams are injected into it, not owned by it.
* ``StockDataStream(key, secret)`` in legacy code -> ``alpaca.shared_stock_stream``:
  the same alpaca-py API, on the shared socket.
* ``release_pricing_service()`` -> ``pricing.untrack(..., owner=...)`` per component.
* ``get_connection_health()`` on both classes -> ``app.alpaca.health()``.
* ``cleanup_all_instances()`` on both classes -> ``app.shutdown_resources()``.
* ``__new__`` locks, ``_cleanup_in_progress``, ``sleep(0.001)`` -> ``StreamResource``
  (thread-safe first use) and ``ConnectionRegistry`` leases.
* "20 concurrent threads receive the same instance" -> checked below, together with
  the server's own count of sockets.

Run it (no account needed: an emulator runs in the same process)::

    python examples/migrating_from_singletons.py
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from alpaca.data.models import Quote
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from dependency_injector import containers, providers

from alpaca_di import (
    AlpacaContainer,
    AlpacaManager,
    PriceTracker,
    PricingService,
    SharedStockDataStream,
)
from alpaca_di.testing import AlpacaEmulator

KEY_ID = "PKEXAMPLE0000005"


class Orchestrator:
    """Was ``create_orchestrator(api_key, secret_key, paper=True)``: now it gets its prices."""

    def __init__(self, prices: PriceTracker, symbols: Sequence[str] = ("AAPL", "MSFT")) -> None:
        self.prices = prices
        self.symbols = tuple(symbols)

    def snapshot(self) -> dict[str, float]:
        self.prices.track(*self.symbols, owner="orchestrator")
        return {s: self.prices.wait_for_price(s, timeout=10.0) for s in self.symbols}


class Executor:
    """Was ``Executor(AlpacaManager(api_key, secret_key, paper=True), ...)``."""

    def __init__(self, manager: AlpacaManager, enable_smart_execution: bool = False) -> None:
        self.manager = manager
        self.smart = enable_smart_execution

    def buy(self, symbol: str, qty: int) -> str:
        request = MarketOrderRequest(
            symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        )
        update = self.manager.submit_and_wait(request, timeout=10.0)
        return f"{update.event} {qty} {symbol} at {update.price}"


class LegacyQuoteFeed:
    """Code written against alpaca-py's ``StockDataStream``, unchanged but for its constructor."""

    def __init__(self, stream: SharedStockDataStream) -> None:
        self.stream = stream  # was: StockDataStream(api_key, secret_key)
        self.quotes = 0
        self.enough = threading.Event()

    async def on_quote(self, quote: Quote) -> None:
        self.quotes += 1
        if self.quotes >= 10:
            self.enough.set()

    def run_until_enough(self, timeout: float) -> int:
        self.stream.subscribe_quotes(self.on_quote, "AAPL", "SPY")
        runner = threading.Thread(target=self.stream.run, name="legacy-feed")  # as before
        runner.start()
        try:
            self.enough.wait(timeout)
        finally:
            self.stream.stop()
            runner.join()
        return self.quotes


class App(containers.DeclarativeContainer):
    """The application's container: the one owner of every connection."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
    orchestrator = providers.Factory(Orchestrator, prices=alpaca.pricing_service)
    executor = providers.Factory(
        Executor, manager=alpaca.alpaca_manager, enable_smart_execution=True
    )
    legacy_feed = providers.Factory(LegacyQuoteFeed, stream=alpaca.shared_stock_stream)


def emulator_config(emulator: AlpacaEmulator) -> dict[str, Any]:
    """Container settings pointing every URL at the in-process emulator."""
    return {
        "api_key": KEY_ID,
        "secret_key": "example-secret-for-the-emulator",
        "data_stream_url": emulator.ws_url,
        "trading_stream_url": emulator.trading_stream_url,
        "api_url": emulator.api_url,
    }


def main(argv: Sequence[str] | None = None) -> int:
    # Logging is the application's choice; alpaca-di only logs through structlog.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    with AlpacaEmulator(rate=100, seed=5) as emulator:
        app = App()
        app.config.alpaca.from_dict(emulator_config(emulator))  # was: raw keys everywhere
        try:
            # The seed's "20 concurrent threads all receive the same instance":
            with ThreadPoolExecutor(max_workers=20) as pool:
                services: list[PricingService] = list(
                    pool.map(lambda _: app.alpaca.pricing_service(), range(20))
                )
            distinct = len({id(service) for service in services})
            print(f"20 threads resolved pricing_service: {distinct} distinct instance")

            prices = app.orchestrator().snapshot()
            print("orchestrator prices: " + ", ".join(f"{s} {p:.2f}" for s, p in prices.items()))
            print(f"executor: {app.executor().buy('AAPL', 2)}")
            quotes = app.legacy_feed().run_until_enough(timeout=10.0)
            print(f"legacy StockDataStream code got {quotes} quotes through the shared socket")

            report = app.alpaca.health()  # was: get_connection_health() on two classes
            for connection in report.connections:
                if connection.state != "idle":  # idle: leased, never needed a socket
                    print(
                        f"health: {connection.kind:<7} {connection.state}, "
                        f"{connection.consumers} consumers, {connection.reconnects} reconnects"
                    )
        finally:
            app.shutdown_resources()  # was: cleanup_all_instances() on two classes
        paths = ("/v2/iex", "/stream")
        emulator.wait_until(lambda: all(emulator.counters(KEY_ID, p).open == 0 for p in paths))
        for path in paths:
            counters = emulator.counters(KEY_ID, path)
            print(
                f"server {path:<8}: {counters.connections_accepted} socket accepted, "
                f"{counters.close_frames_received} closed with a close frame, {counters.open} open"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
