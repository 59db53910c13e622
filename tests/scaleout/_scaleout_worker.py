"""A worker process of the scale-out tests: hubs built through the Redis registry.

Runs under ``multiprocessing`` (spawn). It subscribes its quotes and trade updates,
reports every message it receives on the ``results`` queue, and obeys commands
(``health``, ``stop``) from its own ``commands`` queue.
"""

from __future__ import annotations

import os
from typing import Any

from _scaleout_support import worker_registry


def run_worker(index: int, config: dict[str, Any], commands: Any, results: Any) -> None:
    from alpaca_di.settings import endpoint_for

    settings, registry = worker_registry(config)
    creds = settings.credentials()
    options = settings.to_options()
    stock = registry.acquire(creds, "stock", endpoint_for(settings, "stock"), options)
    trading = registry.acquire(creds, "trading", endpoint_for(settings, "trading"), options)

    def on_quote(quote: Any) -> None:
        results.put(("quote", index, quote.symbol, int(quote.bid_size)))

    def on_update(raw: dict[str, Any]) -> None:
        results.put(("update", index, int(raw["seq"])))

    quotes = stock.hub.subscribe(on_quote, quotes=config["symbols"][index])
    updates = trading.hub.subscribe(on_update, trade_updates=True, raw=True)
    quotes.wait_confirmed(30)
    updates.wait_confirmed(30)
    results.put(("ready", index, os.getpid(), registry.identity))
    while True:
        command = commands.get()
        if command == "health":
            report = [c.model_dump(mode="json") for c in registry.health().connections]
            results.put(("health", index, report))
        elif command == "stop":
            break
    quotes.close()
    updates.close()
    stock.release()
    trading.release()
    registry.close_all()
    results.put(("stopped", index))
