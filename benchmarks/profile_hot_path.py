"""Profile alpaca-di's (or alpaca-py's) ingest hot path with cProfile.

Not part of ``make bench``: a tool for finding where the time goes. The client
runs on this process's main thread (alpaca-di: hub acquired inside
``asyncio.run``; alpaca-py: ``_run_forever()`` on the same kind of loop), so
cProfile sees the reader, the fan-out and every consumer. The emulator runs in
its own process, as in the benchmarks::

    python -m benchmarks.profile_hot_path --consumers 10 --messages 100000
    python -m benchmarks.profile_hot_path --client alpaca-py --raw
    python -m benchmarks.profile_hot_path --consumers 1 --latency 5000   # paced, not a burst

``--out FILE`` also writes the raw ``pstats`` data (for snakeviz and friends).
cProfile charges the garbage collector's work to whatever function happened to
allocate, so the collections are counted and timed separately (``gc.callbacks``)
and printed above the table.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import time
from typing import Any

from benchmarks._common import DATA_PATH, SECRET, new_key, quiet_logging
from benchmarks._server import EmulatorProcess
from benchmarks.ingest import Finish, counting_handler

__all__ = ["main"]


async def _profile_di(
    emu: EmulatorProcess, args: argparse.Namespace, profiler: cProfile.Profile
) -> float:
    from alpaca_di.credentials import Credentials
    from alpaca_di.hub.registry import ConnectionRegistry
    from alpaca_di.protocol import StreamKind

    key = new_key("PKPROF")
    registry = ConnectionRegistry()
    lease = registry.acquire(Credentials(key, SECRET), StreamKind.STOCK, emu.data_url(DATA_PATH))
    hub = lease.hub
    finish = Finish(args.consumers)
    total = args.messages
    subs = [
        hub.subscribe(counting_handler(total, finish), quotes=["*"], maxsize=None, raw=args.raw)
        for _ in range(args.consumers)
    ]
    await hub.ready(10)
    for sub in subs:
        await sub.confirmed(10)
    await asyncio.to_thread(emu.wait_quotes, key, DATA_PATH, {"*"})
    elapsed = await _drive(emu, key, args, finish, profiler)
    for sub in subs:
        sub.close()
    await lease.arelease()
    return elapsed


async def _profile_py(
    emu: EmulatorProcess, args: argparse.Namespace, profiler: cProfile.Profile
) -> float:
    from alpaca.data.live import StockDataStream

    key = new_key("PKPROF")
    finish = Finish(1)
    stream = StockDataStream(key, SECRET, raw_data=args.raw, url_override=emu.data_url(DATA_PATH))
    stream.subscribe_quotes(counting_handler(args.messages, finish), "*")
    task = asyncio.get_running_loop().create_task(stream._run_forever())
    await asyncio.to_thread(emu.wait_quotes, key, DATA_PATH, {"*"})
    elapsed = await _drive(emu, key, args, finish, profiler)
    await stream.stop_ws()
    await asyncio.to_thread(emu.wake, DATA_PATH, key)
    await asyncio.wait_for(task, 10)
    return elapsed


async def _drive(
    emu: EmulatorProcess,
    key: str,
    args: argparse.Namespace,
    finish: Finish,
    profiler: cProfile.Profile,
) -> float:
    if args.latency:
        seconds = args.messages / args.latency
        profiler.enable()
        started = time.perf_counter()
        await asyncio.to_thread(emu.pace, key, DATA_PATH, rate=args.latency, seconds=seconds)
        await asyncio.sleep(0.2)
        profiler.disable()
        return time.perf_counter() - started
    emu.prepare(args.messages)
    profiler.enable()
    started = time.perf_counter()
    await asyncio.to_thread(emu.burst, key, DATA_PATH, args.messages)
    while not finish.done.is_set():
        await asyncio.sleep(0.01)
    profiler.disable()
    return time.perf_counter() - started


class _GcClock:
    """A ``gc.callbacks`` hook: collections and CPU seconds per generation."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            generation = info["generation"]
            self.count[generation] += 1
            self.seconds[generation] += time.process_time() - self._started

    def summary(self) -> str:
        return ", ".join(
            f"gen{gen} {self.count[gen]} x ({self.seconds[gen] * 1000:.0f} ms CPU)"
            for gen in range(3)
        )


def main(argv: list[str] | None = None) -> None:
    """Run one profiled ingest and print the top functions."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_hot_path")
    parser.add_argument("--client", choices=("alpaca-di", "alpaca-py"), default="alpaca-di")
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--raw", action="store_true")
    parser.add_argument("--latency", type=float, default=0.0, help="paced rate (msg/s), 0: burst")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    quiet_logging()
    profiler = cProfile.Profile()
    collections = _GcClock()
    with EmulatorProcess() as emu:
        runner: Any = _profile_di if args.client == "alpaca-di" else _profile_py
        gc.collect()
        gc.callbacks.append(collections)
        try:
            elapsed = asyncio.run(runner(emu, args, profiler))
        finally:
            gc.callbacks.remove(collections)
    print(
        f"{args.client}: {args.messages} messages, {args.consumers} consumer(s), "
        f"{'raw' if args.raw else 'parsed'}: {elapsed:.3f} s under the profiler"
    )
    print(f"garbage collections during the run: {collections.summary()}")
    if args.out:
        profiler.dump_stats(args.out)
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats(args.sort).print_stats(args.top)
    print(buffer.getvalue())


if __name__ == "__main__":
    main()
