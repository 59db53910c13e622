"""Turn rows into the printed table, the JSON document, the markdown table and the plot."""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks._common import Row

__all__ = [
    "TARGETS",
    "document",
    "machine_info",
    "markdown_table",
    "plot",
    "table",
    "target_lines",
]

_PACKAGES = (
    "alpaca-di",
    "alpaca-py",
    "websockets",
    "msgpack",
    "pydantic",
    "pydantic-core",
    "dependency-injector",
)

# (row key, comparison, threshold, description): the targets, reported, never asserted.
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("ingest_parsed_1", "ratio>=", 2.0, "ingest, 1 consumer, alpaca-py models >= 2x alpaca-py"),
    ("ingest_struct_1", "ratio>=", 5.0, "ingest, 1 consumer, typed structs >= 5x alpaca-py parsed"),
    ("ingest_parsed_10", "ratio>=", 1.5, "ingest, 10 consumers >= 1.5x alpaca-py's single handler"),
    ("ingest_parsed_100", "ratio>=", 0.6, "ingest, 100 consumers >= 0.6x alpaca-py"),
    ("latency_p99_5k", "ratio<=", 0.9, "latency p99 @ 5k msg/s <= 0.9x alpaca-py"),
    ("idle_cpu_no_subscriptions", "di<", 0.01, "idle CPU < 1% of a core (no subscriptions)"),
    ("idle_cpu_quiet_subscriptions", "di<", 0.01, "idle CPU < 1% of a core (quiet subscription)"),
    ("shutdown_5", "di<", 100.0, "closing 5 idle connections < 100 ms"),
    ("scale_tracemalloc", "di<", 80.0, "memory, 10k symbols x 100 subscriptions <= 80 MB"),
    ("big_frame_delay", "di<", 20.0, "delay one 10 MiB frame adds on another hub < 20 ms"),
    ("big_frame_delay_struct", "di<", 20.0, "the same, typed structs < 20 ms"),
    ("startup_import", "di<", 0.25, "import AlpacaContainer, AlpacaSettings <= 0.25 s"),
    ("startup_cli_help", "di<", 0.25, "alpaca-di --help <= 0.25 s"),
    ("failover_handover", "di<=", 500.0, "scale-out clean handover (SIGTERM) <= 500 ms"),
    ("failover_crash", "di<=", 3500.0, "scale-out crash failover (SIGKILL) <= lock TTL + 500 ms"),
)


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, OS, Python and package versions, load, git revision."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = 0
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model or platform.processor(),
        "memory_bytes": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "load_average_start": os.getloadavg(),
        "git": _git(),
    }


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "modified_tracked_files": bool(dirty)}


# ---------------------------------------------------------------------------- formatting


def fmt(value: float | None) -> str:
    """A number in a few significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.1e}"


def _triple(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    if len(summary["runs"]) == 1 or summary["min"] == summary["max"]:
        return fmt(summary["median"])
    return f"{fmt(summary['min'])} / {fmt(summary['median'])} / {fmt(summary['max'])}"


def _ratio(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    if len(summary["runs"]) == 1 or summary["min"] == summary["max"]:
        return f"{fmt(summary['median'])}x"
    return f"{fmt(summary['min'])} / {fmt(summary['median'])} / {fmt(summary['max'])}x"


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        str(row["figure"]),
        row["label"],
        row["unit"],
        _triple(row["alpaca_py"]),
        _triple(row["alpaca_di"]),
        _ratio(row["ratio"]),
        f"{row['better']} is better",
    ]


_HEADERS = [
    "fig",
    "figure",
    "unit",
    "alpaca-py min/med/max",
    "alpaca-di min/med/max",
    "ratio di/py",
    "ratio",
]


def header_lines(doc: dict[str, Any]) -> list[str]:
    """Who, what and how: printed above the table."""
    machine = doc["machine"]
    packages = machine["packages"]
    load = ", ".join(f"{value:.2f}" for value in machine["load_average_start"])
    return [
        f"alpaca-di benchmarks, {doc['mode']} run ({doc['runs']} run(s) per figure), "
        f"{doc['generated_at']}",
        f"machine: {machine['cores']} cores, {machine['cpu_model']}, "
        f"{machine['memory_bytes'] / 2**30:.1f} GiB, {machine['os']}; load avg at start {load}",
        f"python {machine['python']}; alpaca-py {packages.get('alpaca-py')}, "
        f"alpaca-di {packages.get('alpaca-di')}, websockets {packages.get('websockets')}, "
        f"msgpack {packages.get('msgpack')}, pydantic {packages.get('pydantic')}",
        f"setup: {doc['setup']['summary']}",
    ]


def table(doc: dict[str, Any]) -> str:
    """The one plain-text table: every figure on a row."""
    rows = [_cells(row) for row in doc["rows"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADERS)]
    right = {0, 3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    out = [*header_lines(doc), "", line(_HEADERS), line(["-" * w for w in widths])]
    previous = None
    for raw, cells in zip(doc["rows"], rows, strict=True):
        if previous is not None and raw["figure"] != previous:
            out.append("")
        previous = raw["figure"]
        out.append(line(cells))
    out.append("")
    out.append(
        "ratio = alpaca-di / alpaca-py per run pair; the last column says which way is good."
    )
    out.extend(target_lines(doc))
    return "\n".join(out)


def target_lines(doc: dict[str, Any]) -> list[str]:
    """The issue's targets against the medians (reported, never asserted)."""
    lines = ["", "targets (medians):"]
    for item in doc.get("targets", []):
        mark = "met   " if item["met"] else "missed" if item["met"] is False else "n/a   "
        lines.append(f"  {mark} {item['description']}: {item['value']}")
    return lines


