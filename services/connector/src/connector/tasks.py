"""The FHIR `Task` resources the processes between nodes are made of (docs/federation.md).

One place builds and reads them, so the starting side, the receiving side and the local API agree on
canonical URLs, input and output codes, the idempotency key and the requester. A Task from outside is
hostile until parsed here: every structural mistake becomes a 400 naming the element at fault.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from servicekit.allowlist import ORGANIZATION_SYSTEM
from servicekit.fhir import FhirError, parse_json

PROCESS_BASE = "https://hubnode.org/fhir/process/"
PROCESS_VERSION = "1.0"
INPUT_SYSTEM = "https://hubnode.org/fhir/CodeSystem/process-input"
OUTPUT_SYSTEM = "https://hubnode.org/fhir/CodeSystem/process-output"
IDEMPOTENCY_SYSTEM = "https://hubnode.org/fhir/sid/idempotency-key"

BUNDLE_CONTENT_TYPE = "application/fhir+json"
MAX_KEY_LENGTH = 255


class Process(StrEnum):
    """The processes nodes run with each other."""

    PING = "ping"
    CARE_SUMMARY = "careSummary"
    FEASIBILITY = "feasibility"
    DATA_SEND = "dataSend"

    @property
    def canonical(self) -> str:
        """`Task.instantiatesCanonical` of this process."""
        return f"{PROCESS_BASE}{self.value}|{PROCESS_VERSION}"


class Status(StrEnum):
    """The Task statuses a process goes through."""

    REQUESTED = "requested"
    COMPLETED = "completed"
    FAILED = "failed"


def parameter(code: str, value_type: str, value: Any, system: str = INPUT_SYSTEM) -> dict[str, Any]:  # noqa: ANN401
    """One `Task.input` (or, with OUTPUT_SYSTEM, `Task.output`): `parameter("target", "valueString", "dic")`."""
    return {"type": {"coding": [{"system": system, "code": code}]}, value_type: value}


def output(code: str, value_type: str, value: Any) -> dict[str, Any]:  # noqa: ANN401
    """One `Task.output`."""
    return parameter(code, value_type, value, OUTPUT_SYSTEM)


def bundle_input(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The `bundle` input: the Bundle as a base64 attachment."""
    data = base64.b64encode(json.dumps(bundle, separators=(",", ":")).encode()).decode("ascii")
    return parameter("bundle", "valueAttachment", {"contentType": BUNDLE_CONTENT_TYPE, "data": data})


def request_task(
    process: Process,
    inputs: Sequence[Mapping[str, Any]],
    *,
    requester: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A `requested` Task for `process`; `requester` is the sending site (peer Tasks carry it)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "instantiatesCanonical": process.canonical,
        "status": Status.REQUESTED.value,
        "intent": "order",
    }
    if idempotency_key is not None:
        task["identifier"] = [{"system": IDEMPOTENCY_SYSTEM, "value": idempotency_key}]
    if requester is not None:
        task["requester"] = {"identifier": {"system": ORGANIZATION_SYSTEM, "value": requester}}
    if inputs:
        task["input"] = [dict(entry) for entry in inputs]
    return task


