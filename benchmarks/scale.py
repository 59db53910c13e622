"""Figure 8: scale, memory of many subscriptions and throughput over many symbols.

Memory: ``S`` symbols x ``N`` subscriptions (full: 10,000 x 100; quick: 2,000 x 20),
all ``quotes``. Each measurement runs in a fresh process (``multiprocessing``
spawn): in a long-lived one, RSS growth mostly shows how much freed memory the
allocator had left over from earlier figures. The child connects first (alpaca-di:
``hub.wait_ready()``; alpaca-py: a stream running with ``quotes AAPL``), takes
its baseline after ``gc.collect()``, makes the ``N`` subscriptions, and is
measured, again after ``gc.collect()``, once the server holds the ``S`` symbols:

* RSS growth (``/proc/self/statm``), every run;
* ``tracemalloc`` current traced memory, first run only (a separate child: it
  slows the subscriptions ~5x and its bookkeeping inflates RSS).

alpaca-py keeps one handler per (channel, symbol): the same ``N`` calls of
``subscribe_quotes(handler_i, *symbols)`` leave one dict of ``S`` entries (the
last handler wins; each call while running re-sends all ``S`` symbols). It does
much less, and the comparison says so.

Throughput: one consumer of 1,000 listed symbols (no ``"*"``), quotes cycling
over those symbols; alpaca-py with ``subscribe_quotes(handler, *symbols)``.
"""

from __future__ import annotations

import gc
import multiprocessing
import time
import tracemalloc
from multiprocessing.connection import Connection
from typing import Any

from benchmarks._common import (
    DATA_PATH,
    SECRET,
    Context,
    PyStream,
    Row,
    di_hub,
    gc_collected,
    new_key,
    quiet_logging,
    rss_bytes,
)
from benchmarks.churn import symbols
from benchmarks.ingest import Finish, counting_handler

__all__ = ["run"]

_WAIT = 300.0


def _handlers(count: int) -> list[Any]:
    def make() -> Any:
        async def handler(message: Any) -> None:
            return None

        return handler

    return [make() for _ in range(count)]


def _memory_child(
    conn: Connection, client: str, url: str, key: str, count: int, subs: int, trace: bool
) -> None:
    """Runs in a fresh process; talks to :func:`_memory` over ``conn``."""
    quiet_logging()
    names = symbols(count)
    handlers = _handlers(subs)
    if client == "alpaca-di":
        from alpaca_di.credentials import Credentials
        from alpaca_di.hub.registry import ConnectionRegistry
        from alpaca_di.protocol import StreamKind

        lease = ConnectionRegistry().acquire(Credentials(key, SECRET), StreamKind.STOCK, url)
        lease.hub.wait_ready(30)
    else:
        import threading

        from alpaca.data.live import StockDataStream

        caught_up = threading.Event()

        async def on_marker(message: Any) -> None:
            caught_up.set()

        stream = StockDataStream(key, SECRET, url_override=url)
        stream.subscribe_quotes(on_marker, "AAPL")
        threading.Thread(target=stream.run, daemon=True).start()
    conn.send("ready")
    conn.recv()  # the server holds the baseline subscription
    gc.collect()
    rss0 = rss_bytes()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    if client == "alpaca-di":
        made = [lease.hub.subscribe(handler, quotes=names) for handler in handlers]
        for sub in made:
            sub.wait_confirmed(_WAIT)
    else:
        for handler in handlers:
            stream.subscribe_quotes(handler, *names)
    conn.send("subscribed")
    conn.recv()  # the server holds every symbol
    elapsed = time.perf_counter() - started
    if client != "alpaca-di":
        # A quote sent after the last ack: once it arrives, alpaca-py has read (and
        # freed) the server's acks, which would otherwise be counted as its state.
        caught_up.wait(_WAIT)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] if trace else 0
    if trace:
        tracemalloc.stop()
    conn.send({"rss": rss_bytes() - rss0, "traced": traced, "seconds": elapsed})
    # No teardown: the process ends, and its sockets with it.


