"""A worker process of the leader-fault tests: one quote consumer through the Redis registry.

Runs under ``multiprocessing`` (spawn). It reports every quote it receives on the
``results`` queue, answers ``health`` and ``stop`` from its ``commands`` queue,
and on SIGTERM shuts down normally (closes its consumers and the registry: the
leader hands its socket and lock over), then reports ``stopped``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from _scaleout_support import worker_registry


class _Terminated(Exception):
    """SIGTERM arrived: leave the command loop and shut down normally."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise _Terminated


def run_freeze_worker(index: int, config: dict[str, Any], commands: Any, results: Any) -> None:
    from alpaca_di.settings import endpoint_for

    signal.signal(signal.SIGTERM, _on_sigterm)
    settings, registry = worker_registry(config)
    creds = settings.credentials()
    stock = registry.acquire(creds, "stock", endpoint_for(settings, "stock"), settings.to_options())

    def on_quote(quote: Any) -> None:
        results.put(("quote", index, quote.symbol, int(quote.bid_size)))

    quotes = stock.hub.subscribe(on_quote, quotes=["AAPL"])
    try:
        quotes.wait_confirmed(30)
        results.put(("ready", index, os.getpid(), registry.identity))
        while True:
            command = commands.get()
            if command == "health":
                report = [c.model_dump(mode="json") for c in registry.health().connections]
                results.put(("health", index, report))
            elif command == "stop":
                break
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    quotes.close()
    stock.release()
    registry.close_all()
    results.put(("stopped", index))
