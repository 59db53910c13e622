"""Figure 11: start-up, the wall time of a fresh interpreter importing what an app imports.

Each measurement is one new process (``python -c ...`` or the ``alpaca-di``
script), timed from spawn to exit, so it includes the interpreter's own start:
``python -c pass`` is measured in the same run and every figure is also given
as a ratio to it (``extra``). alpaca-di: ``from alpaca_di import AlpacaContainer,
AlpacaSettings`` (alpaca-py and pandas load with the first hub, not here) and
``alpaca-di --help``. alpaca-py: ``from alpaca.data.live import StockDataStream``
and its ``TradingClient``, what a streaming app of its imports.

The floor under alpaca-di's import is dependency-injector's ``containers``
module (whose ``wiring`` imports FastAPI when it is installed) and
pydantic-settings; it is measured too (``floor_s``).

Every command runs once unmeasured first, with ``PYTHONDONTWRITEBYTECODE``
removed from its environment, so the measured runs find their bytecode cached,
as an installed package does (pip compiles it). Without that, a checkout run
with that variable set (as some CI images do) recompiles alpaca-di's ~125
modules at every start, which is not what an application pays.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import Context, Row

__all__ = ["run"]

_CONTAINER = "from alpaca_di import AlpacaContainer, AlpacaSettings"
_ALPACA_PY = (
    "from alpaca.data.live import StockDataStream\nfrom alpaca.trading.client import TradingClient"
)
_FLOOR = "import dependency_injector.containers, pydantic_settings"


_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
_WARM: set[tuple[str, ...]] = set()  # commands that ran once already (bytecode written)


def _seconds(argv: list[str]) -> float:
    if tuple(argv) not in _WARM:
        subprocess.run(argv, check=True, capture_output=True, timeout=120, env=_ENV)
        _WARM.add(tuple(argv))
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=120, env=_ENV)
    return time.perf_counter() - start


def _python(code: str) -> float:
    return _seconds([sys.executable, "-c", code])


def _cli() -> float:
    script = Path(sys.executable).with_name("alpaca-di")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "alpaca_di"]
    return _seconds([*argv, "--help"])


def run(ctx: Context) -> list[Row]:
    """Figure 11 rows."""
    imports = Row(
        11,
        "startup_import",
        "start-up: import the container and settings",
        "s",
        "lower",
        note=f"alpaca-di: `{_CONTAINER}`; alpaca-py: StockDataStream and TradingClient",
    )
    cli = Row(
        11,
        "startup_cli_help",
        "start-up: `alpaca-di --help`",
        "s",
        "lower",
        note="alpaca-di alone (alpaca-py has no command line)",
    )
    baseline: list[float] = []
    floor: list[float] = []
    repeats = 1 if ctx.quick else 3  # per run; the run's figure is their median
    for _ in range(ctx.runs):
        passes = [_python("pass") for _ in range(repeats)]
        baseline.append(statistics.median(passes))
        floor.append(statistics.median(_python(_FLOOR) for _ in range(repeats)))
        imports.di.append(statistics.median(_python(_CONTAINER) for _ in range(repeats)))
        imports.py.append(statistics.median(_python(_ALPACA_PY) for _ in range(repeats)))
        cli.di.append(statistics.median(_cli() for _ in range(repeats)))
        ctx.log(
            f"  start-up: pass {baseline[-1]:.3f} s, floor {floor[-1]:.3f} s, "
            f"container {imports.di[-1]:.3f} s, alpaca-py {imports.py[-1]:.3f} s, "
            f"--help {cli.di[-1]:.3f} s"
        )
    for row in (imports, cli):
        row.extra["python_pass_s"] = baseline
        row.extra["floor_s"] = floor
        row.extra["ratio_to_python_pass"] = [
            round(value / base, 1) for value, base in zip(row.di, baseline, strict=True)
        ]
    return [imports, cli]