def _memory(ctx: Context, client: str, count: int, subs: int, *, trace: bool) -> dict[str, float]:
    key = new_key()
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    process = spawn.Process(
        target=_memory_child,
        args=(child, client, ctx.emu.data_url(DATA_PATH), key, count, subs, trace),
        daemon=True,
    )
    process.start()
    child.close()

    def expect(what: str) -> Any:
        if not parent.poll(_WAIT):
            raise TimeoutError(f"the {client} memory child never said {what!r}")
        return parent.recv()

    try:
        expect("ready")
        baseline = set() if client == "alpaca-di" else {"AAPL"}
        ctx.emu.wait_quotes(key, DATA_PATH, baseline, timeout=60)
        parent.send("go")
        expect("subscribed")
        ctx.emu.wait_quotes(key, DATA_PATH, count + len(baseline), timeout=_WAIT)
        if client != "alpaca-di":
            ctx.emu.burst(key, DATA_PATH, 1, symbols=["AAPL"])
        parent.send("measure")
        result: dict[str, float] = expect("result")
        return result
    finally:
        parent.close()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def _di_throughput(ctx: Context, names: list[str], total: int) -> float:
    key = new_key()
    finish = Finish(1)
    with di_hub(ctx.emu, key) as hub:
        sub = hub.subscribe(counting_handler(total, finish), quotes=names, maxsize=None)
        hub.wait_ready(10)
        sub.wait_confirmed(30)
        ctx.emu.wait_quotes(key, DATA_PATH, len(names))
        ctx.emu.prepare(total, symbols=names)
        with gc_collected():
            ctx.emu.burst(key, DATA_PATH, total, symbols=names)
            if not finish.done.wait(300):
                raise TimeoutError("alpaca-di did not get every message")
        sub.close()
    return finish.rate(total)


def _py_throughput(ctx: Context, names: list[str], total: int) -> float:
    key = new_key()
    finish = Finish(1)
    stream = PyStream(ctx.emu, key)
    stream.stream.subscribe_quotes(counting_handler(total, finish), *names)
    stream.start()
    try:
        ctx.emu.wait_quotes(key, DATA_PATH, len(names))
        ctx.emu.prepare(total, symbols=names)
        with gc_collected():
            ctx.emu.burst(key, DATA_PATH, total, symbols=names)
            if not finish.done.wait(300):
                raise TimeoutError("alpaca-py did not get every message")
    finally:
        stream.stop()
    return finish.rate(total)


def run(ctx: Context) -> list[Row]:
    """Figure 8 rows."""
    count = ctx.scale(10_000, 2_000)
    subs = ctx.scale(100, 20)
    label = f"{count:,} symbols x {subs} subscriptions"
    rss = Row(
        8,
        "scale_rss",
        f"memory (RSS) {label}",
        "MB",
        "lower",
        note="alpaca-py keeps 1 handler per symbol (the last one wins): far less state",
    )
    traced = Row(8, "scale_tracemalloc", f"memory (tracemalloc) {label}", "MB", "lower")
    throughput = Row(
        8, "scale_throughput_1000", "throughput, 1,000 listed symbols", "msg/s", "higher"
    )
    total = ctx.scale(100_000, 20_000)
    listed = symbols(1_000)
    seconds: dict[str, list[float]] = {"alpaca_py": [], "alpaca_di": []}
    for run_index in range(ctx.runs):
        py = _memory(ctx, "alpaca-py", count, subs, trace=False)
        di = _memory(ctx, "alpaca-di", count, subs, trace=False)
        rss.py.append(py["rss"] / 1e6)
        rss.di.append(di["rss"] / 1e6)
        seconds["alpaca_py"].append(py["seconds"])
        seconds["alpaca_di"].append(di["seconds"])
        if run_index == 0:
            traced.py.append(_memory(ctx, "alpaca-py", count, subs, trace=True)["traced"] / 1e6)
            traced.di.append(_memory(ctx, "alpaca-di", count, subs, trace=True)["traced"] / 1e6)
        throughput.py.append(_py_throughput(ctx, listed, total))
        throughput.di.append(_di_throughput(ctx, listed, total))
        ctx.log(
            f"  run {run_index + 1}: RSS py {rss.py[-1]:.1f} MB di {rss.di[-1]:.1f} MB "
            f"(subscribe+confirm py {py['seconds']:.2f} s, di {di['seconds']:.2f} s); "
            f"1,000 symbols py {throughput.py[-1]:,.0f}/s di {throughput.di[-1]:,.0f}/s"
        )
    traced.extra["runs"] = "first run only"
    for row in (rss, traced):
        row.extra["symbols"] = count
        row.extra["subscriptions"] = subs
        row.extra["subscribe_seconds"] = seconds
    throughput.extra["messages"] = total
    return [rss, traced, throughput]
