"""Two Alpaca accounts in one application, each with its own connections.

Alpaca allows one connection per key pair **per endpoint**, so connections are
shared per ``(credentials, endpoint)``: components of the same account share a
socket, and a second account gets sockets of its own. Here the application
container embeds ``AlpacaContainer`` twice:

* ``paper`` -- a paper account (key ``PK...``, ``paper=True``);
* ``live`` -- a live-shaped account (key ``AK...``, ``paper=False``; its URLs
  point at the emulator too, so nothing real is traded).

Each account runs two components on its stock connection and places one order
on its own trading connection. The emulator, which enforces Alpaca's limit of
one session per key and endpoint, then shows exactly one socket per account
and endpoint, and separate order books.

Run it (no account needed)::

    python examples/two_accounts.py
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import structlog
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from dependency_injector import containers, providers

from alpaca_di import AlpacaContainer, AlpacaManager, PricingService, StreamHub, Subscription
from alpaca_di.testing import AlpacaEmulator, Recorder

PAPER_KEY = "PKPAPEREXAMPLE01"
LIVE_KEY = "AKLIVEEXAMPLE001"


class App(containers.DeclarativeContainer):
    """One application, two accounts."""

    config = providers.Configuration()
    paper = providers.Container(AlpacaContainer, config=config.paper)
    live = providers.Container(AlpacaContainer, config=config.live)


def account_config(emulator: AlpacaEmulator, key: str, secret: str, paper: bool) -> dict[str, Any]:
    """One account's settings; every URL points at the emulator."""
    return {
        "api_key": key,
        "secret_key": secret,
        "paper": paper,
        "data_stream_url": emulator.ws_url,
        "trading_stream_url": emulator.trading_stream_url,
        "api_url": emulator.api_url,
    }


def exercise(name: str, account: AlpacaContainer) -> tuple[Subscription, str]:
    """Two components on the account's stock connection, one order on its trading one."""
    pricing: PricingService = account.pricing_service()
    stock_stream: StreamHub = account.stock_stream()
    manager: AlpacaManager = account.alpaca_manager()

    pricing.track("AAPL", owner=f"{name}-strategy")  # component 1: prices
    recorder = Recorder()
    quotes = stock_stream.subscribe(recorder, quotes=["AAPL"])  # component 2: raw quotes
    price = pricing.wait_for_price("AAPL", timeout=10.0)
    recorder.wait_for(5, timeout=10.0)
    update = manager.submit_and_wait(
        MarketOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY),
        timeout=10.0,
    )
    return quotes, f"{name}: AAPL mid {price:.2f}; order {update.event} at {update.price}"


def main(argv: Sequence[str] | None = None) -> int:
    # Logging is the application's choice; alpaca-di only logs through structlog.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    with AlpacaEmulator(rate=100, seed=4, connection_limit=1) as emulator:
        emulator.add_account(PAPER_KEY, "paper-example-secret")
        emulator.add_account(LIVE_KEY, "live-example-secret")  # any other key gets 402

        app = App()
        app.config.from_dict(
            {
                "paper": account_config(emulator, PAPER_KEY, "paper-example-secret", True),
                "live": account_config(emulator, LIVE_KEY, "live-example-secret", False),
            }
        )
        try:
            lines = []
            subscriptions = []
            for name, account in (("paper", app.paper.container), ("live", app.live.container)):
                subscription, line = exercise(name, account)
                subscriptions.append(subscription)
                lines.append(line)
            reports = {"paper": app.paper.health(), "live": app.live.health()}
            for subscription in subscriptions:
                subscription.close()
        finally:
            app.shutdown_resources()

        for line in lines:
            print(line)
        for name, report in reports.items():
            for connection in report.connections:
                if connection.state != "idle":  # idle: leased, never needed a socket
                    print(
                        f"{name:<5} {connection.fingerprint} {connection.kind:<7} "
                        f"{connection.state}, {connection.consumers} consumers"
                    )
        print("what the emulator saw (sockets per key and endpoint):")
        for key in (PAPER_KEY, LIVE_KEY):
            for path in ("/v2/iex", "/stream"):
                counters = emulator.counters(key, path)
                print(
                    f"  {key[:2]}...{key[-3:]} {path:<8} {counters.connections_accepted} accepted, "
                    f"at most {counters.max_concurrent} open at once, "
                    f"{counters.rejections.get(406, 0)} refused with 406"
                )
            orders = emulator.orders(key)
            print(f"  {key[:2]}...{key[-3:]} order book: {len(orders)} order(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
