"""Reading a service's `/metrics` the way Prometheus does: the 0.0.4 text format, parsed by prometheus_client."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.testclient import TestClient


def scrape(client: TestClient) -> dict[str, list[Sample]]:
    """Family name -> its samples, from `GET /metrics` (which must answer in the 0.0.4 format)."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {family.name: family.samples for family in text_string_to_metric_families(answer.text)}


def requests(samples: dict[str, list[Sample]]) -> dict[tuple[str, str, str], float]:
    """(method, route, status class) -> requests counted."""
    return {
        (s.labels["method"], s.labels["route"], s.labels["status_class"]): s.value
        for s in samples["hubnode_http_requests"]
        if s.name == "hubnode_http_requests_total"
    }


def value(samples: dict[str, list[Sample]], family: str, **labels: str) -> float:
    """The one sample of `family` with `labels` (0 when there is none: a count not yet started)."""
    found = [s.value for s in samples.get(family, []) if s.labels == labels and not s.name.endswith("_created")]
    assert len(found) <= 1, found
    return found[0] if found else 0.0
