"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--json PATH] [--runs N]``.

Runs every figure (or the named ones) against one emulator process, prints one
table (progress goes to stderr), and writes:

* a full run: ``benchmarks/results/latest.json`` and ``benchmarks/results/benchmarks.png``,
  copied to ``docs/img/benchmarks.png``;
* a quick run (``--quick``, the CI smoke test): ``benchmarks/results/quick.json`` and
  ``benchmarks/results/quick.png``;
* with ``--only``: nothing unless ``--json PATH`` is given (a partial run must not
  replace the full results).

Timings are printed and recorded, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import FIGURES
from benchmarks._common import Context, PyStream, Row, di_hub, new_key, quiet_logging
from benchmarks._report import document, machine_info, markdown_table, plot, table
from benchmarks._server import EmulatorProcess
from benchmarks.shutdown import container as container_for

_ROOT = Path(__file__).resolve().parent.parent
_RESULTS = _ROOT / "benchmarks" / "results"
_DOCS_IMAGE = _ROOT / "docs" / "img" / "benchmarks.png"

_SETUP = {
    "summary": (
        "emulator in its own process (multiprocessing spawn), permessage-deflate off, "
        "100 quotes per frame; clients run one at a time in this process, interleaved "
        "run by run; ratio = alpaca-di / alpaca-py"
    ),
    "emulator": {"process": "separate (spawn)", "batch_size": 100, "compression": False},
    "alpaca_py": "StockDataStream(url_override=...), run() in a thread, async handlers",
    "alpaca_di": (
        "ConnectionRegistry().acquire(...) (sync mode: the runtime thread) unless stated; "
        "figures 5 and 6 through AlpacaContainer"
    ),
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _select(only: str | None) -> list[str]:
    if not only:
        return list(FIGURES)
    chosen = []
    for item in only.split(","):
        name = item.strip()
        if name.isdigit() and 1 <= int(name) <= len(FIGURES):
            name = list(FIGURES)[int(name) - 1]
        if name not in FIGURES:
            raise SystemExit(
                f"unknown figure {item!r}; choose from {', '.join(FIGURES)} (or 1-{len(FIGURES)})"
            )
        chosen.append(name)
    return chosen


def _warm_up(emu: EmulatorProcess) -> None:
    """Start both clients (and a container) once, so no figure pays for first imports."""

    async def ignore(message: Any) -> None:
        return None

    key = new_key("PKWARM")
    stream = PyStream(emu, key)
    stream.stream.subscribe_quotes(ignore, "AAPL")
    stream.start()
    emu.wait_quotes(key, "/v2/iex", {"AAPL"})
    stream.stop()
    key = new_key("PKWARM")
    with di_hub(emu, key) as hub:
        sub = hub.subscribe(ignore, quotes=["AAPL"])
        hub.wait_ready(10)
        sub.wait_confirmed(10)
        sub.close()
    app = container_for(Context(emu=emu), new_key("PKWARM"))
    app.pricing_service()
    app.stock_stream().wait_ready(10)
    app.shutdown_resources()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="alpaca-di vs alpaca-py on the emulator: one table, JSON and a plot.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run (< 1 min)")
    parser.add_argument(
        "--only",
        metavar="NAME",
        help=f"comma-separated figures: {', '.join(FIGURES)} or 1-{len(FIGURES)}",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results here")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (3 full, 1 quick)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args(argv)
    names = _select(args.only)
    runs = args.runs or (1 if args.quick else 3)
    mode = "quick" if args.quick else "full"

    quiet_logging()
    machine = machine_info()
    started = time.perf_counter()
    rows: list[Row] = []
    figure_seconds: dict[str, float] = {}
    with EmulatorProcess() as emu:
        ctx = Context(emu=emu, quick=args.quick, runs=runs, log=_log)
        _warm_up(emu)
        for name in names:
            module = importlib.import_module(f"benchmarks.{FIGURES[name]}")
            _log(f"figure {list(FIGURES).index(name) + 1}: {name}")
            figure_started = time.perf_counter()
            rows.extend(module.run(ctx))
            figure_seconds[name] = time.perf_counter() - figure_started
            _log(f"  ({figure_seconds[name]:.1f} s)")
    elapsed = time.perf_counter() - started
    doc = document(
        rows,
        mode=mode,
        runs=runs,
        machine=machine,
        setup=_SETUP,
        seconds=elapsed,
        figure_seconds=figure_seconds,
    )
    print(table(doc))
    if args.markdown:
        print()
        print(markdown_table(doc))
    print(f"\n{len(rows)} rows in {elapsed:.0f} s")

    json_path: Path | None = Path(args.json) if args.json else None
    if json_path is None and not args.only:
        json_path = _RESULTS / ("quick.json" if args.quick else "latest.json")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {json_path}")
        image = json_path.with_suffix(".png")
        if json_path == _RESULTS / "latest.json":
            image = _RESULTS / "benchmarks.png"
        try:
            plot(doc, image)
        except Exception as exc:  # a plot must never fail the run
            print(f"plot failed: {type(exc).__name__}: {exc}")
        else:
            print(f"wrote {image}")
            if image == _RESULTS / "benchmarks.png":
                _DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image, _DOCS_IMAGE)
                print(f"wrote {_DOCS_IMAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
