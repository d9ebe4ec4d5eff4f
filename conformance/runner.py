"""Replays scenarios against targets: each step's requests, its expectations, the invariants it names.

A step runs only where the targets can run it: a node lacking a capability or credential the step needs
makes it not applicable (never passed). A step that fails leaves the run going; a later step about a
patient whose set-up (ingest or consent) did not pass is reported as depending on it rather than
failing for a reason that is not its own. Invariants that need the federation's state are checked here
for real: audit records at both ends of an exchange, the consent the trust centre holds, pseudonyms
resolved at the trust centre and remembered across the run. A trust step knocks at a node's peer door
with a client certificate: a refusal must be an OperationOutcome the node audited as refused, an
acceptance a Task it audited as answered. `docs/scenarios.md` says what each step does.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import jinja2

from conformance.invariants import identifying_leaks, names_exchange, pseudonyms_of
from conformance.results import Exchange, Outcome, RunResult, ScenarioResult, StepResult, excerpt
from conformance.scenario import (
    NO_CERTIFICATE,
    Consent,
    Expect,
    Ingest,
    Read,
    Scenario,
    Step,
    TemplateProblemError,
    Trust,
    Wait,
    ingest_bundle,
    render_text,
)
from conformance.scenario import Process as ProcessStep
from conformance.targets import ClientCertificate, NodeTarget, Targets
from connector.tasks import Process, parameter, request_task
from fixtures.consents import POLICY_OID, POLICY_SYSTEM, broad_consent
from fixtures.corpora import CorpusError, corpus_file, load_bundle
from infra.pki import load_certificate, site_of
from servicekit.kvnr import KVNR_SYSTEM

#: The credential (token name in the targets file) the suite uses for its own checks at a node (audit).
SUITE_CREDENTIAL = "suite"
#: The credential of the trust-centre node used for consent, pseudonym and trust-centre audit calls.
TRUSTCENTRE_CREDENTIAL = "trustcentre"
FHIR_JSON = "application/fhir+json"
#: Consent (MII policy suffix) a process needs before anything about a patient may cross (docs/federation.md).
PROCESS_CONSENT = {Process.CARE_SUMMARY.value: "5", Process.DATA_SEND.value: "8"}
#: Read services: the capability each needs at the actor's node.
READ_CAPABILITIES = {"fhir": "read", "audit": "audit", "trustcentre": "trustcentre", "portal": "portal"}
_AUDIT_OUTCOME = {"completed": "0", "failed": "8"}
_PATIENT_REFERENCE = re.compile(r"patients\.([A-Za-z_][A-Za-z0-9_]*)")

StepListener = Callable[[Scenario, Step, StepResult], None]


class CannotRunError(Exception):
    """A step (or a check it needs) could not be carried out: an error, not a failure of the target."""


@dataclass(frozen=True)
class Call:
    """One HTTP request the runner makes, kept so a `wait` step can make it again.

    Public doors take a bearer `token`; a peer door takes a client `certificate` (or none) instead.
    """

    node: NodeTarget
    method: str
    url: str
    token: str | None
    body: Mapping[str, Any] | None = None
    certificate: ClientCertificate | None = None


@dataclass(frozen=True)
class Response:
    """What came back, as expectations and invariants look at it."""

    call: Call
    status: int
    content_type: str
    body: Any

    def where(self) -> str:
        """The request, for messages about one of several responses."""
        return f"{self.call.method} {self.call.url}"


@dataclass
class StepLog:
    """The HTTP exchanges of one step: its action's, and those of the checks the runner made for it.

    The checks' exchanges (audit logs, trust-centre look-ups) are long and beside the point unless a
    check found a problem or broke, so only then are they kept in the report.
    """

    action: list[Exchange] = field(default_factory=list)
    checks: list[Exchange] = field(default_factory=list)
    checking: bool = False
    checks_matter: bool = False

    def add(self, exchange: Exchange) -> None:
        """Note an exchange of the action, or of a check while one runs."""
        (self.checks if self.checking else self.action).append(exchange)

    @contextmanager
    def check(self) -> Iterator[None]:
        """Exchanges made inside belong to the runner's own checks; a check that breaks makes them matter."""
        self.checking = True
        try:
            yield
        except CannotRunError:
            self.checks_matter = True
            raise
        finally:
            self.checking = False

    def kept(self) -> tuple[Exchange, ...]:
        """What the report shows of a step that did not pass."""
        return (*self.action, *(self.checks if self.checks_matter else ()))


