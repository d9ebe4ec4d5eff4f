"""`hubnode load` of generated volumes into the in-process connector (fake HAPI, the real trust centre)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.app import create_app
from fixtures.volume import write_volume
from infra.chunks import Limits
from infra.load import Door, Job, Options, Result, load
from infra.progress import Progress
from tests.unit.connector.conftest import connector_settings
from tests.unit.connector.fake_fhir import FakeFhir

DOOR = Door("dic", "http://connector.test/fhir", "token-of-source")


@pytest.fixture
def loader(tmp_path: Path, fhir: FakeFhir, trustcentre_transport: httpx.ASGITransport) -> Callable[..., Result]:
    app = create_app(
        connector_settings(tmp_path), hapi_transport=fhir.transport(), trustcentre_transport=trustcentre_transport
    )

    def run(path: Path, **options: Any) -> Result:
        job = Job((path,), tmp_path / "load.json", tmp_path / "report.jsonl")
        chosen = Options(**{"limits": Limits(resources=40, bytes=1 << 20), "parallel": 2, **options})
        return load(DOOR, job, chosen, Progress(quiet=True), transport=httpx.ASGITransport(app=app))

    return run


def test_a_generated_volume_is_stored_whole_and_a_second_load_stores_nothing_twice(
    tmp_path: Path, fhir: FakeFhir, loader: Callable[..., Result]
) -> None:
    path = tmp_path / "volume.ndjson.gz"
    written = write_volume(path, 3, seed=5)
    result = loader(path)
    assert (result.lines, result.resources, result.refused) == (written.lines, written.resources, 0)
    assert len(fhir.resources) == written.resources
    assert len(fhir.of_type("Patient")) == 3
    again = loader(path, restart=True)
    assert again.resources == written.resources
    assert len(fhir.resources) == written.resources, "the same lines again store nothing twice"


def test_one_bundle_per_line_loads_the_same_resources(
    tmp_path: Path, fhir: FakeFhir, loader: Callable[..., Result]
) -> None:
    path = tmp_path / "bundles.ndjson"
    written = write_volume(path, 3, seed=5, bundles=True)
    result = loader(path)
    assert (result.lines, result.resources, result.refused) == (3, written.resources, 0)
    assert len(fhir.resources) == written.resources


def test_a_bad_line_is_reported_and_the_rest_of_the_volume_stored(
    tmp_path: Path, fhir: FakeFhir, loader: Callable[..., Result]
) -> None:
    path = tmp_path / "volume.ndjson"
    written = write_volume(path, 3, seed=5)
    lines = path.read_bytes().splitlines()
    number, condition = next(
        (n, json.loads(line)) for n, line in enumerate(lines, start=1) if b'"resourceType":"Condition"' in line
    )
    del condition["subject"]
    lines[number - 1] = json.dumps(condition).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = loader(path)
    assert result.refused == 1
    [record] = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert (record["file"], record["line"]) == (str(path), number)
    assert record["message"].startswith("subject")
    assert len(fhir.resources) == written.resources - 1
