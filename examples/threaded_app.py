"""A plain threaded application: one sync container, several threads, one socket.

What it shows:

* ``App`` embeds :class:`~alpaca_di.AlpacaContainer` with ``providers.Container``
  and declares its components with ordinary ``Factory`` providers. Nothing here
  touches asyncio: alpaca-di runs the connections on one background thread.
* Three ``PriceWatcher`` threads share the container's ``PricingService``: each
  tracks its own symbols under its own owner name and polls ``price()``.
* A ``TradeTape`` thread reads a :class:`~alpaca_di.Subscription` as an
  iterator (``for trade in subscription``); closing the subscription ends the loop.
* All four threads share **one** stock connection: the script prints
  ``container.health()`` and, against the emulator, the server's own count of
  open sockets.
* ``app.shutdown_resources()`` closes everything (with close frames).

Run it (no account needed: an emulator runs in the same process)::

    python examples/threaded_app.py
    python examples/threaded_app.py --seconds 10

Against your Alpaca paper account (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``;
stock quotes flow during market hours)::

    python examples/threaded_app.py --live
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import structlog
from alpaca.data.models import Trade
from dependency_injector import containers, providers

from alpaca_di import (
    AlpacaContainer,
    AlpacaSettings,
    ConfigurationError,
    HealthReport,
    PriceTracker,
    StreamHub,
)
from alpaca_di.testing import AlpacaEmulator


class PriceWatcher:
    """A strategy stand-in: tracks symbols and polls their latest prices."""

    def __init__(self, name: str, prices: PriceTracker, symbols: Sequence[str]) -> None:
        self.name = name
        self.prices = prices
        self.symbols = tuple(symbols)
        self.polls = 0
        self.last: dict[str, float] = {}

    def run(self, stop: threading.Event) -> None:
        self.prices.track(*self.symbols, owner=self.name)
        try:
            while not stop.wait(0.05):  # this strategy's polling period
                for symbol in self.symbols:
                    price = self.prices.price(symbol, max_age=5.0)
                    if price is not None:
                        self.last[symbol] = price
                self.polls += 1
        finally:
            self.prices.untrack(*self.symbols, owner=self.name)


class TradeTape:
    """Counts trades by iterating a subscription (no handler)."""

    def __init__(self, stock_stream: StreamHub, symbols: Sequence[str]) -> None:
        self.subscription = stock_stream.subscribe(trades=symbols)
        self.trades: dict[str, int] = {}

    def run(self) -> None:
        for trade in self.subscription:  # ends when the subscription is closed
            if isinstance(trade, Trade):
                self.trades[trade.symbol] = self.trades.get(trade.symbol, 0) + 1

    def stop(self) -> None:
        self.subscription.close()


class App(containers.DeclarativeContainer):
    """The application's container."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)

    momentum = providers.Factory(
        PriceWatcher, "momentum", prices=alpaca.pricing_service, symbols=("AAPL", "MSFT", "NVDA")
    )
    pairs = providers.Factory(
        PriceWatcher, "pairs", prices=alpaca.pricing_service, symbols=("AAPL", "SPY")
    )
    hedger = providers.Factory(
        PriceWatcher, "hedger", prices=alpaca.pricing_service, symbols=("SPY", "TSLA")
    )
    tape = providers.Factory(
        TradeTape, stock_stream=alpaca.stock_stream, symbols=("AAPL", "MSFT", "SPY")
    )


KEY_ID = "PKEXAMPLE0000001"


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to run")
    parser.add_argument("--live", action="store_true", help="use your Alpaca paper account")
    args = parser.parse_args(argv)
    # Logging is the application's choice; alpaca-di only logs through structlog.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )

    with ExitStack() as stack:
        app = App()
        emulator: AlpacaEmulator | None = None
        if args.live:
            try:
                app.config.alpaca.from_pydantic(AlpacaSettings(paper=True))
            except ConfigurationError as exc:
                print(exc, file=sys.stderr)
                return 2
        else:
            emulator = stack.enter_context(AlpacaEmulator(rate=200, seed=1))
            app.config.alpaca.from_dict(emulator_config(emulator))

        watchers = [app.momentum(), app.pairs(), app.hedger()]
        tape = app.tape()
        stop = threading.Event()
        threads = [threading.Thread(target=w.run, args=(stop,), name=w.name) for w in watchers]
        threads.append(threading.Thread(target=tape.run, name="tape"))
        for thread in threads:
            thread.start()
        try:
            stop.wait(args.seconds)  # the application's run time (Ctrl-C ends it)
        except KeyboardInterrupt:
            pass
        report: HealthReport = app.alpaca.health()  # while every thread still runs

        stop.set()
        tape.stop()
        for thread in threads:
            thread.join()
        app.shutdown_resources()

        for watcher in watchers:
            prices = ", ".join(f"{s} {p:.2f}" for s, p in sorted(watcher.last.items()))
            print(f"{watcher.name:<9} {watcher.polls} polls on its own thread: {prices}")
        print(f"tape      read {sum(tape.trades.values())} trades by iterating its subscription")
        for connection in report.connections:
            # "idle": leased (the pricing service can price crypto too) but never opened.
            print(
                f"{connection.kind} connection {connection.endpoint}: {connection.state}, "
                f"{connection.consumers} consumers, {connection.messages_received} messages"
            )
        if emulator is not None:
            # the server notices the close frame a moment later: wait for it (bounded)
            emulator.wait_until(lambda: emulator.counters(KEY_ID, "/v2/iex").open == 0, 5.0)
            counters = emulator.counters(KEY_ID, "/v2/iex")
            print(
                f"the emulator saw {counters.max_concurrent} stock socket at most "
                f"({counters.connections_accepted} accepted) serving {len(threads)} threads; "
                f"{counters.open} open after shutdown_resources()"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