class Http:
    """One httpx client per node and client certificate (TLS checked against the node's CA), every exchange logged."""

    def __init__(self, transport: httpx.BaseTransport | None, timeout_s: float) -> None:
        self._transport = transport
        self._timeout = timeout_s
        self._clients: dict[tuple[str, ClientCertificate | None], httpx.Client] = {}

    def send(self, call: Call, log: StepLog) -> Response:
        """Make `call`; a transport failure is `CannotRunError` naming the request."""
        headers = {"Accept": FHIR_JSON}
        if call.token is not None:
            headers["Authorization"] = f"Bearer {call.token}"
        content = None
        if call.body is not None:
            headers["Content-Type"] = FHIR_JSON
            content = json.dumps(call.body, ensure_ascii=False).encode()
        try:
            client = self._client(call.node, call.certificate)
            answer = client.request(call.method, call.url, headers=headers, content=content)
        except httpx.HTTPError as exc:
            log.add(Exchange(call.method, call.url, None, _shown(call.body), f"{type(exc).__name__}"))
            raise CannotRunError(f"{call.method} {call.url}: {type(exc).__name__}: {exc}") from None
        content_type = answer.headers.get("content-type", "").split(";")[0].strip()
        try:
            body = answer.json()
        except ValueError:
            body = None
        log.add(
            Exchange(
                call.method,
                call.url,
                answer.status_code,
                _shown(call.body),
                excerpt(f"content-type: {content_type}\n{answer.text}"),
            )
        )
        return Response(call, answer.status_code, content_type, body)

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, node: NodeTarget, certificate: ClientCertificate | None) -> httpx.Client:
        key = (node.site, certificate)
        if key not in self._clients:
            verify: ssl.SSLContext | bool = True
            if self._transport is None and (node.ca_file is not None or certificate is not None):
                verify = ssl.create_default_context(cafile=str(node.ca_file) if node.ca_file else None)
                if certificate is not None:
                    try:
                        verify.load_cert_chain(certificate.cert, certificate.key)
                    except OSError as exc:
                        raise CannotRunError(f"cannot present {certificate.cert}: {exc}") from None
            self._clients[key] = httpx.Client(transport=self._transport, verify=verify, timeout=self._timeout)
        return self._clients[key]


@dataclass(frozen=True)
class RunOptions:
    """How patient the runner is, and the run id that makes idempotency keys unique per run (random if None)."""

    timeout_s: float = 120.0
    poll_interval_s: float = 1.0
    run_id: str | None = None


class Runner:
    """Runs scenarios against one set of targets; remembers pseudonyms across scenarios of the run."""

    def __init__(
        self,
        targets: Targets,
        *,
        transport: httpx.BaseTransport | None = None,
        on_step: StepListener | None = None,
        options: RunOptions | None = None,
    ) -> None:
        """`transport` replaces the network (tests); `on_step` hears of each step as it ends."""
        self.options = options or RunOptions()
        self.targets = targets
        self.http = Http(transport, self.options.timeout_s)
        self.on_step = on_step
        self.run_id = self.options.run_id or uuid.uuid4().hex[:12]
        #: (domain, original) -> (pseudonym, where it was first seen): one person, one pseudonym per domain.
        self.pseudonyms: dict[tuple[str, str], tuple[str, str]] = {}

    def run(self, scenarios: Sequence[Scenario]) -> RunResult:
        """Every scenario in order; the result names the targets and their software versions."""
        started = _now()
        try:
            results = tuple(self.start(scenario).finish() for scenario in scenarios)
        finally:
            self.http.close()
        return RunResult(self.targets.name, started, results, dict(self.targets.versions))

    def start(self, scenario: Scenario) -> ScenarioRun:
        """A run of `scenario` whose steps are executed in order as they are asked for."""
        return ScenarioRun(self, scenario)


