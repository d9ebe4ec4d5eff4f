"""The bulk benchmark's parts that need no containers: its rounds, its four paths, the child, the summary."""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks import loader_child
from benchmarks.bulk import (
    ROUNDS,
    VALIDATE_URL,
    VALIDATED_SEED_OFFSET,
    each_to,
    lines,
    plan,
    post_each,
    summary,
    table_rows,
    validated_transactions,
    validation_batches,
)
from connector.profiles import VALIDATE_BATCH
from fixtures.volume import write_volume
from infra.load import load
from infra.state import StackState


def test_the_rounds_grow_to_a_thousand_patients_each_new_and_alternate_which_path_goes_first() -> None:
    rounds = plan()
    assert rounds[0].warm_up
    timed = rounds[1:]
    assert sum(r.patients for r in timed) == sum(ROUNDS) == 1000
    assert [r.patients for r in timed] == sorted(r.patients for r in timed)
    seeds = [r.seed for r in rounds] + [r.seed + VALIDATED_SEED_OFFSET for r in rounds]
    assert len(set(seeds)) == 2 * len(rounds)
    assert [r.loader_first for r in timed] == [False, True, False]


def test_the_direct_baseline_posts_every_bundle_once_from_all_clients(tmp_path: Path) -> None:
    path = tmp_path / "bundles.ndjson"
    write_volume(path, 12, 3, bundles=True)
    posted: list[str] = []
    lock = threading.Lock()

    def hapi(request: httpx.Request) -> httpx.Response:
        with lock:
            posted.append(json.loads(request.content)["id"])
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"})

    clients = [httpx.Client(base_url="http://hapi.test", transport=httpx.MockTransport(hapi)) for _ in range(4)]
    assert post_each(each_to("/fhir", lines(path)), clients) > 0
    assert sorted(posted) == sorted(json.loads(line)["id"] for line in path.read_bytes().splitlines())
    assert len(posted) == 12


def test_a_refusal_stops_the_direct_baseline(tmp_path: Path) -> None:
    path = tmp_path / "bundles.ndjson"
    write_volume(path, 2, 3, bundles=True)
    refuse = httpx.MockTransport(lambda _request: httpx.Response(400, text="HAPI-0450: no"))
    with pytest.raises(RuntimeError, match="answered 400: HAPI-0450: no"):
        post_each(each_to("/fhir", lines(path)), [httpx.Client(base_url="http://hapi.test", transport=refuse)])


def test_the_validator_path_asks_about_every_resource_once_in_the_connectors_batches(tmp_path: Path) -> None:
    path = tmp_path / "volume.ndjson"
    written = write_volume(path, 5, 3)
    batches = [json.loads(body) for body in validation_batches(path)]
    assert {b["type"] for b in batches} == {"collection"}
    assert max(len(b["entry"]) for b in batches) == VALIDATE_BATCH
    asked = [entry["resource"] for b in batches for entry in b["entry"]]
    assert asked == [json.loads(line) for line in lines(path)]
    assert len(asked) == written.resources


def test_the_validating_baseline_asks_about_each_patients_resources_before_it_posts_that_patients_bundle(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bundles.ndjson"
    write_volume(path, 6, 3, bundles=True)
    seen: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def hapi(request: httpx.Request) -> httpx.Response:
        with lock:
            seen.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"resourceType": "OperationOutcome"})

    clients = [httpx.Client(base_url="http://hapi.test", transport=httpx.MockTransport(hapi)) for _ in range(3)]
    assert post_each(validated_transactions(path), clients) > 0
    bundles = [json.loads(line) for line in lines(path)]
    assert len(seen) == 2 * len(bundles)
    for bundle in bundles:
        resources = resources_of(bundle)
        [asked] = [i for i, (url, body) in enumerate(seen) if url == VALIDATE_URL and resources_of(body) == resources]
        [posted] = [i for i, (url, body) in enumerate(seen) if url == "/fhir" and body == bundle]
        assert asked < posted


def resources_of(bundle: dict[str, Any]) -> list[Any]:
    return [entry["resource"] for entry in bundle["entry"]]


def test_the_child_loads_as_the_command_does_and_reports_its_peak_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StackState(tmp_path, "bench-fed")
    state.folder.mkdir(parents=True)
    nodes = [{"site": "dic", "endpoints": {"gateway": "https://127.0.0.1:1"}}]
    state.endpoints_file.write_text(json.dumps({"nodes": nodes}))
    state.secrets_dir("dic").mkdir(parents=True)
    (state.secrets_dir("dic") / "cn-admin-token").write_text("token")
    path = tmp_path / "volume.ndjson"
    written = write_volume(path, 2, 1)
    answer = httpx.MockTransport(lambda _request: httpx.Response(200, json={"resourceType": "Bundle"}))
    monkeypatch.setattr(loader_child, "load", functools.partial(load, transport=answer))
    figures = loader_child.load_once(tmp_path, "bench-fed", "dic", path)
    assert (figures["lines"], figures["resources"], figures["refused"]) == (written.lines, written.resources, 0)
    assert figures["peak_rss_kib"] >= figures["imports_rss_kib"] > 0


def timed(name: str, file_bytes: int, loader_s: float, direct_s: float, rss_kib: int) -> dict[str, Any]:
    return {
        "name": name,
        "warm_up": name == "warm-up",
        "patients": 10,
        "resources": 600,
        "file_bytes": file_bytes,
        "loader": {"seconds": loader_s, "peak_rss_kib": rss_kib, "imports_rss_kib": 30_000},
        "direct": {"seconds": direct_s},
        "validated": {"seconds": direct_s * 4, "resources": 300},
        "validator": {"seconds": direct_s / 2},
    }


def test_the_summary_compares_the_timed_rounds_and_the_memory_of_the_smallest_and_largest_file() -> None:
    rounds = [
        timed("warm-up", 10, 100.0, 1.0, 999_999),
        timed("round 1", 1_000, 2.0, 3.0, 40_960),
        timed("round 2", 6_000, 4.0, 3.0, 51_200),
    ]
    figures = summary(rounds)
    assert figures["resources"] == 1200
    assert figures["loader_resources_per_s"] == pytest.approx(200.0)
    assert figures["direct_resources_per_s"] == pytest.approx(200.0)
    assert figures["throughput_ratio"] == pytest.approx(1.0)
    assert figures["validator_resources_per_s"] == pytest.approx(400.0)
    assert figures["ceiling_ratio"] == pytest.approx(2.0)
    assert figures["validated_resources_per_s"] == pytest.approx(25.0)
    assert figures["validated_ratio"] == pytest.approx(8.0)
    assert figures["met"]
    assert figures["peak_rss_mib"] == {"round 1": 40.0, "round 2": 50.0}
    assert figures["peak_rss_growth"] == pytest.approx(1.25)
    assert figures["file_growth"] == pytest.approx(6.0)
    rows = table_rows({"bulk": figures})
    assert rows[1] == ("bulk: throughput ratio", "1.00", "target >= 1.0: met")
    assert rows[2][1:] == ("8.00", "25 resources/s: each patient to Bundle/$validate, then its bundle")
    assert rows[3][1:] == ("400", f"the same resources in batches of {VALIDATE_BATCH}: ceiling of the ratio 2.00")
    assert rows[4][1:] == ("40, 50 MiB", "x1.25 for files x6.0 (flat: near x1)")
    assert table_rows({}) == []
