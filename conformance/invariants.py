"""The invariants scenario steps check, by name, and the part of checking them that needs no I/O.

Scenario steps name invariants (`expect: {invariants: [no-identifying-data]}`); each name stands for a
requirement id, so a step that checks an invariant verifies that requirement. The checks that need only
the data in hand (does this extract leak who the patient is? is this valid FHIR?) live here; those that
need the federation's state (audit records, pseudonyms at the trust centre) are in `conformance.checks`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from conformance.contract import PSEUDONYM_SYSTEM_BASE
from fixtures.synthetic import Person


class InvariantName(StrEnum):
    """The invariants a step may name."""

    NO_IDENTIFYING_DATA = "no-identifying-data"
    ONE_PSEUDONYM_PER_DOMAIN = "one-pseudonym-per-domain"
    CONSENT_ENFORCED = "consent-enforced"
    CROSS_NODE_AUDITED = "cross-node-audited"
    VALID_FHIR = "valid-fhir"
    TRANSACTION_RESPONSE = "transaction-response"
    IDEMPOTENT_REPLAY = "idempotent-replay"
    READ_AUDITED = "read-audited"


@dataclass(frozen=True)
class Invariant:
    """An invariant's name in scenario files, the requirement it verifies, and what it means."""

    name: InvariantName
    requirement: str
    meaning: str


INVARIANTS: Mapping[str, Invariant] = {
    invariant.name: invariant
    for invariant in (
        Invariant(
            InvariantName.NO_IDENTIFYING_DATA,
            "HUB-INV-01",
            "the response holds none of the patients' names, birth dates, addresses, KVNR or source identifiers",
        ),
        Invariant(
            InvariantName.ONE_PSEUDONYM_PER_DOMAIN,
            "HUB-INV-02",
            "each patient has exactly one pseudonym in the domain, the same one as on every earlier step and node",
        ),
        Invariant(
            InvariantName.CONSENT_ENFORCED,
            "HUB-INV-03",
            "nothing about a patient without the process's consent arrived at the target node",
        ),
        Invariant(
            InvariantName.CROSS_NODE_AUDITED,
            "HUB-INV-04",
            "both ends of the step's exchange hold an AuditEvent naming the process, the peer and the outcome",
        ),
        Invariant(
            InvariantName.VALID_FHIR,
            "HUB-FHIR-01",
            "every resource of the response (and of a Bundle's entries) parses as a FHIR resource",
        ),
        Invariant(
            InvariantName.TRANSACTION_RESPONSE,
            "HUB-FHIR-02",
            "a transaction or batch is answered with a transaction-response or batch-response Bundle, one entry per"
            " request entry",
        ),
        Invariant(
            InvariantName.READ_AUDITED,
            "HUB-SEC-06",
            "the node recorded the read with every patient the answer holds and the search that found them",
        ),
        Invariant(
            InvariantName.IDEMPOTENT_REPLAY,
            "HUB-TRN-06",
            "a process started again with an earlier step's idempotency key answers that step's Task and does no"
            " new exchange with the target",
        ),
    )
}

#: Keys whose values identify a person however they are spelled.
_IDENTIFYING_KEYS = ("name", "address", "telecom", "photo", "contact")
_RESPONSE_TYPES = {"transaction": "transaction-response", "batch": "batch-response"}


def identifying_leaks(data: object, persons: list[Person]) -> list[str]:
    """Where `data` (a pseudonymised resource or bundle) still identifies one of `persons`; empty if nowhere.

    A birth date may keep its year only, so a full date of any person is a leak even in another field.
    """
    leaks = []
    for location, key, value in _walk(data, "$"):
        if key in _IDENTIFYING_KEYS and value:
            leaks.append(f"{location}: identifying element `{key}` present")
        if not isinstance(value, str):
            continue
        for person in persons:
            hits = [part for part in person.identifying_values() if part and part in value]
            if hits:
                leaks.append(f"{location}: {value!r} contains {', '.join(sorted(set(hits)))} of {person.patient_id}")
    return leaks


