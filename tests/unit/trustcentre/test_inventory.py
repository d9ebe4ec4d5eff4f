"""`$inventory`: counts and digests per store, equal for equal data, each difference in its own store, admins only."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from fixtures.consents import broad_consent
from tests.unit.trustcentre.conftest import headers, settings
from trustcentre.app import create_app
from trustcentre.db import audit_log, consents, person_identifiers, pseudonyms

BASE = "/ttp-fhir/fhir"
KVNR = {"system": "http://fhir.de/sid/gkv/kvid-10", "value": "A123456780"}
MRN = {"system": "https://ukl.example/mrn", "value": "mrn-1"}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient, list[str]]]:
    urls = [f"sqlite:///{tmp_path / name}.db" for name in ("a", "b")]
    with (
        TestClient(create_app(settings(urls[0])), raise_server_exceptions=False) as first,
        TestClient(create_app(settings(urls[1])), raise_server_exceptions=False) as second,
    ):
        yield first, second, urls


def post(client: TestClient, path: str, *parts: dict[str, Any], who: str = "admin") -> Any:
    body = {"resourceType": "Parameters", "parameter": list(parts)}
    answer = client.post(f"{BASE}/{path}", content=json.dumps(body), headers=headers(who))
    assert answer.status_code == 200, answer.text
    return answer.json()


def work(client: TestClient, reset: Any) -> None:
    """The same day's work at a trust centre: pseudonyms, a consent, two linked identifiers, a node's person id."""
    reset()
    target = {"name": "target", "valueString": "study"}
    post(client, "gpas/$pseudonymizeAllowCreate", target, *({"name": "original", "valueString": o} for o in "ab"))
    resource = {**broad_consent(KVNR, "2025-01-01T10:00:00+00:00", "2", "3", "8"), "id": "consent-1"}
    post(client, "gics/$addConsent", {"name": "resource", "resource": resource})
    source = {"name": "source", "valueString": "ukl"}
    post(client, "epix/$requestMPI", {"name": "identifier", "valueIdentifier": KVNR}, source)
    post(
        client,
        "epix/$requestMPI",
        {"name": "identifier", "valueIdentifier": KVNR},
        {"name": "identifier", "valueIdentifier": MRN},
        source,
    )
    post(client, "epix/$requestMPI", {"name": "identifier", "valueIdentifier": KVNR}, who="dic-connector")


def inventory(client: TestClient, who: str = "admin", method: str = "GET") -> dict[str, tuple[int, str]]:
    answer = client.request(method, f"{BASE}/$inventory", headers=headers(who))
    assert answer.status_code == 200, answer.text
    stores = {}
    for store in answer.json()["parameter"]:
        assert store["name"] == "store"
        parts = {part["name"]: part for part in store["part"]}
        stores[parts["name"]["valueString"]] = (parts["count"]["valueInteger"], parts["digest"]["valueString"])
    return stores


def differing(first: dict[str, tuple[int, str]], second: dict[str, tuple[int, str]]) -> set[str]:
    return {name for name in first.keys() | second.keys() if first.get(name) != second.get(name)}


def same_work(pair: tuple[TestClient, TestClient, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """`work` at both trust centres; MPIs are random, so each is given the same ones here."""
    for client in pair[:2]:
        counter = itertools.count()
        work(client, lambda c=counter: monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=next(c))))


def test_two_trust_centres_after_the_same_work_have_the_same_inventory(
    pair: tuple[TestClient, TestClient, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    same_work(pair, monkeypatch)
    first, second = inventory(pair[0]), inventory(pair[1], method="POST")
    assert first == second
    assert first["pseudonyms/study"][0] == 2
    assert first["consents/MII"][0] == 1
    assert first["policy-states/MII"][0] == 1
    assert first["persons"][0] == 1
    assert first["links"][0] == 2
    assert first["pseudonyms/persons.dic"][0] == 1
    assert first["audit"][0] == 5
    assert {"domains", "secondary-pseudonyms", "identities", "possible-matches"} <= first.keys()
    assert inventory(pair[0]) == first, "an inventory does not count itself"


def test_the_answer_carries_counts_and_digests_never_the_data(pair: tuple[TestClient, TestClient, list[str]]) -> None:
    work(pair[0], lambda: None)
    text = pair[0].get(f"{BASE}/$inventory", headers=headers("admin")).text
    for secret in ("A123456780", "mrn-1", "consent-1", "MPI-", "ukl"):
        assert secret not in text


def insert(url: str, table: Any, **values: Any) -> None:
    with create_engine(url).begin() as connection:
        connection.execute(table.insert().values(**values))


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        (
            lambda url: insert(url, pseudonyms, domain="study", original="c", pseudonym="S000000001"),
            {"pseudonyms/study"},
        ),
        (
            lambda url: insert(
                url,
                consents,
                id="consent-2",
                domain="MII",
                person_system=MRN["system"],
                person_value="mrn-2",
                date_time=datetime(2025, 2, 1, tzinfo=UTC),
                status="active",
                resource={**broad_consent({**MRN, "value": "mrn-2"}, "2025-02-01T00:00:00+00:00", "8"), "id": "c2"},
            ),
            {"consents/MII", "policy-states/MII"},
        ),
        (
            lambda url: insert(
                url,
                person_identifiers,
                system="https://ukl.example/other",
                value="o-1",
                mpi=_mpi(url),
                source="ukl",
            ),
            {"links"},
        ),
    ],
)
def test_one_extra_row_changes_exactly_its_store(
    pair: tuple[TestClient, TestClient, list[str]], monkeypatch: pytest.MonkeyPatch, change: Any, changed: set[str]
) -> None:
    same_work(pair, monkeypatch)
    change(pair[2][1])
    assert differing(inventory(pair[0]), inventory(pair[1])) == changed


def _mpi(url: str) -> str:
    with create_engine(url).connect() as connection:
        return str(connection.execute(select(person_identifiers.c.mpi)).scalars().first())


def test_a_changed_audit_subject_changes_the_audit_store(
    pair: tuple[TestClient, TestClient, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    same_work(pair, monkeypatch)
    with create_engine(pair[2][1]).begin() as connection:
        subjects = audit_log.subjects
        row = connection.execute(select(subjects.c.event_id, subjects.c.subject)).first()
        assert row is not None
        connection.execute(
            subjects.update().where(subjects.c.event_id == row[0], subjects.c.subject == row[1]).values(subject="x")
        )
    assert differing(inventory(pair[0]), inventory(pair[1])) == {"audit"}


@pytest.mark.parametrize(
    ("who", "status"), [("node-admin", 403), ("dic-connector", 403), ("pseudonymizer", 403), ("nobody", 403)]
)
def test_only_the_sites_administrator_takes_an_inventory_and_refusals_are_audited(
    client: TestClient, who: str, status: int
) -> None:
    answer = client.get(f"{BASE}/$inventory", headers=headers(who))
    assert answer.status_code == status
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"{BASE}/$inventory").status_code == 401
    inventory(client)
    trail = client.get(f"{BASE}/AuditEvent", headers=headers("admin")).json()
    recorded = [
        (e["resource"]["agent"][0]["who"]["display"], e["resource"]["outcome"])
        for e in trail["entry"]
        if e["resource"]["subtype"][0]["code"] == "$inventory"
    ]
    assert recorded == [(who, "4"), ("anonymous", "4"), ("admin", "0")]
