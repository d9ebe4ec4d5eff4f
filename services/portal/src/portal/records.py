"""The patient's data at this node, through its connector: found, read with its source, written, sent on.

The portal is one more caller of the connector's public API (docs/federation.md), so every read it
makes is audited there with the patient it returned and shows in the patient's ledger. Where an
entry came from is its source identifier (`https://hubnode.org/fhir/sid/source/<site>|<Type>/<id>`):
the site that first recorded it, kept when a careSummary carries it to another node.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from portal.display import when
from portal.upstream import FhirClient, UpstreamError, resources
from servicekit.purpose import EMERGENCY, EMERGENCY_REASON_HEADER, PURPOSE_HEADER

PERSON_SYSTEM = "urn:hubnode:person"
SOURCE_SYSTEM = "https://hubnode.org/fhir/sid/source"
KVNR_SYSTEM = "http://fhir.de/sid/gkv/kvid-10"
PROCESS_CANONICAL = "https://hubnode.org/fhir/process/{name}|1.0"
PROCESS_INPUT = "https://hubnode.org/fhir/CodeSystem/process-input"
#: What a patient's record at a node holds, in the order the pages show it.
RECORD_TYPES = (
    "Condition",
    "Procedure",
    "MedicationStatement",
    "Observation",
    "Encounter",
    "QuestionnaireResponse",
)


@dataclass(frozen=True)
class Entry:
    """One resource of a record with where it came from and when it was recorded here."""

    resource: dict[str, Any]
    source: str
    recorded: str

    @property
    def kind(self) -> str:
        """The resource's type."""
        return str(self.resource.get("resourceType", ""))


def source_of(resource: dict[str, Any]) -> str:
    """The site that recorded a resource first (its origin identifier), else the empty string."""
    for identifier in resource.get("identifier", []) if isinstance(resource.get("identifier"), list) else []:
        system = identifier.get("system") if isinstance(identifier, dict) else None
        if isinstance(system, str) and system.startswith(f"{SOURCE_SYSTEM}/"):
            return system.removeprefix(f"{SOURCE_SYSTEM}/").split("/")[0]
    return ""


class Records:
    """The node's records through its connector, with the portal's own token."""

    def __init__(self, client: FhirClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def patient_by(self, system: str, value: str) -> dict[str, Any] | None:
        """The node's Patient known by `system|value` (KVNR, a local number, the node's person id)."""
        found = resources(await self._client.get("Patient", {"identifier": f"{system}|{value}"}), "Patient")
        return found[0] if found else None

    async def record(self, patient: dict[str, Any], emergency: str = "") -> list[Entry]:
        """Everything the node holds about the patient, by type and then date, each with its source.

        `emergency`: the stated reason of a read outside the patient's consent, which the connector records.
        """
        found = await asyncio.gather(*(self.of_type(patient, kind, emergency) for kind in RECORD_TYPES))
        entries = [
            Entry(resource, source_of(resource), str(resource.get("meta", {}).get("lastUpdated", ""))[:19])
            for of_type in found
            for resource in of_type
        ]
        order = {kind: index for index, kind in enumerate(RECORD_TYPES)}
        return sorted(entries, key=lambda e: (order[e.kind], when(e.resource)))

    async def of_type(self, patient: dict[str, Any], resource_type: str, emergency: str = "") -> list[dict[str, Any]]:
        """The patient's resources of one type at this node."""
        headers = {PURPOSE_HEADER: EMERGENCY, EMERGENCY_REASON_HEADER: quote(emergency)} if emergency else {}
        params = {"subject": f"Patient/{patient['id']}", "_count": "500"}
        return resources(await self._client.get(resource_type, params, headers), resource_type)

    async def store_questionnaire(self, patient: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        """Store a QuestionnaireResponse of the patient at this node: ingested like any source's data."""
        key = f"portal-{uuid.uuid4().hex[:24]}"
        source_patient = f"portal-{patient['id']}"
        identifiers = [
            i
            for i in patient.get("identifier", [])
            if isinstance(i, dict)
            and i.get("system") != PERSON_SYSTEM
            and not str(i.get("system")).startswith(SOURCE_SYSTEM)
        ]
        copied = {k: v for k, v in patient.items() if k not in ("id", "meta", "identifier", "text")}
        profile = patient.get("meta", {}).get("profile")
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                _put("Patient", source_patient, {**copied, "identifier": identifiers, **_profile(profile)}),
                _put("QuestionnaireResponse", key, {**response, "subject": {"reference": f"Patient/{source_patient}"}}),
            ],
        }
        answer = await self._client.post("", bundle)
        if answer.get("resourceType") != "Bundle":
            raise UpstreamError("connector", 502, "the ingest answered no transaction-response")
        return {**response, "id": key}

    async def care_summary(self, target: str, identifier: dict[str, str]) -> dict[str, Any]:
        """Start a careSummary of the patient to `target` (a site): the Task, run to its end."""
        task = {
            "resourceType": "Task",
            "instantiatesCanonical": PROCESS_CANONICAL.format(name="careSummary"),
            "status": "requested",
            "intent": "order",
            "input": [
                _input("target", "valueString", target),
                _input("patient", "valueIdentifier", identifier),
            ],
        }
        return await self._client.post("Task", task)

    async def audit(self, subjects: list[str]) -> list[dict[str, Any]]:
        """The connector's AuditEvents naming any of `subjects`."""
        if not subjects:
            return []
        answer = await self._client.get("AuditEvent", {"entity": ",".join(subjects)})
        return resources(answer, "AuditEvent")

    async def federation_ledger(self, tickets: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
        """The other nodes' AuditEvents for the trust centre's `tickets`, and the sites that could not answer."""
        answer = await self._client.post("$federationLedger", {"resourceType": "Parameters", "parameter": tickets})
        unreachable = sorted({str(outcome.get("id")) for outcome in resources(answer, "OperationOutcome")})
        return resources(answer, "AuditEvent"), unreachable


def _put(resource_type: str, key: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": f"https://hubnode.org/fhir/portal/{resource_type}/{key}",
        "request": {"method": "PUT", "url": f"{resource_type}/{key}"},
        "resource": {**resource, "resourceType": resource_type, "id": key},
    }


def _profile(profile: object) -> dict[str, Any]:
    return {"meta": {"profile": profile}} if isinstance(profile, list) else {}


def _input(code: str, kind: str, value: object) -> dict[str, Any]:
    return {"type": {"coding": [{"system": PROCESS_INPUT, "code": code}]}, kind: value}
