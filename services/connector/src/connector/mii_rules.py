"""The MII core data set's (KDS) mandatory rules for the resources a node ingests, as data.

fhir.resources checks FHIR R4 structure; these rules add what the MII profiles make mandatory on
top, and only that, so every real KDS bundle passes. Rules that belong to one MII profile apply only
to resources that claim it in `meta.profile` (other profiles, e.g. a tumour-specific Condition, set
their own codes). Code formats are checked wherever a coding of that system appears in `code`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ICD10GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
ALPHA_ID = "http://fhir.de/CodeSystem/bfarm/alpha-id"
OPS = "http://fhir.de/CodeSystem/bfarm/ops"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ORPHANET = "http://www.orpha.net"
ATC = "http://fhir.de/CodeSystem/bfarm/atc"
PZN = "http://fhir.de/CodeSystem/ifa/pzn"
POLICY_SYSTEM = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"

_CORE = "https://www.medizininformatik-initiative.de/fhir/core"
DIAGNOSE_PROFILE = f"{_CORE}/modul-diagnose/StructureDefinition/Diagnose"
PROZEDUR_PROFILE = f"{_CORE}/modul-prozedur/StructureDefinition/Procedure"
LABOR_PROFILE = f"{_CORE}/modul-labor/StructureDefinition/ObservationLab"
MEDIKATION_PROFILE = f"{_CORE}/modul-medikation/StructureDefinition/MedicationStatement"
CONSENT_PROFILE = (
    "https://www.medizininformatik-initiative.de/fhir/modul-consent/StructureDefinition/mii-pr-consent-einwilligung"
)


@dataclass(frozen=True)
class Required:
    """The element at `path` must be present (1..*)."""

    path: str

    def problems(self, resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(path, message) for each violation."""
        if not any(True for _ in values_at(resource, self.path)):
            yield self.path, "is required by the MII core data set"


