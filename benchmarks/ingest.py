"""Figure 1: ingest throughput, messages per second from first to last message received.

alpaca-py: ``StockDataStream(url_override=..., raw_data=False/True)`` with one async
handler for ``quotes "*"``, ``run()`` in a thread. alpaca-di: a hub (sync mode, so
the connection runs on the runtime thread) with 1, 10 or 100 async-handler
consumers of ``quotes=["*"]``; each consumer must receive every message. The
``struct_1`` row is alpaca-di's typed fast form (``form="struct"``) against
alpaca-py's parsed models, the form it replaces. The
emulator (another process) sends pre-encoded frames of ``batch_size`` quotes as
fast as the client's socket takes them.

Consumers have unbounded queues here (``maxsize=None``) so that nothing is
dropped and every run delivers every message: the figure is the delivery rate.
The CPU rows divide this process's CPU time (``time.process_time()``, every
thread; the emulator is another process) over the burst by the message count:
unlike the rates they barely move when other programs compete for the cores.

The ``floor_100`` row measures no client: the CPU per message of 100 bare
``await handler(message)`` calls in a loop, the least any asyncio fan-out to 100
async handlers can cost in this interpreter. The 100-consumer rows cannot go
below alpaca-di's 1-consumer cost plus that floor.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks._common import (
    DATA_PATH,
    Context,
    PyStream,
    Row,
    di_hub,
    gc_collected,
    new_key,
)

__all__ = ["Finish", "counting_handler", "fanout_floor", "measure_di", "measure_py", "run"]


class Finish:
    """Collects first/last receive times of ``consumers`` counting handlers."""

    def __init__(self, consumers: int) -> None:
        self.left = consumers
        self.first: float | None = None
        self.last = 0.0
        self.done = threading.Event()
        self.kind = ""
        self._lock = threading.Lock()

    def started(self, message: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            if self.first is None or now < self.first:
                self.first = now
                self.kind = type(message).__name__

    def finished(self) -> None:
        now = time.perf_counter()
        with self._lock:
            self.left -= 1
            self.last = max(self.last, now)
            if self.left == 0:
                self.done.set()

    def rate(self, total: int) -> float:
        assert self.first is not None
        return (total - 1) / (self.last - self.first)


def counting_handler(total: int, finish: Finish) -> Callable[[Any], Any]:
    """An async handler that counts; the same shape for both clients."""
    count = 0

    async def handler(message: Any) -> None:
        nonlocal count
        count += 1
        if count == 1:
            finish.started(message)
        if count == total:
            finish.finished()

    return handler


def measure_py(ctx: Context, total: int, *, raw: bool) -> dict[str, Any]:
    """One alpaca-py run: connect, subscribe ``*``, burst, wait for the last message."""
    key = new_key()
    finish = Finish(1)
    stream = PyStream(ctx.emu, key, raw=raw)
    stream.stream.subscribe_quotes(counting_handler(total, finish), "*")
    stream.start()
    try:
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        return _burst(ctx, key, total, finish)
    finally:
        stream.stop()


def measure_di(
    ctx: Context,
    total: int,
    *,
    consumers: int,
    raw: bool,
    sync: bool = False,
    form: str | None = None,
) -> dict[str, Any]:
    """One alpaca-di run with ``consumers`` subscriptions to ``quotes=["*"]``."""
    key = new_key()
    finish = Finish(consumers)
    with di_hub(ctx.emu, key) as hub:
        subs = []
        for _ in range(consumers):
            handler = counting_handler(total, finish)
            if sync:
                handler = _sync_version(handler)
            chosen: Any = form or ("raw" if raw else "model")
            subs.append(hub.subscribe(handler, quotes=["*"], maxsize=None, form=chosen))
        hub.wait_ready(10)
        for sub in subs:
            sub.wait_confirmed(10)
        ctx.emu.wait_quotes(key, DATA_PATH, {"*"})
        result = _burst(ctx, key, total, finish)
        result["dropped"] = sum(sub.stats.dropped for sub in subs)
        for sub in subs:
            sub.close()
        return result


def _sync_version(handler: Callable[[Any], Any]) -> Callable[[Any], None]:
    def sync_handler(message: Any) -> None:
        coro = handler(message)
        try:
            coro.send(None)
        except StopIteration:
            pass

    return sync_handler


def fanout_floor(consumers: int, total: int) -> float:
    """CPU µs per message of ``consumers`` bare ``await handler(message)`` calls (no client)."""
    finish = Finish(consumers)
    handlers = [counting_handler(total, finish) for _ in range(consumers)]
    messages = [object()] * total

    async def fan_out() -> None:
        for message in messages:
            for handler in handlers:
                await handler(message)

    with gc_collected():
        cpu0 = time.process_time()
        asyncio.run(fan_out())
        return (time.process_time() - cpu0) / total * 1e6


def _burst(ctx: Context, key: str, total: int, finish: Finish) -> dict[str, Any]:
    ctx.emu.prepare(total)
    with gc_collected():
        emu_cpu0 = ctx.emu.cpu()
        cpu0 = time.process_time()
        ctx.emu.burst(key, DATA_PATH, total)
        if not finish.done.wait(300):
            raise TimeoutError(f"not every consumer got {total} messages ({finish.left} left)")
        cpu = time.process_time() - cpu0
        emu_cpu = ctx.emu.cpu() - emu_cpu0
    assert finish.first is not None
    elapsed = finish.last - finish.first
    return {
        "rate": finish.rate(total),
        "seconds": elapsed,
        "emulator_cpu": emu_cpu / elapsed if elapsed > 0 else float("nan"),
        "cpu_per_message_us": cpu / total * 1e6,
        "message_type": finish.kind,
    }


def run(ctx: Context) -> list[Row]:
    """Figure 1 rows: rates, then this process's CPU time per message (steadier on a busy box)."""
    total = ctx.scale(200_000, 20_000)
    variants = {  # row suffix -> (label, alpaca-py measurement, alpaca-di measurement)
        "parsed_1": ("parsed, 1 consumer", "py_parsed", "di_parsed"),
        "struct_1": ("typed structs, 1 consumer (vs alpaca-py parsed)", "py_parsed", "di_struct"),
        "raw_1": ("raw dicts, 1 consumer", "py_raw", "di_raw"),
        "parsed_10": ("parsed, 10 consumers", "py_parsed", "di_10"),
        "parsed_100": ("parsed, 100 consumers", "py_parsed", "di_100"),
        "struct_100": ("typed structs, 100 consumers (vs parsed)", "py_parsed", "di_s100"),
    }
    rates = {
        suffix: Row(1, f"ingest_{suffix}", f"ingest {label}", "msg/s", "higher")
        for suffix, (label, _py, _di) in variants.items()
    }
    cpus = {
        suffix: Row(1, f"ingest_cpu_{suffix}", f"ingest {label}: CPU per message", "us", "lower")
        for suffix, (label, _py, _di) in variants.items()
    }
    for suffix, count in (("parsed_10", 10), ("parsed_100", 100), ("struct_100", 100)):
        for row in (rates[suffix], cpus[suffix]):
            row.note = (
                "alpaca-py: its single handler (no fan-out); "
                f"alpaca-di: all {count} consumers get every message"
            )
    emu_cpu: dict[str, list[float]] = {}
    for run_index in range(ctx.runs):
        measured: dict[str, dict[str, Any]] = {
            "py_parsed": measure_py(ctx, total, raw=False),
            "di_parsed": measure_di(ctx, total, consumers=1, raw=False),
            "di_struct": measure_di(ctx, total, consumers=1, raw=False, form="struct"),
            "py_raw": measure_py(ctx, total, raw=True),
            "di_raw": measure_di(ctx, total, consumers=1, raw=True),
            "di_10": measure_di(ctx, total, consumers=10, raw=False),
            "di_100": measure_di(ctx, total, consumers=100, raw=False),
            "di_s100": measure_di(ctx, total, consumers=100, raw=False, form="struct"),
        }
        for name, result in measured.items():
            emu_cpu.setdefault(name, []).append(result["emulator_cpu"])
        for suffix, (_label, py, di) in variants.items():
            rates[suffix].py.append(measured[py]["rate"])
            rates[suffix].di.append(measured[di]["rate"])
            cpus[suffix].py.append(measured[py]["cpu_per_message_us"])
            cpus[suffix].di.append(measured[di]["cpu_per_message_us"])
        ctx.log(
            f"  run {run_index + 1}: "
            + ", ".join(
                f"{name} {result['rate']:,.0f}/s ({result['cpu_per_message_us']:.2f} us CPU/msg)"
                for name, result in measured.items()
            )
        )
    floor = Row(
        1,
        "ingest_cpu_floor_100",
        "ingest floor: 100 bare awaits per message, no client: CPU per message",
        "us",
        "lower",
        note="the least a fan-out to 100 async handlers costs here (alpaca-di alone)",
    )
    floor.di = [fanout_floor(100, total // 10) for _ in range(ctx.runs)]
    rows = [*rates.values(), *cpus.values(), floor]
    for row in rows:
        row.extra["messages"] = total
        row.extra["emulator_cpu_fraction"] = emu_cpu
    return rows
