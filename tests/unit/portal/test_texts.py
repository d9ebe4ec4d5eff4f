"""Every text the pages use exists in German and English; pure parts of the portal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from portal import consent_modules, i18n
from portal.interactions import detected_issues
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
