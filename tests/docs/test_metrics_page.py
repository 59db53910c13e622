"""docs/metrics.md documents every metric alpaca-di can emit, and only those.

The reference table's rows (name, type, labels) must match ``metric_names()`` and
the labels of :data:`~alpaca_di.providers.metrics.METRICS`; the integration tests
check that a scrape emits exactly ``metric_names()``.
"""

from __future__ import annotations

import re
from pathlib import Path

from alpaca_di.providers.metrics import CONNECTION_LABELS, LATENCY_METRIC, METRICS, metric_names

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "metrics.md"
_ROW = re.compile(
    r"^\|\s*`(?P<name>alpaca_di_[a-z_]+)`\s*\|\s*(?P<type>\w+)\s*\|(?P<labels>[^|]*)\|"
)


def _reference() -> dict[str, tuple[str, tuple[str, ...]]]:
    text = PAGE.read_text(encoding="utf-8").split("## Reference", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        match = _ROW.match(line)
        if match:
            assert match["name"] not in rows, f"{match['name']} documented twice"
            labels = tuple(re.findall(r"`([a-z_]+)`", match["labels"]))
            rows[match["name"]] = (match["type"], labels)
    return rows


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    documented = {name: kind for name, (kind, _labels) in _reference().items()}
    assert documented == metric_names()


def test_the_documented_labels_are_the_labels_of_each_metric() -> None:
    reference = _reference()
    for spec in METRICS:
        assert reference[spec.exposed][1] == spec.labels, spec.name
    assert reference[LATENCY_METRIC][1] == CONNECTION_LABELS[:2]


def test_every_label_is_explained() -> None:
    text = PAGE.read_text(encoding="utf-8").split("## Labels", 1)[1].split("\n## ", 1)[0]
    explained = set(re.findall(r"^\|\s*`([a-z_]+)`", text, flags=re.M))
    used = {label for spec in METRICS for label in spec.labels}
    assert used == explained
