"""The four processes between nodes (ping, careSummary, feasibility, dataSend), at both ends.

Starting side (`POST /fhir/Task` of the local API): resolve the peer(s) from the allow list, check the
role table, check consent at the trust centre, gather the patient's data from the local HAPI, send
the Task to the peer and finish the local Task as `completed` or `failed` with a reason. Receiving
side (`POST /peer/fhir/Task`): identify the peer from its certificate, check the role table and the
idempotency key, do the work and answer with the Task. Every exchange is audited at both ends, with the
purpose the process serves (treatment, research for a project, running the node).

A receiver trusts a peer no further than it must: a careSummary is stored only if the receiver's own look
at the trust centre finds the patient's treatment consent, and only under the peer's name (except the
records this node sent that peer, which come back as updates; `connector.sent_records`). What went wrong
inside this node (HAPI's diagnostics, internal addresses) is logged here under a reference, and the peer
is told only that reference.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from connector import retries, task_store
from connector.allowlist import answering, permitted
from connector.audit import exchange_record, record_alone
from connector.feasibility import (
    FeasibilityPolicy,
    PatientTally,
    aggregate_outputs,
    answer_outputs,
    criteria_from,
    from_answer,
    spend_budget,
)
from connector.hapi import HapiClient
from connector.identity import authorise
from connector.ingest import IngestResult
from connector.peers import PeerClient, PeerError, PeerUnreachableError
from connector.pseudonymise import PSEUDONYM_SYSTEM_BASE, pseudonymise
from connector.retries import RetryPolicy
from connector.sent_records import remember_sent
from connector.settings import Project
from connector.tasks import (
    IDEMPOTENCY_SYSTEM,
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
from connector.transform import PERSON_SYSTEM, first_origin
from connector.trustcentre_client import POLICY_SYSTEM, TrustCentreClient, linkable_identifiers
from connector.upstream import UpstreamRefused, UpstreamUnavailable
from connector.validation import InvalidInput
from servicekit.allowlist import ORGANIZATION_SYSTEM, NodeRole, Peer
from servicekit.fhir import FhirError, parse_json_resource
from servicekit.identity import CLIENT_VERIFY_HEADER, Federation, through_gateway
from servicekit.purpose import OPERATIONS, RESEARCH, TREATMENT, research
from servicekit.web import logged_under_reference

LOG = logging.getLogger("connector.processes")

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
#: Processes started by callers that may run at once (`Node.max_running`).
MAX_RUNNING = 32


class Ingest(Protocol):
    """Write a transaction Bundle received from `source` (a site) into this node's HAPI."""

    async def __call__(self, bundle: dict[str, Any], source: str, *, link_patients: bool) -> IngestResult:
        """What was written and about whom; InvalidInput when the bundle is unfit."""


@dataclass(frozen=True)
class Node:
    """What the processes need to know and reach at this node."""

    role: NodeRole
    federation: Federation
    engine: Engine
    hapi: HapiClient
    trustcentre: TrustCentreClient
    peers: PeerClient
    ingest: Ingest
    source_system_base: str
    projects: Mapping[str, Project] = field(default_factory=dict)
    feasibility: FeasibilityPolicy = field(default_factory=FeasibilityPolicy)
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    #: Processes running now, by Task id: a second `$retry` (or the automatic one) waits for the first.
    running: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    #: How many processes a caller may have running here at once; beyond, a start is answered 503.
    max_running: int = MAX_RUNNING
    #: This connector among those sharing its database: the name its claims on running Tasks carry.
    claimant: str = field(default_factory=lambda: f"{socket.gethostname()}/{uuid.uuid4().hex[:12]}")

    @property
    def site(self) -> str:
        """The site of the node these processes run at."""
        return self.federation.site


class Busy(UpstreamUnavailable):
    """As many processes run as this connector runs at once: answered as any passing outage (503, Retry-After).

    Without the bound, callers that do not wait for the end (`respond-async`) could start processes
    faster than the peers answer them, until the connector ran out of memory.
    """


class ProcessError(Exception):
    """The process cannot finish; the message becomes the Task's `statusReason.text`.

    `detail` is what only this node's operators should read (the audit record and the log have it);
    a peer is told the message. `peer_unreachable`: the peer did not answer, so waiting may cure it.
    """

    def __init__(self, message: str, detail: str | None = None, *, peer_unreachable: bool = False) -> None:
        super().__init__(message)
        self.detail = detail or message
        #: The peer did not answer: the process is tried again by itself (`connector.retries`).
        self.peer_unreachable = peer_unreachable


