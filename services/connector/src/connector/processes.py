"""The four processes between nodes (ping, careSummary, feasibility, dataSend), at both ends.

Starting side (`POST /fhir/Task` of the local API): resolve the peer(s) from the allow list, check the
role table, check consent at the trust centre, gather the patient's data from the local HAPI, send
the Task to the peer and finish the local Task as `completed` or `failed` with a reason. Receiving
side (`POST /peer/fhir/Task`): identify the peer from its certificate, check the role table and the
idempotency key, do the work and answer with the Task. Every exchange is audited at both ends.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from connector import task_store
from connector.allowlist import AllowList, NodeRole, Peer, permitted
from connector.audit import exchange_record, record_alone
from connector.feasibility import (
    aggregate_outputs,
    answer_outputs,
    count_patients,
    criteria_from,
    from_answer,
    obfuscate,
)
from connector.hapi import HapiClient
from connector.identity import CLIENT_VERIFY_HEADER, authorise, identify, through_gateway
from connector.peers import PeerClient, PeerError
from connector.pseudonymise import PSEUDONYM_SYSTEM_BASE, pseudonymise
from connector.tasks import (
    IDEMPOTENCY_SYSTEM,
    ORGANIZATION_SYSTEM,
    Process,
    ProcessTask,
    Status,
    bundle_input,
    completed,
    failed,
    output,
    parameter,
    parse_task,
    request_task,
)
from connector.trustcentre_client import MPI_SYSTEM, POLICY_SYSTEM, TrustCentreClient
from connector.upstream import UpstreamRefused, UpstreamUnavailable
from connector.validation import InvalidInput
from servicekit.fhir import FhirError, parse_json_resource

POLICY_OID = POLICY_SYSTEM.removeprefix("urn:oid:")
#: docs/federation.md, "Processes and consent".
CONSENT_POLICIES: Mapping[Process, str] = {
    Process.CARE_SUMMARY: f"{POLICY_OID}.5",  # IDAT bereitstellen (treatment)
    Process.DATA_SEND: f"{POLICY_OID}.8",  # MDAT wissenschaftlich nutzen (research)
}
CONSENT_NAMES: Mapping[Process, str] = {Process.CARE_SUMMARY: "treatment", Process.DATA_SEND: "research"}
MAX_PING_BYTES = 8 * 1024 * 1024
#: Failures of the node's own services or a peer: the Task fails with the message as its reason.
EXCHANGE_ERRORS = (PeerError, UpstreamRefused, UpstreamUnavailable, InvalidInput)


class Ingest(Protocol):
    """Write a transaction Bundle received from `source` (a site) into this node's HAPI."""

    async def __call__(self, bundle: dict[str, Any], source: str, *, link_patients: bool) -> dict[str, Any]:
        """The transaction-response Bundle; FhirError when the bundle is invalid."""


@dataclass(frozen=True)
class Node:
    """What the processes need to know and reach at this node."""

    site: str
    role: NodeRole
    allow_list: AllowList
    engine: Engine
    hapi: HapiClient
    trustcentre: TrustCentreClient
    peers: PeerClient
    ingest: Ingest
    gateway_secret: str = ""
    projects: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class ProcessError(Exception):
    """The process cannot finish; the message becomes the Task's `statusReason.text`."""


@dataclass(frozen=True)
class Outcome:
    """What a finished process reports: its outputs and what the audit records of it."""

    outputs: list[dict[str, Any]]
    peers: Sequence[str]
    subjects: Sequence[str] = ()
    purpose: str | None = None


# --- starting side ---------------------------------------------------------------------------------


async def start(node: Node, resource: Any, caller: str) -> tuple[int, dict[str, Any]]:  # noqa: ANN401 -- untrusted
    """Start a process from a local `requested` Task; (201, the finished Task), or (200, the stored one)."""
    request = parse_task(resource)
    if request.status is not Status.REQUESTED:
        raise FhirError(400, "invalid", "a new process Task must have status 'requested'", ("Task.status",))
    _check_inputs(node, request)
    task_id = uuid.uuid4().hex
    key = request.idempotency_key or task_id
    task = {
        **request.resource,
        "id": task_id,
        "identifier": [{"system": IDEMPOTENCY_SYSTEM, "value": key}],
        "requester": {"identifier": {"system": ORGANIZATION_SYSTEM, "value": node.site}},
        "authoredOn": _now(),
    }
    existing = await run_in_threadpool(task_store.claim_started, node.engine, task, key)
    if existing is not None:
        return 200, existing
    return 201, await _run(node, task, caller)


