"""The connector's `AuditEvent/$inventory`: the trail's count and digest, for the site's administrator only."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.unit.connector.conftest import headers, mii_bundle


def audit_store(client: TestClient) -> dict[str, Any]:
    answer = client.get("/fhir/AuditEvent/$inventory", headers=headers("auditor"))
    assert answer.status_code == 200, answer.text
    [store] = answer.json()["parameter"]
    return {part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in store["part"]}


def test_the_trail_is_counted_and_digested_without_the_inventories_own_records(client: TestClient) -> None:
    empty = audit_store(client)
    assert (empty["name"], empty["count"]) == ("audit", 0)
    assert audit_store(client) == empty
    assert client.post("/fhir", json=mii_bundle("pat-11"), headers=headers("source")).status_code == 200
    assert client.get("/fhir/Patient", headers=headers("reader")).status_code == 200
    after = audit_store(client)
    assert after["count"] == 2
    assert after["digest"] != empty["digest"]
    operations = [
        (e["resource"]["subtype"][0]["code"], e["resource"]["outcome"])
        for e in client.get("/fhir/AuditEvent", headers=headers("auditor")).json()["entry"]
    ]
    assert operations.count(("$inventory", "0")) == 3


def test_only_a_caller_with_audit_read_takes_it(client: TestClient) -> None:
    refused = client.get("/fhir/AuditEvent/$inventory", headers=headers("reader"))
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert audit_store(client)["count"] == 0
