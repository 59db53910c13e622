"""Reading a Prometheus exposition back: samples by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape"]


@dataclass(frozen=True)
class Scrape:
    """The samples of one exposition text, queried by name and a subset of labels."""

    text: str

    @property
    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
        ]

    @property
    def families(self) -> dict[str, str]:
        """Family name -> type (``counter`` families are named without ``_total``)."""
        return {f.name: f.type for f in text_string_to_metric_families(self.text)}

    def select(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (found, value)
            for sample, found, value in self.samples
            if sample == name and all(found.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample matching; fails if there is none or several."""
        matches = self.select(name, **labels)
        assert len(matches) == 1, f"{name} {labels}: {matches}"
        return matches[0][1]

    def label_values(self, name: str, label: str, **labels: str) -> set[str]:
        return {found[label] for found, _value in self.select(name, **labels) if label in found}