class ScenarioRun:
    """One scenario being run step by step (the pytest plugin asks for one step at a time)."""

    def __init__(self, runner: Runner, scenario: Scenario) -> None:
        self.runner = runner
        self.scenario = scenario
        self.started = _now()
        self.results: dict[int, StepResult] = {}
        #: Step index -> the calls it made, for a following `wait` to make again.
        self._calls: dict[int, list[Call]] = {}
        #: Patient -> the first set-up step (ingest, consent) about them that did not pass.
        self._broken: dict[str, StepResult] = {}
        #: Step index -> AuditEvent ids per site before the step, for invariants that look for new records.
        self._snapshots: dict[int, dict[str, frozenset[str]]] = {}

    def finish(self) -> ScenarioResult:
        """Run the steps not yet run and return the scenario's result."""
        for step in self.scenario.steps:
            self.result(step.index)
        return ScenarioResult(
            self.scenario.name,
            self.scenario.title,
            self.scenario.journey,
            self.started,
            tuple(self.results[step.index] for step in self.scenario.steps),
        )

    def result(self, index: int) -> StepResult:
        """The result of step `index`, running it (and any earlier step not yet run) first."""
        for step in self.scenario.steps:
            if step.index > index:
                break
            if step.index not in self.results:
                self.results[step.index] = result = self._run(step)
                if _sets_up(step) and result.outcome is not Outcome.PASSED:
                    for patient in _patients_named(step):
                        self._broken.setdefault(patient, result)
                if self.runner.on_step is not None:
                    self.runner.on_step(self.scenario, step, result)
        return self.results[index]

    # --- one step ---------------------------------------------------------------------------------

    def _run(self, step: Step) -> StepResult:
        began = time.monotonic()
        log = StepLog()
        try:
            outcome, message = self._blocked(step) or self._judge(step, log)
        except CannotRunError as exc:
            outcome, message = Outcome.ERROR, str(exc)
        kept = log.kept() if outcome in {Outcome.FAILED, Outcome.ERROR} else ()
        return StepResult(
            step.index, step.title, step.kind, outcome, step.requirements(), time.monotonic() - began, message, kept
        )

    def _blocked(self, step: Step) -> tuple[Outcome, str] | None:
        """Not applicable or errored before anything is sent: a missing capability, or a step it depends on."""
        missing = self._missing(step)
        if missing:
            return Outcome.NOT_APPLICABLE, missing
        if isinstance(step.action, Wait) and step.expect != Expect() and step.index > 1:
            polled = self.results[step.index - 1]
            if polled.outcome in {Outcome.NOT_APPLICABLE, Outcome.ERROR}:
                return polled.outcome, f"polls step {polled.index}, which {_said(polled.outcome)}"
        for patient in _patients_named(step):
            if patient in self._broken:
                setup = self._broken[patient]
                outcome = Outcome.NOT_APPLICABLE if setup.outcome is Outcome.NOT_APPLICABLE else Outcome.ERROR
                return outcome, f"depends on step {setup.index} ({setup.title}), which {_said(setup.outcome)}"
        return None

    def _missing(self, step: Step) -> str | None:
        """Why the targets cannot run `step`: a node, capability, credential or certificate it needs is not there."""
        needs = list(self._needs(step))
        for site, capability, credential in needs:
            node = self._node(site) if site else self.runner.targets.trustcentre()
            if node is None:
                return f"site {site!r} is not among the targets" if site else "no target offers a trust centre"
            if capability not in node.capabilities:
                return f"node {node.site} lacks the capability {capability!r}"
            if credential is not None and credential not in node.tokens:
                return f"node {node.site} has no credential {credential!r} in the targets file"
        if isinstance(step.action, Trust) and step.action.certificate != NO_CERTIFICATE and step.actor is not None:
            node = self._required_node(self.scenario.actors[step.actor].site)
            if step.action.certificate not in node.client_certificates:
                return f"node {node.site} has no client certificate {step.action.certificate!r} in the targets file"
        return None

    def _needs(self, step: Step) -> Iterator[tuple[str | None, str, str | None]]:
        """(site, or None for the federation's trust centre; capability; credential, if one) the step needs."""
        subject = self._subject(step)
        if subject.actor is None:
            return
        action, actor = subject.action, self.scenario.actors[subject.actor]
        yield from self._action_needs(step) if step is subject else ()
        target = self._target_site(action)
        if "cross-node-audited" in step.expect.invariants:
            yield actor.site, "audit", SUITE_CREDENTIAL
            if target is not None:
                yield target, "audit", SUITE_CREDENTIAL
        if "consent-enforced" in step.expect.invariants:
            yield None, "trustcentre", TRUSTCENTRE_CREDENTIAL
            if target is not None:
                yield target, "audit", SUITE_CREDENTIAL
        if "one-pseudonym-per-domain" in step.expect.invariants:
            yield None, "trustcentre", TRUSTCENTRE_CREDENTIAL

    def _action_needs(self, step: Step) -> Iterator[tuple[str | None, str, str | None]]:
        action = step.action
        assert step.actor is not None  # noqa: S101 -- only wait steps have no actor
        actor = self.scenario.actors[step.actor]
        for capability in step.applies_to:
            yield actor.site, capability, actor.credential
        if isinstance(action, Ingest):
            yield actor.site, "ingest", actor.credential
        elif isinstance(action, Consent):
            yield None, "trustcentre", TRUSTCENTRE_CREDENTIAL
        elif isinstance(action, ProcessStep):
            yield actor.site, "processes", actor.credential
        elif isinstance(action, Read):
            credential = TRUSTCENTRE_CREDENTIAL if action.service == "trustcentre" else actor.credential
            yield actor.site, READ_CAPABILITIES[action.service], credential
        elif isinstance(action, Trust):  # a certificate instead of a credential; the audit shows the refusal
            yield actor.site, "mtls", None
            yield actor.site, "audit", SUITE_CREDENTIAL

    def _judge(self, step: Step, log: StepLog) -> tuple[Outcome, str]:
        """Act, then hold the responses against the expectations and the invariants."""
        if isinstance(step.action, Wait):
            responses = self._wait(step, log)
        else:
            with log.check():
                self._snapshots[step.index] = self._audit_snapshot(step, log)
            responses = self._act(step, log)
        problems = [problem for response in responses for problem in _unmet(step.expect, response, len(responses))]
        subject = self._subject(step)
        before = self._snapshots.get(subject.index, {})
        try:
            with log.check():
                violations = self._invariants(subject, step.expect.invariants, responses, before, log)
                if isinstance(subject.action, Trust):
                    violations += self._door_problems(subject, responses, before, log)
            log.checks_matter = bool(violations)
            problems += violations
        except CannotRunError as exc:
            if not problems:
                raise
            problems.append(f"invariants not checked: {exc}")  # the step failed already; say why it is incomplete
        if problems:
            return Outcome.FAILED, "; ".join(problems)
        return Outcome.PASSED, ""

    def _subject(self, step: Step) -> Step:
        """The step whose action a step's invariants are about: a wait's is the step it polls."""
        if isinstance(step.action, Wait) and step.index > 1:
            return self.scenario.steps[step.index - 2]
        return step

    def _act(self, step: Step, log: StepLog) -> list[Response]:
        calls = self._calls_of(step)
        responses = [self.runner.http.send(call, log) for call in calls]
        self._calls[step.index] = calls
        if isinstance(step.action, ProcessStep) and responses and isinstance(responses[0].body, dict):
            task_id = responses[0].body.get("id")
            if isinstance(task_id, str):
                node = calls[0].node
                self._calls[step.index] = [Call(node, "GET", f"{node.fhir_url}/Task/{task_id}", calls[0].token)]
        return responses

    def _wait(self, step: Step, log: StepLog) -> list[Response]:
        """Pause; with expectations, make the previous step's reads again until they hold or time is up."""
        assert isinstance(step.action, Wait)  # noqa: S101 -- only called for wait steps
        deadline = time.monotonic() + step.action.seconds
        if step.expect == Expect():
            time.sleep(step.action.seconds)
            return []
        calls = self._calls.get(step.index - 1, [])
        if not calls or any(call.method != "GET" and "$isConsented" not in call.url for call in calls):
            raise CannotRunError("a wait with expectations polls the step before it: a read, process or consent check")
        while True:
            responses = [self.runner.http.send(call, log) for call in calls]
            met = not any(_unmet(step.expect, response, len(responses)) for response in responses)
            remaining = deadline - time.monotonic()
            if met or remaining <= 0:
                return responses
            time.sleep(min(self.runner.options.poll_interval_s, remaining))

    # --- the requests of each kind of step ---------------------------------------------------------

    def _calls_of(self, step: Step) -> list[Call]:
        action = step.action
        assert step.actor is not None  # noqa: S101 -- only wait steps have no actor
        actor = self.scenario.actors[step.actor]
        if isinstance(action, Consent):
            return self._consent_calls(action)
        node = self._required_node(actor.site)
        token = None if isinstance(action, Trust) else node.token(actor.credential)
        if isinstance(action, Ingest):
            try:
                bundle = ingest_bundle(self.scenario, step)
            except (TemplateProblemError, CorpusError, ValueError) as exc:
                raise CannotRunError(f"cannot build the bundle: {exc}") from None
            return [Call(node, "POST", node.fhir_url, token, bundle)]
        if isinstance(action, ProcessStep):
            return [Call(node, "POST", f"{node.fhir_url}/Task", token, self._task(action))]
        if isinstance(action, Trust):
            return [self._peer_call(step, action, node)]
        assert isinstance(action, Read)  # noqa: S101 -- the remaining kinds
        try:
            query = render_text(action.query, self.scenario.template_context(step)).lstrip("/")
        except jinja2.TemplateError as exc:
            raise CannotRunError(f"query: {exc}") from None
        if action.service == "trustcentre":
            return [Call(node, "GET", f"{node.trustcentre_url}/{query}", node.token(TRUSTCENTRE_CREDENTIAL))]
        base = f"{node.public_url}/portal/fhir" if action.service == "portal" else node.fhir_url
        return [Call(node, "GET", f"{base}/{query}", token)]

    def _consent_calls(self, action: Consent) -> list[Call]:
        """The trust centre's gICS operations: `$addConsent`, `$withdrawConsent`, one `$isConsented` per policy."""
        node, token = self._trustcentre()
        person = self._identifier(action.patient)
        base = f"{node.trustcentre_url}/gics"
        domain = {"name": "domain", "valueString": action.domain}
        if action.action == "grant":
            consent = broad_consent(person, _now(), *action.policies)
            body = _parameters(domain, {"name": "resource", "resource": consent})
            return [Call(node, "POST", f"{base}/$addConsent", token, body)]
        if action.action == "withdraw":
            policies = [_policy(code) for code in action.policies]
            body = _parameters({"name": "personIdentifier", "valueIdentifier": person}, domain, *policies)
            return [Call(node, "POST", f"{base}/$withdrawConsent", token, body)]
        return [
            Call(node, "POST", f"{base}/$isConsented", token, _is_consented(person, code, action.domain))
            for code in action.policies
        ]

    def _task(self, action: ProcessStep) -> dict[str, Any]:
        """The Task the public API starts a process with (docs/federation.md, "Public API")."""
        inputs = []
        if action.target is not None:
            inputs.append(parameter("target", "valueString", self.scenario.actors[action.target].site))
        inputs += [parameter("patient", "valueIdentifier", self._identifier(p)) for p in action.patients]
        if action.project is not None:
            inputs.append(parameter("project", "valueString", action.project))
        inputs += [_criterion(name, value) for name, value in action.criteria.items()]
        if action.payload_bytes is not None:
            inputs.append(parameter("payload-bytes", "valueInteger", action.payload_bytes))
        key = f"{self.runner.run_id}-{action.idempotency_key}" if action.idempotency_key else None
        return request_task(Process(action.process), inputs, idempotency_key=key)

    def _peer_call(self, step: Step, action: Trust, node: NodeTarget) -> Call:
        """The peer Task of docs/federation.md's "Peer API", with the certificate it is presented with."""
        if node.peer_url is None:
            raise CannotRunError(f"node {node.site} has no `peer_url` in the targets file")
        certificate = None if action.certificate == NO_CERTIFICATE else node.client_certificates[action.certificate]
        key = f"{self.runner.run_id}-{self.scenario.name}-{step.index}"
        task = request_task(Process(action.process), [], requester=self._requester(action, node), idempotency_key=key)
        return Call(node, "POST", f"{node.peer_url}/fhir/Task", None, task, certificate)

    def _requester(self, action: Trust, node: NodeTarget) -> str | None:
        """The site a trust step's Task names: the `requester` actor's, else the certificate's (none without one)."""
        if action.requester is not None:
            return self.scenario.actors[action.requester].site
        if action.certificate == NO_CERTIFICATE:
            return None
        path = node.client_certificates[action.certificate].cert
        try:
            return site_of(load_certificate(path.read_bytes())) or None
        except (OSError, ValueError) as exc:
            raise CannotRunError(f"cannot read the {action.certificate} certificate {path}: {exc}") from None

    # --- invariants --------------------------------------------------------------------------------

    def _invariants(
        self,
        step: Step,
        names: Sequence[str],
        responses: Sequence[Response],
        before: Mapping[str, frozenset[str]],
        log: StepLog,
    ) -> list[str]:
        """Violations of the named invariants, each prefixed with the invariant's name."""
        problems: list[str] = []
        for name in names:
            if name == "no-identifying-data":
                persons = list(self.scenario.persons().values())
                found = [leak for response in responses for leak in identifying_leaks(response.body, persons)]
            elif name == "one-pseudonym-per-domain":
                found = [p for response in responses for p in self._pseudonym_problems(step, response.body, log)]
            else:
                task = _task_of(step, responses)
                if name == "cross-node-audited":
                    found = self._audit_problems(step, task, before, log)
                else:
                    found = self._consent_problems(step, task, before, log)
            problems += [f"{name}: {problem}" for problem in found]
        return problems

    def _audit_problems(
        self, step: Step, task: Mapping[str, Any], before: Mapping[str, frozenset[str]], log: StepLog
    ) -> list[str]:
        """Both ends of the exchange hold a new AuditEvent naming the process, the peer and the outcome."""
        assert isinstance(step.action, ProcessStep) and step.actor is not None  # noqa: PT018, S101 -- see _task_of
        process, sender = step.action.process, self.scenario.actors[step.actor].site
        status = str(task.get("status"))
        if status not in _AUDIT_OUTCOME:
            return [f"the Task is {status!r}, so the exchange did not finish"]
        peers = self._peers(step.action, task)
        problems = []
        sent = self._new_events(sender, before, log)
        if not any(names_exchange(event, process, peers, _AUDIT_OUTCOME[status]) for event in sent):
            problems.append(f"{sender} holds no new AuditEvent of {process} with {', '.join(peers) or 'a peer'}")
        if status == "completed":
            for peer in peers:
                if peer not in self.runner.targets.nodes:
                    raise CannotRunError(f"cannot read the audit of {peer}: not among the targets")
                received = self._new_events(peer, before, log)
                if not any(names_exchange(event, process, [sender], "0") for event in received):
                    problems.append(f"{peer} holds no new AuditEvent of {process} from {sender}")
        return problems

    def _consent_problems(
        self, step: Step, task: Mapping[str, Any], before: Mapping[str, frozenset[str]], log: StepLog
    ) -> list[str]:
        """A patient without the process's consent: the Task failed and the target recorded no exchange."""
        assert isinstance(step.action, ProcessStep) and step.actor is not None  # noqa: PT018, S101 -- see _task_of
        action = step.action
        policy = PROCESS_CONSENT.get(action.process)
        if policy is None or action.target is None:
            return []
        without = [patient for patient in action.patients if not self._consented(patient, policy, log)]
        if not without:
            return []
        problems = []
        names = ", ".join(without)
        if task.get("status") != "failed":
            problems.append(f"the Task is {task.get('status')!r} although {names} gave no consent .{policy}")
        sender, target = self.scenario.actors[step.actor].site, self.scenario.actors[action.target].site
        received = self._new_events(target, before, log)
        if any(names_exchange(event, action.process, [sender], "0") for event in received):
            problems.append(f"{target} received a {action.process} from {sender} although {names} gave no consent")
        return problems

    def _door_problems(
        self, step: Step, responses: Sequence[Response], before: Mapping[str, frozenset[str]], log: StepLog
    ) -> list[str]:
        """A refusal is an OperationOutcome the node audited as refused; an acceptance a Task audited as answered."""
        assert isinstance(step.action, Trust) and step.actor is not None  # noqa: PT018, S101 -- trust steps only
        node = self._required_node(self.scenario.actors[step.actor].site)
        [response] = responses
        body = response.body
        events = self._new_events(node.site, before, log)
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
        if status not in _AUDIT_OUTCOME:
            return [f"the answered Task is {status!r}, neither completed nor failed"]
        requester = self._requester(step.action, node) or "nobody"  # no certificate: no record can name the caller
        if not any(names_exchange(e, step.action.process, [requester], _AUDIT_OUTCOME[status]) for e in events):
            return [f"{node.site} holds no new AuditEvent of {step.action.process} answered for {requester}"]
        return []

    def _pseudonym_problems(self, step: Step, body: object, log: StepLog) -> list[str]:
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
        for domain, pseudonyms in by_domain.items():
            problems += self._resolved_problems(f"{self.scenario.name} step {step.index}", domain, pseudonyms, log)
        return problems

    def _resolved_problems(self, here: str, domain: str, pseudonyms: Sequence[str], log: StepLog) -> list[str]:
        """Resolved at the trust centre: known, one per person, and the one this run saw before."""
        problems = []
        originals = self._originals(domain, pseudonyms, log)
        seen: dict[str, str] = {}
        for pseudonym in pseudonyms:
            original = originals.get(pseudonym)
            if original is None:
                problems.append(f"{pseudonym} is not a pseudonym the trust centre knows in {domain}")
                continue
            if seen.setdefault(original, pseudonym) != pseudonym:
                problems.append(f"one person has two pseudonyms in {domain}: {seen[original]} and {pseudonym}")
                continue
            earlier, where = self.runner.pseudonyms.setdefault((domain, original), (pseudonym, here))
            if earlier != pseudonym:
                problems.append(f"{domain}: a person's pseudonym was {earlier} at {where}, now {pseudonym}")
        return problems

    # --- helpers that ask the targets ---------------------------------------------------------------

    def _audit_snapshot(self, step: Step, log: StepLog) -> dict[str, frozenset[str]]:
        """Ids of the AuditEvents auditable nodes already hold, before a step whose checks read audit.

        A trust step reads only its own node's; invariants about an exchange read every node's.
        """
        following = self.scenario.steps[step.index] if step.index < len(self.scenario.steps) else None
        wait_after = following is not None and isinstance(following.action, Wait)
        named = {*step.expect.invariants, *(following.expect.invariants if following and wait_after else ())}
        if isinstance(step.action, Trust) and step.actor is not None:
            sites = {self.scenario.actors[step.actor].site}
        elif {"cross-node-audited", "consent-enforced"} & named:
            sites = set(self.runner.targets.nodes)
        else:
            return {}
        return {
            site: frozenset(str(event.get("id")) for event in self._audit_events(site, log))
            for site, node in self.runner.targets.nodes.items()
            if site in sites and "audit" in node.capabilities and SUITE_CREDENTIAL in node.tokens
        }

    def _new_events(self, site: str, before: Mapping[str, frozenset[str]], log: StepLog) -> list[dict[str, Any]]:
        if site not in before:
            raise CannotRunError(f"no audit snapshot of {site} was taken before the step")
        return [event for event in self._audit_events(site, log) if str(event.get("id")) not in before[site]]

    def _audit_events(self, site: str, log: StepLog) -> list[dict[str, Any]]:
        """Today's AuditEvents of `site`'s connector (the newest first 500 the API gives)."""
        node = self._required_node(site)
        url = f"{node.fhir_url}/AuditEvent?date=ge{_today().isoformat()}"
        response = self.runner.http.send(Call(node, "GET", url, node.token(SUITE_CREDENTIAL)), log)
        if response.status != 200 or not isinstance(response.body, dict):
            raise CannotRunError(f"the audit of {site} answered {response.status}")
        return [
            entry["resource"]
            for entry in response.body.get("entry", [])
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
        ]

    def _consented(self, patient: str, policy: str, log: StepLog) -> bool:
        node, token = self._trustcentre()
        body = _is_consented(self._identifier(patient), policy, "MII")
        response = self.runner.http.send(
            Call(node, "POST", f"{node.trustcentre_url}/gics/$isConsented", token, body), log
        )
        answers = [p.get("valueBoolean") for p in _parts(response.body) if p.get("name") == "consented"]
        if response.status != 200 or len(answers) != 1 or not isinstance(answers[0], bool):
            raise CannotRunError(f"the trust centre's $isConsented answered {response.status} without `consented`")
        return answers[0]

    def _originals(self, domain: str, pseudonyms: Sequence[str], log: StepLog) -> dict[str, str]:
        """Pseudonym -> original, as the trust centre's gPAS `$dePseudonymize` resolves them."""
        node, token = self._trustcentre()
        body = _parameters(
            {"name": "target", "valueString": domain}, *({"name": "pseudonym", "valueString": p} for p in pseudonyms)
        )
        call = Call(node, "POST", f"{node.trustcentre_url}/gpas/$dePseudonymize", token, body)
        response = self.runner.http.send(call, log)
        if response.status != 200:
            raise CannotRunError(f"the trust centre's $dePseudonymize in {domain} answered {response.status}")
        found = {}
        for part in _parts(response.body):
            values = {sub.get("name"): sub.get("valueIdentifier", {}).get("value") for sub in part.get("part", [])}
            if part.get("name") == "original" and values.get("pseudonym") and values.get("original"):
                found[str(values["pseudonym"])] = str(values["original"])
        return found

    def _trustcentre(self) -> tuple[NodeTarget, str]:
        node = self.runner.targets.trustcentre()
        if node is None or node.trustcentre_url is None:
            raise CannotRunError("no target offers a trust centre")
        return node, node.token(TRUSTCENTRE_CREDENTIAL)

    def _peers(self, action: ProcessStep, task: Mapping[str, Any]) -> list[str]:
        """The sites the process exchanged with: its target, or those a feasibility count names."""
        if action.target is not None:
            return [self.scenario.actors[action.target].site]
        counts = [o.get("valueString") for o in task.get("output", []) if _output_code(o) == "node-count"]
        return [count.split(":", 1)[0] for count in counts if isinstance(count, str)]

    def _target_site(self, action: object) -> str | None:
        if isinstance(action, ProcessStep) and action.target is not None:
            return self.scenario.actors[action.target].site
        return None

    def _node(self, site: str) -> NodeTarget | None:
        return self.runner.targets.nodes.get(site)

    def _required_node(self, site: str) -> NodeTarget:
        node = self._node(site)
        if node is None:
            raise CannotRunError(f"site {site!r} is not among the targets")
        return node

    def _identifier(self, patient: str) -> dict[str, str]:
        """How processes and the trust centre name a patient: the KVNR, which is the same at every site.

        A corpus patient is named by the first identifier of the corpus file's Patient.
        """
        person = self.scenario.persons().get(patient)
        return {"system": KVNR_SYSTEM, "value": person.kvnr} if person else self._corpus_identifier(patient)

    def _corpus_identifier(self, patient: str) -> dict[str, str]:
        source = self.scenario.patients[patient]
        if source.corpus is None:
            raise CannotRunError(f"patient {patient} has neither a synthetic profile nor a corpus file")
        for entry in load_bundle(corpus_file(source.corpus)).bundle.get("entry", []):
            resource = entry.get("resource", {})
            for identifier in resource.get("identifier", []) if resource.get("resourceType") == "Patient" else []:
                if isinstance(identifier.get("system"), str) and isinstance(identifier.get("value"), str):
                    return {"system": identifier["system"], "value": identifier["value"]}
        raise CannotRunError(f"the corpus file of patient {patient} holds no Patient with an identifier")


