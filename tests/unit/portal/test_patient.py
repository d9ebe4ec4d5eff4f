"""The patient's side: enrolment by code, consents with receipt and visible effect, ledger, record, questionnaire."""

from __future__ import annotations

import re

import pytest

from tests.unit.portal.conftest import KVNR, Node

ERIKA_KVNR, ERIKA_MRN = "A123456780", "4711"
CONDITION = {
    "resourceType": "Condition",
    "id": "c-1",
    "code": {
        "coding": [{"system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "code": "C50.4", "display": "Brustkrebs"}]
    },
    "subject": {"reference": "Patient/p-4711"},
    "onsetDateTime": "2025-01-10",
}


@pytest.fixture
def enrolled(node: Node) -> Node:
    node.ingest(ERIKA_KVNR, ERIKA_MRN, CONDITION)
    node.consent(ERIKA_KVNR, "2", "3", "5", "6", "7", "8")
    node.enrol("erika", ERIKA_MRN)
    return node


def test_redeeming_a_code_binds_the_login_to_the_person_through_the_service_account(enrolled: Node) -> None:
    [person] = enrolled.idp.accounts["erika"].attributes["patient_id"]
    assert person.startswith("P")
    assert enrolled.idp.accounts["erika"].attributes["fhir_user"] == [f"Patient/{person}"]
    assert "Meine Einwilligungen" in enrolled.portal.get("/portal/").text


def test_a_code_works_once(node: Node) -> None:
    node.ingest(ERIKA_KVNR, ERIKA_MRN)
    node.sign_in("staff")
    issued = node.portal.post(
        "/portal/staff/enrolments", data={"csrf": node.csrf(), "kind": "local", "value": ERIKA_MRN}
    )
    code = re.search(r'id="enrolment-code">([A-Z0-9-]+)<', issued.text)
    assert code
    node.sign_in("erika")
    assert node.portal.post("/portal/me/enrol", data={"csrf": node.csrf(), "code": code.group(1)}).status_code == 200
    node.sign_in("paul")
    again = node.portal.post("/portal/me/enrol", data={"csrf": node.csrf(), "code": code.group(1)})
    assert again.status_code == 400
    assert "ungültig" in again.text
    assert "patient_id" not in node.idp.accounts["paul"].attributes


def test_no_code_is_issued_for_a_person_the_node_does_not_know(node: Node) -> None:
    node.sign_in("staff")
    answer = node.portal.post("/portal/staff/enrolments", data={"csrf": node.csrf(), "kind": "local", "value": "999"})
    assert answer.status_code == 404


def test_a_patient_sees_each_policy_and_the_history(enrolled: Node) -> None:
    page = enrolled.portal.get("/portal/me/consents")
    assert page.status_code == 200
    assert "Medizinische Daten wissenschaftlich nutzen" in page.text
    assert page.text.count("erteilt") >= 6


def test_withdrawing_research_use_gives_a_receipt_naming_the_extracts_it_now_blocks(enrolled: Node) -> None:
    answer = enrolled.portal.post("/portal/me/consents/8", data={"csrf": enrolled.csrf(), "action": "withdraw"})
    assert answer.status_code == 200
    assert "Quittung" in answer.text
    assert "2.16.840.1.113883.3.1937.777.24.5.3.8" in answer.text
    assert "dataSend" in answer.text
    page = enrolled.portal.get("/portal/me/consents")
    research = page.text.split("wissenschaftlich nutzen")[1].split("</li>")[0]
    assert "widerrufen" in research


def test_a_withdrawal_in_the_portal_counts_when_a_connector_asks_by_the_kvnr(enrolled: Node) -> None:
    enrolled.portal.post("/portal/me/consents/5", data={"csrf": enrolled.csrf(), "action": "withdraw"})
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "personIdentifier", "valueIdentifier": {"system": KVNR, "value": ERIKA_KVNR}},
            {"name": "domain", "valueString": "MII"},
            {"name": "policy", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3", "code": "5"}},
        ],
    }
    answer = enrolled.trustcentre.post(
        "/ttp-fhir/fhir/gics/$isConsented", json=body, headers={"Authorization": "Bearer token-of-connector"}
    )
    assert answer.json()["parameter"][0]["valueBoolean"] is False


@pytest.mark.parametrize("code", ["99", "8x", "%2e%2e", "<script>"])
def test_an_unknown_policy_code_is_refused_and_changes_nothing(enrolled: Node, code: str) -> None:
    before = enrolled.portal.get("/portal/me/consents").text.count("<tr>")
    answer = enrolled.portal.post(f"/portal/me/consents/{code}", data={"csrf": enrolled.csrf(), "action": "withdraw"})
    assert answer.status_code in (400, 404)
    assert enrolled.portal.get("/portal/me/consents").text.count("<tr>") == before


