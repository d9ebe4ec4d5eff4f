"""Enrolment codes, and what a node's portal may read and write about the persons enrolled there."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from fixtures.consents import broad_consent
from tests.unit.trustcentre.conftest import call, headers, identifier

KVNR = "http://fhir.de/sid/gkv/kvid-10"
MRN = "https://ukl.example/mrn"
POLICY = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"


def linked(client: TestClient) -> str:
    """A person the dic's connector linked by MRN and KVNR; the id the dic knows them by."""
    answer = call(
        client,
        "dic-connector",
        "epix/$requestMPI",
        identifier("identifier", MRN, "m-1"),
        identifier("identifier", KVNR, "A123456780"),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["parameter"][0]["valueIdentifier"]["value"])


def issue(client: TestClient, who: str = "portal") -> Any:
    return call(client, who, "epix/$issueEnrolment", identifier("identifier", MRN, "m-1"))


def test_a_code_redeemed_at_its_site_gives_the_id_the_node_knows_the_person_by(client: TestClient) -> None:
    person = linked(client)
    code = issue(client).json()["parameter"][0]["valueString"]
    answer = call(client, "portal", "epix/$redeemEnrolment", {"name": "code", "valueString": code.lower()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["parameter"][0]["valueIdentifier"] == {"system": "urn:hubnode:person", "value": person}


def test_a_code_is_used_once_and_only_at_the_site_that_issued_it(client: TestClient) -> None:
    linked(client)
    code = issue(client).json()["parameter"][0]["valueString"]
    elsewhere = call(client, "practice-portal", "epix/$redeemEnrolment", {"name": "code", "valueString": code})
    assert elsewhere.status_code == 404
    assert call(client, "portal", "epix/$redeemEnrolment", {"name": "code", "valueString": code}).status_code == 200
    again = call(client, "portal", "epix/$redeemEnrolment", {"name": "code", "valueString": code})
    assert again.status_code == 404


def test_no_code_for_an_unknown_person_or_another_sites_number(client: TestClient) -> None:
    assert issue(client).status_code == 404
    linked(client)
    foreign = call(client, "portal", "epix/$issueEnrolment", identifier("identifier", "https://other.example/id", "x"))
    assert foreign.status_code == 403


def test_a_portal_reads_consents_filed_under_the_kvnr_by_its_person_id_and_no_other_name(client: TestClient) -> None:
    person = linked(client)
    consent = broad_consent({"system": KVNR, "value": "A123456780"}, "2025-01-01T10:00:00+00:00", "5", "8")
    added = call(
        client,
        "admin",
        "gics/$addConsent",
        {"name": "domain", "valueString": "MII"},
        {"name": "resource", "resource": consent},
    )
    assert added.status_code == 200
    mine = call(
        client, "portal", "gics/$consentsForPerson", identifier("personIdentifier", "urn:hubnode:person", person)
    )
    assert mine.json()["total"] == 1
    by_kvnr = call(client, "portal", "gics/$consentsForPerson", identifier("personIdentifier", KVNR, "A123456780"))
    assert by_kvnr.status_code == 403


def test_a_withdrawal_by_person_id_is_what_a_connector_finds_by_kvnr(client: TestClient) -> None:
    person = linked(client)
    consent = broad_consent({"system": KVNR, "value": "A123456780"}, "2025-01-01T10:00:00+00:00", "5", "8")
    call(
        client,
        "admin",
        "gics/$addConsent",
        {"name": "domain", "valueString": "MII"},
        {"name": "resource", "resource": consent},
    )
    withdrawn = call(
        client,
        "portal",
        "gics/$withdrawConsent",
        identifier("personIdentifier", "urn:hubnode:person", person),
        {"name": "domain", "valueString": "MII"},
        {"name": "policy", "valueCoding": {"system": POLICY, "code": "8"}},
    )
    assert withdrawn.status_code == 200, withdrawn.text
    check = call(
        client,
        "dic-connector",
        "gics/$isConsented",
        identifier("personIdentifier", KVNR, "A123456780"),
        {"name": "domain", "valueString": "MII"},
        {"name": "policy", "valueCoding": {"system": POLICY, "code": "8"}},
    )
    assert check.json()["parameter"][0]["valueBoolean"] is False


def test_a_portal_reads_one_persons_ledger_showing_only_its_own_id_of_them(client: TestClient) -> None:
    person = linked(client)
    answer = client.get(
        "/ttp-fhir/fhir/AuditEvent", params={"patient": f"urn:hubnode:person|{person}"}, headers=headers("portal")
    )
    assert answer.status_code == 200, answer.text
    events = [entry["resource"] for entry in answer.json()["entry"]]
    assert any(e["subtype"][0]["code"] == "$requestMPI" for e in events)
    shown = {entity["what"]["identifier"]["value"] for e in events for entity in e["entity"] if "what" in entity}
    assert shown == {person}  # not the MPI, not the MRN or KVNR
    assert client.get("/ttp-fhir/fhir/AuditEvent", headers=headers("portal")).status_code == 400
    other = client.get("/ttp-fhir/fhir/AuditEvent", params={"patient": "P000"}, headers=headers("portal"))
    assert other.status_code == 403
