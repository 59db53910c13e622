"""An asyncio application: the connections run on *your* event loop.

What it shows:

* ``await init_resources(app)`` inside the running loop (alpaca-di's typed
  wrapper of ``app.init_resources()``): the sockets run on alpaca-di's runtime
  thread, async handlers on this loop, and ``await shutdown_resources(app)``
  closes them.
* An ``async def`` handler (``QuoteBoard.on_quote``): it runs on the loop that
  subscribed it -- the script checks that it never ran anywhere else.
* ``async for`` over a subscription without a handler (``count_trades``).
* ``await pricing.wait_for_price_async(...)`` and
  ``await manager.submit_and_wait_async(...)``: the blocking calls' async twins
  never block the loop.
* Everything shares one stock connection and one trading connection.

Run it (no account needed: the emulator runs on the same loop)::

    python examples/asyncio_app.py
    python examples/asyncio_app.py --trades 500

To use your paper account instead, configure the container from the
environment -- ``app.config.alpaca.from_pydantic(AlpacaSettings())`` -- in
place of ``emulator_config(emulator)`` (and think twice before placing orders).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

import structlog
from alpaca.data.models import Quote, Trade
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from dependency_injector import containers, providers

from alpaca_di import AlpacaContainer, AlpacaManager, HealthReport, PricingService, StreamHub
from alpaca_di.containers import init_resources, shutdown_resources
from alpaca_di.testing import AlpacaEmulator

KEY_ID = "PKEXAMPLE0000002"


class QuoteBoard:
    """Latest bid/ask per symbol, kept by an async handler."""

    def __init__(self, stock_stream: StreamHub, symbols: Sequence[str]) -> None:
        self.hub = stock_stream
        self.symbols = tuple(symbols)
        self.quotes: dict[str, Quote] = {}
        self.seen = 0
        self.off_loop_calls = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.subscription = self.hub.subscribe(self.on_quote, quotes=self.symbols)

    async def on_quote(self, quote: Quote) -> None:
        if asyncio.get_running_loop() is not self.loop:
            self.off_loop_calls += 1
        self.quotes[quote.symbol] = quote
        self.seen += 1

    def stop(self) -> None:
        self.subscription.close()


async def count_trades(stock_stream: StreamHub, symbol: str, wanted: int) -> float:
    """Read ``wanted`` trades of ``symbol`` with ``async for``; return their average price."""
    total = 0.0
    count = 0
    async with stock_stream.subscribe(trades=[symbol]) as subscription:
        async for trade in subscription:
            if isinstance(trade, Trade):
                total += trade.price
                count += 1
                if count >= wanted:
                    break
    return total / count


async def buy_one(manager: AlpacaManager, pricing: PricingService, symbol: str) -> str:
    """Wait for a price, then buy one share and wait for the fill -- without blocking the loop."""
    price = await pricing.wait_for_price_async(symbol, timeout=10.0)
    request = MarketOrderRequest(
        symbol=symbol, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
    )
    update = await manager.submit_and_wait_async(request, timeout=10.0)
    return f"{update.event} {symbol} at {update.price} (mid was {price:.2f})"


class App(containers.DeclarativeContainer):
    """The application's container."""

    config = providers.Configuration()
    alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
    board = providers.Singleton(
        QuoteBoard, stock_stream=alpaca.stock_stream, symbols=("AAPL", "MSFT", "SPY")
    )


def emulator_config(emulator: AlpacaEmulator) -> dict[str, Any]:
    """Container settings pointing every URL at the emulator."""
    return {
        "api_key": KEY_ID,
        "secret_key": "example-secret-for-the-emulator",
        "data_stream_url": emulator.ws_url,
        "trading_stream_url": emulator.trading_stream_url,
        "api_url": emulator.api_url,
    }


async def run(trades: int) -> int:
    async with AlpacaEmulator(rate=200, seed=2) as emulator:  # served by this loop too
        app = App()
        app.config.alpaca.from_dict(emulator_config(emulator))
        # alpaca-di's helpers await what init_resources() returns inside a running loop
        # (dependency-injector's stubs type it as None, so a bare await needs a cast).
        await init_resources(app)
        try:
            board: QuoteBoard = app.board()
            board.start()
            stock_stream: StreamHub = app.alpaca.stock_stream()
            pricing: PricingService = app.alpaca.pricing_service()
            manager: AlpacaManager = app.alpaca.alpaca_manager()

            average, order = await asyncio.gather(
                count_trades(stock_stream, "AAPL", trades),
                buy_one(manager, pricing, "MSFT"),
            )
            report: HealthReport = app.alpaca.health()
            board.stop()
        finally:
            await shutdown_resources(app)

        # The server's view: the sockets were closed with close frames (bounded wait).
        paths = ("/v2/iex", "/stream")
        await emulator.until(lambda: all(emulator.counters(KEY_ID, p).open == 0 for p in paths))
        closes = sum(emulator.counters(KEY_ID, p).close_frames_received for p in paths)

        print(f"async for   read {trades} AAPL trades, average price {average:.2f}")
        print(f"async order {order}")
        print(
            f"async handler saw {board.seen} quotes of {', '.join(sorted(board.quotes))}; "
            f"calls off the application's loop: {board.off_loop_calls}"
        )
        for connection in report.connections:
            if connection.state != "idle":  # idle: leased, never needed a socket
                print(
                    f"{connection.kind:<7} {connection.state}, {connection.consumers} consumers, "
                    f"{connection.messages_received} messages on one socket"
                )
        print(f"after shutdown_resources(): 0 sockets open, {closes} close frames received")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=100, help="AAPL trades to read")
    args = parser.parse_args(argv)
    # Logging is the application's choice; alpaca-di only logs through structlog.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    return asyncio.run(run(args.trades))


if __name__ == "__main__":
    sys.exit(main())
