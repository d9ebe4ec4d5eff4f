"""How a FHIR resource reads on a page: a short description, its date, a patient's name. Pure.

Only text comes out; the templates escape it, so a name or free text holding HTML shows as text.
"""

from __future__ import annotations

from typing import Any


def describe(resource: dict[str, Any]) -> str:
    """What a resource is about: its code's display (or code), a questionnaire's name, a medication."""
    concept = resource.get("code") or resource.get("medicationCodeableConcept") or resource.get("type")
    if isinstance(concept, list):
        concept = concept[0] if concept else None
    if isinstance(concept, dict):
        for coding in concept.get("coding", []) if isinstance(concept.get("coding"), list) else []:
            if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
                shown = str(coding.get("display") or coding.get("code"))
                value = resource.get("valueQuantity")
                if isinstance(value, dict) and "value" in value:
                    shown += f": {value.get('value')} {value.get('unit', '')}".rstrip()
                return shown
        if isinstance(concept.get("text"), str):
            return str(concept["text"])
    if isinstance(resource.get("questionnaire"), str):
        return str(resource["questionnaire"]).rsplit("/", 1)[-1]
    return str(resource.get("id", ""))


def when(resource: dict[str, Any]) -> str:
    """The day a resource is about (effective, onset, performed, authored, period start), else empty."""
    for key in ("effectiveDateTime", "onsetDateTime", "performedDateTime", "authored", "recordedDate", "issued"):
        if isinstance(resource.get(key), str):
            return str(resource[key])[:10]
    for key in ("period", "effectivePeriod", "performedPeriod"):
        period = resource.get(key)
        if isinstance(period, dict) and isinstance(period.get("start"), str):
            return str(period["start"])[:10]
    return ""


def patient_name(patient: dict[str, Any]) -> str:
    """A patient's name as the node holds it: given names, then the family name."""
    names = patient.get("name")
    name = names[0] if isinstance(names, list) and names and isinstance(names[0], dict) else {}
    given = " ".join(str(g) for g in name.get("given", []) if isinstance(g, str))
    return f"{given} {name.get('family', '')}".strip() or str(patient.get("id", ""))
