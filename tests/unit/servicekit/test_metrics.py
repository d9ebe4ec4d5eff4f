"""Metrics: requests counted by route template and status class, bounded labels, a parsable exposition."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient

from servicekit.metrics import LATENCY_BUCKETS, METHODS, UNMATCHED, Reading, RecordRequests, ServiceMetrics
from tests.unit.servicekit.scrape import requests, scrape

TEMPLATES = {
    "/health",
    "/metrics",
    "/fhir/{type}/{id}",
    "/fail",
    "/portal/patients/{kind}/{value}",
    "/files/{path:path}",
}


async def ok(_request: Request) -> Response:
    return PlainTextResponse("ok")


async def fail(_request: Request) -> Response:
    raise RuntimeError("a bug")


def app_with(metrics: ServiceMetrics) -> Starlette:
    return Starlette(
        routes=[
            Route("/health", ok),
            metrics.route(),
            Route("/fhir/{type}/{id}", ok),
            Route("/fail", fail),
            Mount("/portal", routes=[Route("/patients/{kind}/{value}", ok, methods=["GET"])]),
            Mount("/files", StaticFiles(directory=Path(__file__).parent)),
        ],
        middleware=[Middleware(RecordRequests, metrics=metrics)],
    )


def test_a_request_is_labelled_by_its_route_template_never_by_the_ids_in_its_path() -> None:
    client = TestClient(app_with(ServiceMetrics("connector")))
    client.get("/fhir/Patient/pat-123")
    client.get("/fhir/Patient/pat-456")
    client.get("/portal/patients/local/mrn-98765")
    text = client.get("/metrics").text
    assert "pat-123" not in text
    assert "pat-456" not in text
    assert "mrn-98765" not in text
    counted = requests(scrape(client))
    assert counted[("GET", "/fhir/{type}/{id}", "2xx")] == 2
    assert not any("123" in route for _, route, _ in counted)
    assert counted[("GET", "/portal/patients/{kind}/{value}", "2xx")] == 1


def test_requests_are_counted_by_status_class_and_unknown_paths_and_methods_share_one_label() -> None:
    client = TestClient(app_with(ServiceMetrics("trustcentre")), raise_server_exceptions=False)
    assert client.get("/health").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    assert client.post("/portal/patients/local/1").status_code == 405
    assert client.get("/fail").status_code == 500
    assert client.request("BREW", "/health").status_code == 405
    counted = requests(scrape(client))
    assert counted[("GET", "/health", "2xx")] == 1
    assert counted[("GET", UNMATCHED, "4xx")] == 1
    assert counted[("POST", "/portal/patients/{kind}/{value}", "4xx")] == 1
    assert counted[("GET", "/fail", "5xx")] == 1
    assert counted[("other", "/health", "4xx")] == 1


def test_a_mounted_app_without_routes_is_named_by_its_prefix() -> None:
    client = TestClient(app_with(ServiceMetrics("portal")))
    assert client.get("/files/patient-4711.txt").status_code == 404
    counted = requests(scrape(client))
    assert counted[("GET", "/files/{path:path}", "4xx")] == 1
    assert not any("4711" in route for _, route, _ in counted)


def test_latency_is_a_histogram_with_every_bucket_and_a_count_per_request() -> None:
    client = TestClient(app_with(ServiceMetrics("connector")))
    for _ in range(3):
        client.get("/fhir/Observation/o-1")
    samples = scrape(client)["hubnode_http_request_duration_seconds"]
    mine = [s for s in samples if s.labels.get("route") == "/fhir/{type}/{id}"]
    buckets = {s.labels["le"]: s.value for s in mine if s.name.endswith("_bucket")}
    assert [float(le) for le in buckets if le != "+Inf"] == list(LATENCY_BUCKETS)
    assert buckets["+Inf"] == 3
    assert list(buckets.values()) == sorted(buckets.values()), "buckets are cumulative"
    [count] = [s.value for s in mine if s.name.endswith("_count")]
    [total] = [s.value for s in mine if s.name.endswith("_sum")]
    assert count == 3
    assert 0 < total < 5


def test_the_exposition_names_the_process_start_and_the_service_version() -> None:
    samples = scrape(TestClient(app_with(ServiceMetrics("trustcentre"))))
    [started] = samples["process_start_time_seconds"]
    assert time.time() - 24 * 3600 < started.value <= time.time()
    [build] = samples["hubnode_build_info"]
    assert build.labels["service"] == "trustcentre"
    assert build.labels["version"]


def test_readings_are_taken_at_each_scrape_and_a_database_that_does_not_answer_leaves_the_rest() -> None:
    metrics = ServiceMetrics("connector")
    values = iter([{("a",): 1.0}, {("a",): 2.0, ("b",): 5.0}])
    metrics.add_reading(Reading("hubnode_things", "Things", "gauge", ("kind",), lambda: next(values)))

    def broken() -> dict[tuple[str, ...], float]:
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    metrics.add_reading(Reading("hubnode_lost", "Lost", "counter", (), broken))
    client = TestClient(app_with(metrics))
    first, second = scrape(client), scrape(client)
    assert {s.labels["kind"]: s.value for s in first["hubnode_things"]} == {"a": 1.0}
    assert {s.labels["kind"]: s.value for s in second["hubnode_things"]} == {"a": 2.0, "b": 5.0}
    assert "hubnode_lost" not in second
    assert ("GET", "/metrics", "2xx") in requests(second)


PATH_CHARACTERS = st.sampled_from("abcXYZ019-._~/%")
METHOD_NAMES = st.sampled_from(sorted(METHODS)) | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


@given(st.lists(st.tuples(METHOD_NAMES, st.text(PATH_CHARACTERS, max_size=40)), min_size=1, max_size=25))
def test_random_paths_and_methods_never_widen_the_label_set(calls: Iterable[tuple[str, str]]) -> None:
    client = TestClient(app_with(ServiceMetrics("connector")), raise_server_exceptions=False)
    for method, path in calls:
        client.request(method, "/" + path.lstrip("/"))
    counted = requests(scrape(client))
    assert {route for _, route, _ in counted} <= TEMPLATES | {UNMATCHED}
    assert {method for method, _, _ in counted} <= METHODS | {"other"}
    assert {status for _, _, status in counted} <= {"2xx", "3xx", "4xx", "5xx"}
