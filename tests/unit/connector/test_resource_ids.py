"""Where a node writes what sources send: at derived ids from its first write, or by identifier if HAPI held data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from connector.app import create_app
from connector.db import connect
from connector.hapi import HapiClient
from connector.resource_ids import ResourceIds, Scheme, record, recorded
from connector.transform import SourceKey, to_transaction
from tests.unit.connector.conftest import connector_settings, headers, mii_bundle
from tests.unit.connector.fake_fhir import FakeFhir

SOURCE = "https://hubnode.org/fhir/sid/source/dic"


def post(client: TestClient, bundle: Any) -> httpx.Response:
    return client.post("/fhir", content=json.dumps(bundle), headers=headers("source"))


def stored_ids(fhir: FakeFhir) -> dict[str, str]:
    """Source identifier value -> where the fake HAPI holds the resource carrying it."""
    return {
        identifier["value"]: f"{resource['resourceType']}/{resource['id']}"
        for resource in fhir.resources.values()
        for identifier in (resource["identifier"] if isinstance(resource.get("identifier"), list) else [])
        if identifier.get("system") == SOURCE
    }


@pytest.fixture
def deriving(tmp_path: Path, fhir: FakeFhir, trustcentre_transport: httpx.ASGITransport) -> Iterator[TestClient]:
    """A connector asking for derived ids (as on PostgreSQL) before a HAPI that held nothing."""
    settings = connector_settings(tmp_path, resource_ids=Scheme.DERIVED)
    app = create_app(settings, hapi_transport=fhir.transport(), trustcentre_transport=trustcentre_transport)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_node_whose_hapi_held_nothing_writes_every_resource_at_the_id_its_key_gives(
    deriving: TestClient, fhir: FakeFhir
) -> None:
    client = deriving
    bundle = mii_bundle("pat-1")
    assert post(client, bundle).status_code == 200
    ids = stored_ids(fhir)
    assert len(ids) == len(bundle["entry"])
    for value, where in ids.items():
        kind = value.split("/")[0]
        if kind != "Patient":  # a person's Patient is keyed by the node's id of the person
            assert where == f"{kind}/{SourceKey(kind, SOURCE, value).stable_id}"
    assert all("?" not in entry["request"]["url"] for entry in fhir.transactions[0]["entry"]), "no conditional write"
    assert post(client, bundle).status_code == 200
    assert stored_ids(fhir) == ids, "a replay updates the same resources"


def test_a_node_upgraded_with_resources_written_by_identifier_keeps_writing_by_identifier(
    tmp_path: Path, fhir: FakeFhir
) -> None:
    """An earlier release stored pat-1 by conditional update (ids HAPI gave); a replay must find them, not twin them."""
    earlier = to_transaction(mii_bundle("pat-1")["entry"], SOURCE)
    assert httpx.Client(transport=fhir.transport()).post("http://hapi.test/fhir", json=earlier).status_code == 200
    before = stored_ids(fhir)
    assert all(not where.split("/")[1].startswith("hn-") for where in before.values())
    app = create_app(connector_settings(tmp_path, resource_ids=Scheme.DERIVED), hapi_transport=fhir.transport())
    with TestClient(app, raise_server_exceptions=False) as client:
        replayed = mii_bundle("pat-1")
        del replayed["entry"][0]  # the Patient is linked at the trust centre, not part of this question
        assert post(client, replayed).status_code == 200, "stored"
    after = stored_ids(fhir)
    assert {k: v for k, v in after.items() if not k.startswith("Patient/")} == {
        k: v for k, v in before.items() if not k.startswith("Patient/")
    }
    assert recorded(connect(connector_settings(tmp_path).database_url)) is Scheme.IDENTIFIER


def test_the_recorded_scheme_holds_whatever_hapi_holds_later(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'connector.db'}")
    empty, filled = FakeFhir(), FakeFhir()
    filled.resources["Observation/1"] = {"resourceType": "Observation", "id": "1"}
    assert asyncio.run(ResourceIds(engine, hapi_of(empty), Scheme.DERIVED).derived()) is True
    asked = hapi_of(filled)
    assert asyncio.run(ResourceIds(engine, asked, Scheme.DERIVED).derived()) is True, "decided once, at the first write"
    other = connect(f"sqlite:///{tmp_path / 'other.db'}")
    assert asyncio.run(ResourceIds(other, hapi_of(filled), Scheme.DERIVED).derived()) is False


def test_hapi_that_only_deleted_resources_counts_as_having_held_them(tmp_path: Path) -> None:
    fhir = FakeFhir()
    fhir.deleted.add("Condition/7")
    assert (
        asyncio.run(ResourceIds(connect(f"sqlite:///{tmp_path / 'c.db'}"), hapi_of(fhir), Scheme.DERIVED).derived())
        is False
    )


def test_a_node_not_asking_for_derived_ids_writes_by_identifier_and_records_no_choice(
    client: TestClient, fhir: FakeFhir, tmp_path: Path
) -> None:
    assert post(client, mii_bundle("pat-1")).status_code == 200
    assert all(where.split("/")[1].isdigit() for value, where in stored_ids(fhir).items() if value[0] != "P")
    assert recorded(connect(connector_settings(tmp_path).database_url)) is None, "free to choose derived ids later"


def test_the_first_connector_to_record_a_scheme_decides_for_all_sharing_its_database(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'connector.db'}")
    assert recorded(engine) is None
    assert record(engine, Scheme.DERIVED) is Scheme.DERIVED
    assert record(engine, Scheme.IDENTIFIER) is Scheme.DERIVED
    assert recorded(engine) is Scheme.DERIVED


def test_derived_ids_leave_references_outside_the_bundle_found_by_identifier() -> None:
    """The resource referred to may carry an id HAPI gave it or another key: its identifier finds it either way."""
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/p-1"},
        "hasMember": [{"reference": "Observation/o0"}],
    }
    [entry] = to_transaction([{"resource": observation}], SOURCE, derived_ids=True)["entry"]
    assert entry["request"]["url"] == f"Observation/{SourceKey('Observation', SOURCE, 'Observation/o1').stable_id}"
    assert entry["resource"]["subject"]["reference"] == f"Patient?identifier={SOURCE}|Patient/p-1"
    assert entry["resource"]["hasMember"][0]["reference"] == f"Observation?identifier={SOURCE}|Observation/o0"


def hapi_of(fhir: FakeFhir) -> HapiClient:
    return HapiClient("http://hapi.test/fhir", transport=fhir.transport())
