"""The shapes of the MOSAIC TTP-FHIR E-PIX IG: identities as `Patient`, MPI entries as `Person`, without I/O.

A `Patient` sent in is read into what linkage compares (identifiers, demographics) and kept as sent, so
an identity answers with the addresses and extensions its source gave. Every malformed element ends
as a 400 naming where it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from servicekit.fhir import FhirError, parse_fhir_date
from trustcentre.fhir import MAX_VALUE_LENGTH
from trustcentre.linkage import Identifier
from trustcentre.matching import SEXES, Demographics

IG = "https://ths-greifswald.de/fhir"
MPI_SYSTEM = f"{IG}/epix/identifier/MPI"
#: Names one identity (its id here) in `$assignIdentityByIdentifier`.
IDENTITY_SYSTEM = f"{IG}/epix/identifier/identity"
MATCH_STATUS_SYSTEM = f"{IG}/CodeSystem/epix/MatchStatus"
SAVE_ACTION_SYSTEM = f"{IG}/CodeSystem/epix/SaveAction"
PATIENT_PROFILE = f"{IG}/StructureDefinition/epix/Patient"
PERSON_PROFILE = f"{IG}/StructureDefinition/epix/Person"
#: How sure the reference identity is (the IG's examples mark it so); other links carry no assurance.
REFERENCE_ASSURANCE = "level4"
_NOT_STORED = ("id", "meta")


@dataclass(frozen=True)
class SentIdentity:
    """One `Patient` of a request: what linkage needs of it, and the resource to keep."""

    identifiers: tuple[Identifier, ...]
    demographics: Demographics | None
    resource: Mapping[str, Any]


def read_identity(location: str, patient: Mapping[str, Any]) -> SentIdentity:
    """Read a `Patient` (found at `location`); demographics None when it names no one and has no birth date."""
    where = f"{location}.resource"
    identifiers = tuple(
        _identifier(f"{where}.identifier[{i}]", v) for i, v in enumerate(_list(patient, "identifier", where))
    )
    family, given = _name(_list(patient, "name", where), f"{where}.name")
    birth_date = _birth_date(patient.get("birthDate"), f"{where}.birthDate")
    sex = patient.get("gender")
    if sex is not None and sex not in SEXES:
        raise FhirError(400, "invalid", f"{where}.gender: one of {', '.join(sorted(SEXES))}", (f"{where}.gender",))
    named = family or given or birth_date is not None
    demographics = Demographics(family, given, birth_date, sex) if named else None
    kept = {key: value for key, value in patient.items() if key not in _NOT_STORED}
    return SentIdentity(identifiers, demographics, kept)


def identity(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored identity as the IG's `Patient` (as its source sent it, else from what linkage kept)."""
    sent = row.get("resource")
    body: dict[str, Any] = (
        {key: value for key, value in sent.items() if key not in {"resourceType", *_NOT_STORED}}
        if isinstance(sent, dict)
        else _from_columns(row)
    )
    return {
        "resourceType": "Patient",
        "id": str(row["id"]),
        "meta": {"source": row["source"], "profile": [PATIENT_PROFILE]},
        "active": True,
        **body,
    }


def person(
    identifier: Mapping[str, str], rows: Sequence[Mapping[str, Any]], reference: int | None, domain: str | None
) -> dict[str, Any]:
    """An MPI entry as the IG's `Person`: its identifier (MPI or a node's person id) and links to its identities."""
    links = [
        {
            "target": {"reference": f"Patient/{row['id']}"},
            **({"assurance": REFERENCE_ASSURANCE} if row["id"] == reference else {}),
        }
        for row in rows
    ]
    return {
        "resourceType": "Person",
        "id": identifier["value"],
        "meta": {"profile": [PERSON_PROFILE]},
        "identifier": [dict(identifier)],
        **({"managingOrganization": {"identifier": {"value": domain}}} if domain else {}),
        "active": True,
        **({"link": links} if links else {}),
    }


def coding(system: str, code: str) -> dict[str, str]:
    """A FHIR Coding."""
    return {"system": system, "code": code}


def _from_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    name = {k: v for k, v in (("family", row["family"]), ("given", [row["given"]] if row["given"] else None)) if v}
    return {
        **({"name": [name]} if name else {}),
        **({"gender": row["sex"]} if row["sex"] else {}),
        **({"birthDate": row["birth_date"].isoformat()} if row["birth_date"] else {}),
    }


def _list(resource: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = resource.get(key, [])
    if not isinstance(value, list):
        raise FhirError(400, "structure", f"{where}.{key} must be a list", (f"{where}.{key}",))
    return value


def _identifier(where: str, value: Any) -> Identifier:  # noqa: ANN401 -- decoded JSON, checked here
    system, text = (value.get("system"), value.get("value")) if isinstance(value, dict) else (None, None)
    if not (isinstance(system, str) and isinstance(text, str) and 0 < len(system) <= MAX_VALUE_LENGTH):
        raise FhirError(400, "invalid", f"{where} must have a system and a value", (where,))
    if not 0 < len(text.strip()) <= MAX_VALUE_LENGTH:
        raise FhirError(400, "invalid", f"{where}: the value must be 1-{MAX_VALUE_LENGTH} characters", (where,))
    return Identifier(system, text)


def _name(names: list[Any], where: str) -> tuple[str, str]:
    """Family and given names (joined) of the first name entry; empty strings where there are none."""
    if not names:
        return "", ""
    first = names[0]
    family = first.get("family", "") if isinstance(first, dict) else None
    given = first.get("given", []) if isinstance(first, dict) else None
    if not isinstance(family, str) or not isinstance(given, list) or not all(isinstance(g, str) for g in given):
        raise FhirError(
            400, "invalid", f"{where}[0]: family must be a string, given a list of strings", (f"{where}[0]",)
        )
    joined = " ".join(g.strip() for g in given if g.strip())
    if len(family) > MAX_VALUE_LENGTH or len(joined) > MAX_VALUE_LENGTH:
        raise FhirError(
            400, "too-long", f"{where}[0]: names of at most {MAX_VALUE_LENGTH} characters", (f"{where}[0]",)
        )
    return family.strip(), joined


def _birth_date(raw: object, where: str) -> date | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise FhirError(400, "invalid", f"{where} must be a FHIR date", (where,))
    try:
        return parse_fhir_date(raw)
    except ValueError:
        raise FhirError(400, "invalid", f"{where}: {raw!r} is not a FHIR date", (where,)) from None
