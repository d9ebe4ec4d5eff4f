"""FHIR plumbing every service needs: the error a request is refused with, and its OperationOutcome.

Every malformed request ends as a `FhirError`, which the services turn into a 4xx with an
OperationOutcome naming the element at fault, so no handler has to guard against stray types.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

FHIR_JSON = "application/fhir+json"


@dataclass
class FhirError(Exception):
    """A refused request; `code` is a FHIR issue type (invalid, not-found, ...)."""

    status: int
    code: str
    diagnostics: str
    expression: Sequence[str] = field(default_factory=tuple)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.diagnostics}"


def operation_outcome(
    code: str, diagnostics: str, expression: Sequence[str] = (), severity: str = "error"
) -> dict[str, Any]:
    """An OperationOutcome with one issue."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = list(expression)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def parse_json_resource(body: bytes, expected_type: str) -> dict[str, Any]:
    """Decode a request body as one FHIR JSON resource of `expected_type`."""
    try:
        resource = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FhirError(400, "structure", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(resource, dict):
        raise FhirError(400, "structure", f"expected a {expected_type} resource, got a JSON {type(resource).__name__}")
    if resource.get("resourceType") != expected_type:
        raise FhirError(
            400,
            "invalid",
            f"expected resourceType {expected_type}, got {resource.get('resourceType')!r}",
            ("resourceType",),
        )
    return resource


def parse_fhir_date(raw: str) -> date:
    """A FHIR date or dateTime as the calendar date it names (partial dates: their first day).

    Raises ValueError for anything else.
    """
    if len(raw) == 4:  # YYYY
        return date(int(raw), 1, 1)
    if len(raw) == 7:  # YYYY-MM
        return date(int(raw[:4]), int(raw[5:7]), 1)
    if len(raw) == 10:  # YYYY-MM-DD
        return date.fromisoformat(raw)
    return datetime.fromisoformat(raw).date()  # the calendar date as written, in its own time zone
