"""docs/health-and-logging.md matches the health models and the events the code logs.

The field tables must list every field of ``HealthReport`` and ``ConnectionHealth``,
and the event tables may only name events some ``alpaca_di`` module logs; every
event the library logs above debug level must be in them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from alpaca_di.hub.health import ConnectionHealth, HealthReport

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "health-and-logging.md"
PACKAGE = ROOT / "alpaca_di"
_EVENT = re.compile(r"[a-z_]+\.[a-z_]+")
_ROW = re.compile(r"^\|\s*`(?P<name>[a-z_.]+)`\s*\|")
_EVENT_CELL = re.compile(r"^\|(?P<cell>[^|]*)\|")
_LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "msg"})


def _section_rows(heading: str) -> set[str]:
    """The first-column names of the table under ``### heading``."""
    rows: set[str] = set()
    inside = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            inside = line.strip() == f"### {heading}"
            continue
        match = _ROW.match(line)
        if inside and match:
            rows.add(match["name"])
    return rows


def _documented_events() -> set[str]:
    """Every ``component.event`` named in the first cell of a table row."""
    rows: set[str] = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _EVENT_CELL.match(line)
        if match:
            names = re.findall(r"`([^`]+)`", match["cell"])
            rows.update(name for name in names if _EVENT.fullmatch(name))
    return rows


def _logged_events() -> dict[str, tuple[Path, bool]]:
    """Event name -> (module, logged above debug somewhere), for every log call."""
    events: dict[str, tuple[Path, bool]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if not _EVENT.fullmatch(first.value):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            # Some call sites pick the level first: ``log = self._log.warning if ...``.
            if name not in _LEVELS and name not in ("log", "level"):
                continue
            _, above_debug = events.get(first.value, (path, False))
            events[first.value] = (path, above_debug or name != "debug")
    return events


def test_health_report_fields_are_documented() -> None:
    assert _section_rows("HealthReport") == set(HealthReport.model_fields)


def test_connection_health_fields_are_documented() -> None:
    assert _section_rows("ConnectionHealth") == set(ConnectionHealth.model_fields)


def test_documented_events_are_logged_by_the_code() -> None:
    stale = sorted(_documented_events() - set(_logged_events()))
    assert not stale, f"docs/health-and-logging.md names events no module logs: {stale}"


def test_events_above_debug_are_documented() -> None:
    library = {
        event
        for event, (path, above_debug) in _logged_events().items()
        if above_debug and "testing" not in path.parts and not path.name.startswith("_demo")
    }
    missing = sorted(library - _documented_events())
    assert not missing, f"events missing from docs/health-and-logging.md: {missing}"
