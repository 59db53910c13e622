"""Figure 6: first use (connect, authenticate, first price) and each use afterwards.

The emulator generates synthetic quotes (and trades) at 1,000 per second per
connection for whatever is subscribed, so a first price follows a subscription
within a few milliseconds on both clients.

alpaca-di, a fresh :class:`~alpaca_di.containers.AlpacaContainer` per run:

* first price: ``container.pricing_service()`` + ``track("AAPL")`` +
  ``wait_for_price("AAPL")`` (resolves the stock hub, connects, authenticates,
  subscribes, parses the first quote);
* connect: ``container.stock_stream().wait_ready()`` on another fresh container;
* afterwards: one more ``container.pricing_service()`` resolution (the shared
  service, no new socket), averaged over 1,000.

alpaca-py has no sharing, so every component that needs prices builds its own
stream: construct ``StockDataStream``, ``subscribe_quotes(handler, "AAPL")``,
``run()`` in a thread, until the first quote arrives (first price and
"afterwards" are the same operation; "afterwards" is a second stream, after the
first one stopped) or until the server counts the session as authenticated
(connect).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks._common import DATA_PATH, Context, PyStream, Row, new_key
from benchmarks.shutdown import container

__all__ = ["run"]

_RESOLUTIONS = 1_000


def _py_first_quote(ctx: Context) -> float:
    got = threading.Event()

    async def handler(message: Any) -> None:
        got.set()

    started = time.perf_counter()
    stream = PyStream(ctx.emu, new_key())
    stream.stream.subscribe_quotes(handler, "AAPL")
    stream.start()
    try:
        if not got.wait(30):
            raise TimeoutError("alpaca-py got no quote within 30 s")
        return time.perf_counter() - started
    finally:
        stream.stop()


def _py_connect(ctx: Context) -> float:
    async def handler(message: Any) -> None:
        return None

    key = new_key()
    started = time.perf_counter()
    stream = PyStream(ctx.emu, key)
    stream.stream.subscribe_quotes(handler, "AAPL")
    stream.start()
    try:
        ctx.emu.wait_open(key, DATA_PATH, 1)
        return time.perf_counter() - started
    finally:
        stream.stop()


def _di(ctx: Context) -> dict[str, float]:
    app = container(ctx, new_key())
    try:
        started = time.perf_counter()
        pricing = app.pricing_service()
        pricing.track("AAPL")
        pricing.wait_for_price("AAPL", timeout=30)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(_RESOLUTIONS):
            app.pricing_service()
        each = (time.perf_counter() - started) / _RESOLUTIONS
    finally:
        app.shutdown_resources()
    app = container(ctx, new_key())
    try:
        started = time.perf_counter()
        app.stock_stream().wait_ready(30)
        connect = time.perf_counter() - started
    finally:
        app.shutdown_resources()
    return {"first": first, "each": each, "connect": connect}


def run(ctx: Context) -> list[Row]:
    """Figure 6 rows."""
    first = Row(
        6,
        "first_use_price",
        "first use: resolve + connect + first price",
        "ms",
        "lower",
        note="alpaca-di: pricing_service() + track + wait_for_price; "
        "alpaca-py: new StockDataStream + subscribe + run() until the first quote",
    )
    connect = Row(
        6,
        "first_use_connect",
        "first use: resolve + connect + auth",
        "ms",
        "lower",
        note="alpaca-di: stock_stream().wait_ready(); alpaca-py: new stream + subscribe + "
        "run() until the server has the authenticated session",
    )
    each = Row(
        6,
        "steady_resolution",
        "each use afterwards",
        "ms",
        "lower",
        note="alpaca-di: one more pricing_service() resolution (shared); "
        "alpaca-py: another new stream until its first quote (no sharing)",
    )
    ctx.emu.set_rate(1_000)
    try:
        for run_index in range(ctx.runs):
            di = _di(ctx)
            first.py.append(_py_first_quote(ctx) * 1000)
            each.py.append(_py_first_quote(ctx) * 1000)
            connect.py.append(_py_connect(ctx) * 1000)
            first.di.append(di["first"] * 1000)
            each.di.append(di["each"] * 1000)
            connect.di.append(di["connect"] * 1000)
            ctx.log(
                f"  run {run_index + 1}: first price py {first.py[-1]:.1f} ms di "
                f"{first.di[-1]:.1f} ms; connect py {connect.py[-1]:.1f} ms di "
                f"{connect.di[-1]:.1f} ms; afterwards py {each.py[-1]:.1f} ms di "
                f"{each.di[-1] * 1000:.1f} µs"
            )
    finally:
        ctx.emu.set_rate(0)
    return [first, connect, each]
