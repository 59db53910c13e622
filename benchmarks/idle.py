"""Figure 3: idle CPU, as a fraction of one core, of this process over a window.

Measured with ``time.process_time()`` (every thread of the process) over a
window of wall time; the emulator runs in another process and is not counted.

* no subscriptions: alpaca-di connects (``hub.wait_ready()``) and sits idle.
  alpaca-py cannot connect before its first subscription: ``run()`` waits for
  one in a ``while ...: await asyncio.sleep(0)`` loop (alpaca-py issue #762),
  measured in its thread and then stopped.
* quiet subscriptions: both subscribed to ``quotes AAPL``, no data flowing
  (keepalive pings only).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._common import DATA_PATH, Context, PyStream, Row, cpu_fraction, di_hub, new_key

__all__ = ["run"]


async def _ignore(message: Any) -> None:
    return None


def _py(ctx: Context, window: float, *, subscribed: bool) -> float:
    key = new_key()
    stream = PyStream(ctx.emu, key)
    if subscribed:
        stream.stream.subscribe_quotes(_ignore, "AAPL")
    stream.start()
    try:
        if subscribed:
            ctx.emu.wait_quotes(key, DATA_PATH, {"AAPL"})
        else:
            stream.wait_loop()
        time.sleep(0.2)  # let start-up work settle
        return cpu_fraction(window)
    finally:
        stream.stop()


def _di(ctx: Context, window: float, *, subscribed: bool) -> float:
    key = new_key()
    with di_hub(ctx.emu, key) as hub:
        sub = hub.subscribe(_ignore, quotes=["AAPL"]) if subscribed else None
        hub.wait_ready(10)
        if sub is not None:
            sub.wait_confirmed(10)
        time.sleep(0.2)
        fraction = cpu_fraction(window)
        if sub is not None:
            sub.close()
        return fraction


def run(ctx: Context) -> list[Row]:
    """Figure 3 rows."""
    window = ctx.seconds(2.0, 1.0)
    bare = Row(
        3,
        "idle_cpu_no_subscriptions",
        "idle CPU, connection without subscriptions",
        "core",
        "lower",
        note="alpaca-py: run() before any subscribe (never connects; busy-waits); "
        "alpaca-di: connected, no subscriptions",
    )
    quiet = Row(
        3,
        "idle_cpu_quiet_subscriptions",
        "idle CPU, quiet subscription",
        "core",
        "lower",
        note="both connected and subscribed to quotes AAPL, no data",
    )
    baseline = cpu_fraction(window / 2)  # this process with no client at all
    for run_index in range(ctx.runs):
        bare.py.append(_py(ctx, window, subscribed=False))
        bare.di.append(_di(ctx, window, subscribed=False))
        quiet.py.append(_py(ctx, window, subscribed=True))
        quiet.di.append(_di(ctx, window, subscribed=True))
        ctx.log(
            f"  run {run_index + 1}: no subs py {bare.py[-1]:.3f} di {bare.di[-1]:.4f}; "
            f"quiet py {quiet.py[-1]:.4f} di {quiet.di[-1]:.4f} (baseline {baseline:.4f})"
        )
    for row in (bare, quiet):
        row.extra["window_seconds"] = window
        row.extra["process_baseline"] = baseline
    return [bare, quiet]
