"""Figure 7: slow-consumer isolation.

alpaca-di: one hub, 9 fast consumers (async counting handlers, unbounded
queues) of ``quotes=["*"]``, with and without a 10th consumer whose plain
``def`` handler sleeps 10 ms per message (default queue: 10,000,
``drop_oldest``). Measured: the fast consumers' throughput (burst, until all 9
have every message) and their p99 latency at 1,000 msg/s; the slow consumer's
peak queue length (sampled every 5 ms), its estimated memory, and
``stats.dropped``.

alpaca-py has no fan-out: its one handler is the only consumer, so a slow
handler (``await asyncio.sleep(0.01)`` per message) stalls everything. Its
figures: throughput of a burst of 150 messages, and latency at 1,000 msg/s over
0.25 s (the backlog drains at 100 msg/s).
"""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from typing import Any

from benchmarks._common import DATA_PATH, Context, PyStream, Row, di_hub, new_key
from benchmarks.ingest import Finish, counting_handler
from benchmarks.latency import Samples
from benchmarks.latency import measure_py as latency_py

__all__ = ["run"]

_FAST = 9
_SLOW_SECONDS = 0.01


def _slow_handler(message: Any) -> None:
    time.sleep(_SLOW_SECONDS)


async def _slow_async(message: Any) -> None:
    await asyncio.sleep(_SLOW_SECONDS)


