"""A small in-memory FHIR server standing in for HAPI: transactions with conditional updates, reads, searches.

It honours what the connector relies on (conditional PUT by identifier, `urn:uuid:` and conditional
references resolved within a transaction, all-or-nothing, referential integrity, `ifMatch` on an
existing resource), so idempotency and atomicity are really checked, not assumed. Like HAPI on R4,
it cannot search AdverseEvent by identifier (its CapabilityStatement says so, and such a conditional
URL is refused), so those are PUT at an id. `meanwhile` lets a test have another writer change the
store just before the next transaction (given) is applied. `Bundle/$validate` answers with the issues
`judge` finds in each entry's resource (none by default), placed as HAPI places them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

#: Types with an identifier but no `identifier` search parameter in R4, as HAPI's CapabilityStatement lists them.
UNSEARCHABLE = frozenset({"AdverseEvent"})
#: The other types of the MII KDS test bundles and our synthetic records: R4 searches each by identifier.
SEARCHABLE = (
    *("BodyStructure", "CarePlan", "Claim", "ClaimResponse", "ClinicalImpression", "Composition", "Condition"),
    *("Consent", "Device", "DeviceMetric", "DiagnosticReport", "DocumentReference", "Encounter"),
    *("FamilyMemberHistory", "ImagingStudy", "List", "Location", "Medication", "MedicationAdministration"),
    *("MedicationRequest", "MedicationStatement", "Observation", "Organization", "Patient", "Practitioner"),
    *("PractitionerRole", "Procedure", "QuestionnaireResponse", "RequestGroup", "ResearchStudy"),
    *("RiskAssessment", "ServiceRequest", "Specimen", "Substance", "Task"),
)


def _outcome(status: int, text: str) -> httpx.Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }
    return httpx.Response(status, json=body)


class FakeFhir:
    """The store, and an httpx transport serving it under any base URL ending in /fhir."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}  # "Type/id" -> resource
        self.transactions: list[dict[str, Any]] = []
        self.down = False
        #: Carry a transaction out, then drop the connection before answering (HAPI killed right after commit).
        self.dies_after_commit = False
        self.meanwhile: list[Callable[[FakeFhir, dict[str, Any]], None]] = []
        self.deleted: set[str] = set()  # "Type/id" HAPI would answer 410 for
        self.reads: list[str] = []  # "Type/id" of every read by id
        #: The issues `Bundle/$validate` finds in a resource (OperationOutcome issues, without their place).
        self.judge: Callable[[dict[str, Any]], list[dict[str, Any]]] = lambda _resource: []
        self.validated: list[dict[str, Any]] = []  # every resource sent to `Bundle/$validate`
        self._next_id = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _validate(self, bundle: dict[str, Any]) -> httpx.Response:
        issues = [{"severity": "information", "code": "informational", "diagnostics": "No issues detected"}]
        for index, entry in enumerate(bundle["entry"]):
            resource = entry["resource"]
            self.validated.append(resource)
            place = f"Bundle.entry[{index}].resource/*{resource['resourceType']}/{resource.get('id')}*/"
            for issue in self.judge(resource):
                path = issue.pop("path", "")
                issues.append({**issue, "expression": [f"{place}.{path}" if path else place]})
        return httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": issues})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for key, r in sorted(self.resources.items()) if key.startswith(f"{kind}/")]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = urlsplit(str(request.url)).path.split("/fhir", 1)[1].strip("/")
        if request.method == "POST" and path == "" and self.dies_after_commit:
            self.dies_after_commit = False
            self.handle(request)
            raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)
        if request.method == "POST":
            return self._post(path, json.loads(request.content))
        if request.method == "GET":
            return self._get(path, request)
        return _outcome(405, f"{request.method} {path} is not supported here")

    def _get(self, path: str, request: httpx.Request) -> httpx.Response:
        if path == "metadata":
            return httpx.Response(200, json=_capability_statement())
        if path == "_history":
            return self._history()
        parts = path.split("/")
        if len(parts) == 2:
            return self._read(path)
        params = [(k, v) for k, v in parse_qsl(urlsplit(str(request.url)).query) if k != "_summary"]
        matches = self._search(parts[0], params)
        if request.url.params.get("_summary") == "count":
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "total": len(matches)})
        entries = [{"fullUrl": f"http://hapi.test/fhir/{r['resourceType']}/{r['id']}", "resource": r} for r in matches]
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "searchset", "total": len(matches), "entry": entries}
        )

    def _post(self, path: str, bundle: dict[str, Any]) -> httpx.Response:
        if path == "Bundle/$validate":
            return self._validate(bundle)
        if path != "":
            return _outcome(405, f"POST {path} is not supported here")
        self.transactions.append(bundle)
        if self.meanwhile:
            self.meanwhile.pop(0)(self, bundle)
        return self._transaction(bundle)

    def _history(self) -> httpx.Response:
        """The system history, as far as a `_count=1` caller looks: one entry per resource held or deleted."""
        held = [*self.resources, *sorted(self.deleted)]
        entries = [{"fullUrl": f"http://hapi.test/fhir/{path}"} for path in held[:1]]
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "history", "entry": entries})

    def _read(self, path: str) -> httpx.Response:
        self.reads.append(path)
        if path in self.deleted:
            return _outcome(410, f"{path} was deleted")
        found = self.resources.get(path)
        return httpx.Response(200, json=found) if found else _outcome(404, f"{path} is not known")

    def _search(self, kind: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found = self.of_type(kind)
        for name, value in params:
            if name != "identifier":
                continue
            system, _, code = value.partition("|")
            system, code = system.replace("\\|", "|"), code.replace("\\|", "|")
            found = [
                r for r in found if any(i.get("system") == system and i.get("value") == code for i in _identifiers(r))
            ]
        return found

    def _resolve(self, store: dict[str, dict[str, Any]], conditional: str) -> list[str]:
        kind, _, query = conditional.partition("?")
        saved, self.resources = self.resources, store
        try:
            return [f"{kind}/{r['id']}" for r in self._search(kind, parse_qsl(query))]
        finally:
            self.resources = saved

    def _transaction(self, bundle: dict[str, Any]) -> httpx.Response:
        store = copy.deepcopy(self.resources)
        placeholders: dict[str, str] = {}
        targets: list[tuple[str, bool]] = []
        for entry in bundle.get("entry", []):
            request = entry["request"]
            if request["method"] != "PUT":
                return _outcome(400, f"this fake takes PUTs only, not {request}")
            if "?" not in request["url"]:  # a PUT at a client-assigned id: create or update it
                target = request["url"]
                if _stale(request, store.get(target), deleted=target in self.deleted):
                    return _outcome(409, f"HAPI-0989: Trying to update {target} but this is not the current version")
                placeholders[entry["fullUrl"]] = target
                targets.append((target, target not in store))
                continue
            if request["url"].split("?", 1)[0] in UNSEARCHABLE:
                return _outcome(400, f"HAPI-0488: Failed to parse match URL[{request['url']}]")
            matches = self._resolve(store, request["url"])
            if len(matches) > 1:
                return _outcome(412, f"{request['url']} matches {len(matches)} resources")
            kind = request["url"].split("?", 1)[0]
            if matches:
                target, created = matches[0], False
            else:
                self._next_id += 1
                target, created = f"{kind}/{self._next_id}", True
            placeholders[entry["fullUrl"]] = target
            targets.append((target, created))
        response_entries = []
        for entry, (target, created) in zip(bundle.get("entry", []), targets, strict=True):
            try:
                resource = _with_references(copy.deepcopy(entry["resource"]), placeholders, store, self)
            except LookupError as missing:
                return _outcome(400, f"HAPI-1094: reference {missing} does not resolve")
            kind, rid = target.split("/")
            version = 1 if created else int(store[target]["meta"]["versionId"]) + 1
            resource.update(id=rid, meta={**resource.get("meta", {}), "versionId": str(version)})
            store[target] = resource
            status = "201 Created" if created else "200 OK"
            response_entries.append({"response": {"status": status, "location": f"{target}/_history/{version}"}})
        self.resources = store
        self.deleted -= set(store)
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": response_entries}
        )