# --- pure helpers ----------------------------------------------------------------------------------


def _unmet(expect: Expect, response: Response, of: int) -> list[str]:
    """What of `expect` the response does not show; prefixed with the request when a step made several."""
    problems = []
    if expect.status and response.status not in expect.status:
        problems.append(f"status {response.status}, expected {' or '.join(map(str, expect.status))}")
    if expect.content_type and response.content_type != expect.content_type:
        problems.append(f"content type {response.content_type or 'none'!r}, expected {expect.content_type!r}")
    body = response.body
    if expect.resource_type and not (isinstance(body, dict) and body.get("resourceType") == expect.resource_type):
        problems.append(f"resource type {_resource_type(body)}, expected {expect.resource_type}")
    if expect.count is not None:
        low, high = expect.count
        found = _count(body)
        if found is None:
            problems.append(f"expected a Bundle to count, got {_resource_type(body)}")
        elif found < low or (high is not None and found > high):
            wanted = str(low) if high == low else f"at least {low}" + (f" and at most {high}" if high else "")
            problems.append(f"count {found}, expected {wanted}")
    problems += [failure for check in expect.checks if (failure := check.failure(body)) is not None]
    if problems and isinstance(body, dict) and body.get("resourceType") == "Task" and body.get("status") == "failed":
        problems.append(f"the Task failed: {body.get('statusReason', {}).get('text', 'no reason given')}")
    if problems and isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        problems.append(f"the node said: {' | '.join(_diagnostics(body))}")
    return [f"{response.where()}: {problem}" for problem in problems] if of > 1 else problems


