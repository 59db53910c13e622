"""A worker process of the Redis-outage test: a TradingService and a quote consumer.

Runs under ``multiprocessing`` (spawn), builds its hubs through
:func:`alpaca_di.scaleout.registry.redis_registry`, and reports on the ``results``
queue every trade update its ``TradingService`` subscriber receives and every
quote. Its ``TradingService`` has no REST client of its own: what it receives
comes through the scale-out alone (the leader's memory, the Redis stream, and
the leader's REST reconciliation). Obeys ``health``, ``groups`` (its gateway's
:meth:`~alpaca_di.scaleout.gateway.Gateway.groups`, by kind) and ``stop`` commands.
"""

from __future__ import annotations

import os
from typing import Any

from _scaleout_support import worker_registry


def run_outage_worker(index: int, config: dict[str, Any], commands: Any, results: Any) -> None:
    from alpaca_di.services.trading import TradingService
    from alpaca_di.settings import endpoint_for

    settings, registry = worker_registry(config)
    creds = settings.credentials()
    options = settings.to_options()
    stock = registry.acquire(creds, "stock", endpoint_for(settings, "stock"), options)
    trading = registry.acquire(creds, "trading", endpoint_for(settings, "trading"), options)
    service = TradingService(trading_stream=trading.hub, trading_client=None)

    def on_quote(quote: Any) -> None:
        results.put(("quote", index, quote.symbol, int(quote.bid_size)))

    def on_update(update: Any) -> None:
        event = str(getattr(update.event, "value", update.event))
        reconciled = bool(getattr(update, "reconciled", False))
        results.put(("update", index, str(update.order.id), event, reconciled))

    quotes = stock.hub.subscribe(on_quote, quotes=["AAPL"])
    updates = service.subscribe(on_update)
    quotes.wait_confirmed(30)
    service.listen(30)
    results.put(("ready", index, os.getpid(), registry.identity))
    while True:
        command = commands.get()
        if command == "health":
            report = [c.model_dump(mode="json") for c in registry.health().connections]
            results.put(("health", index, report))
        elif command == "groups":  # what this process's leader candidate holds, per kind
            groups = registry.gateway.groups() if registry.gateway is not None else {}
            results.put(("groups", index, {g["kind"]: g for g in groups.values()}))
        elif command == "stop":
            break
    quotes.close()
    updates.close()
    service.close()
    stock.release()
    trading.release()
    registry.close_all()
    results.put(("stopped", index))
