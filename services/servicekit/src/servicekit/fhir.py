"""FHIR plumbing every service needs: the error a request is refused with, its OperationOutcome, JSON bodies.

Every malformed request ends as a `FhirError`, which the services turn into a 4xx with an
OperationOutcome naming the element at fault, so no handler has to guard against stray types.
Every JSON request body is decoded here, within the request's input limits (`servicekit.limits`).
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from servicekit.limits import current_input_limits

FHIR_JSON = "application/fhir+json"
#: A JSON string as written. A raw line break ends it: JSON allows none inside a string, and NDJSON's
#: lines stay apart even when one of them is broken.
_STRING = re.compile(rb'"[^"\\\r\n]*(?:\\.[^"\\\r\n]*)*"')
#: Brackets weighed 2 (opening) or 0 (closing), every other byte dropped: the running sum of the weights
#: minus the number of brackets so far is the nesting depth there.
_BRACKET_WEIGHTS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")


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


def check_json_limits(body: bytes) -> None:
    """Refuse (413) a JSON or NDJSON body past the request's input limits, judged from its bytes before parsing.

    Parsing is what a hostile body makes expensive: 32 MB of nested empty arrays take Python's parser
    6 s and 850 MB, and 100,000 nested arrays end in a RecursionError. Measuring takes a few passes at C
    speed: strings are cut out (their length noted), then brackets and commas are counted. The counts
    are exact for valid JSON; anything else the parser refuses after.
    """
    limits = current_input_limits()
    strings_cut = _STRING.sub(b"_", body)
    structure = strings_cut.translate(None, b" \t\r\n")
    containers = structure.count(b"[") + structure.count(b"{")
    items = structure.count(b",") + containers - structure.count(b"[]") - structure.count(b"{}")
    if items > limits.json_max_items:
        raise _too_costly(f"holds {items} JSON array items and object members", "JSON_MAX_ITEMS", limits.json_max_items)
    weights = structure.translate(_BRACKET_WEIGHTS, _NOT_BRACKETS)
    depth = max(map(operator.sub, itertools.accumulate(weights), itertools.count(1)), default=0)
    if depth > limits.json_max_depth:
        raise _too_costly(f"nests JSON {depth} levels deep", "JSON_MAX_DEPTH", limits.json_max_depth)
    # Cutting out a string of n bytes shortened the body by n + 1: none can be longer than all of them together.
    if len(body) - len(strings_cut) > limits.json_max_string_bytes:
        longest = max(map(len, _STRING.findall(body))) - 2
        if longest > limits.json_max_string_bytes:
            limit = limits.json_max_string_bytes
            raise _too_costly(f"holds a JSON string of {longest} bytes", "JSON_MAX_STRING_BYTES", limit)


def parse_json(body: bytes) -> Any:  # noqa: ANN401 -- any JSON document
    """Decode a request body (UTF-8 JSON) within the request's input limits: 400 if it is not JSON, 413 past a limit."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_json(exc) from None
    check_json_limits(body)
    try:
        return json.loads(text)
    except RecursionError:
        limit = current_input_limits().json_max_depth
        raise _too_costly("nests JSON deeper than the parser can follow", "JSON_MAX_DEPTH", limit) from None
    except ValueError as exc:
        raise _not_json(exc) from None


def parse_json_resource(body: bytes, expected_type: str) -> dict[str, Any]:
    """Decode a request body as one FHIR JSON resource of `expected_type`."""
    resource = parse_json(body)
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


def _not_json(error: ValueError) -> FhirError:
    return FhirError(400, "structure", f"the request body is not valid JSON: {error}")


def _too_costly(what: str, limit: str, value: int) -> FhirError:
    """A refusal past an input limit, naming the limit and its value (docs/federation.md, "Input limits")."""
    return FhirError(413, "too-costly", f"the request body {what}; the limit {limit} is {value}")
