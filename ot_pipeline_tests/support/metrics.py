"""Reading a process's /metrics the way Prometheus does."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Series:
    """Every sample of http://127.0.0.1:PORT/metrics: (name, labels) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in series.items() if n == name and want <= lab)


def labels_of(series: Series, name: str, label: str) -> set[str]:
    return {dict(lab)[label] for (n, lab), _ in series.items() if n == name and label in dict(lab)}
