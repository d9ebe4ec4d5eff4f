"""Purposes: emergency access is treatment outside consent, claimed only with a stated reason kept in the record."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import MetaData

from servicekit.audit import AuditLog
from servicekit.fhir import FhirError
from servicekit.purpose import EMERGENCY, OPERATIONS, RESEARCH, TREATMENT, claimed, codings, emergency_reason


def test_an_emergency_is_a_kind_of_treatment_and_nothing_else() -> None:
    assert claimed("emergency", (), TREATMENT) == EMERGENCY
    assert claimed("emergency", (), OPERATIONS) == EMERGENCY
    with pytest.raises(FhirError):
        claimed("emergency", ("study",), RESEARCH)
    assert codings(EMERGENCY) == [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}]


@pytest.mark.parametrize("header", [None, "", "   ", "too short", "x" * 501, "Bewusstlos\x00 eingeliefert"])
def test_an_emergency_without_a_plausible_reason_is_refused(header: str | None) -> None:
    with pytest.raises(FhirError) as refused:
        emergency_reason(EMERGENCY, header)
    assert refused.value.status == 400


def test_the_reason_is_kept_in_one_line_and_only_for_an_emergency() -> None:
    assert emergency_reason(EMERGENCY, quote("  Bewusstlos eingeliefert,\n Angehörige nicht erreichbar ")) == (
        "Bewusstlos eingeliefert, Angehörige nicht erreichbar"
    )
    assert emergency_reason(TREATMENT, "anything") == ""


@given(st.text(min_size=10, max_size=500))
def test_a_reason_is_kept_exactly_when_it_is_printable_text_of_the_allowed_length(header: str) -> None:
    try:
        collapsed = " ".join(unquote(header, errors="strict").split())
    except UnicodeDecodeError:
        collapsed = ""
    if 10 <= len(collapsed) <= 500 and collapsed.isprintable():
        assert emergency_reason(EMERGENCY, header) == collapsed
    else:
        with pytest.raises(FhirError):
            emergency_reason(EMERGENCY, header)


def test_the_audit_event_of_an_emergency_carries_its_reason_beside_the_flag() -> None:
    log = AuditLog(MetaData(), "urn:test", "test")
    row = {
        "id": 1,
        "operation": "read",
        "recorded": datetime(2026, 12, 4, tzinfo=UTC),
        "outcome": "success",
        "caller": "dr.weber",
        "detail": "Bewusstlos eingeliefert",
        "purpose": EMERGENCY,
        "query": "",
    }
    [purpose] = log.as_audit_event(row, ["P1"])["purposeOfEvent"]
    assert purpose["coding"][0]["code"] == "ETREAT"
    assert purpose["text"] == "Bewusstlos eingeliefert"
    assert "text" not in log.as_audit_event({**row, "purpose": TREATMENT}, ["P1"])["purposeOfEvent"][0]
