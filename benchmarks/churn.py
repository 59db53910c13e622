"""Figure 4: subscription churn, adding then removing N symbols one call at a time.

Both clients start connected with ``quotes AAPL``. Then, from the main thread:

* alpaca-py: ``subscribe_quotes(handler, symbol)`` per symbol (each call sends
  the *whole* set and blocks until sent), then ``unsubscribe_quotes(symbol)``.
* alpaca-di: ``sub.add(quotes=[symbol])`` per symbol (deltas, coalesced per
  loop tick), then ``sub.remove(quotes=[symbol])``.

Time: from the first call until the emulator's server-side subscription state
holds all (or none) of the symbols. Bytes: the emulator's ``subscribe_bytes``
counter (size of the subscribe and unsubscribe messages it received).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from benchmarks._common import DATA_PATH, Context, PyStream, Row, di_hub, new_key

__all__ = ["run", "symbols"]


async def _ignore(message: Any) -> None:
    return None


_WAIT = 120.0


def symbols(count: int) -> list[str]:
    """``count`` distinct valid stock symbols (``SYM0001``...)."""
    return [f"SYM{i:04d}" for i in range(1, count + 1)]


def _py(ctx: Context, names: list[str]) -> dict[str, Any]:
    key = new_key()
    stream = PyStream(ctx.emu, key)
    quoted = threading.Event()

    async def on_quote(message: Any) -> None:
        quoted.set()

    stream.stream.subscribe_quotes(on_quote, "AAPL")
    stream.start()
    emu = ctx.emu
    phase = "add"
    try:
        emu.wait_quotes(key, DATA_PATH, {"AAPL"})
        bytes0 = emu.counters(key, DATA_PATH)["subscribe_bytes"]
        started = time.perf_counter()
        for name in names:
            stream.stream.subscribe_quotes(_ignore, name)
        emu.wait_quotes(key, DATA_PATH, len(names) + 1, timeout=_WAIT)
        added = time.perf_counter() - started
        bytes1 = emu.counters(key, DATA_PATH)["subscribe_bytes"]
        phase = "remove"
        started = time.perf_counter()
        for name in names:
            stream.stream.unsubscribe_quotes(name)
        emu.wait_quotes(key, DATA_PATH, {"AAPL"}, timeout=_WAIT)
        removed = time.perf_counter() - started
        bytes2 = emu.counters(key, DATA_PATH)["subscribe_bytes"]
        # alpaca-py reads the server's thousands of acks well after the server sent
        # them; a quote sent now arrives after all of them. Stopping with >= 1024
        # frames unread would hang its close forever (not what this figure measures).
        emu.burst(key, DATA_PATH, 1, symbols=["AAPL"])
        quoted.wait(_WAIT)
    except RuntimeError as exc:  # the server never held the final set: report, go on
        counters = emu.counters(key, DATA_PATH)
        failure = (
            f"{phase}: {exc}; alpaca-py running={stream.stream._running}, "
            f"{len(stream.stream._handlers['quotes'])} quote handlers; server got "
            f"{counters['subscribe_messages']} subscribe / "
            f"{counters['unsubscribe_messages']} unsubscribe messages"
        )
        ctx.log(f"  alpaca-py churn run failed ({failure})")
        return {"failure": failure}
    finally:
        stream.stop()
    return {
        "add_s": added,
        "add_bytes": bytes1 - bytes0,
        "remove_s": removed,
        "remove_bytes": bytes2 - bytes1,
    }


def _di(ctx: Context, names: list[str]) -> dict[str, float]:
    key = new_key()
    emu = ctx.emu
    with di_hub(emu, key) as hub:
        sub = hub.subscribe(_ignore, quotes=["AAPL"])
        hub.wait_ready(10)
        sub.wait_confirmed(10)
        emu.wait_quotes(key, DATA_PATH, {"AAPL"})
        counters = emu.counters(key, DATA_PATH)
        bytes0, messages0 = counters["subscribe_bytes"], counters["subscribe_messages"]
        started = time.perf_counter()
        for name in names:
            sub.add(quotes=[name])
        emu.wait_quotes(key, DATA_PATH, len(names) + 1, timeout=600)
        added = time.perf_counter() - started
        counters = emu.counters(key, DATA_PATH)
        bytes1, messages1 = counters["subscribe_bytes"], counters["subscribe_messages"]
        unsub0 = counters["unsubscribe_messages"]
        started = time.perf_counter()
        for name in names:
            sub.remove(quotes=[name])
        emu.wait_quotes(key, DATA_PATH, {"AAPL"}, timeout=600)
        removed = time.perf_counter() - started
        counters = emu.counters(key, DATA_PATH)
        sub.close()
    return {
        "add_s": added,
        "add_bytes": bytes1 - bytes0,
        "add_messages": messages1 - messages0,
        "remove_s": removed,
        "remove_bytes": counters["subscribe_bytes"] - bytes1,
        "remove_messages": counters["unsubscribe_messages"] - unsub0,
    }


def run(ctx: Context) -> list[Row]:
    """Figure 4 rows."""
    count = ctx.scale(2_000, 500)
    names = symbols(count)
    rows = {
        "add_s": Row(4, "churn_add_time", f"churn: add {count:,} symbols, time", "ms", "lower"),
        "add_bytes": Row(
            4, "churn_add_bytes", f"churn: add {count:,} symbols, bytes", "B", "lower"
        ),
        "remove_s": Row(
            4, "churn_remove_time", f"churn: remove {count:,} symbols, time", "ms", "lower"
        ),
        "remove_bytes": Row(
            4, "churn_remove_bytes", f"churn: remove {count:,} symbols, bytes", "B", "lower"
        ),
    }
    messages: list[dict[str, float]] = []
    failures: list[str] = []
    for run_index in range(ctx.runs):
        py = _py(ctx, names)
        di = _di(ctx, names)
        if "failure" in py:
            failures.append(py["failure"])
        for name, row in rows.items():
            scale = 1000.0 if name.endswith("_s") else 1.0
            if name in py:
                row.py.append(py[name] * scale)
            row.di.append(di[name] * scale)
        messages.append({"add": di["add_messages"], "remove": di["remove_messages"]})
        ctx.log(
            f"  run {run_index + 1}: add py {py.get('add_s', float('nan')):.3f} s / "
            f"{py.get('add_bytes', 0):,} B, di {di['add_s']:.3f} s / {di['add_bytes']:,} B "
            f"in {di['add_messages']} msgs; remove py {py.get('remove_s', float('nan')):.3f} s"
            f" / {py.get('remove_bytes', 0):,} B, di {di['remove_s']:.3f} s / "
            f"{di['remove_bytes']:,} B"
        )
    for row in rows.values():
        row.extra["symbols"] = count
        row.extra["alpaca_di_wire_messages"] = messages
        if failures:
            row.extra["alpaca_py_failed_runs"] = failures
    rows["add_s"].note = "one call per symbol, from the main thread, until the server holds them"
    return list(rows.values())
