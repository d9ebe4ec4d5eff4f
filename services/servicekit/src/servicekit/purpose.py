"""Why data was used: the purposes an audit record may name, checked, never taken as free text.

Patients read these in their ledger, so a purpose is one of a few known values: `treatment`,
`operations` (running the node: ingest, linkage, consent records) or `research/<project>` for a
project the node is configured with (`research` alone where no one project applies, e.g. a
feasibility count). Services derive it from what is done; a local caller may name it in the
`X-Hubnode-Purpose` header, which is refused (400) unless it is one of these. In AuditEvents it
becomes a code of HL7's ActReason (TREAT, HOPERAT, HRESCH) plus the project's name.

`emergency` is treatment outside the patient's consent ("break the glass"): a clinician may claim it
only with a stated reason (`X-Hubnode-Emergency-Reason`, percent-encoded UTF-8, since headers are
ASCII and reasons German), which the record keeps and the patient's ledger shows next to the flag
(ActReason ETREAT).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import unquote

from servicekit.fhir import FhirError

PURPOSE_HEADER = "x-hubnode-purpose"
EMERGENCY_REASON_HEADER = "x-hubnode-emergency-reason"
TREATMENT = "treatment"
EMERGENCY = "emergency"
OPERATIONS = "operations"
RESEARCH = "research"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PROJECT_SYSTEM = "urn:hubnode:project"
_ACT_REASONS = {TREATMENT: "TREAT", EMERGENCY: "ETREAT", OPERATIONS: "HOPERAT", RESEARCH: "HRESCH"}
#: A stated reason is a sentence or two, never a document.
MIN_REASON, MAX_REASON = 10, 500


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
        known = ", ".join([TREATMENT, EMERGENCY, OPERATIONS, RESEARCH, *(research(p) for p in sorted(projects))])
        raise FhirError(400, "invalid", f"X-Hubnode-Purpose {purpose[:80]!r} is not a known purpose; known: {known}")
    if derived in (OPERATIONS, purpose) or (derived == RESEARCH and purpose.startswith(f"{RESEARCH}/")):
        return purpose
    if derived == TREATMENT and purpose == EMERGENCY:
        return purpose
    raise FhirError(400, "invalid", f"X-Hubnode-Purpose {purpose!r} contradicts this operation's purpose {derived!r}")


def emergency_reason(purpose: str, header: str | None) -> str:
    """The stated reason of an emergency access (400 without a plausible one); "" for any other purpose."""
    if purpose != EMERGENCY:
        return ""
    try:
        decoded = unquote(header or "", errors="strict")
    except UnicodeDecodeError:
        decoded = ""
    reason = " ".join(decoded.split())
    if not MIN_REASON <= len(reason) <= MAX_REASON or not reason.isprintable():
        raise FhirError(
            400,
            "required",
            f"an emergency access states its reason in X-Hubnode-Emergency-Reason ({MIN_REASON}-{MAX_REASON} chars)",
        )
    return reason


def codings(purpose: str) -> list[dict[str, Any]]:
    """`AuditEvent.purposeOfEvent` of a purpose: its ActReason code, and the project of a research purpose."""
    kind, _, project = purpose.partition("/")
    found: list[dict[str, Any]] = [{"system": ACT_REASON_SYSTEM, "code": _ACT_REASONS.get(kind, "HOPERAT")}]
    if project:
        found.append({"system": PROJECT_SYSTEM, "code": project})
    return found