async def retry(node: Node, task_id: str, caller: str) -> dict[str, Any]:
    """Run a started process again with its idempotency key; a completed one is returned as it is."""
    task = await run_in_threadpool(task_store.started, node.engine, task_id=task_id)
    if task is None:
        raise FhirError(404, "not-found", f"no process Task {task_id!r} was started here")
    if task["status"] == Status.COMPLETED.value:
        return task
    request = {key: value for key, value in task.items() if key not in ("statusReason", "output")}
    return await _run(node, {**request, "status": Status.REQUESTED.value}, caller)


async def read(node: Node, task_id: str) -> dict[str, Any]:
    """A started process Task as it stands."""
    task = await run_in_threadpool(task_store.started, node.engine, task_id=task_id)
    if task is None:
        raise FhirError(404, "not-found", f"no process Task {task_id!r} was started here")
    return task


def _check_inputs(node: Node, request: ProcessTask) -> None:
    """Refuse a malformed start with 400 before anything is stored or sent."""
    inputs = request.inputs
    if request.process is not Process.FEASIBILITY:
        inputs.string("target")
    if request.process in (Process.CARE_SUMMARY, Process.DATA_SEND):
        patients = inputs.identifiers("patient")
        if request.process is Process.CARE_SUMMARY and len(patients) > 1:
            raise FhirError(400, "invalid", "careSummary sends one patient's journey", ("Task.input",))
    if request.process is Process.DATA_SEND:
        project = inputs.string("project")
        if project not in node.projects:
            known = ", ".join(sorted(node.projects)) or "none"
            raise FhirError(400, "invalid", f"unknown project {project!r}; known: {known}", ("Task.input",))
    if request.process is Process.FEASIBILITY:
        criteria_from(inputs)
    size = inputs.integer("payload-bytes")
    if size is not None and not 0 <= size <= MAX_PING_BYTES:
        raise FhirError(400, "invalid", f"payload-bytes must be 0-{MAX_PING_BYTES}", ("Task.input",))


async def _run(node: Node, task: dict[str, Any], caller: str) -> dict[str, Any]:
    request = parse_task(task)
    try:
        outcome = await STARTERS[request.process](node, request)
    except ProcessError as exc:
        finished = failed(task, str(exc))
        outcome = Outcome([], _targets_named(node, request))
        await _audit_all(node, request.process, outcome, "failed", f"started by {caller}: {exc}")
    else:
        finished = completed(task, outcome.outputs)
        await _audit_all(node, request.process, outcome, "success", f"started by {caller}")
    finished["lastModified"] = _now()
    await run_in_threadpool(task_store.save_started, node.engine, finished)
    return finished


async def _audit_all(node: Node, process: Process, outcome: Outcome, result: str, detail: str) -> None:
    for peer in outcome.peers or ["-"]:
        entry = exchange_record(process.value, peer, outcome.subjects, result, detail, outcome.purpose)
        await run_in_threadpool(record_alone, node.engine, entry)


def _targets_named(node: Node, request: ProcessTask) -> list[str]:
    if request.process is Process.FEASIBILITY:
        return [p.site for p in node.allow_list.answering(Process.FEASIBILITY, node.role, node.site)]
    return [str(request.inputs.string("target"))]


def _target(node: Node, request: ProcessTask) -> Peer:
    site = str(request.inputs.string("target"))
    peer = node.allow_list.by_site(site)
    if peer is None:
        raise ProcessError(f"target {site!r} is not on the allow list")
    if not permitted(node.role, request.process, peer.role):
        raise ProcessError(
            f"a {node.role.value} node may not start {request.process.value} at {site!r} ({peer.role.value})"
        )
    return peer


