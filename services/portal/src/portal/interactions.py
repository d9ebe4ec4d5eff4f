"""Cross-sector medication interaction warnings from a small, documented table, as FHIR `DetectedIssue`s.

Pure. The table holds the pairs the journeys use (docs/portal.md lists them with the reason); it is
a safety net for medication seen across sites, not a drug-interaction database. A pair is flagged
when the patient's MedicationStatements at this node (their own and those a careSummary brought)
hold both ATC codes, whichever site recorded each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#: The German text of a warning, beside `DetectedIssue.detail` in English.
DETAIL_DE = "https://hubnode.org/fhir/StructureDefinition/detail-de"


@dataclass(frozen=True)
class Interaction:
    """Two ATC codes that should not be taken together, how severe, and why (German and English)."""

    first: str
    second: str
    severity: str
    de: str
    en: str


INTERACTIONS: tuple[Interaction, ...] = (
    Interaction(
        "B01AA03",
        "M01AE01",
        "high",
        "Warfarin und Ibuprofen: erhöhtes Blutungsrisiko (NSAR hemmen die Plättchenfunktion und schädigen die "
        "Magenschleimhaut); Paracetamol erwägen, INR kontrollieren.",
        "Warfarin and ibuprofen: raised risk of bleeding (NSAIDs inhibit platelets and harm the gastric mucosa); "
        "consider paracetamol, check the INR.",
    ),
)


def atc_codes(statement: dict[str, Any]) -> set[str]:
    """The ATC codes a MedicationStatement names (by any coding system that carries ATC codes)."""
    concept = statement.get("medicationCodeableConcept")
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    return {str(c["code"]) for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)}


def detected_issues(patient_reference: str, statements: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `DetectedIssue` per table pair the patient's medication statements hold both codes of."""
    held: dict[str, list[str]] = {}
    for statement in statements:
        for code in atc_codes(statement):
            held.setdefault(code, []).append(f"MedicationStatement/{statement.get('id')}")
    return [_issue(patient_reference, held, i) for i in INTERACTIONS if i.first in held and i.second in held]


def _issue(patient_reference: str, held: dict[str, list[str]], interaction: Interaction) -> dict[str, Any]:
    patient_id = patient_reference.rsplit("/", maxsplit=1)[-1]
    return {
        "resourceType": "DetectedIssue",
        "id": f"interaction-{interaction.first}-{interaction.second}-{patient_id}",
        "status": "preliminary",
        "code": {"coding": [{"system": ACT_CODE_SYSTEM, "code": "DRG", "display": "Drug Interaction Alert"}]},
        "severity": interaction.severity,
        "patient": {"reference": patient_reference},
        "implicated": [{"reference": r} for r in (*held[interaction.first], *held[interaction.second])],
        "detail": interaction.en,
        "extension": [{"url": DETAIL_DE, "valueString": interaction.de}],
    }
