"""Print the table of a saved run again, as text or markdown (for docs/benchmarks.md).

``python -m benchmarks.report`` reads ``benchmarks/results/latest.json``;
``python -m benchmarks.report benchmarks/results/quick.json --markdown`` another
file, as markdown; ``--plot PNG`` draws its plot again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._report import header_lines, markdown_table, plot, table

__all__ = ["main"]

_DEFAULT = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> None:
    """Print the table stored in a results JSON file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("path", nargs="?", default=str(_DEFAULT))
    parser.add_argument("--markdown", action="store_true", help="markdown instead of text")
    parser.add_argument("--plot", metavar="PNG", help="also draw the plot into this file")
    args = parser.parse_args(argv)
    doc = json.loads(Path(args.path).read_text())
    if args.plot:
        plot(doc, Path(args.plot))
    if args.markdown:
        print("\n".join(f"{line}  " for line in header_lines(doc)))
        print()
        print(markdown_table(doc))
        print("\nTargets (medians, reported, never asserted):\n")
        for item in doc.get("targets", []):
            mark = {True: "met", False: "missed", None: "n/a"}[item["met"]]
            print(f"- {mark}: {item['description']}: {item['value']}")
    else:
        print(table(doc))


if __name__ == "__main__":
    main()
