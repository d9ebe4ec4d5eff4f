"""A read in an emergency (outside the patient's consent) is answered only with a stated reason, which is recorded."""

from __future__ import annotations

from urllib.parse import quote

from starlette.testclient import TestClient

from tests.unit.connector.conftest import headers

REASON = "Bewusstlos eingeliefert, keine Angehörigen erreichbar"


def emergency(reason: str | None) -> dict[str, str]:
    extra = {"X-Hubnode-Purpose": "emergency"}
    if reason is not None:
        extra["X-Hubnode-Emergency-Reason"] = quote(reason)
    return {**headers("reader"), **extra}


def test_an_emergency_read_without_a_reason_is_refused_and_recorded_as_refused(client: TestClient) -> None:
    answer = client.get("/fhir/Patient", headers=emergency(None))
    assert answer.status_code == 400
    assert "X-Hubnode-Emergency-Reason" in answer.json()["issue"][0]["diagnostics"]
    [event] = client.get("/fhir/AuditEvent", headers=headers("auditor")).json()["entry"]
    assert event["resource"]["outcome"] != "0"


def test_an_emergency_read_is_flagged_with_its_reason_in_the_record(client: TestClient) -> None:
    assert client.get("/fhir/Patient", headers=emergency(REASON)).status_code == 200
    [event] = client.get("/fhir/AuditEvent", headers=headers("auditor")).json()["entry"]
    [purpose] = event["resource"]["purposeOfEvent"]
    assert purpose["coding"][0]["code"] == "ETREAT"
    assert purpose["text"] == REASON