def evaluate_targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compare medians with :data:`TARGETS`."""
    by_key = {row["key"]: row for row in rows}
    results = []
    for key, rule, threshold, description in TARGETS:
        row = by_key.get(key)
        met: bool | None = None
        value = "not measured"
        if row is not None:
            if rule.startswith("ratio") and row["ratio"]:
                median = row["ratio"]["median"]
                met = median >= threshold if rule == "ratio>=" else median <= threshold
                value = f"{fmt(median)}x"
            elif rule in ("di<", "di<=") and row["alpaca_di"]:
                median = row["alpaca_di"]["median"]
                met = median < threshold if rule == "di<" else median <= threshold
                value = f"{fmt(median)} {row['unit']}"
        results.append({"key": key, "description": description, "met": met, "value": value})
    return results


def document(
    rows: Sequence[Row],
    *,
    mode: str,
    runs: int,
    machine: dict[str, Any],
    setup: dict[str, Any],
    seconds: float,
    figure_seconds: dict[str, float],
) -> dict[str, Any]:
    """The JSON document of one benchmark run."""
    data = [row.as_dict() for row in rows]
    machine = dict(machine)
    machine["load_average_end"] = os.getloadavg()
    return {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "runs": runs,
        "duration_seconds": round(seconds, 1),
        "figure_seconds": {name: round(value, 1) for name, value in figure_seconds.items()},
        "machine": machine,
        "setup": setup,
        "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
        "rows": data,
        "targets": evaluate_targets(data),
    }


def markdown_table(doc: dict[str, Any]) -> str:
    """The table as GitHub markdown (for docs/benchmarks.md)."""
    out = [
        "| # | figure | unit | alpaca-py | alpaca-di | ratio di/py | better |",
        "|--:|---|---|--:|--:|--:|---|",
    ]
    for row in doc["rows"]:
        cells = _cells(row)
        cells[-1] = row["better"]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------- plot

# Secondary rows left out of the plot (they stay in the table and the JSON).
_NOT_PLOTTED = frozenset(
    f"latency_{stat}_{rate}" for stat in ("p50", "max") for rate in ("1k", "5k")
) | frozenset({"latency_p99_1k_sync_handler", "latency_p99_5k_sync_handler"})


def plot(doc: dict[str, Any], path: Path) -> None:
    """Horizontal bars: alpaca-di's advantage per figure (x, log scale, >1 = better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = []
    for row in doc["rows"]:
        if row["key"] in _NOT_PLOTTED:
            continue
        ratio = row["ratio"]
        if not ratio or ratio["median"] <= 0 or ratio["min"] <= 0:
            continue
        if row["better"] == "higher":
            mid, low, high = ratio["median"], ratio["min"], ratio["max"]
        else:
            mid, low, high = 1 / ratio["median"], 1 / ratio["max"], 1 / ratio["min"]
        items.append((f"{row['figure']}. {row['label']}", mid, low, high))
    if not items:
        return
    items.reverse()
    labels = [item[0] for item in items]
    mids = [item[1] for item in items]
    errors = [
        [item[1] - item[2] for item in items],
        [item[3] - item[1] for item in items],
    ]
    colors = ["#2b8a3e" if mid >= 1 else "#c92a2a" for mid in mids]
    fig, axis = plt.subplots(figsize=(10, 0.32 * len(items) + 1.6))
    axis.barh(labels, mids, color=colors, xerr=errors, capsize=2, error_kw={"lw": 0.8})
    axis.set_xscale("log")
    axis.axvline(1.0, color="black", lw=0.8)
    axis.set_xlabel("alpaca-di advantage over alpaca-py (x, log scale; > 1: alpaca-di better)")
    machine = doc["machine"]
    axis.set_title(
        f"alpaca-di vs alpaca-py {machine['packages'].get('alpaca-py')} on the emulator "
        f"({doc['mode']}, median of {doc['runs']}, bars: min-max)\n"
        f"{machine['cores']} cores {machine['cpu_model']}, {machine['python']}",
        fontsize=9,
    )
    left, right = axis.get_xlim()
    axis.set_xlim(left, right * 10)  # room for the labels
    for index, (mid, high) in enumerate(zip(mids, [item[3] for item in items], strict=True)):
        axis.annotate(
            f"{mid:,.3g}x",
            (max(mid, high), index),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    axis.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