@dataclass(frozen=True)
class CodedFrom:
    """Every CodeableConcept at `path` must carry a coding from one of `systems` (and one must exist, if `required`)."""

    path: str
    systems: frozenset[str]
    required: bool = True

    def problems(self, resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(path, message) for each violation."""
        found = list(values_at(resource, self.path))
        if not found and self.required:
            yield self.path, f"is required, with a coding from {', '.join(sorted(self.systems))}"
        for where, concept in found:
            codings = concept.get("coding", []) if isinstance(concept, dict) else []
            if not any(c.get("system") in self.systems for c in codings):
                yield f"{where}.coding", f"needs a coding from {', '.join(sorted(self.systems))}"


@dataclass(frozen=True)
class CodeFormat:
    """Codings of `system` at `path` need a code in the system's format."""

    path: str
    system: str
    pattern: re.Pattern[str]

    def problems(self, resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(path, message) for each violation."""
        for where, coding in codings_of(resource, self.path, self.system):
            code = coding.get("code")
            if not isinstance(code, str) or not self.pattern.fullmatch(code):
                yield f"{where}.code", f"{code!r} is not a code of {self.system}"


@dataclass(frozen=True)
class Versioned:
    """Codings of `system` at `path` need a `version` (the catalogue's year)."""

    path: str
    system: str

    def problems(self, resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(path, message) for each violation."""
        for where, coding in codings_of(resource, self.path, self.system):
            if not coding.get("version"):
                yield f"{where}.version", f"a {self.system} coding needs its version (year)"


@dataclass(frozen=True)
class RequiredInEach:
    """Every element at `path` must carry `child` (1..*), e.g. a period on each permitted policy."""

    path: str
    child: str

    def problems(self, resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(path, message) for each violation."""
        for where, element in values_at(resource, self.path):
            if not isinstance(element, dict) or not any(True for _ in values_at(element, self.child)):
                yield f"{where}.{self.child}", "is required by the MII core data set"


@dataclass(frozen=True)
class Equals:
    """The element at `path` must have the value `value`."""

    path: str
    value: str

    def problems(self, resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(path, message) for each violation."""
        for where, found in values_at(resource, self.path):
            if found != self.value:
                yield where, f"must be {self.value!r}, not {found!r}"


@dataclass(frozen=True)
class Claims:
    """`meta.profile` must name `profile` (with or without a `|version`)."""

    profile: str

    def problems(self, resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(path, message) for each violation."""
        if self.profile not in claimed_profiles(resource):
            yield "meta.profile", f"must name {self.profile}"


Check = Required | RequiredInEach | CodedFrom | CodeFormat | Versioned | Equals | Claims


@dataclass(frozen=True)
class Rule:
    """A check on resources of `resource_type` (only those claiming `profile`, if one is named)."""

    resource_type: str
    check: Check
    profile: str | None = None


_ICD10GM_CODE = re.compile(r"[A-Z]\d{2}(\.[0-9A-Z-]{1,4})?[!+*\u2020]?")
_OPS_CODE = re.compile(r"\d-\d{2}[0-9a-z]?(\.[0-9a-z]{1,3})?")
_LOINC_CODE = re.compile(r"(LP|LA|LG)?\d{1,8}-\d")

RULES: Sequence[Rule] = (
    Rule("Patient", Required("identifier")),
    Rule("Patient", Required("gender")),
    Rule("Encounter", Required("subject")),
    Rule("Condition", Required("subject")),
    Rule("Condition", CodeFormat("code", ICD10GM, _ICD10GM_CODE)),
    Rule("Condition", CodedFrom("code", frozenset({ICD10GM, ALPHA_ID, SNOMED, ORPHANET})), DIAGNOSE_PROFILE),
    Rule("Condition", Versioned("code", ICD10GM), DIAGNOSE_PROFILE),
    Rule("Procedure", Required("subject")),
    Rule("Procedure", CodeFormat("code", OPS, _OPS_CODE)),
    Rule("Procedure", CodedFrom("code", frozenset({OPS, SNOMED})), PROZEDUR_PROFILE),
    Rule("Procedure", Versioned("code", OPS), PROZEDUR_PROFILE),
    Rule("Observation", Required("subject")),
    Rule("Observation", CodeFormat("code", LOINC, _LOINC_CODE)),
    Rule("Observation", CodedFrom("code", frozenset({LOINC})), LABOR_PROFILE),
    Rule("Observation", Required("effective"), LABOR_PROFILE),
    Rule("MedicationStatement", Required("subject")),
    Rule("MedicationStatement", CodedFrom("medicationCodeableConcept", frozenset({ATC, PZN}), required=False)),
    Rule("Consent", Claims(CONSENT_PROFILE)),
    Rule("Consent", Required("patient")),
    Rule("Consent", Required("provision.type")),
    Rule("Consent", Equals("provision.type", "deny")),
    Rule("Consent", CodedFrom("provision.provision.code", frozenset({POLICY_SYSTEM}))),
    Rule("Consent", RequiredInEach("provision.provision", "period")),
)


def problems(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every MII rule `resource` breaks, as (path inside the resource, message)."""
    kind = resource.get("resourceType")
    claimed = claimed_profiles(resource)
    found: list[tuple[str, str]] = []
    for rule in RULES:
        if rule.resource_type == kind and (rule.profile is None or rule.profile in claimed):
            found.extend(rule.check.problems(resource))
    return found


def codings_of(resource: Mapping[str, Any], path: str, system: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, coding) of each coding of `system` in the CodeableConcepts at `path`."""
    for where, concept in values_at(resource, path):
        codings = concept.get("coding", []) if isinstance(concept, dict) else []
        for index, coding in enumerate(codings):
            if isinstance(coding, dict) and coding.get("system") == system:
                yield f"{where}.coding[{index}]", coding


def claimed_profiles(resource: Mapping[str, Any]) -> set[str]:
    """The profiles `resource` claims in `meta.profile`, without versions."""
    meta = resource.get("meta")
    profiles = meta.get("profile", []) if isinstance(meta, dict) else []
    return {p.split("|", 1)[0] for p in profiles if isinstance(p, str)}


def values_at(resource: Mapping[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """(FHIRPath-like location, value) of each value at a dotted `path`, lists expanded with indices.

    A last step that names a choice element without its type (`effective`) matches any `effective[x]`.
    """
    steps = path.split(".")
    level: list[tuple[str, Any]] = [("", resource)]
    for number, step in enumerate(steps):
        following: list[tuple[str, Any]] = []
        for where, value in level:
            if not isinstance(value, dict):
                continue
            keys = [step] if step in value or number < len(steps) - 1 else _choices(value, step)
            for key in keys:
                following.extend(_expanded(f"{where}.{key}".lstrip("."), value.get(key)))
        level = following
    return iter(level)


def _choices(value: Mapping[str, Any], step: str) -> list[str]:
    return [k for k in value if k.startswith(step) and k[len(step) : len(step) + 1].isupper()]


def _expanded(where: str, value: Any) -> list[tuple[str, Any]]:  # noqa: ANN401 -- any JSON value
    if value is None:
        return []
    if isinstance(value, list):
        return [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    return [(where, value)]
