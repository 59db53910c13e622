"""The architecture page's module map names every module of the package, and only those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"


def _mapped_modules() -> set[str]:
    text = PAGE.read_text(encoding="utf-8")
    block = text.split("## Module map", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    found: set[str] = set()
    folders: list[str] = []
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        name = match.group(2)
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        elif name.endswith(".py"):
            found.add("/".join([*folders, name]))
    return found


def test_the_module_map_lists_exactly_the_modules_that_exist() -> None:
    actual = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "alpaca_di").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    mapped = _mapped_modules()
    assert sorted(mapped - actual) == [], "named on the architecture page but missing"
    assert sorted(actual - mapped) == [], "modules missing from the architecture page"