def _stale(request: dict[str, Any], current: dict[str, Any] | None, *, deleted: bool) -> bool:
    """Whether a PUT's `ifMatch` names another version than the stored one.

    As at HAPI, it is moot for a resource never written, and never matches one deleted.
    """
    if "ifMatch" not in request or current is None:
        return "ifMatch" in request and deleted
    return bool(request["ifMatch"] != f'W/"{current["meta"]["versionId"]}"')


def _capability_statement() -> dict[str, Any]:
    resources = [
        {"type": kind, "searchParam": [{"name": "identifier", "type": "token"}, {"name": "_id", "type": "token"}]}
        for kind in SEARCHABLE
    ] + [{"type": kind, "searchParam": [{"name": "_id", "type": "token"}]} for kind in sorted(UNSEARCHABLE)]
    return {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": resources}]}


def _identifiers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    own = resource.get("identifier", [])
    return own if isinstance(own, list) else [own]


def _with_references(value: Any, placeholders: dict[str, str], store: dict[str, Any], fake: FakeFhir) -> Any:
    if isinstance(value, list):
        return [_with_references(v, placeholders, store, fake) for v in value]
    if not isinstance(value, dict):
        return value
    result = {k: _with_references(v, placeholders, store, fake) for k, v in value.items()}
    reference = value.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):
        if reference in placeholders:
            result["reference"] = placeholders[reference]
        elif "?" in reference:
            matches = fake._resolve(store, reference)
            if len(matches) != 1:
                raise LookupError(reference)
            result["reference"] = matches[0]
        elif reference not in store:
            raise LookupError(reference)
    return result
