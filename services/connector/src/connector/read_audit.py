"""Whom a read was about, for the audit record a patient will be shown: every patient the answer names.

A search answer holds Patients (this node knows each by its person id, `PERSON_SYSTEM`) and resources
that refer to patients (`subject`, `patient`, at any depth). Both count: a patient whose Condition was
read was read too, even if their Patient resource was not in the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from connector.transform import PERSON_SYSTEM

#: More subjects than this in one answer are not worth listing one by one (a bulk export is audited as such).
MAX_SUBJECTS = 1000


def patients_read(answer: dict[str, Any]) -> list[str]:
    """The person ids of the Patients in `answer` (a resource or Bundle) and `Patient/<id>` of those referred to."""
    found: dict[str, None] = {}
    for resource in _resources(answer):
        if resource.get("resourceType") == "Patient":
            for identifier in resource.get("identifier", []) if isinstance(resource.get("identifier"), list) else []:
                if isinstance(identifier, dict) and identifier.get("system") == PERSON_SYSTEM:
                    found[str(identifier.get("value"))] = None
            if isinstance(resource.get("id"), str):
                found[f"Patient/{resource['id']}"] = None
        for reference in _patient_references(resource):
            found[reference] = None
        if len(found) >= MAX_SUBJECTS:
            break
    return list(found)[:MAX_SUBJECTS]


def _resources(answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if answer.get("resourceType") != "Bundle":
        yield answer
        return
    for entry in answer.get("entry", []) if isinstance(answer.get("entry"), list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            yield entry["resource"]


def _patient_references(value: Any) -> Iterator[str]:  # noqa: ANN401 -- any JSON
    if isinstance(value, list):
        for item in value:
            yield from _patient_references(item)
    elif isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference.startswith("Patient/"):
            yield reference.split("/_history/")[0]
        for item in value.values():
            yield from _patient_references(item)
