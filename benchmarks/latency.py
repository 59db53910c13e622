"""Figure 2: delivery latency, from the emulator's send to the handler, at 1k and 5k msg/s.

The emulator process stamps every quote's ``t`` with ``time.time_ns()`` just
before the frame goes out (one frame every 5 ms, holding whatever is due); the
handler subtracts it from its own ``time.time_ns()`` (same host, same clock).
Parsed models carry a microsecond datetime, so figures below 1 µs are noise.

Variants: alpaca-py (one async handler, ``run()`` in a thread); alpaca-di in a
sync application (hub on the runtime thread) with the same async handler, and
with a plain ``def`` handler (served by a worker thread); alpaca-di in an
async application (hub acquired inside ``asyncio.run``: its socket on the
runtime thread, the async handler on the application's loop, one thread hop
per batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from benchmarks._common import (
    DATA_PATH,
    SECRET,
    Context,
    PyStream,
    Row,
    di_hub,
    latency_ns,
    new_key,
    percentile,
)

__all__ = ["Samples", "measure_di", "measure_di_app_loop", "measure_py", "run"]

RATES = (1_000, 5_000)


class Samples:
    """Latencies (ns) recorded by handlers, and their percentiles in ms."""

    def __init__(self) -> None:
        self.values: list[int] = []

    def async_handler(self) -> Callable[[Any], Any]:
        values = self.values
        now = time.time_ns

        async def handler(message: Any) -> None:
            values.append(latency_ns(message.timestamp, now()))

        return handler

    def sync_handler(self) -> Callable[[Any], None]:
        values = self.values
        now = time.time_ns

        def handler(message: Any) -> None:
            values.append(latency_ns(message.timestamp, now()))

        return handler

    def wait(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.values) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.values)} of {count} messages arrived")
            time.sleep(0.005)

    async def await_count(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.values) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.values)} of {count} messages arrived")
            await asyncio.sleep(0.005)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.values)
        return {
            "p50": percentile(ordered, 50) / 1e6,
            "p99": percentile(ordered, 99) / 1e6,
            "max": ordered[-1] / 1e6 if ordered else float("nan"),
            "count": len(ordered),
        }


def measure_py(ctx: Context, rate: int, seconds: float) -> dict[str, float]:
    """alpaca-py: one async handler for ``quotes "*"``."""
    key = new_key()
    samples = Samples()
    stream = PyStream(ctx.emu, key)
    stream.stream.subscribe_quotes(samples.async_handler(), "*")
    stream.start()
    try:
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        sent = ctx.emu.pace(key, DATA_PATH, rate=rate, seconds=seconds)
        samples.wait(sent)
    finally:
        stream.stop()
    return samples.summary()


def measure_di(ctx: Context, rate: int, seconds: float, *, sync: bool = False) -> dict[str, float]:
    """alpaca-di in a sync app: hub on the runtime thread; async or plain handler."""
    key = new_key()
    samples = Samples()
    with di_hub(ctx.emu, key) as hub:
        handler = samples.sync_handler() if sync else samples.async_handler()
        sub = hub.subscribe(handler, quotes=["*"])
        hub.wait_ready(10)
        sub.wait_confirmed(10)
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        sent = ctx.emu.pace(key, DATA_PATH, rate=rate, seconds=seconds)
        samples.wait(sent)
        result = samples.summary()
        result["dropped"] = sub.stats.dropped
        sub.close()
    return result


def measure_di_app_loop(ctx: Context, rate: int, seconds: float) -> dict[str, float]:
    """alpaca-di in an async app: hub acquired inside ``asyncio.run``, handler on that loop."""
    from alpaca_di.credentials import Credentials
    from alpaca_di.hub.registry import ConnectionRegistry
    from alpaca_di.protocol import StreamKind

    async def main() -> dict[str, float]:
        key = new_key()
        samples = Samples()
        registry = ConnectionRegistry()
        lease = registry.acquire(
            Credentials(key, SECRET), StreamKind.STOCK, ctx.emu.data_url(DATA_PATH)
        )
        try:
            sub = lease.hub.subscribe(samples.async_handler(), quotes=["*"])
            await lease.hub.ready(10)
            await sub.confirmed(10)
            await asyncio.to_thread(ctx.emu.wait_quotes, key, DATA_PATH, {"*"})
            sent = await asyncio.to_thread(ctx.emu.pace, key, DATA_PATH, rate=rate, seconds=seconds)
            await samples.await_count(sent)
            result = samples.summary()
            result["dropped"] = sub.stats.dropped
            sub.close()
            return result
        finally:
            await lease.arelease()

    result: dict[str, float] = asyncio.run(main())
    return result


def run(ctx: Context) -> list[Row]:
    """Figure 2 rows."""
    seconds = ctx.seconds(1.5, 1.0)
    rows: list[Row] = []
    note_main = "alpaca-di: sync app, async handler on the runtime thread"
    by_key: dict[str, Row] = {}

    def row(key: str, label: str, note: str = "") -> Row:
        if key not in by_key:
            by_key[key] = Row(2, key, label, "ms", "lower", note=note)
            rows.append(by_key[key])
        return by_key[key]

    for run_index in range(ctx.runs):
        for rate in RATES:
            tag = f"{rate // 1000}k"
            py = measure_py(ctx, rate, seconds)
            di = measure_di(ctx, rate, seconds)
            di_loop = measure_di_app_loop(ctx, rate, seconds)
            di_sync = measure_di(ctx, rate, seconds, sync=True)
            for stat in ("p50", "p99", "max"):
                r = row(f"latency_{stat}_{tag}", f"latency {stat} @ {tag} msg/s", note_main)
                r.py.append(py[stat])
                r.di.append(di[stat])
            r = row(
                f"latency_p99_{tag}_app_loop",
                f"latency p99 @ {tag} msg/s, async app",
                "alpaca-di: hub acquired inside asyncio.run (its socket on the runtime thread), "
                "async handler on the app's loop",
            )
            r.py.append(py["p99"])
            r.di.append(di_loop["p99"])
            r = row(
                f"latency_p99_{tag}_sync_handler",
                f"latency p99 @ {tag} msg/s, sync handler",
                "alpaca-di: sync app, plain def handler on a worker thread "
                "(alpaca-py only takes async handlers)",
            )
            r.py.append(py["p99"])
            r.di.append(di_sync["p99"])
            ctx.log(
                f"  run {run_index + 1} @ {rate}/s: p50/p99/max ms "
                + "; ".join(
                    f"{name} {m['p50']:.2f}/{m['p99']:.2f}/{m['max']:.2f}"
                    for name, m in (
                        ("py", py),
                        ("di", di),
                        ("di-app-loop", di_loop),
                        ("di-sync", di_sync),
                    )
                )
            )
    for r in rows:
        r.extra["seconds_per_run"] = seconds
    return rows
