"""Every text the pages use exists in German and English; pure parts of the portal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portal import consent_modules, i18n
from portal.interactions import detected_issues
from portal.ledger import PROJECT_SYSTEM, entry
from portal.settings import Project
from portal.web import TEMPLATES as TEMPLATES_ENVIRONMENT
from portal.web import safe_next

TEMPLATES = Path(i18n.__file__).parent / "templates"
_USED = re.compile(r"""\bt\(\s*["']([a-z_]+)["']\s*[,)]""")


def test_both_languages_have_the_same_texts() -> None:
    assert set(i18n.TEXTS["de"]) == set(i18n.TEXTS["en"])


def test_every_text_a_template_names_exists() -> None:
    used = {key for page in TEMPLATES.glob("*.html") for key in _USED.findall(page.read_text())}
    assert used
    assert used <= set(i18n.TEXTS["de"])


@pytest.mark.parametrize(
    ("requested", "remembered", "chosen"),
    [(None, None, "de"), ("en", None, "en"), (None, "en", "en"), ("xx", None, "de")],
)
def test_german_is_the_default_language(requested: str | None, remembered: str | None, chosen: str) -> None:
    assert i18n.language(requested, remembered) == chosen


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/portal/", "//evil.example", "/portal//evil", "/other", "/portal\\x", "javascript:1"],
)
def test_next_never_leaves_the_portal(target: str) -> None:
    assert safe_next(target, "/portal") is None


def test_a_policy_is_found_by_any_spelling_of_its_code_and_unknown_codes_by_none() -> None:
    research = consent_modules.policy("8")
    assert research is not None
    assert consent_modules.policy(".8") is research
    assert consent_modules.policy(research.oid) is research
    assert consent_modules.policy("99") is None
    assert "dataSend" in research.blocks


def test_warfarin_and_ibuprofen_together_are_one_issue_and_either_alone_none() -> None:
    def statement(key: str, code: str) -> dict[str, object]:
        return {"id": key, "medicationCodeableConcept": {"coding": [{"code": code}]}}

    both = detected_issues("Patient/x", [statement("a", "B01AA03"), statement("b", "M01AE01")])
    assert [issue["severity"] for issue in both] == ["high"]
    assert detected_issues("Patient/x", [statement("a", "B01AA03")]) == []


def test_a_research_use_in_the_ledger_says_what_the_project_is_and_what_was_sent() -> None:
    event = {
        "resourceType": "AuditEvent",
        "recorded": "2026-12-04T10:00:00+01:00",
        "subtype": [{"code": "$pseudonymize"}],
        "purposeOfEvent": [{"coding": [{"code": "HRESCH"}, {"system": PROJECT_SYSTEM, "code": "demo-study"}]}],
        "agent": [{"who": {"display": "peer:dic"}}],
        "outcome": "0",
    }
    study = Project(
        "demo-study", "Verläufe nach <Darmkrebs>", "Was hilft nach der Operation?", "Register", ("Diagnosen",)
    )
    page = _render(
        "ledger.html", entries=[entry(event, "trustcentre", "")], unreachable=[], projects={"demo-study": study}
    )
    assert "<strong>Verläufe nach &lt;Darmkrebs&gt;</strong> (demo-study)" in page
    assert "Was hilft nach der Operation?" in page
    assert "Empfänger: Register" in page
    assert "Übermittelt: Diagnosen" in page
    assert '<td data-label="Wozu">' in page, "on a phone each value shows under its label"
    undescribed = _render("ledger.html", entries=[entry(event, "trustcentre", "")], unreachable=[], projects={})
    assert '<span class="project"><strong>demo-study</strong></span>' in undescribed


def test_the_ledger_says_where_each_entry_was_recorded_and_whose_entries_are_missing() -> None:
    event = {"resourceType": "AuditEvent", "recorded": "2026-12-04T10:00:00+01:00", "outcome": "0"}
    entries = [entry(event, "connector", "practice"), entry(event, "trustcentre", "")]
    page = _render("ledger.html", entries=entries, unreachable=["research"], projects={})
    assert '<td data-label="Wo protokolliert">Standort practice</td>' in page
    assert '<td data-label="Wo protokolliert">Treuhandstelle</td>' in page
    assert "Die Einträge von research konnten gerade nicht abgerufen werden" in page
    assert "nicht abgerufen" not in _render("ledger.html", entries=entries, unreachable=[], projects={})


def _render(template: str, **values: object) -> str:
    """A page in German, as the portal renders it for a signed-out visitor."""
    return TEMPLATES_ENVIRONMENT.get_template(template).render(
        t=lambda key, **kw: i18n.text("de", key, **kw),
        lang="de",
        other_lang="en",
        user=None,
        csrf="",
        csrf_field="csrf",
        base="/portal",
        path="/portal/me/ledger",
        site="dic",
        **values,
    )