class _Peak:
    """Samples a subscription's queue length in a thread."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.sub.stats.queued)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.sub.stats.queued)


def _di_burst(ctx: Context, total: int, *, slow: bool) -> dict[str, float]:
    key = new_key()
    finish = Finish(_FAST)
    with di_hub(ctx.emu, key) as hub:
        fast = [
            hub.subscribe(counting_handler(total, finish), quotes=["*"], maxsize=None)
            for _ in range(_FAST)
        ]
        laggard = hub.subscribe(_slow_handler, quotes=["*"]) if slow else None
        hub.wait_ready(10)
        for sub in fast:
            sub.wait_confirmed(10)
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        ctx.emu.prepare(total)
        peak = _Peak(laggard) if laggard is not None else None
        ctx.emu.burst(key, DATA_PATH, total)
        if not finish.done.wait(300):
            raise TimeoutError("the fast consumers did not get every message")
        result: dict[str, float] = {"rate": finish.rate(total)}
        if laggard is not None and peak is not None:
            result["slow_peak_queued"] = peak.stop()
            stats = laggard.stats
            result["slow_dropped"] = stats.dropped
            result["slow_delivered"] = stats.delivered
            result["slow_maxsize"] = laggard.maxsize or 0
            laggard.close()
        for sub in fast:
            sub.close()
    return result


def _di_latency(ctx: Context, seconds: float, *, slow: bool) -> float:
    key = new_key()
    samples = Samples()
    with di_hub(ctx.emu, key) as hub:
        fast = [hub.subscribe(samples.async_handler(), quotes=["*"]) for _ in range(_FAST)]
        laggard = hub.subscribe(_slow_handler, quotes=["*"]) if slow else None
        hub.wait_ready(10)
        for sub in fast:
            sub.wait_confirmed(10)
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        sent = ctx.emu.pace(key, DATA_PATH, rate=1_000, seconds=seconds)
        samples.wait(sent * _FAST)
        if laggard is not None:
            laggard.close()
        for sub in fast:
            sub.close()
    return samples.summary()["p99"]


def _py_slow_burst(ctx: Context, total: int) -> float:
    key = new_key()
    finish = Finish(1)
    counter = counting_handler(total, finish)

    async def handler(message: Any) -> None:
        await counter(message)
        await asyncio.sleep(_SLOW_SECONDS)

    stream = PyStream(ctx.emu, key)
    stream.stream.subscribe_quotes(handler, "*")
    stream.start()
    try:
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        ctx.emu.burst(key, DATA_PATH, total)
        if not finish.done.wait(120):
            raise TimeoutError("alpaca-py's slow handler never got every message")
        return finish.rate(total)
    finally:
        stream.stop()


def _py_slow_latency(ctx: Context, seconds: float) -> float:
    key = new_key()
    samples = Samples()
    record = samples.async_handler()

    async def handler(message: Any) -> None:
        await record(message)
        await asyncio.sleep(_SLOW_SECONDS)

    stream = PyStream(ctx.emu, key)
    stream.stream.subscribe_quotes(handler, "*")
    stream.start()
    try:
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        sent = ctx.emu.pace(key, DATA_PATH, rate=1_000, seconds=seconds)
        samples.wait(sent, timeout=120)
    finally:
        stream.stop()
    return samples.summary()["p99"]


def _py_fast_burst(ctx: Context, total: int) -> float:
    from benchmarks.ingest import measure_py

    return float(measure_py(ctx, total, raw=False)["rate"])


def _bytes_per_queued_item() -> float:
    """Memory one queued message keeps alive: the parsed model and its tuple."""
    from alpaca_di.protocol import DataStreamProtocol, StreamKind
    from alpaca_di.protocol.models import parse
    from benchmarks._server import quote_frames

    protocol = DataStreamProtocol(StreamKind.STOCK)
    frames = quote_frames(1_000, 100)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = []
    for frame in frames:
        for event in protocol.receive(frame):
            for channel, symbol, raw in getattr(event, "messages", ()):
                kept.append((channel, symbol, parse(channel, symbol, raw)))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # + one deque slot (8 bytes) per item; the list holding them here costs the same
    return (after - before) / len(kept)


def run(ctx: Context) -> list[Row]:
    """Figure 7 rows."""
    total = ctx.scale(50_000, 10_000)
    py_total = ctx.scale(150, 100)
    seconds = ctx.seconds(1.5, 1.0)
    slow_tp = Row(
        7,
        "slow_throughput",
        "slow consumer present: fast path throughput",
        "msg/s",
        "higher",
        note="alpaca-di: 9 fast consumers with a 10 ms/msg consumer beside them; "
        "alpaca-py: its only handler is the slow one",
    )
    fast_tp = Row(
        7,
        "no_slow_throughput",
        "no slow consumer: fast path throughput",
        "msg/s",
        "higher",
        note="alpaca-di: the same 9 fast consumers alone; alpaca-py: one fast handler",
    )
    slow_lat = Row(
        7,
        "slow_latency_p99",
        "slow consumer present: p99 latency @ 1k msg/s",
        "ms",
        "lower",
        note="alpaca-di: the 9 fast consumers; alpaca-py: its slow handler (0.25 s of data)",
    )
    fast_lat = Row(
        7,
        "no_slow_latency_p99",
        "no slow consumer: p99 latency @ 1k msg/s",
        "ms",
        "lower",
        note="alpaca-di: 9 fast consumers; alpaca-py: one fast handler",
    )
    queue = Row(
        7,
        "slow_queue_peak",
        "slow consumer: peak queue (items)",
        "items",
        "lower",
        note="bounded by maxsize (10,000, drop_oldest); alpaca-py has no queue of its own",
    )
    dropped: list[float] = []
    bytes_per_item = _bytes_per_queued_item() + 8
    for run_index in range(ctx.runs):
        with_slow = _di_burst(ctx, total, slow=True)
        without = _di_burst(ctx, total, slow=False)
        slow_tp.di.append(with_slow["rate"])
        fast_tp.di.append(without["rate"])
        slow_tp.py.append(_py_slow_burst(ctx, py_total))
        fast_tp.py.append(_py_fast_burst(ctx, total))
        slow_lat.di.append(_di_latency(ctx, seconds, slow=True))
        fast_lat.di.append(_di_latency(ctx, seconds, slow=False))
        slow_lat.py.append(_py_slow_latency(ctx, 0.25))
        fast_lat.py.append(latency_py(ctx, 1_000, seconds)["p99"])
        queue.di.append(with_slow["slow_peak_queued"])
        dropped.append(with_slow["slow_dropped"])
        ctx.log(
            f"  run {run_index + 1}: throughput with/without slow: di "
            f"{with_slow['rate']:,.0f}/{without['rate']:,.0f} msg/s, py "
            f"{slow_tp.py[-1]:,.0f}/{fast_tp.py[-1]:,.0f}; p99 with/without: di "
            f"{slow_lat.di[-1]:.2f}/{fast_lat.di[-1]:.2f} ms, py "
            f"{slow_lat.py[-1]:.0f}/{fast_lat.py[-1]:.2f} ms; slow queue peak "
            f"{with_slow['slow_peak_queued']:,.0f}, dropped {with_slow['slow_dropped']:,.0f}"
        )
    queue.extra = {
        "dropped": dropped,
        "bytes_per_item_estimate": bytes_per_item,
        "peak_bytes_estimate": [peak * bytes_per_item for peak in queue.di],
        "burst_messages": total,
    }
    return [slow_tp, fast_tp, slow_lat, fast_lat, queue]
