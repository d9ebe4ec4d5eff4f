"""Every E-PIX request example of the MOSAIC TTP-FHIR IG, posted unchanged, answers in its response's shape.

The examples name persons, identities and a match by ids of some E-PIX installation (MPI
1001000000066, identities 52 and 53, match 5654986); the trust centre is given exactly those before
each request, so each example runs against the state it describes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from tests.unit.trustcentre.conftest import headers, settings
from trustcentre.app import create_app
from trustcentre.blocking import keys_of
from trustcentre.db import person_demographics, person_identifiers, persons, possible_matches
from trustcentre.epix_resources import MATCH_STATUS_SYSTEM, MPI_SYSTEM
from trustcentre.matching import Demographics

EXAMPLES = Path(__file__).resolve().parents[3] / "fixtures" / "data" / "ttp-fhir-ig" / "epix"
EPIX = "/ttp-fhir/fhir/epix"
OPERATIONS = (
    "AddPatient",
    "UpdatePatient",
    "SetReferenceIdentity",
    "AssignIdentity",
    "AssignIdentityByIdentifier",
    "QueryPossibleMatches",
    "AddPossibleMatch",
    "RemovePossibleMatches",
)
MATCH_STATUSES = {
    "EXTERNAL_MATCH",
    "MATCH",
    "MATCH_ERROR",
    "MULTIPLE_MATCH",
    "NO_MATCH",
    "PERFECT_MATCH",
    "PERFECT_MATCH_WITH_UPDATE",
    "POSSIBLE_MATCH",
}
PERSON, ALIAS = "1001000000066", "1001000068944"


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return data


def response_example(operation: str) -> dict[str, Any]:
    [path] = [p for p in EXAMPLES.glob(f"*{operation}-*example*.json") if "request" not in p.name]
    return example(path.name)


@pytest.fixture
def epix(database_url: str) -> Iterator[TestClient]:
    """A trust centre declaring the examples' domain MIRACUM and holding the persons they name."""
    configured = dataclasses.replace(settings(database_url), domains={"MIRACUM": {}})
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        seed(client.app.state.engine)  # type: ignore[attr-defined]
        yield client


def seed(engine: Engine) -> None:
    """Two persons as in the IG's examples: 52 and 53 of one, a third identity of the other, a match between them."""
    stefanie = ("xxxxx", "Stefanie", "male")
    identities = [
        (52, PERSON, date(1962, 12, 17), "dummy_safe_source"),
        (53, PERSON, date(1962, 12, 16), "dummy_safe_source"),
        (10010000006546, ALIAS, date(1962, 12, 17), "KlinikumXY"),
    ]
    with engine.begin() as connection:
        connection.execute(persons.insert(), [{"mpi": PERSON}, {"mpi": ALIAS}])
        for identity_id, mpi, born, source in identities:
            keys = keys_of(Demographics(stefanie[0], stefanie[1], born, stefanie[2]))
            connection.execute(
                person_demographics.insert().values(
                    id=identity_id,
                    mpi=mpi,
                    family=stefanie[0],
                    given=stefanie[1],
                    sex=stefanie[2],
                    birth_date=born,
                    source=source,
                    family_key=keys.family_key,
                    given_key=keys.given_key,
                )
            )
        connection.execute(
            person_identifiers.insert().values(system="https://klinikum.example/pid", value="1", mpi=ALIAS, source="x")
        )
        connection.execute(
            possible_matches.insert().values(
                id=5654986, mpi=PERSON, candidate_mpi=ALIAS, score=0.965, status="open", comment="as in the IG"
            )
        )


def shape(resource: dict[str, Any]) -> set[tuple[str, ...]]:
    """Parameter and part names with the kind of value each carries (a resource's type), ignoring values."""
    if resource["resourceType"] != "Parameters":
        return {(resource["resourceType"], *(issue["severity"] for issue in resource["issue"]))}
    found: set[tuple[str, ...]] = set()
    for parameter in resource["parameter"]:
        kinds = [k if k != "resource" else parameter["resource"]["resourceType"] for k in parameter if k != "name"]
        found.add((parameter["name"], *sorted(k for k in kinds if k != "part")))
        for part in parameter.get("part", []):
            inner = [k if k != "resource" else part["resource"]["resourceType"] for k in part if k != "name"]
            found.add((parameter["name"], part["name"], *sorted(inner)))
    return found


def test_the_vendored_examples_are_the_igs_and_cover_every_operation() -> None:
    requests = sorted(p.name for p in EXAMPLES.glob("Parameters-*-request-example-*.json"))
    assert [name.split("-")[2] for name in requests] == sorted(OPERATIONS)
    assert "27a11a09274ab8ce6b6db0ebd06ee3a7dedff3cf" in (EXAMPLES / "SOURCE.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_request_example_is_answered_in_the_shape_of_its_response_example(
    epix: TestClient, operation: str
) -> None:
    body = example(f"Parameters-Parameters-{operation}-request-example-1.json")
    response = epix.post(f"{EPIX}/${operation[0].lower()}{operation[1:]}", json=body, headers=headers("admin"))
    assert response.status_code == 200, response.text
    assert shape(response.json()) == shape(response_example(operation))
    persons_named = [p for p in _resources(response.json()) if p["resourceType"] == "Person"]
    identity_ids = {p["id"] for p in _resources(response.json()) if p["resourceType"] == "Patient" and "id" in p}
    for person in persons_named:
        assert person["identifier"][0]["system"] == MPI_SYSTEM
        assert {link["target"]["reference"] for link in person["link"]} <= {f"Patient/{i}" for i in identity_ids}
    for coding in _codings(response.json()):
        assert coding["system"] == MATCH_STATUS_SYSTEM
        assert coding["code"] in MATCH_STATUSES


def test_the_update_example_stores_a_new_identity_as_the_ig_says(epix: TestClient) -> None:
    body = example("Parameters-Parameters-UpdatePatient-request-example-1.json")
    answer = epix.post(f"{EPIX}/$updatePatient", json=body, headers=headers("admin")).json()
    [status] = _codings(answer)
    assert status == _codings(response_example("UpdatePatient"))[0]
    identities = [p for p in _resources(answer) if p["resourceType"] == "Patient"]
    assert [i["address"] for i in identities if i["meta"]["source"] == "KlinikumXY"] == [
        [{"city": "Spöck", "postalCode": "76297"}]
    ]


def test_the_reference_identity_example_marks_identity_53(epix: TestClient) -> None:
    body = example("Parameters-Parameters-SetReferenceIdentity-request-example-1.json")
    answer = epix.post(f"{EPIX}/$setReferenceIdentity", json=body, headers=headers("admin")).json()
    [person] = [p for p in _resources(answer) if p["resourceType"] == "Person"]
    assert [link for link in person["link"] if "assurance" in link] == [
        {"target": {"reference": "Patient/53"}, "assurance": "level4"}
    ]


def _resources(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        part["resource"]
        for parameter in parameters.get("parameter", [])
        for part in [parameter, *parameter.get("part", [])]
        if "resource" in part
    ]


def _codings(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        part["valueCoding"]
        for parameter in parameters.get("parameter", [])
        for part in [parameter, *parameter.get("part", [])]
        if part["name"] == "matchStatus"
    ]
