"""A downstream project's mypy sees alpaca-di's types through ``make install``.

``make install`` installs the project in setuptools' ``compat`` editable mode
(a ``.pth`` path entry), the one static checkers can follow; the default mode's
import hook is invisible to them, so a downstream ``import alpaca_di`` would be
"missing library stubs" and every type ``Any``. This runs ``mypy --strict`` in a
temporary directory outside the repository on a tiny file that uses the public
API correctly once and wrongly once: only the wrong use may be reported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DOWNSTREAM = """\
from alpaca_di import AlpacaContainer, PricingService, ServiceClosedError


def latest(pricing: PricingService) -> float | None:
    return pricing.price("AAPL")


def closed_message(error: ServiceClosedError) -> str:
    return error.service


container = AlpacaContainer()
wrong: int = latest(container.pricing_service())
"""


def test_mypy_in_a_downstream_project_sees_alpaca_di_types(tmp_path: Path) -> None:
    project = tmp_path / "downstream"
    project.mkdir()
    assert ROOT not in project.parents
    (project / "app.py").write_text(DOWNSTREAM, encoding="utf-8")
    (project / "mypy.ini").write_text(
        "[mypy]\nstrict = True\n\n[mypy-alpaca.*,dependency_injector.*,msgpack.*]\n"
        "ignore_missing_imports = True\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            "app.py",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert "alpaca_di" not in " ".join(e for e in errors if "import" in e), result.stdout
    assert len(errors) == 1, result.stdout + result.stderr
    assert errors[0].startswith("app.py:13: error: Incompatible types in assignment")
    assert '"float | None"' in errors[0], errors[0]