async def _exchange(node: Node, peer: Peer, request: ProcessTask, inputs: list[dict[str, Any]]) -> ProcessTask:
    """Send the peer Task (this node as requester, the local idempotency key) and read a completed answer."""
    task = request_task(request.process, inputs, requester=node.site, idempotency_key=request.idempotency_key)
    try:
        answer = await node.peers.send(peer, task)
    except EXCHANGE_ERRORS as exc:
        raise ProcessError(str(exc)) from None
    if answer.status is not Status.COMPLETED:
        raise ProcessError(f"peer {peer.site!r} did not complete {request.process.value}: {answer.status_reason}")
    return answer


async def _start_ping(node: Node, request: ProcessTask) -> Outcome:
    peer = _target(node, request)
    size = request.inputs.integer("payload-bytes") or 0
    payload = base64.b64encode(bytes(size)).decode("ascii")
    began = time.perf_counter()
    answer = await _exchange(
        node,
        peer,
        request,
        [parameter("payload-bytes", "valueInteger", size), parameter("payload", "valueBase64Binary", payload)],
    )
    seconds = max(time.perf_counter() - began, 1e-6)
    if answer.outputs.one("payload", "valueBase64Binary", str, required=False) != payload:
        raise ProcessError(f"peer {peer.site!r} echoed a different payload")
    outputs = [
        output("round-trip-ms", "valueDecimal", round(seconds * 1000, 3)),
        output("bytes-per-second", "valueDecimal", round(2 * size / seconds, 1)),
    ]
    return Outcome(outputs, [peer.site])


@dataclass(frozen=True)
class LocalPatient:
    """A patient of this node's HAPI as a process finds it."""

    resource: dict[str, Any]
    asked_as: str

    @property
    def id(self) -> str:
        """The HAPI id."""
        return str(self.resource["id"])

    @property
    def mpi(self) -> str | None:
        """The MPI id the trust centre gave the patient at ingest."""
        return next(
            (i.get("value") for i in self.resource.get("identifier", []) if i.get("system") == MPI_SYSTEM), None
        )


async def _consented_patients(node: Node, request: ProcessTask) -> list[LocalPatient]:
    """The Task's patients in the local HAPI, each with the consent its process needs (else ProcessError)."""
    found = []
    for system, value in request.inputs.identifiers("patient"):
        asked_as = f"{system}|{value}"
        try:
            matches = await node.hapi.lookup("Patient", {"identifier": asked_as})
            patients = [m for m in matches if m.get("resourceType") == "Patient"]
            if len(patients) != 1:
                raise ProcessError(f"{len(patients)} patients with identifier {asked_as} at {node.site!r}; need one")
            patient = LocalPatient(patients[0], asked_as)
            if not await _consented(node, patient, CONSENT_POLICIES[request.process]):
                name = CONSENT_NAMES[request.process]
                raise ProcessError(f"no {name} consent for patient {asked_as}")
        except EXCHANGE_ERRORS as exc:
            raise ProcessError(str(exc)) from None
        found.append(patient)
    return found


async def _consented(node: Node, patient: LocalPatient, policy: str) -> bool:
    """Consent under any of the patient's identifiers (all name the same person at the trust centre)."""
    today = datetime.now(UTC).date()
    identifiers = [
        (str(i["system"]), str(i["value"]))
        for i in patient.resource.get("identifier", [])
        if isinstance(i.get("system"), str) and isinstance(i.get("value"), str)
    ]
    for identifier in identifiers:
        if await node.trustcentre.is_consented(identifier, policy, today):
            return True
    return False


async def _everything(node: Node, patient: LocalPatient) -> list[dict[str, Any]]:
    try:
        return await node.hapi.journey(patient.id)
    except EXCHANGE_ERRORS as exc:
        raise ProcessError(str(exc)) from None


