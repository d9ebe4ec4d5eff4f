"""Invariants and checks that read the federation's state: audit trails, consents, pseudonyms.

Each takes the responses of a step and what was true before it (the AuditEvent ids each node held), and
returns what is wrong in words a person can act on. What can be judged from the data alone is in
`conformance.invariants`; this module asks the targets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, assert_never
from urllib.parse import urlsplit

from conformance.actions import SUITE_CREDENTIAL, TRUSTCENTRE_CREDENTIAL, Need, Scene, identifier_of, requester
from conformance.contract import CONSENT_DOMAIN, PROCESS_CONSENT, Process
from conformance.http import Call, CannotRunError, Http, Response, StepLog
from conformance.invariants import (
    InvariantName,
    identifying_leaks,
    invalid_resources,
    names_exchange,
    patients_answered,
    pseudonyms_of,
    records_read,
    transaction_response_problems,
)
from conformance.requests import de_pseudonymize, is_consented
from conformance.scenario import AuditCheck, Read, StartProcess, Step, Trust

#: AuditEvent.outcome of an exchange whose Task ended so.
AUDIT_OUTCOME = {"completed": "0", "failed": "8"}
#: The invariants whose checks read audit trails, so a snapshot is taken before their step.
AUDITED = frozenset(
    {
        InvariantName.CROSS_NODE_AUDITED,
        InvariantName.CONSENT_ENFORCED,
        InvariantName.IDEMPOTENT_REPLAY,
        InvariantName.READ_AUDITED,
    }
)

Snapshot = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class Evidence:
    """What a step left to judge: the step its checks are about, its responses, the audit before it, its log."""

    scene: Scene
    step: Step
    responses: Sequence[Response]
    before: Snapshot
    log: StepLog

    @property
    def task(self) -> Mapping[str, Any]:
        """The Task a process step's last response holds; the exchange invariants apply to nothing else."""
        if not isinstance(self.step.action, StartProcess) or self.step.actor is None:
            raise CannotRunError(f"{self.step.kind} steps cannot check exchange invariants; only process steps can")
        body = self.responses[-1].body if self.responses else None
        if not isinstance(body, dict) or body.get("resourceType") != "Task":
            raise CannotRunError(f"no Task came back to check the exchange on (got {_resource_type(body)})")
        return body

    @property
    def sender(self) -> str:
        """The site of the step's actor."""
        return self.scene.scenario.actors[str(self.step.actor)].site


@dataclass
class Inspector:
    """Reads what the invariants need from the targets; remembers pseudonyms across the whole run."""

    http: Http
    #: (domain, original) -> (pseudonym, where it was first seen): one person, one pseudonym per domain.
    pseudonyms: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def audit_events(self, scene: Scene, site: str, log: StepLog) -> list[dict[str, Any]]:
        """Today's AuditEvents of `site`'s connector (the newest 500 the API gives)."""
        node = scene.node(site)
        today = datetime.now(UTC).date().isoformat()
        response = self.http.send(
            Call(node, "GET", f"{node.fhir_url}/AuditEvent?date=ge{today}", node.token(SUITE_CREDENTIAL)), log
        )
        if response.status != 200 or not isinstance(response.body, dict):
            raise CannotRunError(f"the audit of {site} answered {response.status}")
        return [
            entry["resource"]
            for entry in response.body.get("entry", [])
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
        ]

    def snapshot(self, scene: Scene, sites: set[str], log: StepLog) -> dict[str, frozenset[str]]:
        """Ids of the AuditEvents the auditable nodes among `sites` hold now."""
        return {
            site: frozenset(str(event.get("id")) for event in self.audit_events(scene, site, log))
            for site, node in scene.targets.nodes.items()
            if site in sites and "audit" in node.capabilities and SUITE_CREDENTIAL in node.tokens
        }

    def new_events(self, scene: Scene, site: str, before: Snapshot, log: StepLog) -> list[dict[str, Any]]:
        """The AuditEvents `site` recorded since the snapshot `before`."""
        if site not in before:
            raise CannotRunError(f"no audit snapshot of {site} was taken before the step")
        return [event for event in self.audit_events(scene, site, log) if str(event.get("id")) not in before[site]]

    def consented(self, scene: Scene, patient: str, policy: str, log: StepLog) -> bool:
        """Whether the trust centre holds the patient's consent to an MII policy (by its suffix)."""
        node = scene.trustcentre()
        body = is_consented(identifier_of(scene.scenario, patient), policy, CONSENT_DOMAIN)
        url = f"{node.trustcentre_url}/gics/$isConsented"
        response = self.http.send(Call(node, "POST", url, node.token(TRUSTCENTRE_CREDENTIAL), body), log)
        answers = [p.get("valueBoolean") for p in _parts(response.body) if p.get("name") == "consented"]
        if response.status != 200 or len(answers) != 1 or not isinstance(answers[0], bool):
            raise CannotRunError(f"the trust centre's $isConsented answered {response.status} without `consented`")
        return answers[0]

    def originals(self, scene: Scene, domain: str, pseudonyms: Sequence[str], log: StepLog) -> dict[str, str]:
        """Pseudonym -> original, as the trust centre's gPAS `$dePseudonymize` resolves them."""
        node = scene.trustcentre()
        url = f"{node.trustcentre_url}/gpas/$dePseudonymize"
        call = Call(node, "POST", url, node.token(TRUSTCENTRE_CREDENTIAL), de_pseudonymize(domain, pseudonyms))
        response = self.http.send(call, log)
        if response.status != 200:
            raise CannotRunError(f"the trust centre's $dePseudonymize in {domain} answered {response.status}")
        found = {}
        for part in _parts(response.body):
            values = {sub.get("name"): sub.get("valueIdentifier", {}).get("value") for sub in part.get("part", [])}
            if part.get("name") == "original" and values.get("pseudonym") and values.get("original"):
                found[str(values["pseudonym"])] = str(values["original"])
        return found


