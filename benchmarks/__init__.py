"""Side-by-side benchmarks of alpaca-di and raw alpaca-py on the loopback emulator.

Not tests: they print figures and never assert a timing. Run them with
``make bench`` (full, a few minutes) or ``make bench-quick`` (the CI smoke run)::

    python -m benchmarks                 # every figure, 3 runs each
    python -m benchmarks --quick         # small sizes, 1 run
    python -m benchmarks --only ingest,latency --json /tmp/partial.json

One module per figure, each with ``run(ctx) -> list[Row]``; see
``docs/benchmarks.md`` for what each one measures and the latest numbers.
"""

from __future__ import annotations

__all__ = ["FIGURES"]

FIGURES: dict[str, str] = {
    "ingest": "ingest",
    "latency": "latency",
    "idle": "idle",
    "churn": "churn",
    "shutdown": "shutdown",
    "first_use": "first_use",
    "slow_consumer": "slow_consumer",
    "scale": "scale",
    "big_frame": "big_frame",
    "failover": "failover",
    "startup": "startup",
}
"""Figure name -> module in this package, in table order (figures 1 to 11)."""