def test_a_decision_without_the_csrf_token_is_refused_and_changes_nothing(enrolled: Node) -> None:
    answer = enrolled.portal.post("/portal/me/consents/8", data={"action": "withdraw"})
    assert answer.status_code == 403
    research = enrolled.portal.get("/portal/me/consents").text.split("wissenschaftlich nutzen")[1].split("</li>")[0]
    assert "widerrufen" not in research


def test_the_ledger_shows_the_portals_reads_and_the_trust_centres_consent_checks(enrolled: Node) -> None:
    enrolled.portal.get("/portal/me/record")
    page = enrolled.portal.get("/portal/me/ledger")
    assert page.status_code == 200
    assert "view-record" in page.text
    assert "$addConsent" in page.text or "$redeemEnrolment" in page.text
    assert "Standort dic" in page.text  # the portal's read through the connector
    assert "Treuhandstelle" in page.text


def test_the_record_names_the_source_of_each_entry(enrolled: Node) -> None:
    page = enrolled.portal.get("/portal/me/record")
    assert "Brustkrebs" in page.text
    assert '<td class="source">dic</td>' in page.text


def test_questionnaire_answers_are_stored_at_the_node_and_free_text_stays_text(enrolled: Node) -> None:
    answers = {"wellbeing": "3", "pain": "1", "fatigue": "2", "note": "<script>alert(1)</script>"}
    answer = enrolled.portal.post("/portal/me/questionnaires", data={"csrf": enrolled.csrf(), **answers})
    assert answer.status_code == 200
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;" in answer.text
    [stored] = enrolled.fhir.of_type("QuestionnaireResponse")
    assert stored["item"][0] == {"linkId": "wellbeing", "answer": [{"valueInteger": 3}]}


def test_a_questionnaire_with_an_answer_out_of_range_is_refused(enrolled: Node) -> None:
    answers = {"wellbeing": "9", "pain": "1", "fatigue": "2"}
    assert (
        enrolled.portal.post("/portal/me/questionnaires", data={"csrf": enrolled.csrf(), **answers}).status_code == 400
    )
    assert enrolled.fhir.of_type("QuestionnaireResponse") == []


def test_another_patients_id_in_the_url_is_refused(enrolled: Node) -> None:
    assert enrolled.portal.get("/portal/patients/kvnr/B987654320").status_code == 403


def test_a_patient_not_yet_enrolled_is_sent_to_link_their_account(node: Node) -> None:
    node.sign_in("paul")
    answer = node.portal.get("/portal/me/consents")
    assert answer.status_code == 403
    assert "noch keiner Person zugeordnet" in answer.text


def test_the_ledger_names_no_other_patient_read_in_the_same_request(enrolled: Node) -> None:
    enrolled.ingest("B987654320", "4712")
    answer = enrolled.connector.get("/fhir/Patient", headers={"Authorization": "Bearer token-of-portal"})
    assert answer.json()["total"] == 2  # one read naming both patients
    token = enrolled.idp.token("erika")
    ledger = enrolled.portal.get("/portal/fhir/AuditEvent", headers={"Authorization": f"Bearer {token}"}).json()
    named = {
        entity["what"]["identifier"]["value"]
        for entry in ledger["entry"]
        for entity in entry["resource"].get("entity", [])
        if "what" in entity
    }
    [person] = enrolled.idp.accounts["erika"].attributes["patient_id"]
    assert named <= {person, *(n for n in named if n.startswith("Patient/"))}
    assert len({n for n in named if n.startswith("Patient/")}) <= 1


def signed_receipt(page: str) -> str:
    found = re.search(r'<textarea id="signed-receipt" readonly rows="5">([^<]+)</textarea>', page)
    assert found, page
    return found.group(1).strip()


def test_a_withdrawal_receipt_is_signed_by_the_node_and_checks_anywhere_in_the_federation(enrolled: Node) -> None:
    answer = enrolled.portal.post("/portal/me/consents/8", data={"csrf": enrolled.csrf(), "action": "withdraw"})
    receipt = signed_receipt(answer.text)
    checked = enrolled.portal.post("/portal/receipts/verify", data={"csrf": enrolled.csrf(), "receipt": receipt})
    assert checked.status_code == 200, checked.text
    assert "signiert vom Hub-Knoten dic" in checked.text
    assert "2.16.840.1.113883.3.1937.777.24.5.3.8" in checked.text


def test_a_changed_receipt_does_not_check(enrolled: Node) -> None:
    answer = enrolled.portal.post("/portal/me/consents/8", data={"csrf": enrolled.csrf(), "action": "withdraw"})
    header, payload, signature = signed_receipt(answer.text).split(".")
    forged = payload[:-4] + ("AAAA" if not payload.endswith("AAAA") else "BBBB")
    checked = enrolled.portal.post(
        "/portal/receipts/verify", data={"csrf": enrolled.csrf(), "receipt": f"{header}.{forged}.{signature}"}
    )
    assert checked.status_code == 400
    assert "Nicht gültig" in checked.text