def invariant_needs(scene: Scene, step: Step) -> Iterator[Need]:
    """What checking the invariants `step` names needs, besides what its action needs."""
    subject = subject_of(scene, step)
    if subject.actor is None:
        return
    actor = scene.scenario.actors[subject.actor].site
    target = target_site(scene, subject)
    for name in step.expect.invariants:
        if name in AUDITED:
            yield Need(actor, "audit", SUITE_CREDENTIAL)
            if target is not None:
                yield Need(target, "audit", SUITE_CREDENTIAL)
        if name in (InvariantName.CONSENT_ENFORCED, InvariantName.ONE_PSEUDONYM_PER_DOMAIN):
            yield Need(None, "trustcentre", TRUSTCENTRE_CREDENTIAL)


def subject_of(scene: Scene, step: Step) -> Step:
    """The step whose action a step's invariants are about: a wait's is the step it polls."""
    if step.kind == "wait" and step.index > 1:
        return scene.scenario.steps[step.index - 2]
    return step


def target_site(scene: Scene, step: Step) -> str | None:
    """The site a process step sends to, if it names one."""
    if isinstance(step.action, StartProcess) and step.action.target is not None:
        return scene.scenario.actors[step.action.target].site
    return None


def snapshot_sites(scene: Scene, step: Step) -> set[str]:
    """The sites whose audit a step's checks read, so their AuditEvents are noted before it runs.

    A trust step reads only its own node's; invariants about an exchange, and an `audit` step's `since`
    (this step, when a later step names it), read every node's.
    """
    following = scene.scenario.steps[step.index] if step.index < len(scene.scenario.steps) else None
    polled_by_next = following is not None and following.kind == "wait"
    named = {*step.expect.invariants, *(following.expect.invariants if following and polled_by_next else ())}
    referenced = step.id is not None and any(
        isinstance(other.action, AuditCheck) and other.action.since == step.id for other in scene.scenario.steps
    )
    if referenced or AUDITED & named:
        return set(scene.targets.nodes)
    if isinstance(step.action, Trust) and step.actor is not None:
        return {scene.scenario.actors[step.actor].site}
    return set()


def invariant_problems(inspector: Inspector, names: Sequence[str], evidence: Evidence) -> list[str]:
    """Violations of the invariants `names` (a step's), each prefixed with the invariant's name."""
    problems: list[str] = []
    responses = evidence.responses
    for name in names:
        found: list[str]
        match InvariantName(name):
            case InvariantName.NO_IDENTIFYING_DATA:
                persons = list(evidence.scene.scenario.persons().values())
                found = [leak for response in responses for leak in identifying_leaks(response.body, persons)]
            case InvariantName.ONE_PSEUDONYM_PER_DOMAIN:
                found = [p for r in responses for p in _pseudonym_problems(inspector, evidence, r.body)]
            case InvariantName.VALID_FHIR:
                found = [problem for response in responses for problem in invalid_resources(response.body)]
            case InvariantName.TRANSACTION_RESPONSE:
                found = [p for r in responses for p in transaction_response_problems(r.call.body, r.body)]
            case InvariantName.CROSS_NODE_AUDITED:
                found = _audit_problems(inspector, evidence)
            case InvariantName.CONSENT_ENFORCED:
                found = _consent_problems(inspector, evidence)
            case InvariantName.IDEMPOTENT_REPLAY:
                found = _replay_problems(inspector, evidence)
            case InvariantName.READ_AUDITED:
                found = _read_audit_problems(inspector, evidence)
            case _ as unreachable:
                assert_never(unreachable)
        problems += [f"{name}: {problem}" for problem in found]
    return problems