@dataclass(frozen=True)
class Outcome:
    """What a finished process reports: its outputs and what the audit records of it."""

    outputs: list[dict[str, Any]]
    peers: Sequence[str]
    subjects: Sequence[str] = ()
    purpose: str | None = None
    #: What only this node's operators read in the audit record: data stored despite profile errors (the node's
    #: validation policy only warns) makes the record "warned", naming them.
    warned: str = ""


# --- starting side ---------------------------------------------------------------------------------


async def start(
    node: Node,
    resource: Any,  # noqa: ANN401 -- untrusted
    caller: str,
    *,
    respond_async: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Start a process from a local `requested` Task: (201, the finished Task), or (200, the stored one).

    With `respond_async` (the caller's `Prefer: respond-async`) the answer does not wait for the peers:
    (202, the Task as accepted), and the process runs on; `GET /fhir/Task/<id>` shows where it stands.
    """
    request = parse_task(resource)
    if request.status is not Status.REQUESTED:
        raise FhirError(400, "invalid", "a new process Task must have status 'requested'", ("Task.status",))
    _check_inputs(node, request)
    if len(node.running) >= node.max_running:
        raise Busy(f"{len(node.running)} processes are running at {node.site!r}, as many as it runs at once")
    task_id = uuid.uuid4().hex
    key = request.idempotency_key or task_id
    task = {
        **request.resource,
        "id": task_id,
        "identifier": [{"system": IDEMPOTENCY_SYSTEM, "value": key}],
        "requester": {"identifier": {"system": ORGANIZATION_SYSTEM, "value": node.site}},
        "authoredOn": _now(),
    }
    existing = await run_in_threadpool(
        task_store.claim_started, node.engine, task, key, node.claimant, datetime.now(UTC)
    )
    if existing is not None:
        return 200, existing
    if respond_async:
        _running(node, task_id, _run_unattended(node, task, caller))
        return 202, task
    return 201, await asyncio.shield(_running(node, task_id, _run(node, task, caller)))


async def retry(node: Node, task_id: str, caller: str) -> dict[str, Any]:
    """Run a started process again with its idempotency key; a completed one is returned as it is.

    While the Task runs here (its start, a person's retry or the automatic one), another retry waits for
    that run and answers its result; while another connector of this node runs it, the Task as it stands.
    """
    running = node.running.get(task_id)
    if running is None:  # registered before the first await, so a second caller cannot slip in between
        running = _running(node, task_id, _retry_once(node, task_id, caller))
    return await asyncio.shield(running)


async def resume_orphans(node: Node, caller: str) -> list[str]:
    """Run again every Task still `requested` whose connector stopped while it ran (its claim lapsed): the ids.

    A Task accepted with `respond-async` (or whose start lost its caller) must not stay open because the
    connector running it stopped; this connector, or another sharing its database, finishes it.
    """
    orphans = await run_in_threadpool(task_store.orphans, node.engine, datetime.now(UTC))
    for task_id in orphans:
        try:
            task = await retry(node, task_id, caller)
        except FhirError as error:
            LOG.warning("resuming Task %s: %s", task_id, error)
            continue
        LOG.info("resumed Task %s: %s", task_id, task["status"])
    return orphans


def _running(node: Node, task_id: str, work: Coroutine[Any, Any, dict[str, Any]]) -> asyncio.Future[dict[str, Any]]:
    """`work` on the Task, known to every request of this connector until it ends."""
    future = node.running[task_id] = asyncio.ensure_future(work)
    future.add_done_callback(lambda _: node.running.pop(task_id, None))
    return future


async def _retry_once(node: Node, task_id: str, caller: str) -> dict[str, Any]:
    task = await run_in_threadpool(task_store.started, node.engine, task_id=task_id)
    if task is None:
        raise FhirError(404, "not-found", f"no process Task {task_id!r} was started here")
    if task["status"] == Status.COMPLETED.value:
        await run_in_threadpool(retries.forget, node.engine, task_id)
        return task
    if not await run_in_threadpool(task_store.claim, node.engine, task_id, node.claimant, datetime.now(UTC)):
        return task  # another connector of this node runs it now
    request = {key: value for key, value in task.items() if key not in ("statusReason", "output")}
    return await _run(node, {**request, "status": Status.REQUESTED.value}, caller, retried=True)


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
        if not node.projects[str(project)].send:
            raise FhirError(
                403, "forbidden", f"{node.site!r} sends no research data for project {project!r}", ("Task.input",)
            )
    if request.process is Process.FEASIBILITY:
        criteria_from(inputs)
    size = inputs.integer("payload-bytes")
    if size is not None and not 0 <= size <= MAX_PING_BYTES:
        raise FhirError(400, "invalid", f"payload-bytes must be 0-{MAX_PING_BYTES}", ("Task.input",))


async def _run_unattended(node: Node, task: dict[str, Any], caller: str) -> dict[str, Any]:
    """`_run`, and a failure of this node's own (a bug, its database gone) ends the Task `failed` too.

    Nobody may be waiting for the answer (`respond-async`), so the Task itself must say what happened:
    its reason names the log reference, as a 500 would.
    """
    try:
        return await _run(node, task, caller)
    except Exception as unexpected:  # noqa: BLE001 -- any failure ends the Task failed, naming a log reference
        reference = logged_under_reference(LOG, f"process Task {task['id']}", unexpected)
        finished = failed(task, f"internal error at {node.site}; the connector's log has reference {reference}")
        finished["lastModified"] = _now()
        try:
            await run_in_threadpool(task_store.save_started, node.engine, finished, node.claimant)
        except Exception:  # the database itself is gone: the Task stays open and is resumed when its claim lapses
            LOG.exception("process Task %s: its failure could not be stored", task["id"])
            raise unexpected from None
        return finished


async def _run(node: Node, task: dict[str, Any], caller: str, *, retried: bool = False) -> dict[str, Any]:
    """Run a process to its end and store the Task; only a `retried` one can have automatic attempts to forget."""
    request = parse_task(task)
    try:
        outcome = await STARTERS[request.process](node, request)
    except ProcessError as exc:
        finished = failed(task, str(exc) + await _next_attempt(node, task["id"], exc, retried=retried))
        outcome = Outcome([], _targets_named(node, request), purpose=_purpose(request))
        await _audit_all(node, request.process, outcome, "failed", f"started by {caller}: {exc.detail}")
    else:
        if retried:
            await run_in_threadpool(retries.forget, node.engine, task["id"])
        finished = completed(task, outcome.outputs)
        await _audit_all(node, request.process, outcome, "success", f"started by {caller}")
    finished["lastModified"] = _now()
    await run_in_threadpool(task_store.save_started, node.engine, finished, node.claimant)
    return finished


async def _next_attempt(node: Node, task_id: str, error: ProcessError, *, retried: bool) -> str:
    """Plan the next automatic attempt when the peer did not answer; what the Task's reason adds about it."""
    if not error.peer_unreachable or node.retry_policy.attempts == 0:
        if retried:  # a plan made before (or under another policy) must not keep the retrier coming back
            await run_in_threadpool(retries.forget, node.engine, task_id)
        return "; `$retry` when the peer is back" if error.peer_unreachable else ""
    planned = await run_in_threadpool(retries.plan_next, node.engine, task_id, node.retry_policy, datetime.now(UTC))
    if planned is None:
        return f"; no automatic attempt left after {node.retry_policy.attempts}: `$retry` when the peer is back"
    return (
        f"; tried again by itself at {planned.due:%H:%M:%S} UTC "
        f"(attempt {planned.attempt} of {node.retry_policy.attempts}), or `$retry` now"
    )


async def _audit_all(node: Node, process: Process, outcome: Outcome, result: str, detail: str) -> None:
    for peer in outcome.peers or ["-"]:
        entry = exchange_record(process.value, peer, outcome.subjects, result, detail, outcome.purpose)
        await run_in_threadpool(record_alone, node.engine, entry)


def _targets_named(node: Node, request: ProcessTask) -> list[str]:
    if request.process is Process.FEASIBILITY:
        return [p.site for p in answering(node.federation.allow_list, Process.FEASIBILITY, node.role, node.site)]
    return [str(request.inputs.string("target"))]


def _purpose(request: ProcessTask) -> str:
    """What a process is for, by its kind (and project): never what a caller says it is for."""
    match request.process:
        case Process.CARE_SUMMARY:
            return TREATMENT
        case Process.DATA_SEND:
            project = request.inputs.string("project", required=False)
            return research(project) if project else RESEARCH
        case Process.FEASIBILITY:
            return RESEARCH
        case Process.PING:
            return OPERATIONS


def _target(node: Node, request: ProcessTask) -> Peer:
    site = str(request.inputs.string("target"))
    if site == node.site:
        raise ProcessError(f"{site!r} is this node: a process goes to another node")
    peer = node.federation.allow_list.by_site(site)
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
    except PeerUnreachableError as exc:
        raise ProcessError(str(exc), peer_unreachable=True) from None
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
    return Outcome(outputs, [peer.site], purpose=OPERATIONS)


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
    def person(self) -> str | None:
        """The id the trust centre gave this node for the patient's person at ingest."""
        return next(
            (i.get("value") for i in self.resource.get("identifier", []) if i.get("system") == PERSON_SYSTEM), None
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
    return await _consented_by(node, linkable_identifiers(patient.resource), policy)


async def _consented_by(node: Node, identifiers: Sequence[tuple[str, str]], policy: str) -> bool:
    """Whether the trust centre finds consent to `policy` today under any of `identifiers`."""
    today = datetime.now(UTC).date()
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
    """Resources as a transaction Bundle of `PUT <Type>/<id>` entries (`meta` reduced to its profiles).

    This node's id of the person stays here: it means nothing elsewhere, and each node gets its own.
    """
    entries = []
    for resource in resources:
        clean = {key: value for key, value in resource.items() if key != "meta"}
        if isinstance(clean.get("identifier"), list):
            clean["identifier"] = [i for i in clean["identifier"] if not _is_person_id(i)]
        profiles = resource.get("meta", {}).get("profile") if isinstance(resource.get("meta"), dict) else None
        if profiles:
            clean["meta"] = {"profile": profiles}
        url = f"{resource['resourceType']}/{resource['id']}"
        entries.append({"resource": clean, "request": {"method": "PUT", "url": url}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _is_person_id(identifier: Any) -> bool:  # noqa: ANN401 -- an element of stored JSON
    return isinstance(identifier, dict) and identifier.get("system") == PERSON_SYSTEM


async def _start_care_summary(node: Node, request: ProcessTask) -> Outcome:
    peer = _target(node, request)
    [patient] = await _consented_patients(node, request)
    resources = await _everything(node, patient)
    await _exchange(node, peer, request, [bundle_input(transaction_bundle(resources))])
    origins = [first_origin(resource, node.source_system_base) for resource in resources]
    sent = [(key.system, key.value) for key in origins if key is not None]
    await run_in_threadpool(remember_sent, node.engine, peer.site, sent)
    subjects = [patient.person or patient.asked_as]
    return Outcome([output("resources-sent", "valueInteger", len(resources))], [peer.site], subjects, TREATMENT)


async def _start_data_send(node: Node, request: ProcessTask) -> Outcome:
    peer = _target(node, request)
    project = str(request.inputs.string("project"))
    domain = node.projects[project].domain
    patients = await _consented_patients(node, request)
    missing = [patient.asked_as for patient in patients if patient.person is None]
    if missing:
        raise ProcessError(f"{', '.join(missing)} at {node.site!r} was never linked at the trust centre")
    originals = [str(patient.person) for patient in patients]
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
    return Outcome([output("resources-sent", "valueInteger", len(extract))], [peer.site], subjects, research(project))


async def _start_feasibility(node: Node, request: ProcessTask) -> Outcome:
    peers = answering(node.federation.allow_list, Process.FEASIBILITY, node.role, node.site)
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
    counts = [
        from_answer(peer.site, answer.outputs, node.feasibility) for peer, answer in zip(peers, tasks, strict=True)
    ]
    return Outcome(aggregate_outputs(counts), [peer.site for peer in peers], purpose=RESEARCH)


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
    peer = node.federation.identify(headers)
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
    purpose = _received_purpose(node, request)
    try:
        outcome = await ANSWERERS[request.process](node, peer, request)
    except (ProcessError, FhirError) as exc:
        reason = exc.diagnostics if isinstance(exc, FhirError) else str(exc)
        detail = exc.detail if isinstance(exc, ProcessError) else reason
        entry = exchange_record(request.process.value, peer.site, (), "failed", detail, purpose)
        await run_in_threadpool(record_alone, node.engine, entry)
        return failed(task, reason)
    answer = completed(task, outcome.outputs)
    await run_in_threadpool(task_store.save_answer, node.engine, peer.site, key, answer)
    result = "warned" if outcome.warned else "success"
    entry = exchange_record(request.process.value, peer.site, outcome.subjects, result, outcome.warned, purpose)
    await run_in_threadpool(record_alone, node.engine, entry)
    return answer


def _received_purpose(node: Node, request: ProcessTask) -> str:
    """What a peer's request serves, derived here: a research project must be one this node knows."""
    project = request.inputs.string("project", required=False)
    if project is not None and project not in node.projects:
        raise FhirError(400, "invalid", f"unknown project {project!r}", ("Task.input",))
    return _purpose(request)


async def _answer_ping(_node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    payload = request.inputs.one("payload", "valueBase64Binary", str, required=False) or ""
    if len(payload) > MAX_PING_BYTES * 4 // 3 + 4:
        raise FhirError(413, "too-costly", f"a ping payload is at most {MAX_PING_BYTES} bytes")
    return Outcome([output("payload", "valueBase64Binary", payload)], [peer.site])


async def _answer_feasibility(node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    criteria = criteria_from(request.inputs)
    if not await run_in_threadpool(spend_budget, node.engine, peer.site, node.feasibility):
        raise ProcessError(
            f"{peer.site!r} has used its {node.feasibility.daily_budget} feasibility questions for today"
        )
    tally = PatientTally(criteria)
    try:
        async for page in node.hapi.pages("Condition", criteria.search()):
            tally.add(page)
    except EXCHANGE_ERRORS as exc:
        raise _internal(node, "could not count", exc) from None
    count = node.feasibility.obfuscate(node.site, tally.count)
    return Outcome(answer_outputs(count), [peer.site])


def _internal(node: Node, what: str, error: Exception) -> ProcessError:
    """A failure inside this node: logged here under a reference, the peer told only that reference."""
    reference = uuid.uuid4().hex[:12]
    LOG.warning("%s %s (reference %s): %s", node.site, what, reference, error)
    return ProcessError(f"{node.site!r} {what}; its operators find why under reference {reference}", f"{what}: {error}")


async def _ingest(node: Node, peer: Peer, bundle: dict[str, Any], *, link_patients: bool) -> Outcome:
    """Store `bundle` as sent by `peer`: resources received, this node's ids of the persons (or pseudonyms)."""
    try:
        result = await node.ingest(bundle, peer.site, link_patients=link_patients)
    except InvalidInput as invalid:  # the peer's own data at fault: it may know what
        raise ProcessError(f"{node.site!r} refused the bundle: {invalid}") from None
    except EXCHANGE_ERRORS as exc:
        raise _internal(node, "could not store the bundle", exc) from None
    entries = [e for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    pseudonyms = [
        str(identifier.get("value"))
        for entry in entries
        if entry["resource"].get("resourceType") == "Patient"
        for identifier in entry["resource"].get("identifier", [])
        if isinstance(identifier, dict) and str(identifier.get("system")).startswith(PSEUDONYM_SYSTEM_BASE)
    ]
    received = output("resources-received", "valueInteger", len(entries))
    return Outcome([received], [peer.site], [*result.person_ids, *pseudonyms], warned=result.errors_stored_note())


async def _answer_care_summary(node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    bundle = request.inputs.bundle()
    patients = [
        e["resource"]
        for e in bundle.get("entry", [])
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Patient"
    ]
    if len(patients) != 1:
        raise ProcessError(f"a careSummary carries its one patient; this one carries {len(patients)}")
    try:
        consented = await _consented_by(node, linkable_identifiers(patients[0]), CONSENT_POLICIES[Process.CARE_SUMMARY])
    except EXCHANGE_ERRORS as exc:
        raise _internal(node, "could not check consent", exc) from None
    if not consented:
        raise ProcessError(f"{node.site!r} finds no treatment consent for the patient; nothing was stored")
    return await _ingest(node, peer, bundle, link_patients=True)


async def _answer_data_send(node: Node, peer: Peer, request: ProcessTask) -> Outcome:
    return await _ingest(node, peer, request.inputs.bundle(), link_patients=False)


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
    if through_gateway(headers, node.federation.gateway_secret):
        reason = f"client certificate check failed at the gateway: {headers.get(CLIENT_VERIFY_HEADER) or 'NONE'}"
    else:
        reason = "a handshake refusal that did not come through this node's gateway"
    await run_in_threadpool(
        record_alone, node.engine, exchange_record("peer-handshake", "unknown", (), "refused", reason)
    )
    return FhirError(401, "security", reason)
