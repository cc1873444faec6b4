"""Prometheus scrapes parsed with prometheus_client's own parser (not string matching)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support import get, http_request

__all__ = ["Scrape", "scrape"]


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: list[Sample] = []
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            self.samples.extend(family.samples)

    def values(self, name: str, **labels: str) -> list[float]:
        return [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def labels(self, name: str) -> list[dict[str, str]]:
        return [s.labels for s in self.samples if s.name == name]

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


async def scrape(port: int) -> Scrape:
    resp = await http_request(port, get("/metrics"))
    assert resp.status == 200, resp.status
    return Scrape(resp.body.decode())
