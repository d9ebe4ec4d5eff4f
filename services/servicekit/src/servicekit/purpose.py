"""Why data was used: the purposes an audit record may name, checked, never taken as free text.

Patients read these in their ledger, so a purpose is one of a few known values: `treatment`,
`operations` (running the node: ingest, linkage, consent records) or `research/<project>` for a
project the node is configured with (`research` alone where no one project applies, e.g. a
feasibility count). Services derive it from what is done; a local caller may name it in the
`X-Hubnode-Purpose` header, which is refused (400) unless it is one of these. In AuditEvents it
becomes a code of HL7's ActReason (TREAT, HOPERAT, HRESCH) plus the project's name.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from servicekit.fhir import FhirError

PURPOSE_HEADER = "x-hubnode-purpose"
TREATMENT = "treatment"
OPERATIONS = "operations"
RESEARCH = "research"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PROJECT_SYSTEM = "urn:hubnode:project"
_ACT_REASONS = {TREATMENT: "TREAT", OPERATIONS: "HOPERAT", RESEARCH: "HRESCH"}


def research(project: str) -> str:
    """The purpose of using data for one research project."""
    return f"{RESEARCH}/{project}"


def allowed(purpose: str, projects: Collection[str]) -> bool:
    """Whether `purpose` is one of the known values for a node with these projects."""
    kind, _, project = purpose.partition("/")
    return purpose in _ACT_REASONS or (kind == RESEARCH and project in projects)


def claimed(header: str | None, projects: Collection[str], derived: str) -> str:
    """The purpose a local caller names (checked), else the one derived from the operation.

    A caller may narrow `research` to one project, or name the purpose where none is derived, but not
    contradict what is done: research data cannot be fetched "for treatment" and vice versa.
    """
    if header is None or not header.strip():
        return derived
    purpose = header.strip()
    if not allowed(purpose, projects):
        known = ", ".join([TREATMENT, OPERATIONS, RESEARCH, *(research(p) for p in sorted(projects))])
        raise FhirError(400, "invalid", f"X-Hubnode-Purpose {purpose[:80]!r} is not a known purpose; known: {known}")
    if derived in (OPERATIONS, purpose) or (derived == RESEARCH and purpose.startswith(f"{RESEARCH}/")):
        return purpose
    raise FhirError(400, "invalid", f"X-Hubnode-Purpose {purpose!r} contradicts this operation's purpose {derived!r}")


def codings(purpose: str) -> list[dict[str, Any]]:
    """`AuditEvent.purposeOfEvent` of a purpose: its ActReason code, and the project of a research purpose."""
    kind, _, project = purpose.partition("/")
    found: list[dict[str, Any]] = [{"system": ACT_REASON_SYSTEM, "code": _ACT_REASONS.get(kind, "HOPERAT")}]
    if project:
        found.append({"system": PROJECT_SYSTEM, "code": project})
    return found