def transaction_bundle(resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Resources as a transaction Bundle of `PUT <Type>/<id>` entries (`meta` reduced to its profiles)."""
    entries = []
    for resource in resources:
        clean = {key: value for key, value in resource.items() if key != "meta"}
        profiles = resource.get("meta", {}).get("profile") if isinstance(resource.get("meta"), dict) else None
        if profiles:
            clean["meta"] = {"profile": profiles}
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append({"resource": clean, "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def _start_care_summary(node: Node, request: ProcessTask) -> Outcome:
    peer = _target(node, request)
    [patient] = await _consented_patients(node, request)
    resources = await _everything(node, patient)
    await _exchange(node, peer, request, [bundle_input(transaction_bundle(resources))])
    subjects = [patient.mpi or patient.asked_as]
    return Outcome([output("resources-sent", "valueInteger", len(resources))], [peer.site], subjects)


async def _start_data_send(node: Node, request: ProcessTask) -> Outcome:
    peer = _target(node, request)
    project = str(request.inputs.string("project"))
    domain = node.projects[project]["domain"]
    patients = await _consented_patients(node, request)
    originals = [patient.mpi or patient.asked_as for patient in patients]
    try:
        pseudonyms = await node.trustcentre.pseudonymize(domain, originals)
    except EXCHANGE_ERRORS as exc:
        raise ProcessError(str(exc)) from None
    extract: list[dict[str, Any]] = []
    for patient, original in zip(patients, originals, strict=True):
        extract += pseudonymise(await _everything(node, patient), patient.id, pseudonyms[original], domain)
    inputs = [parameter("project", "valueString", project), bundle_input(transaction_bundle(extract))]
    await _exchange(node, peer, request, inputs)
    subjects = [pseudonyms[original] for original in originals]
    return Outcome([output("resources-sent", "valueInteger", len(extract))], [peer.site], subjects, project)


async def _start_feasibility(node: Node, request: ProcessTask) -> Outcome:
    peers = node.allow_list.answering(Process.FEASIBILITY, node.role, node.site)
    if not peers:
        raise ProcessError("no peer on the allow list answers feasibility")
    criteria = criteria_from(request.inputs)
    answers = await asyncio.gather(
        *(_exchange(node, peer, request, criteria.inputs()) for peer in peers), return_exceptions=True
    )
    problems = [str(answer) for answer in answers if isinstance(answer, BaseException)]
    if problems:
        raise ProcessError("; ".join(problems))
    tasks = [answer for answer in answers if isinstance(answer, ProcessTask)]
    counts = [from_answer(peer.site, answer.outputs) for peer, answer in zip(peers, tasks, strict=True)]
    return Outcome(aggregate_outputs(counts), [peer.site for peer in peers])


STARTERS: Mapping[Process, Callable[[Node, ProcessTask], Awaitable[Outcome]]] = {
    Process.PING: _start_ping,
    Process.CARE_SUMMARY: _start_care_summary,
    Process.FEASIBILITY: _start_feasibility,
    Process.DATA_SEND: _start_data_send,
}


# --- receiving side --------------------------------------------------------------------------------


@dataclass
class Received:
    """A peer request as far as it was understood, for the audit record of its refusal."""

    peer: str = "unknown"
    process: str = "peer-task"


async def receive(node: Node, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Answer a peer's Task; FhirError (401/403/400) when refused, audited either way."""
    seen = Received()
    try:
        peer, request, key = _admitted(node, headers, body, seen)
    except FhirError as error:
        entry = exchange_record(seen.process, seen.peer, (), "refused", str(error))
        await run_in_threadpool(record_alone, node.engine, entry)
        raise
    return await _answer(node, peer, request, key)


def _admitted(node: Node, headers: Mapping[str, str], body: bytes, seen: Received) -> tuple[Peer, ProcessTask, str]:
    """The identified peer, its Task and idempotency key; FhirError if it may not ask this (noted in `seen`)."""
    peer = identify(headers, node.gateway_secret, node.allow_list)
    seen.peer = peer.site
    request = parse_task(parse_json_resource(body, "Task"))
    seen.process = request.process.value
    authorise(peer, request.process, request.requester, node.role)
    if request.idempotency_key is None:
        raise FhirError(400, "required", f"peer Tasks need an identifier of {IDEMPOTENCY_SYSTEM}", ("Task.identifier",))
    if request.status is not Status.REQUESTED:
        raise FhirError(400, "invalid", "a peer Task must have status 'requested'", ("Task.status",))
    return peer, request, request.idempotency_key


async def _answer(node: Node, peer: Peer, request: ProcessTask, key: str) -> dict[str, Any]:
    stored = await run_in_threadpool(task_store.answered, node.engine, peer.site, key)
    if stored is not None:
        entry = exchange_record(request.process.value, peer.site, (), "success", f"answer to key {key!r} repeated")
        await run_in_threadpool(record_alone, node.engine, entry)
        return stored
    task = {**request.resource, "id": uuid.uuid4().hex}
    try:
        outcome = await ANSWERERS[request.process](node, peer, request)
    except (ProcessError, FhirError) as exc:
        reason = exc.diagnostics if isinstance(exc, FhirError) else str(exc)
        entry = exchange_record(request.process.value, peer.site, (), "failed", reason)
        await run_in_threadpool(record_alone, node.engine, entry)
        return failed(task, reason)
    answer = completed(task, outcome.outputs)
    await run_in_threadpool(task_store.save_answer, node.engine, peer.site, key, answer)
    entry = exchange_record(request.process.value, peer.site, outcome.subjects, "success", "", outcome.purpose)
    await run_in_threadpool(record_alone, node.engine, entry)
    return answer


async def _answer_ping(_node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    payload = request.inputs.one("payload", "valueBase64Binary", str, required=False) or ""
    if len(payload) > MAX_PING_BYTES * 4 // 3 + 4:
        raise FhirError(413, "too-costly", f"a ping payload is at most {MAX_PING_BYTES} bytes")
    return Outcome([output("payload", "valueBase64Binary", payload)], [peer.site])


async def _answer_feasibility(node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    criteria = criteria_from(request.inputs)
    try:
        found = await node.hapi.search("Condition", criteria.search())
    except EXCHANGE_ERRORS as exc:
        raise ProcessError(f"{node.site!r} could not count: {exc}") from None
    return Outcome(answer_outputs(obfuscate(node.site, count_patients(found, criteria))), [peer.site])


async def _ingest(node: Node, peer: Peer, request: ProcessTask, *, link_patients: bool) -> tuple[int, list[str]]:
    """Store the carried bundle as sent by `peer`; (resources received, patients' MPI ids or pseudonyms)."""
    bundle = request.inputs.bundle()
    try:
        await node.ingest(bundle, peer.site, link_patients=link_patients)
    except EXCHANGE_ERRORS as exc:
        raise ProcessError(f"{node.site!r} could not store the bundle: {exc}") from None
    entries = [e for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    subjects = [
        str(identifier.get("value"))
        for entry in entries
        if entry["resource"].get("resourceType") == "Patient"
        for identifier in entry["resource"].get("identifier", [])
        if isinstance(identifier, dict)
        and (identifier.get("system") == MPI_SYSTEM or str(identifier.get("system")).startswith(PSEUDONYM_SYSTEM_BASE))
    ]
    return len(entries), subjects


async def _answer_care_summary(node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    received, subjects = await _ingest(node, peer, request, link_patients=True)
    return Outcome([output("resources-received", "valueInteger", received)], [peer.site], subjects)


async def _answer_data_send(node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    project = request.inputs.string("project")
    received, subjects = await _ingest(node, peer, request, link_patients=False)
    return Outcome([output("resources-received", "valueInteger", received)], [peer.site], subjects, project)


ANSWERERS: Mapping[Process, Callable[[Node, Peer, ProcessTask], Awaitable[Outcome]]] = {
    Process.PING: _answer_ping,
    Process.CARE_SUMMARY: _answer_care_summary,
    Process.FEASIBILITY: _answer_feasibility,
    Process.DATA_SEND: _answer_data_send,
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


async def refuse_handshake(node: Node, headers: Mapping[str, str]) -> FhirError:
    """The answer to a request whose TLS client check failed at the gateway (`/peer/refused`), audited."""
    if through_gateway(headers, node.gateway_secret):
        reason = f"client certificate check failed at the gateway: {headers.get(CLIENT_VERIFY_HEADER) or 'NONE'}"
    else:
        reason = "a handshake refusal that did not come through this node's gateway"
    await run_in_threadpool(
        record_alone, node.engine, exchange_record("peer-handshake", "unknown", (), "refused", reason)
    )
    return FhirError(401, "security", reason)
