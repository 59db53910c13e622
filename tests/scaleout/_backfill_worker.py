"""A follower process of the scale-out backfill tests: an AlpacaContainer, ``sharing=redis``.

Runs under ``multiprocessing`` (spawn), follower-only (``redis_role="follower"``):
a separate gateway process leads. Its stock hub comes from the container (so it
has the container's historical client, wrapped for the scale-out) and it
subscribes ``bars`` of its symbols with ``backfill=True``; it reports every item
on the ``results`` queue: ``("bar", index, symbol, iso time, backfilled, close)``
and ``("notice", index, backfill, backfill_error, not_backfilled)``. Obeys
``stop``.
"""

from __future__ import annotations

import os
from typing import Any


def run_backfill_follower(index: int, config: dict[str, Any], commands: Any, results: Any) -> None:
    from alpaca_di import AlpacaContainer, GapNotice

    container = AlpacaContainer()
    container.config.from_dict(
        {
            "api_key": config["key"],
            "secret_key": config["secret"],
            "data_stream_url": config["data_url"],
            "data_url": config["rest_url"],
            "sharing": "redis",
            "redis_url": config["redis_url"],
            "redis_prefix": config["prefix"],
            "redis_role": "follower",
            "redis_fallback_local": False,
            "redis_lock_ttl": 1.5,
            "backoff_initial": 0.05,
            "backoff_max": 0.25,
            "close_timeout": 0.5,
        }
    )
    hub = container.stock_stream()

    def on_message(message: Any) -> None:
        if isinstance(message, GapNotice):
            not_backfilled = {c: sorted(s) for c, s in message.not_backfilled.items()}
            results.put(
                ("notice", index, message.backfill, message.backfill_error, not_backfilled)
            )
        else:
            results.put(
                (
                    "bar",
                    index,
                    message.symbol,
                    message.timestamp.isoformat(),
                    bool(getattr(message, "backfilled", False)),
                    float(message.close),
                )
            )

    sub = hub.subscribe(on_message, bars=config["symbols"][index], backfill=True)
    sub.wait_confirmed(30)
    results.put(("ready", index, os.getpid()))
    while commands.get() != "stop":
        pass
    sub.close()
    container.shutdown_resources()
    results.put(("stopped", index))