def completed(task: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`task` finished: status completed with `outputs` (a previous statusReason is dropped)."""
    done = {key: value for key, value in task.items() if key not in ("statusReason", "output")}
    done["status"] = Status.COMPLETED.value
    if outputs:
        done["output"] = [dict(entry) for entry in outputs]
    return done


def failed(task: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """`task` given up: status failed, `statusReason.text` saying why."""
    done = {key: value for key, value in task.items() if key != "output"}
    done["status"] = Status.FAILED.value
    done["statusReason"] = {"text": reason}
    return done


@dataclass(frozen=True)
class Values:
    """Typed, located access to a Task's inputs or outputs by code."""

    entries: tuple[tuple[str, str, Mapping[str, Any]], ...]  # (code, location, element)

    @classmethod
    def parse(cls, elements: Any, path: str, system: str) -> Values:  # noqa: ANN401 -- untrusted JSON
        """Check `Task.input`/`Task.output` shape: a list of objects each with one code of `system`."""
        if elements is None:
            return cls(())
        if not isinstance(elements, list):
            raise _invalid(f"{path} must be a list", path)
        entries = []
        for index, element in enumerate(elements):
            location = f"{path}[{index}]"
            codings = _get(element, "type", dict, location).get("coding") if isinstance(element, dict) else None
            if not isinstance(codings, list):
                raise _invalid(f"{location}.type.coding must be a list of Codings", f"{location}.type")
            codes = [c.get("code") for c in codings if isinstance(c, dict) and c.get("system") == system]
            if len(codes) != 1 or not isinstance(codes[0], str):
                raise _invalid(f"{location}.type needs exactly one code of {system}", f"{location}.type")
            entries.append((codes[0], location, element))
        return cls(tuple(entries))

    def named(self, code: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """Each (location, element) with `code`."""
        return ((location, element) for found, location, element in self.entries if found == code)

    def values(self, code: str, value_type: str, expected: type) -> list[tuple[str, Any]]:
        """Every `value_type` value of `code` with its location; a different type is a 400."""
        found = []
        for location, element in self.named(code):
            value = element.get(value_type)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise _invalid(f"{location} ({code}) must carry {value_type}", f"{location}.{value_type}")
            found.append((location, value))
        return found

    def one(self, code: str, value_type: str, expected: type, *, required: bool) -> Any:  # noqa: ANN401
        """The single value of `code`, or None when absent and not required."""
        found = self.values(code, value_type, expected)
        if len(found) > 1:
            raise _invalid(f"{code} may appear only once", found[1][0])
        if not found:
            if required:
                raise FhirError(400, "required", f"input {code!r} is required", (f"Task.input.where(code='{code}')",))
            return None
        return found[0][1]

    def string(self, code: str, *, required: bool = True) -> str | None:
        """The one non-empty `valueString` of `code`."""
        value: str | None = self.one(code, "valueString", str, required=required)
        if value is not None and not value.strip():
            raise _invalid(f"input {code!r} must not be empty", f"Task.input.where(code='{code}')")
        return value

    def integer(self, code: str, *, required: bool = False) -> int | None:
        """The one `valueInteger` of `code`."""
        value: int | None = self.one(code, "valueInteger", int, required=required)
        return value

    def boolean(self, code: str) -> bool | None:
        """The one `valueBoolean` of `code`."""
        value: bool | None = self.one(code, "valueBoolean", bool, required=False)
        return value

    def identifiers(self, code: str) -> list[tuple[str, str]]:
        """Every `valueIdentifier` of `code` as (system, value), at least one."""
        found = []
        for location, value in self.values(code, "valueIdentifier", dict):
            system, text = value.get("system"), value.get("value")
            if not _short_text(system) or not _short_text(text):
                raise _invalid(f"{location} ({code}) needs an identifier system and value", location)
            found.append((system, text))
        if not found:
            raise FhirError(400, "required", f"input {code!r} is required", (f"Task.input.where(code='{code}')",))
        return found

    def coding(self, code: str) -> tuple[str | None, str]:
        """The one (required) `valueCoding` of `code` as (system, code)."""
        value: Mapping[str, Any] = self.one(code, "valueCoding", dict, required=True)
        system, text = value.get("system"), value.get("code")
        if not isinstance(text, str) or not _short_text(text) or not (system is None or _short_text(system)):
            raise _invalid(f"input {code!r} needs a valueCoding with a code", f"Task.input.where(code='{code}')")
        return (system if isinstance(system, str) else None), text

    def code(self, code: str) -> str | None:
        """The one `valueCode` of `code`."""
        value: str | None = self.one(code, "valueCode", str, required=False)
        return value

    def bundle(self, code: str = "bundle") -> dict[str, Any]:
        """The Bundle carried base64-encoded in the `valueAttachment` of `code`."""
        attachment: Mapping[str, Any] = self.one(code, "valueAttachment", dict, required=True)
        where = f"Task.input.where(code='{code}').valueAttachment"
        if attachment.get("contentType") != BUNDLE_CONTENT_TYPE:
            raise _invalid(f"{where}.contentType must be {BUNDLE_CONTENT_TYPE}", f"{where}.contentType")
        data = attachment.get("data")
        try:
            bundle = parse_json(base64.b64decode(data, validate=True)) if isinstance(data, str) else None
        except binascii.Error:
            bundle = None
        except FhirError as error:
            if error.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                raise  # past an input limit: refused as such, like a body
            bundle = None
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise _invalid(f"{where}.data must be base64 of a Bundle in JSON", f"{where}.data")
        return bundle


@dataclass(frozen=True)
class ProcessTask:
    """A Task as the processes read it."""

    process: Process
    status: Status
    idempotency_key: str | None
    requester: str | None
    inputs: Values
    outputs: Values
    status_reason: str | None
    resource: Mapping[str, Any]


def parse_task(resource: Any) -> ProcessTask:  # noqa: ANN401 -- untrusted JSON
    """Read a Task (a request or an answer); 400 naming the element at fault."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Task":
        raise _invalid("expected a Task resource", "resourceType")
    return ProcessTask(
        process=_process(resource.get("instantiatesCanonical")),
        status=_status(resource.get("status")),
        idempotency_key=_idempotency_key(resource.get("identifier")),
        requester=_requester(resource.get("requester")),
        inputs=Values.parse(resource.get("input"), "Task.input", INPUT_SYSTEM),
        outputs=Values.parse(resource.get("output"), "Task.output", OUTPUT_SYSTEM),
        status_reason=_status_reason(resource.get("statusReason")),
        resource=resource,
    )


def _process(canonical: Any) -> Process:  # noqa: ANN401
    if not isinstance(canonical, str) or not canonical.startswith(PROCESS_BASE):
        raise _invalid(
            f"instantiatesCanonical must be {PROCESS_BASE}<process>|{PROCESS_VERSION}", "instantiatesCanonical"
        )
    name, _, version = canonical.removeprefix(PROCESS_BASE).partition("|")
    known = {process.value: process for process in Process}
    if name not in known or version not in ("", PROCESS_VERSION):
        raise FhirError(
            400,
            "not-supported",
            f"unknown process {canonical!r}; known: {', '.join(p.canonical for p in Process)}",
            ("Task.instantiatesCanonical",),
        )
    return known[name]


def _status(status: Any) -> Status:  # noqa: ANN401
    known = {status.value: status for status in Status}
    if status not in known:
        raise _invalid(f"status must be one of {', '.join(known)}", "status")
    return known[status]


def _idempotency_key(identifiers: Any) -> str | None:  # noqa: ANN401
    if identifiers is None:
        return None
    if not isinstance(identifiers, list) or not all(isinstance(i, dict) for i in identifiers):
        raise _invalid("identifier must be a list of Identifiers", "identifier")
    keys = [i.get("value") for i in identifiers if i.get("system") == IDEMPOTENCY_SYSTEM]
    if len(keys) > 1:
        raise _invalid(f"at most one identifier of {IDEMPOTENCY_SYSTEM}", "identifier")
    if keys and not _short_text(keys[0]):
        raise _invalid(f"the idempotency key must be 1-{MAX_KEY_LENGTH} characters", "identifier")
    return keys[0] if keys else None


def _requester(requester: Any) -> str | None:  # noqa: ANN401
    if requester is None:
        return None
    identifier = _get(requester, "identifier", dict, "Task.requester")
    if identifier.get("system") != ORGANIZATION_SYSTEM or not _short_text(identifier.get("value")):
        raise _invalid(f"requester.identifier must be a {ORGANIZATION_SYSTEM} identifier", "requester.identifier")
    site: str = identifier["value"]
    return site


def _status_reason(reason: Any) -> str | None:  # noqa: ANN401
    if reason is None:
        return None
    text = reason.get("text") if isinstance(reason, dict) else None
    if not isinstance(text, str):
        raise _invalid("statusReason must be a CodeableConcept with text", "statusReason")
    return text


def _get(element: Any, key: str, expected: type, path: str) -> Any:  # noqa: ANN401
    value = element.get(key) if isinstance(element, dict) else None
    if not isinstance(value, expected):
        raise _invalid(f"{path}.{key} is missing or malformed", f"{path}.{key}")
    return value


def _short_text(value: Any) -> bool:  # noqa: ANN401
    return isinstance(value, str) and len(value.strip()) > 0 and len(value) <= MAX_KEY_LENGTH


def _invalid(diagnostics: str, expression: str) -> FhirError:
    location = expression if expression.startswith("Task") else f"Task.{expression}"
    return FhirError(400, "invalid", diagnostics, (location,))
