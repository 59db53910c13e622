"""Figure 9: the delay one huge frame on one hub adds to messages on another hub.

Two hubs of one account share the runtime's loop: ``/v2/iex`` with a typed
subscription to every quote (``overflow="conflate"``, so each message is still
parsed into an alpaca-py model), and ``/v2/sip`` with one async handler. The
emulator process sends one frame of 150,000 quotes (≈10.5 MiB) to the first,
then quotes stamped with their send time to the second at 200 a second for 2 s.
The figure is how long the big frame held the shared loop at worst: the
largest lag of a 1 ms ticker task on that loop (every message of any other hub
waits at most that long); the probes' own worst latency, which also holds the
emulator's time to compress and send 10 MiB, is kept as ``probe_worst_ms``.
alpaca-di alone: alpaca-py refuses frames over 1 MiB. A second row does the
same with the flood consumer in the typed fast form (``form="struct"``).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

from benchmarks._common import SECRET, Context, Row, gc_collected, latency_ns, new_key

__all__ = ["run"]

BIG = 150_000
RATE, SECONDS = 200.0, 2.0


async def _ticker(lags: list[float], stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - before - 0.001)


def _measure(ctx: Context, count: int, form: Any = "model") -> tuple[float, float]:
    from alpaca_di.credentials import Credentials
    from alpaca_di.hub.registry import ConnectionRegistry
    from alpaca_di.protocol import StreamKind

    key = new_key()
    registry = ConnectionRegistry()
    creds = Credentials(key, SECRET)
    big = registry.acquire(creds, StreamKind.STOCK, ctx.emu.data_url("/v2/iex")).hub
    other = registry.acquire(creds, StreamKind.STOCK, ctx.emu.data_url("/v2/sip")).hub
    latencies: list[int] = []
    lock = threading.Lock()

    async def on_probe(message: Any) -> None:
        latency = latency_ns(message.timestamp, time.time_ns())
        with lock:
            latencies.append(latency)

    try:
        flood = big.subscribe(quotes=["*"], overflow="conflate", form=form)
        probe = other.subscribe(on_probe, quotes=["PROBE"])
        flood.wait_confirmed(10)
        probe.wait_confirmed(10)
        lags: list[float] = []
        stop = threading.Event()
        pauses: list[float] = []
        started: list[float] = []

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started.append(time.perf_counter())
            elif started and info.get("generation") == 2:
                pauses.append(time.perf_counter() - started[-1])

        ticking = asyncio.run_coroutine_threadsafe(_ticker(lags, stop), big.loop)
        with gc_collected():  # the previous run's garbage is not this run's collection
            gc.callbacks.append(on_gc)
            try:
                sent = ctx.emu.big_frame(
                    key, "/v2/iex", "/v2/sip", count, rate=RATE, seconds=SECONDS
                )
            finally:
                gc.callbacks.remove(on_gc)
        ctx.log(
            f"  full collections during the frame: {len(pauses)}, longest "
            f"{max(pauses, default=0) * 1e3:.0f} ms"
        )
        deadline = time.monotonic() + 30
        while len(latencies) < sent and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        stop.set()
        ticking.result(10)
        flood.close()
        probe.close()
        return max(lags) * 1e3, max(latencies) / 1e6
    finally:
        registry.close_all()


def run(ctx: Context) -> list[Row]:
    """Figure 9 rows."""
    count = ctx.scale(BIG, BIG // 10)
    row = Row(
        9,
        "big_frame_delay",
        f"one {count:,}-quote frame: worst delay on another hub",
        "ms",
        "lower",
        note="alpaca-di alone (alpaca-py refuses frames over 1 MiB): the shared loop's "
        "worst lag while the big frame is parsed in slices; aim < 20 ms",
    )
    fast = Row(
        9,
        "big_frame_delay_struct",
        f"one {count:,}-quote frame, typed structs: worst delay on another hub",
        "ms",
        "lower",
        note="as above, the flood consumer with form='struct' (msgspec structs the "
        "garbage collector does not track; no dict built); aim < 20 ms",
    )
    probes: dict[str, list[float]] = {"model": [], "struct": []}
    for _ in range(ctx.runs):
        for form, target in (("model", row), ("struct", fast)):
            lag, probe = _measure(ctx, count, form)
            target.di.append(lag)
            probes[form].append(probe)
            ctx.log(
                f"  big frame ({form}): loop lag {lag:.1f} ms, worst probe latency {probe:.1f} ms"
            )
    row.extra["probe_worst_ms"] = probes["model"]
    fast.extra["probe_worst_ms"] = probes["struct"]
    return [row, fast]