def door_problems(inspector: Inspector, evidence: Evidence) -> list[str]:
    """A refusal is an OperationOutcome the node audited as refused; an acceptance a Task audited as answered."""
    scene, action = evidence.scene, evidence.step.action
    assert isinstance(action, Trust)  # noqa: S101 -- trust steps only
    node = scene.node(evidence.sender)
    [response] = evidence.responses
    body = response.body
    events = inspector.new_events(scene, node.site, evidence.before, evidence.log)
    if response.status >= 400:
        problems = []
        if not (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" and body.get("issue")):
            problems.append(f"the refusal is {_resource_type(body)}, not an OperationOutcome with an issue")
        if not any(event.get("outcome") != "0" for event in events):
            problems.append(f"{node.site} holds no new AuditEvent of a refusal")
        return problems
    if not isinstance(body, dict) or body.get("resourceType") != "Task":
        return [f"the answer to an accepted peer Task is {_resource_type(body)}, not a Task"]
    status = str(body.get("status"))
    if status not in AUDIT_OUTCOME:
        return [f"the answered Task is {status!r}, neither completed nor failed"]
    claimed = requester(scene, action, node) or "nobody"  # no certificate: no record can name the caller
    if not any(names_exchange(e, action.process, [claimed], AUDIT_OUTCOME[status]) for e in events):
        return [f"{node.site} holds no new AuditEvent of {action.process} answered for {claimed}"]
    return []


def audit_check_problems(
    inspector: Inspector, scene: Scene, action: AuditCheck, before: Snapshot, log: StepLog
) -> list[str]:
    """No node recorded a successful exchange of the named processes since the step `action.since`."""
    problems = []
    for site in sorted(before):
        for event in inspector.new_events(scene, site, before, log):
            for process in action.processes:
                if names_exchange(event, process, [], "0"):
                    who = ", ".join(str(a.get("who", {}).get("display")) for a in event.get("agent", []))
                    problems.append(f"{site} recorded a successful {process} with {who} (AuditEvent/{event.get('id')})")
    return problems


def _peers(scene: Scene, action: StartProcess, task: Mapping[str, Any]) -> list[str]:
    """The sites the process exchanged with: its target, or those a feasibility count names."""
    if action.target is not None:
        return [scene.scenario.actors[action.target].site]
    counts = [o.get("valueString") for o in task.get("output", []) if _output_code(o) == "node-count"]
    return [count.split(":", 1)[0] for count in counts if isinstance(count, str)]


def _audit_problems(inspector: Inspector, evidence: Evidence) -> list[str]:
    """Both ends of the exchange hold a new AuditEvent naming the process, the peer and the outcome."""
    task, scene, action = evidence.task, evidence.scene, evidence.step.action
    assert isinstance(action, StartProcess)  # noqa: S101 -- see Evidence.task
    sender, before, log = evidence.sender, evidence.before, evidence.log
    status = str(task.get("status"))
    if status not in AUDIT_OUTCOME:
        return [f"the Task is {status!r}, so the exchange did not finish"]
    peers = _peers(scene, action, task)
    problems = []
    sent = inspector.new_events(scene, sender, before, log)
    if not any(names_exchange(event, action.process, peers, AUDIT_OUTCOME[status]) for event in sent):
        problems.append(f"{sender} holds no new AuditEvent of {action.process} with {', '.join(peers) or 'a peer'}")
    if status == "completed":
        for peer in peers:
            if peer not in scene.targets.nodes:
                raise CannotRunError(f"cannot read the audit of {peer}: not among the targets")
            received = inspector.new_events(scene, peer, before, log)
            if not any(names_exchange(event, action.process, [sender], "0") for event in received):
                problems.append(f"{peer} holds no new AuditEvent of {action.process} from {sender}")
    return problems


def _consent_problems(inspector: Inspector, evidence: Evidence) -> list[str]:
    """A patient without the process's consent: the Task failed and the target recorded no exchange."""
    task, scene, action, log = evidence.task, evidence.scene, evidence.step.action, evidence.log
    assert isinstance(action, StartProcess)  # noqa: S101 -- see Evidence.task
    policy = PROCESS_CONSENT.get(Process(action.process))
    if policy is None or action.target is None:
        return []
    without = [patient for patient in action.patients if not inspector.consented(scene, patient, policy, log)]
    if not without:
        return []
    problems = []
    names = ", ".join(without)
    if task.get("status") != "failed":
        problems.append(f"the Task is {task.get('status')!r} although {names} gave no consent .{policy}")
    sender, target = evidence.sender, scene.scenario.actors[action.target].site
    received = inspector.new_events(scene, target, evidence.before, log)
    if any(names_exchange(event, action.process, [sender], "0") for event in received):
        problems.append(f"{target} received a {action.process} from {sender} although {names} gave no consent")
    return problems


def _replay_problems(inspector: Inspector, evidence: Evidence) -> list[str]:
    """The earlier step's Task came back unchanged, and the target saw no new exchange."""
    scene, step, action = evidence.scene, evidence.step, evidence.step.action
    if not isinstance(action, StartProcess) or action.idempotency_key is None:
        raise CannotRunError("idempotent-replay applies to a process step with an idempotency_key")
    earlier = scene.keyed_tasks.get(action.idempotency_key)
    if earlier is None:
        raise CannotRunError(f"no earlier step started a process with the key {action.idempotency_key!r}")
    task, status = evidence.task, evidence.responses[-1].status
    problems = []
    if status != 200:
        problems.append(f"a replayed key is answered {status}, expected 200 (the stored Task)")
    if task.get("id") != earlier.get("id"):
        problems.append(f"the replay answered Task/{task.get('id')}, the first start Task/{earlier.get('id')}")
    target = target_site(scene, step)
    if target is not None:
        received = inspector.new_events(scene, target, evidence.before, evidence.log)
        if any(names_exchange(event, action.process, [evidence.sender], "0") for event in received):
            problems.append(f"{target} recorded the {action.process} from {evidence.sender} again")
    return problems


def _read_audit_problems(inspector: Inspector, evidence: Evidence) -> list[str]:
    """The actor's node recorded the read: every Patient of the answer, and the search's query."""
    if not isinstance(evidence.step.action, Read) or not evidence.responses:
        raise CannotRunError("read-audited applies to a read step")
    response = evidence.responses[-1]
    patients, query = patients_answered(response.body), urlsplit(response.call.url).query
    events = inspector.new_events(evidence.scene, evidence.sender, evidence.before, evidence.log)
    if any(records_read(event, patients, query) for event in events):
        return []
    return [f"{evidence.sender} recorded no read naming {', '.join(sorted(patients)) or 'its answer'} and {query!r}"]


def _pseudonym_problems(inspector: Inspector, evidence: Evidence, body: object) -> list[str]:
    """Each Patient: one pseudonym per domain, known to the trust centre, the same one all run long."""
    problems = []
    by_domain: dict[str, list[str]] = {}
    for patient in _patients_in(body):
        found = pseudonyms_of(patient)
        if not found:
            problems.append(f"Patient/{patient.get('id')} carries no pseudonym")
        for domain, values in found.items():
            if len(values) > 1:
                problems.append(f"Patient/{patient.get('id')} has {len(values)} pseudonyms in {domain}")
            by_domain.setdefault(domain, []).extend(values)
    here = f"{evidence.scene.scenario.name} step {evidence.step.index}"
    for domain, pseudonyms in by_domain.items():
        originals = inspector.originals(evidence.scene, domain, pseudonyms, evidence.log)
        seen: dict[str, str] = {}
        for pseudonym in pseudonyms:
            original = originals.get(pseudonym)
            if original is None:
                problems.append(f"{pseudonym} is not a pseudonym the trust centre knows in {domain}")
                continue
            if seen.setdefault(original, pseudonym) != pseudonym:
                problems.append(f"one person has two pseudonyms in {domain}: {seen[original]} and {pseudonym}")
                continue
            earlier, where = inspector.pseudonyms.setdefault((domain, original), (pseudonym, here))
            if earlier != pseudonym:
                problems.append(f"{domain}: a person's pseudonym was {earlier} at {where}, now {pseudonym}")
    return problems


def _patients_in(body: object) -> list[dict[str, Any]]:
    """The Patient resources of a response: itself, or a Bundle's entries."""
    if not isinstance(body, dict):
        return []
    if body.get("resourceType") == "Patient":
        return [body]
    resources = [entry.get("resource") for entry in body.get("entry", []) if isinstance(entry, dict)]
    return [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "Patient"]


def _parts(body: object) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return [part for part in body.get("parameter", []) if isinstance(part, dict)]


def _output_code(item: Mapping[str, Any]) -> str | None:
    codings = item.get("type", {}).get("coding", [])
    return next((c.get("code") for c in codings if isinstance(c, dict)), None)


def _resource_type(body: object) -> str:
    if isinstance(body, dict):
        return str(body.get("resourceType", "without resourceType"))
    return "no JSON" if body is None else type(body).__name__