def _count(body: object) -> int | None:
    """Bundle.total if the server gave it, else the number of entries; None if `body` is no Bundle."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return None
    total = body.get("total")
    return total if isinstance(total, int) else len(body.get("entry", []))


def _resource_type(body: object) -> str:
    if isinstance(body, dict):
        return str(body.get("resourceType", "without resourceType"))
    return "no JSON" if body is None else type(body).__name__


def _diagnostics(outcome: Mapping[str, Any]) -> list[str]:
    return [str(issue.get("diagnostics", issue.get("code", "?"))) for issue in outcome.get("issue", [])]


def _task_of(step: Step, responses: Sequence[Response]) -> Mapping[str, Any]:
    """The Task a process step's last response holds; the audit and consent invariants apply to nothing else."""
    if not isinstance(step.action, ProcessStep) or step.actor is None:
        raise CannotRunError(f"{step.kind} steps cannot check exchange invariants; only process steps can")
    body = responses[-1].body if responses else None
    if not isinstance(body, dict) or body.get("resourceType") != "Task":
        raise CannotRunError(f"no Task came back to check the exchange on (got {_resource_type(body)})")
    return body


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


def _parameters(*parts: Mapping[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [dict(part) for part in parts]}


def _policy(code: str) -> dict[str, Any]:
    return {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": f"{POLICY_OID}.{code}"}}


def _is_consented(person: Mapping[str, str], code: str, domain: str) -> dict[str, Any]:
    """`$isConsented` as the connector asks it: an unknown state counts as a decline."""
    config = {"name": "config", "part": [{"name": "unknownStateIsConsideredAsDecline", "valueBoolean": True}]}
    identifier = {"name": "personIdentifier", "valueIdentifier": dict(person)}
    return _parameters(identifier, {"name": "domain", "valueString": domain}, _policy(code), config)


def _criterion(name: str, value: object) -> dict[str, Any]:
    """One feasibility criterion as the Task input docs/federation.md names."""
    if name == "condition-code":
        return parameter(name, "valueCoding", {"system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "code": value})
    if name == "gender":
        return parameter(name, "valueCode", value)
    return parameter(name, "valueInteger", value)


def _sets_up(step: Step) -> bool:
    """An ingest or consent meant to succeed: later steps about its patient need it."""
    expects_success = not step.expect.status or any(200 <= code < 300 for code in step.expect.status)
    return isinstance(step.action, Ingest | Consent) and expects_success


def _patients_named(step: Step) -> list[str]:
    action = step.action
    if isinstance(action, Ingest | Consent):
        return [action.patient] if action.patient else []
    if isinstance(action, ProcessStep):
        return list(action.patients)
    if isinstance(action, Read):
        return list(dict.fromkeys(_PATIENT_REFERENCE.findall(action.query)))
    return []


def _said(outcome: Outcome) -> str:
    return {
        Outcome.NOT_APPLICABLE: "is not applicable here",
        Outcome.ERROR: "could not run",
        Outcome.FAILED: "failed",
        Outcome.PASSED: "passed",
    }[outcome]


def _shown(body: Mapping[str, Any] | None) -> str:
    return "" if body is None else excerpt(json.dumps(body, ensure_ascii=False, indent=1))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _today() -> date:
    return datetime.now(UTC).date()
