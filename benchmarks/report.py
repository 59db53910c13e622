"""Print the table of a saved run again, as text or markdown (for docs/benchmarks.md).

``python -m benchmarks.report`` reads ``benchmarks/results/latest.json``;
``python -m benchmarks.report benchmarks/results/quick.json --markdown`` another
file, as markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._report import header_lines, markdown_table, table, target_lines

__all__ = ["main"]

_DEFAULT = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> None:
    """Print the table stored in a results JSON file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("path", nargs="?", default=str(_DEFAULT))
    parser.add_argument("--markdown", action="store_true", help="markdown instead of text")
    args = parser.parse_args(argv)
    doc = json.loads(Path(args.path).read_text())
    if args.markdown:
        print("\n".join(f"{line}  " for line in header_lines(doc)))
        print()
        print(markdown_table(doc))
        print("\n".join(target_lines(doc)))
    else:
        print(table(doc))


if __name__ == "__main__":
    main()
