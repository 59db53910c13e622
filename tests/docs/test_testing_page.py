"""docs/testing.md: the async example says what it needs, and its marked form runs as shown.

The example must not silently depend on this repository's ``asyncio_mode = "auto"``:
the page names the setting and shows ``@pytest.mark.asyncio``, and the example,
copied into a project in pytest-asyncio's default strict mode, passes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
_BLOCK = re.compile(r"```python\n(?P<code>.*?)```", re.S)


def _async_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("### Async tests")
    end = text.index("\n## ", start)
    return text[start:end]


def test_the_async_section_names_auto_mode_and_the_marker() -> None:
    section = _async_section()
    assert 'asyncio_mode = "auto"' in section
    assert "@pytest.mark.asyncio" in section


def test_the_async_example_passes_in_strict_mode_outside_this_repository(tmp_path: Path) -> None:
    [code] = [m["code"] for m in _BLOCK.finditer(_async_section())]
    (tmp_path / "test_async_example.py").write_text(code, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=strict",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1:] or [result.stderr]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in summary[0], summary