def invalid_resources(data: object) -> list[str]:
    """Why the resources of a response (a Bundle's entries too) are not FHIR; empty if all parse.

    Checked with fhir.resources (R4B structures), which the suite uses as its own reading of the spec.
    """
    if not isinstance(data, dict):
        return [f"the response is {type(data).__name__}, not a FHIR resource"]
    problems = []
    resources = [("$", data)]
    if data.get("resourceType") == "Bundle":
        entries = data.get("entry", [])
        resources += [
            (f"$.entry[{index}].resource", entry["resource"])
            for index, entry in enumerate(entries if isinstance(entries, list) else [])
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
        ]
    for location, resource in resources:
        kind = resource.get("resourceType")
        try:
            get_fhir_model_class(str(kind)).model_validate(resource)
        except KeyError:
            problems.append(f"{location}: {kind!r} is not a FHIR resource type")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            problems.append(f"{location} ({kind}): {where}: {first['msg']} ({exc.error_count()} problems)")
    return problems


def transaction_response_problems(request: object, response: object) -> list[str]:
    """Why `response` is not the answer FHIR gives to the transaction or batch `request`."""
    if not isinstance(request, dict) or request.get("type") not in _RESPONSE_TYPES:
        return ["the request was not a transaction or batch Bundle"]
    wanted = _RESPONSE_TYPES[str(request["type"])]
    if not isinstance(response, dict) or response.get("resourceType") != "Bundle":
        return [f"the answer is not a Bundle but {_kind(response)}"]
    problems = []
    if response.get("type") != wanted:
        problems.append(f"the answer's Bundle.type is {response.get('type')!r}, expected {wanted!r}")
    sent, answered = len(request.get("entry", [])), len(response.get("entry", []))
    if sent != answered:
        problems.append(f"{sent} entries were sent, the answer has {answered}")
    return problems


def patients_answered(body: object) -> set[str]:
    """`Patient/<id>` of every Patient a read's answer holds (itself, or a Bundle's entries)."""
    if not isinstance(body, dict):
        return set()
    entries = body.get("entry", []) if body.get("resourceType") == "Bundle" else [{"resource": body}]
    return {
        f"Patient/{entry['resource'].get('id')}"
        for entry in entries
        if isinstance(entries, list)
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Patient"
    }


def records_read(event: Mapping[str, Any], patients: set[str], query: str) -> bool:
    """Whether an AuditEvent records a read naming every one of `patients` and the search `query`."""
    codes = {subtype.get("code") for subtype in event.get("subtype", []) if isinstance(subtype, dict)}
    entities = [entity for entity in event.get("entity", []) if isinstance(entity, dict)]
    named = {str(entity.get("what", {}).get("identifier", {}).get("value")) for entity in entities}
    asked = [_decoded(entity.get("query")) for entity in entities if entity.get("query")]
    return "read" in codes and patients <= named and any(parse_qsl(q) == parse_qsl(query) for q in asked)


def _decoded(value: object) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def names_exchange(event: Mapping[str, Any], process: str, peers: Sequence[str], outcome: str) -> bool:
    """Whether an AuditEvent records `process` with one of `peers` (any peer if none given) and `outcome`."""
    codes = {subtype.get("code") for subtype in event.get("subtype", []) if isinstance(subtype, dict)}
    agents = {agent.get("who", {}).get("display") for agent in event.get("agent", []) if isinstance(agent, dict)}
    wanted = {f"peer:{peer}" for peer in peers}
    peer_named = bool(agents & wanted) if wanted else any(str(a).startswith("peer:") for a in agents)
    return process in codes and peer_named and event.get("outcome") == outcome


def pseudonyms_of(patient: Mapping[str, Any]) -> dict[str, list[str]]:
    """Domain -> the pseudonyms a Patient carries as identifiers in it."""
    found: dict[str, list[str]] = {}
    for identifier in patient.get("identifier", []):
        system, value = identifier.get("system", ""), identifier.get("value")
        if isinstance(system, str) and system.startswith(PSEUDONYM_SYSTEM_BASE) and isinstance(value, str):
            found.setdefault(system.removeprefix(PSEUDONYM_SYSTEM_BASE), []).append(value)
    return found


def _kind(data: object) -> str:
    if isinstance(data, dict):
        return str(data.get("resourceType", "JSON without resourceType"))
    return "no JSON" if data is None else type(data).__name__


def _walk(data: object, location: str) -> Iterator[tuple[str, str, object]]:
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{location}.{key}"
            yield here, key, value
            yield from _walk(value, here)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _walk(value, f"{location}[{index}]")
