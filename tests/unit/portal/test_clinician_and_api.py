"""The clinician's view and the portal's FHIR API: consent gate, interaction warnings, tokens checked."""

from __future__ import annotations

import pytest

from tests.unit.portal.conftest import CLINIC, KVNR, Node

WOLFGANG_KVNR, WOLFGANG_MRN = "A123456780", "8101"
ATC = "http://fhir.de/CodeSystem/bfarm/atc"


def medication(resource_id: str, code: str, source: str = "") -> dict[str, object]:
    statement: dict[str, object] = {
        "resourceType": "MedicationStatement",
        "id": resource_id,
        "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": ATC, "code": code}]},
        "subject": {"reference": f"Patient/p-{WOLFGANG_MRN}"},
        "effectiveDateTime": "2025-01-02",
    }
    return statement


@pytest.fixture
def treated(node: Node) -> Node:
    node.ingest(WOLFGANG_KVNR, WOLFGANG_MRN, medication("m-1", "B01AA03"), medication("m-2", "M01AE01"))
    node.consent(WOLFGANG_KVNR, "2", "3", "5", "6", "7")
    return node


def test_a_clinician_finds_a_patient_and_sees_the_interaction_warning(treated: Node) -> None:
    treated.sign_in("clara")
    found = treated.portal.get("/portal/patients", params={"kind": "kvnr", "value": WOLFGANG_KVNR})
    assert found.status_code == 200
    assert "Warfarin und Ibuprofen" in found.text
    assert '<td class="source">dic</td>' in found.text


def test_without_treatment_consent_the_clinician_is_refused_with_the_reason(node: Node) -> None:
    node.ingest(WOLFGANG_KVNR, WOLFGANG_MRN, medication("m-1", "B01AA03"))
    node.consent(WOLFGANG_KVNR, "2", "3", "6", "7")
    node.sign_in("clara")
    answer = node.portal.get(f"/portal/patients/kvnr/{WOLFGANG_KVNR}")
    assert answer.status_code == 403
    assert "Teil 5 der Einwilligung" in answer.text


def test_a_clinician_looking_for_someone_unknown_gets_not_found(treated: Node) -> None:
    treated.sign_in("clara")
    assert treated.portal.get(f"/portal/patients/local/{'0' * 9}").status_code == 404
    assert treated.portal.get("/portal/patients/ssn/123").status_code == 404


def test_the_api_answers_detected_issues_to_a_clinicians_token(treated: Node) -> None:
    token = treated.idp.token("clara")
    answer = treated.portal.get(
        "/portal/fhir/DetectedIssue",
        params={"patient.identifier": f"{KVNR}|{WOLFGANG_KVNR}"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    [issue] = [e["resource"] for e in answer.json()["entry"]]
    assert issue["resourceType"] == "DetectedIssue"
    assert issue["severity"] == "high"


def test_the_api_answers_consents_to_staff_and_refuses_them_clinical_data(treated: Node) -> None:
    token = treated.idp.token("staff")
    headers = {"Authorization": f"Bearer {token}"}
    named = {"patient.identifier": f"{CLINIC}|{WOLFGANG_MRN}"}
    consents = treated.portal.get("/portal/fhir/Consent", params=named, headers=headers)
    assert consents.status_code == 200
    assert consents.json()["total"] == 1
    assert treated.portal.get("/portal/fhir/QuestionnaireResponse", params=named, headers=headers).status_code == 403


def test_a_clinician_records_a_questionnaire_response_through_the_api(treated: Node) -> None:
    token = treated.idp.token("clara")
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "https://hubnode.org/fhir/Questionnaire/aftercare-quality-of-life|1.0",
        "status": "completed",
        "subject": {"identifier": {"system": KVNR, "value": WOLFGANG_KVNR}},
        "item": [{"linkId": "pain", "answer": [{"valueInteger": 2}]}],
    }
    stored = treated.portal.post(
        "/portal/fhir/QuestionnaireResponse", json=response, headers={"Authorization": f"Bearer {token}"}
    )
    assert stored.status_code == 201, stored.text
    assert len(treated.fhir.of_type("QuestionnaireResponse")) == 1


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (None, 401),
        ("not-a-token", 401),
        ("expired", 401),
        ("other-client", 401),
    ],
)
def test_the_api_refuses_missing_expired_and_foreign_tokens(treated: Node, token: str | None, status: int) -> None:
    tokens = {
        "expired": treated.idp.token("clara", lifetime=-120),
        "other-client": treated.idp.token("clara", azp="someone-else"),
    }
    value = tokens.get(token or "", token)
    headers = {"Authorization": f"Bearer {value}"} if value else {}
    answer = treated.portal.get(
        "/portal/fhir/Consent", params={"patient.identifier": f"{KVNR}|{WOLFGANG_KVNR}"}, headers=headers
    )
    assert answer.status_code == status


def test_a_patients_token_for_another_patients_data_is_refused(treated: Node) -> None:
    treated.ingest("B987654320", "4711")
    treated.enrol("erika", "4711")
    token = treated.idp.token("erika")
    answer = treated.portal.get(
        "/portal/fhir/Consent",
        params={"patient.identifier": f"{KVNR}|{WOLFGANG_KVNR}"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 403
    own = treated.portal.get("/portal/fhir/Consent", headers={"Authorization": f"Bearer {token}"})
    assert own.status_code == 200
