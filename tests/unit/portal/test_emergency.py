"""Emergency access: a clinician opens a record outside the patient's consent only with a reason, and it shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from portal.db import emergency_accesses
from tests.unit.portal.conftest import Node

KVNR_VALUE, MRN = "A123456780", "8101"
SUMMARY = f"/portal/patients/kvnr/{KVNR_VALUE}"
REASON = "Bewusstlos eingeliefert, Angehörige nicht erreichbar"


@pytest.fixture
def unconsented(node: Node) -> Node:
    """A patient of the node who gave every part of the broad consent but treatment (part 5)."""
    node.ingest(KVNR_VALUE, MRN)
    node.consent(KVNR_VALUE, "2", "3", "6", "7")
    return node


def break_glass(node: Node, reason: str = REASON, confirm: str | None = "yes") -> int:
    form = {"csrf": node.csrf(), "reason": reason}
    if confirm is not None:
        form["confirm"] = confirm
    answer = node.portal.post(f"{SUMMARY}/emergency", data=form, follow_redirects=False)
    return answer.status_code


def test_the_refusal_offers_a_clinician_emergency_access(unconsented: Node) -> None:
    unconsented.sign_in("clara")
    refused = unconsented.portal.get(SUMMARY)
    assert refused.status_code == 403
    assert f'action="{SUMMARY}/emergency"' in refused.text
    assert "Notfallzugriff starten" in refused.text


@pytest.mark.parametrize(
    ("reason", "confirm"), [("Notfall", "yes"), ("x" * 501, "yes"), (REASON, None), ("<b>\x07</b> bitte sofort", "yes")]
)
def test_without_a_stated_reason_and_confirmation_nothing_opens(
    unconsented: Node, reason: str, confirm: str | None
) -> None:
    unconsented.sign_in("clara")
    assert break_glass(unconsented, reason, confirm) == 400
    assert unconsented.portal.get(SUMMARY).status_code == 403


def test_a_form_without_the_sessions_csrf_token_is_refused(unconsented: Node) -> None:
    unconsented.sign_in("clara")
    answer = unconsented.portal.post(f"{SUMMARY}/emergency", data={"reason": REASON, "confirm": "yes"})
    assert answer.status_code == 403
    assert unconsented.portal.get(SUMMARY).status_code == 403


def test_with_a_reason_the_record_opens_flagged_and_every_read_is_recorded_with_it(unconsented: Node) -> None:
    unconsented.sign_in("clara")
    assert break_glass(unconsented) == 303
    page = unconsented.portal.get(SUMMARY)
    assert page.status_code == 200
    assert "Notfallzugriff ohne Einwilligung" in page.text
    assert REASON in page.text
    reads = unconsented.connector.get("/fhir/AuditEvent", headers={"Authorization": "Bearer token-of-auditor"})
    flagged = [
        e["resource"]["purposeOfEvent"][0]
        for e in reads.json()["entry"]
        if e["resource"].get("purposeOfEvent", [{}])[0].get("coding", [{}])[0].get("code") == "ETREAT"
    ]
    assert flagged, "the connector records the reads as emergency treatment"
    assert all(purpose["text"] == REASON for purpose in flagged)


def test_the_access_is_the_clinicians_alone_and_ends(unconsented: Node) -> None:
    unconsented.idp.add("carl", "clinician")
    unconsented.sign_in("clara")
    break_glass(unconsented)
    unconsented.sign_in("carl")
    assert unconsented.portal.get(SUMMARY).status_code == 403, "another clinician has not broken the glass"
    unconsented.sign_in("clara")
    engine = unconsented.portal.app.state.portal.engine  # type: ignore[attr-defined]
    with engine.begin() as connection:
        connection.execute(update(emergency_accesses).values(expires=datetime.now(UTC) - timedelta(seconds=1)))
    assert unconsented.portal.get(SUMMARY).status_code == 403


def test_a_patient_cannot_break_the_glass(unconsented: Node) -> None:
    unconsented.sign_in("erika")
    assert break_glass(unconsented) == 403


def test_the_patient_sees_the_emergency_access_and_its_reason_in_her_ledger(unconsented: Node) -> None:
    unconsented.sign_in("clara")
    break_glass(unconsented)
    unconsented.portal.get(SUMMARY)
    unconsented.enrol("erika", MRN)
    ledger = unconsented.portal.get("/portal/me/ledger")
    assert "Notfallbehandlung ohne Einwilligung" in ledger.text
    assert f"Begründung: „{REASON}“" in ledger.text
    assert 'class="purpose-etreat"' in ledger.text
