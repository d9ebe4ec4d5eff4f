"""Replays scenarios against targets: each step's requests, its expectations, the invariants it names.

A step runs only where the targets can run it: a node lacking a capability or credential the step needs
makes it not applicable (never passed). A step that fails leaves the run going; a later step about a
patient whose set-up (ingest or consent) did not pass is reported as depending on it rather than
failing for a reason that is not its own. What each kind of step sends is in `conformance.actions`; the
invariants that ask the federation (audit records at both ends, consent at the trust centre, pseudonyms
resolved and remembered across the run) are in `conformance.checks`. `docs/scenarios.md` says what each
step does.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jinja2

from conformance.actions import Scene, calls, needs
from conformance.checks import (
    Evidence,
    Inspector,
    Snapshot,
    audit_check_problems,
    door_problems,
    invariant_needs,
    invariant_problems,
    snapshot_sites,
    subject_of,
)
from conformance.http import Call, CannotRunError, Http, Response, StepLog
from conformance.kept import keep_from
from conformance.results import Outcome, RunResult, ScenarioResult, StepResult
from conformance.scenario import (
    AuditCheck,
    Consent,
    Control,
    Expect,
    Ingest,
    Read,
    Retry,
    Scenario,
    StartProcess,
    Step,
    Trust,
    Wait,
)
from conformance.targets import Targets

StepListener = Callable[[Scenario, Step, StepResult], None]
#: How long a target's control command (stop or start a peer door) may take.
CONTROL_TIMEOUT_S = 120.0
_PATIENT_REFERENCE = re.compile(r"patients\.([A-Za-z_][A-Za-z0-9_]*)")


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
        self.inspector = Inspector(self.http)
        self.on_step = on_step
        self.run_id = self.options.run_id or uuid.uuid4().hex[:12]

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
        self.started = _now()
        began = datetime.fromisoformat(self.started).strftime("%Y-%m-%dT%H:%M:%SZ")
        #: Values steps kept (`keep:`), for later steps' templates and expectations.
        self._kept: dict[str, object] = {}
        self.scenario = scenario.for_run(runner.run_id, began, self._kept)
        self.results: dict[int, StepResult] = {}
        #: Step index -> the calls it made, for a following `wait` to make again.
        self._calls: dict[int, list[Call]] = {}
        #: Patient -> the first set-up step (ingest, consent) about them that did not pass.
        self._broken: dict[str, StepResult] = {}
        #: Step index -> AuditEvent ids per site before the step, for checks that look for new records.
        self._snapshots: dict[int, Snapshot] = {}
        #: Step id -> the snapshot taken before it, for `audit` steps that look back to it.
        self._named_snapshots: dict[str, Snapshot] = {}
        self._tasks: dict[str, Mapping[str, Any]] = {}
        self._keyed_tasks: dict[str, Mapping[str, Any]] = {}
        self.scene = Scene(self.scenario, runner.targets, runner.run_id, self._tasks, self._keyed_tasks)

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
            polled = self.results[self._polled(step)]
            if polled.outcome in {Outcome.NOT_APPLICABLE, Outcome.ERROR}:
                return polled.outcome, f"polls step {polled.index}, which {_said(polled.outcome)}"
        if isinstance(step.action, AuditCheck | Retry):
            earlier = self.scenario.step_by_id(
                step.action.since if isinstance(step.action, AuditCheck) else step.action.of
            )
            if self.results[earlier.index].outcome in {Outcome.NOT_APPLICABLE, Outcome.ERROR}:
                outcome = self.results[earlier.index].outcome
                return outcome, f"refers to step {earlier.index}, which {_said(outcome)}"
        keepers = self.scenario.keepers()
        for name in step.uses_kept:
            keeper = self.results[keepers[name]]
            if keeper.outcome is not Outcome.PASSED:
                outcome = Outcome.NOT_APPLICABLE if keeper.outcome is Outcome.NOT_APPLICABLE else Outcome.ERROR
                return outcome, _kept_from(name, keeper)
        for patient in _patients_named(step):
            if patient in self._broken:
                setup = self._broken[patient]
                outcome = Outcome.NOT_APPLICABLE if setup.outcome is Outcome.NOT_APPLICABLE else Outcome.ERROR
                return outcome, f"depends on step {setup.index} ({setup.title}), which {_said(setup.outcome)}"
        return None

    def _missing(self, step: Step) -> str | None:
        """Why the targets cannot run `step`: a node, capability, credential or certificate it needs is not there."""
        subject = subject_of(self.scene, step)
        wanted = [*(needs(self.scenario, step) if step is subject else ()), *invariant_needs(self.scene, step)]
        for need in wanted:
            node = self.runner.targets.nodes.get(need.site) if need.site else self.runner.targets.trustcentre()
            if node is None:
                return (
                    f"site {need.site!r} is not among the targets" if need.site else "no target offers a trust centre"
                )
            if need.capability not in node.capabilities:
                return f"node {node.site} lacks the capability {need.capability!r}"
            if need.credential is not None and not node.has_credential(need.credential):
                return f"node {node.site} has no credential {need.credential!r} in the targets file"
            if need.certificate is not None and need.certificate not in node.client_certificates:
                return f"node {node.site} has no client certificate {need.certificate!r} in the targets file"
        return None

    def _judge(self, step: Step, log: StepLog) -> tuple[Outcome, str]:
        """Act, then hold the responses against the expectations and the invariants."""
        inspector = self.runner.inspector
        expect = self._expectations(step)
        if not isinstance(step.action, Wait):
            with log.check():
                before = inspector.snapshot(self.scene, snapshot_sites(self.scene, step), log)
            self._snapshots[step.index] = before
            if step.id is not None:
                self._named_snapshots[step.id] = before
        match step.action:
            case Wait():
                responses = self._wait(step, log)
            case Control(action=action):
                self._control(step, action)
                responses = []
            case AuditCheck() as check:
                with log.check():
                    problems = audit_check_problems(
                        inspector, self.scene, check, self._named_snapshots[check.since], log
                    )
                log.checks_matter = bool(problems)
                return (Outcome.FAILED, "; ".join(problems)) if problems else (Outcome.PASSED, "")
            case _:
                responses = self._act(step, log)
        problems = [problem for response in responses for problem in _unmet(expect, response, len(responses))]
        subject = subject_of(self.scene, step)
        evidence = Evidence(self.scene, subject, responses, self._snapshots.get(subject.index, {}), log)
        try:
            with log.check():
                violations = invariant_problems(inspector, step.expect.invariants, evidence)
                if isinstance(subject.action, Trust):
                    violations += door_problems(inspector, evidence)
            log.checks_matter = bool(violations)
            problems += violations
        except CannotRunError as exc:
            if not problems:
                raise
            problems.append(f"invariants not checked: {exc}")  # the step failed already; say why it is incomplete
        self._remember_task(step, responses)
        problems = problems or self._keep(step, responses)  # what a step keeps must come from an answer that passed
        if problems:
            return Outcome.FAILED, "; ".join(problems)
        return Outcome.PASSED, ""

    def _expectations(self, step: Step) -> Expect:
        """The step's expectations, rendered before anything is sent (an expected value may use a kept one)."""
        try:
            return self.scenario.expectations(step)
        except jinja2.TemplateError as exc:
            raise CannotRunError(f"expected values: {exc}") from None

    def _keep(self, step: Step, responses: Sequence[Response]) -> list[str]:
        """Keep what the step's `keep` asks of its (last) answer; a path that reaches nothing fails the step."""
        found, problems = keep_from(responses[-1].body if responses else None, step.keep)
        self._kept.update(found)
        return problems

    def _act(self, step: Step, log: StepLog) -> list[Response]:
        made = calls(self.scene, step)
        responses = [self.runner.http.send(call, log) for call in made]
        self._calls[step.index] = made
        if isinstance(step.action, StartProcess | Retry) and responses and isinstance(responses[0].body, dict):
            task_id = responses[0].body.get("id")
            if isinstance(task_id, str):
                node = made[0].node
                self._calls[step.index] = [Call(node, "GET", f"{node.fhir_url}/Task/{task_id}", made[0].token)]
        return responses

    def _remember_task(self, step: Step, responses: Sequence[Response]) -> None:
        """Note the Task a process step started, for `retry` and idempotent replays of it."""
        body = responses[0].body if responses else None
        if (
            not isinstance(step.action, StartProcess)
            or not isinstance(body, dict)
            or body.get("resourceType") != "Task"
        ):
            return
        if step.id is not None:
            self._tasks[step.id] = body
        if step.action.idempotency_key is not None:
            self._keyed_tasks.setdefault(step.action.idempotency_key, body)

    def _wait(self, step: Step, log: StepLog) -> list[Response]:
        """Pause; with expectations, make the previous step's reads again until they hold or time is up."""
        assert isinstance(step.action, Wait)  # noqa: S101 -- only called for wait steps
        deadline = time.monotonic() + step.action.seconds
        if step.expect == Expect():
            time.sleep(step.action.seconds)
            return []
        made = self._calls.get(self._polled(step), [])
        if not made or any(call.method != "GET" and "$isConsented" not in call.url for call in made):
            raise CannotRunError("a wait with expectations polls a read, process or consent check step")
        expect = self.scenario.expectations(step)
        while True:
            responses = [self.runner.http.send(call, log) for call in made]
            met = not any(_unmet(expect, response, len(responses)) for response in responses)
            remaining = deadline - time.monotonic()
            if met or remaining <= 0:
                return responses
            time.sleep(min(self.runner.options.poll_interval_s, remaining))

    def _polled(self, step: Step) -> int:
        """The index of the step a `wait` polls: the one it names with `of`, else the one before it."""
        assert isinstance(step.action, Wait)  # noqa: S101 -- only called for wait steps
        return self.scenario.step_by_id(step.action.of).index if step.action.of else step.index - 1

    def _control(self, step: Step, action: str) -> None:
        """Run the targets file's command that stops or starts the actor node's peer door."""
        assert step.actor is not None  # noqa: S101 -- control steps have an actor
        node = self.scene.node(self.scenario.actors[step.actor].site)
        command = node.controls.get(action)
        if not command:
            raise CannotRunError(f"node {node.site} has no `{action}` command under `controls` in the targets file")
        try:
            done = subprocess.run(  # the certifier's own command from the targets file, no shell
                list(command), capture_output=True, text=True, timeout=CONTROL_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CannotRunError(f"{action} {node.site}: {' '.join(command)}: {exc}") from None
        if done.returncode != 0:
            raise CannotRunError(
                f"{action} {node.site}: {' '.join(command)} exited {done.returncode}: {done.stderr[-500:]}"
            )


# --- pure helpers ----------------------------------------------------------------------------------


def _unmet(expect: Expect, response: Response, of: int) -> list[str]:
    """What of `expect` the response does not show; prefixed with the request when a step made several."""
    problems = []
    if expect.status and response.status not in expect.status:
        problems.append(f"status {response.status}, expected {' or '.join(map(str, expect.status))}")
    if expect.content_type and response.content_type != expect.content_type:
        problems.append(f"content type {response.content_type or 'none'!r}, expected {expect.content_type!r}")
    problems += _unmet_headers(expect, response)
    body = response.body
    if expect.resource_type and not (isinstance(body, dict) and body.get("resourceType") == expect.resource_type):
        problems.append(f"resource type {_resource_type(body)}, expected {expect.resource_type}")
    if expect.count is not None:
        problems += _unmet_count(expect.count, body)
    problems += [failure for check in expect.checks if (failure := check.failure(body)) is not None]
    if problems and isinstance(body, dict) and body.get("resourceType") == "Task" and body.get("status") == "failed":
        problems.append(f"the Task failed: {body.get('statusReason', {}).get('text', 'no reason given')}")
    if problems and isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        problems.append(f"the node said: {' | '.join(_diagnostics(body))}")
    return [f"{response.where()}: {problem}" for problem in problems] if of > 1 else problems


def _unmet_headers(expect: Expect, response: Response) -> list[str]:
    problems = []
    for name, wanted in expect.headers.items():
        found = response.headers.get(name)
        if found is None or wanted not in found:
            problems.append(f"header {name}: {found!r}, expected it to contain {wanted!r}")
    return problems


def _unmet_count(count: tuple[int, int | None], body: object) -> list[str]:
    low, high = count
    found = _count(body)
    if found is None:
        return [f"expected a Bundle to count, got {_resource_type(body)}"]
    if found < low or (high is not None and found > high):
        wanted = str(low) if high == low else f"at least {low}" + (f" and at most {high}" if high else "")
        return [f"count {found}, expected {wanted}"]
    return []


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


def _sets_up(step: Step) -> bool:
    """An ingest or consent meant to succeed: later steps about its patient need it."""
    expects_success = not step.expect.status or any(200 <= code < 300 for code in step.expect.status)
    return isinstance(step.action, Ingest | Consent) and expects_success


def _patients_named(step: Step) -> list[str]:
    action = step.action
    if isinstance(action, Ingest | Consent):
        return [action.patient] if action.patient else []
    if isinstance(action, StartProcess):
        return list(action.patients)
    if isinstance(action, Read):
        return list(dict.fromkeys(_PATIENT_REFERENCE.findall(action.query)))
    return []


def _kept_from(name: str, keeper: StepResult) -> str:
    return f"uses kept.{name} of step {keeper.index} ({keeper.title}), which {_said(keeper.outcome)}"


def _said(outcome: Outcome) -> str:
    return {
        Outcome.NOT_APPLICABLE: "is not applicable here",
        Outcome.ERROR: "could not run",
        Outcome.FAILED: "failed",
        Outcome.PASSED: "passed",
    }[outcome]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
