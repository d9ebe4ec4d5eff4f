"""The scenario language: patient journeys as YAML steps with expectations, parsed into frozen dataclasses.

A scenario (`scenarios/<name>.yaml`) names its actors (a node site and the credential used there), its
patients (synthetic profiles or corpus files) and its steps (`ingest`, `consent`, `process`, `read`,
`trust`, `wait`), each with what must come back. Everything that can be checked without a federation
is checked when the file is loaded: references between actors, patients and templates, requirement ids,
paths, templates that render valid JSON, values a step uses that no earlier step keeps (`keep:`). A
malformed file fails with every problem, each with file and line. `docs/scenarios.md` is the reference for authors.
"""

from __future__ import annotations

import hashlib
import json
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, assert_never

import jinja2

from conformance._yaml import Fields, FileProblemsError, Node, Problem, Problems, load_document
from conformance.contract import Process
from conformance.invariants import INVARIANTS
from conformance.kept import KEPT_NAME, KeptValues, placeholders
from conformance.paths import CHECK_KINDS, PathCheck, PathSyntaxError, SimplePath
from conformance.requirements import load_requirements
from conformance.targets import CAPABILITIES, CLIENT_CERTIFICATE_KINDS
from fixtures.corpora import CorpusError, corpus_file, load_bundle
from fixtures.synthetic import PatientProfile, Person, patient_record, synthetic_person

SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"
PROCESSES = tuple(process.value for process in Process)
CONSENT_ACTIONS = ("grant", "withdraw", "check")
READ_SERVICES = ("fhir", "trustcentre", "audit", "portal")
#: Where a `fhir` step sends its request: the node's FHIR base, or its portal's FHIR API.
FHIR_SERVICES = ("fhir", "portal")
CRITERIA = ("condition-code", "gender", "birth-year-min", "birth-year-max")
STEP_KINDS = (
    "ingest",
    "consent",
    "process",
    "retry",
    "read",
    "fhir",
    "trustcentre",
    "trust",
    "control",
    "audit",
    "wait",
)
INGEST_FORMATS = ("bundle", "ndjson")
FHIR_METHODS = ("GET", "POST", "PUT")
CONTROL_ACTIONS = ("stop", "start")
#: What a trust step presents at a peer door: nothing, or one of the targets' client certificates.
NO_CERTIFICATE = "none"
CERTIFICATES = (NO_CERTIFICATE, *CLIENT_CERTIFICATE_KINDS)
#: The credential an actor names to send no bearer token at all.
NO_CREDENTIAL = "none"
_STEP_ID = re.compile(r"[a-z][a-z0-9-]{0,63}")
_PROFILE_KEYS = ("seed", "site", "gender", "birth_year", "conditions", "procedures", "observations", "medications")


class TemplateProblemError(ValueError):
    """A template failed to render or rendered something that is not JSON; the message names template and line."""


@dataclass(frozen=True)
class Actor:
    """Who acts in a scenario: a node (by site) and the credential (a token name in the targets file) used there."""

    name: str
    site: str
    credential: str


@dataclass(frozen=True)
class PatientSource:
    """Where a scenario's patient comes from: a synthetic profile or a corpus bundle.

    A `fresh` patient is drawn anew for every run (its seed mixed with the run's id), for steps that
    must see a person the node has never held, however often the suite ran against it before.
    """

    name: str
    profile: PatientProfile | None = None
    corpus: str | None = None
    fresh: bool = False

    def for_run(self, run_id: str) -> PatientSource:
        """The patient as a run with `run_id` sees them: a fresh one gets a seed of its own."""
        if not self.fresh or self.profile is None:
            return self
        mixed = int.from_bytes(hashlib.sha256(f"{self.profile.seed}/{run_id}".encode()).digest()[:6], "big")
        return replace(self, profile=replace(self.profile, seed=mixed))

    def person(self) -> Person | None:
        """The synthetic person (for templates and leak checks); None for a corpus patient."""
        if self.profile is None:
            return None
        profile = self.profile
        return synthetic_person(profile.seed, site=profile.site, gender=profile.gender, birth_year=profile.birth_year)


@dataclass(frozen=True)
class Expect:
    """What a step's response must show. Empty fields check nothing."""

    status: tuple[int, ...] = ()
    content_type: str | None = None
    resource_type: str | None = None
    count: tuple[int, int | None] | None = None
    checks: tuple[PathCheck, ...] = ()
    invariants: tuple[str, ...] = ()
    #: Response header (lower case) -> text its value must contain.
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ingest:
    """Send a bundle to a node: rendered from a template, a patient's whole record, or a corpus file.

    As `ndjson`, the bundle's resources go one per line to `$import`; `corrupt_line` replaces that line
    with text that is not JSON, to show the node names it and stores nothing.
    """

    patient: str | None
    template: str | None = None
    record: bool = False
    corpus: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    format: str = "bundle"
    corrupt_line: int | None = None


@dataclass(frozen=True)
class Consent:
    """Grant, withdraw or check MII policies (suffixes such as "5", "8") of a patient at the trust centre."""

    patient: str
    action: str
    policies: tuple[str, ...]
    domain: str = "MII"


@dataclass(frozen=True)
class StartProcess:
    """Start a process (a FHIR Task) at a node and expect its end state."""

    process: str
    target: str | None = None
    patients: tuple[str, ...] = ()
    project: str | None = None
    criteria: Mapping[str, Any] = field(default_factory=dict)
    payload_bytes: int | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Retry:
    """`$retry` the process Task an earlier step (by its `id`) started."""

    of: str


@dataclass(frozen=True)
class Read:
    """A FHIR search at a node's FHIR API, its trust centre, or its audit; `query` may use template expressions."""

    service: str
    query: str


@dataclass(frozen=True)
class FhirRequest:
    """A plain FHIR REST interaction at a node's FHIR base: what any FHIR R4 server answers.

    `path` is relative to the base (`metadata`, `Patient?gender=female`, empty for a transaction); the
    body comes from a template or a patient's record.
    """

    method: str
    path: str
    template: str | None = None
    record: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    #: `fhir` (the node's FHIR base) or `portal` (its portal's FHIR API, `<public_url>/portal/fhir`).
    service: str = "fhir"


@dataclass(frozen=True)
class TrustCentreCall:
    """A trust-centre operation (`gpas/$pseudonymize`, ...) with a templated Parameters body.

    Without `certificate` it goes to the node's public door with the actor's credential; with one, to the
    node's peer door presenting that client certificate, as another node of the federation would.
    """

    operation: str
    template: str
    certificate: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trust:
    """Call a node's peer door presenting a client certificate (or none) with a peer Task for `process`.

    The Task names as requester the site the certificate claims, or the `requester` actor's site when
    given (to show that a Task naming someone else is refused). `bundle` (a template) is carried as the
    Task's bundle input, as a careSummary or dataSend from that peer would carry it.
    """

    certificate: str
    process: str
    requester: str | None = None
    bundle: str | None = None
    project: str | None = None
    patient: str | None = None


@dataclass(frozen=True)
class Control:
    """Stop or start a node's peer door with the command the targets file gives for it (a peer that is down)."""

    action: str


@dataclass(frozen=True)
class AuditCheck:
    """No node of the targets recorded a successful exchange of `processes` since step `since` (by its `id`)."""

    since: str
    processes: tuple[str, ...]


@dataclass(frozen=True)
class Wait:
    """Pause, for processes that finish after their Task is answered; `of`: the earlier step it polls (by `id`)."""

    seconds: float
    of: str | None = None


Action = (
    Ingest | Consent | StartProcess | Retry | Read | FhirRequest | TrustCentreCall | Trust | Control | AuditCheck | Wait
)


@dataclass(frozen=True)
class Step:
    """One step: its action, at which actor, what must come back, which requirements it verifies."""

    index: int
    line: int
    kind: str
    title: str
    actor: str | None
    action: Action
    expect: Expect
    verifies: tuple[str, ...] = ()
    applies_to: tuple[str, ...] = ()
    #: The step's name for later steps (`retry: {of: ...}`, `audit: {since: ...}`).
    id: str | None = None
    #: Extra request headers (e.g. identity headers a caller must not be able to forge).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The cell of the authorisation matrix the step tests, (caller, operation) (`conformance.matrix`).
    cell: tuple[str, str] | None = None
    #: Name -> path: the first value the path reaches in the step's answer is kept as `kept.<name>`.
    keep: Mapping[str, SimplePath] = field(default_factory=dict)
    #: The kept values the step's templates, queries and expected values use (found when the file is loaded).
    uses_kept: tuple[str, ...] = ()

    def requirements(self) -> tuple[str, ...]:
        """The step's own requirement ids plus those of the invariants it checks."""
        from_invariants = tuple(INVARIANTS[name].requirement for name in self.expect.invariants)
        return tuple(dict.fromkeys(self.verifies + from_invariants))


@dataclass(frozen=True)
class Scenario:
    """A parsed, validated scenario file."""

    name: str
    title: str
    journey: int
    file: Path
    verifies: tuple[str, ...]
    actors: Mapping[str, Actor]
    patients: Mapping[str, PatientSource]
    steps: tuple[Step, ...]
    #: The id of the run playing the scenario (`for_run`); templates see it as `run`, for names no earlier run used.
    run_id: str = "load"
    #: When this run of the scenario began (UTC, `2026-12-04T10:00:00Z`); templates see it as `started`, to
    #: search only what this run wrote (`_lastUpdated=ge{{ started }}`).
    started: str = "1970-01-01T00:00:00Z"
    #: Values earlier steps of the run kept (`keep:`), filled in as the run goes; None when loaded (stand-ins).
    kept: Mapping[str, object] | None = None

    def for_run(self, run_id: str, started: str, kept: Mapping[str, object] | None = None) -> Scenario:
        """The scenario as a run with `run_id` plays it from `started` on: its fresh patients drawn for this run.

        `kept` is the run's own store of kept values, which the runner fills as steps pass (empty if not given).
        """
        patients = {name: source.for_run(run_id) for name, source in self.patients.items()}
        return replace(self, patients=patients, run_id=run_id, started=started, kept={} if kept is None else kept)

    def keepers(self) -> dict[str, int]:
        """Kept value name -> the index of the step that keeps it."""
        return {name: step.index for step in self.steps for name in step.keep}

    def requirements(self) -> tuple[str, ...]:
        """Every requirement id the scenario verifies, declared or through its steps, sorted."""
        return tuple(sorted({*self.verifies, *(rid for step in self.steps for rid in step.requirements())}))

    def sites(self) -> frozenset[str]:
        """The sites the steps act at, send to or claim to come from: a journey must span at least two."""
        names = {step.actor for step in self.steps} | {
            step.action.target if isinstance(step.action, StartProcess) else step.action.requester
            for step in self.steps
            if isinstance(step.action, StartProcess | Trust)
        }
        return frozenset(self.actors[name].site for name in names if name is not None and name in self.actors)

    def persons(self) -> dict[str, Person]:
        """Patient name -> synthetic person, for templates and leak checks (corpus patients are left out)."""
        return {name: person for name, source in self.patients.items() if (person := source.person()) is not None}

    def template_context(self, step: Step) -> dict[str, Any]:
        """What templates and queries of `step` see (docs/scenarios.md, "Templates")."""
        persons = self.persons()
        patient = getattr(step.action, "patient", None)
        return {
            "patients": persons,
            "patient": persons.get(patient) if isinstance(patient, str) else None,
            "site": self.actors[step.actor].site if step.actor is not None and step.actor in self.actors else None,
            "sites": {name: actor.site for name, actor in self.actors.items()},
            "vars": dict(getattr(step.action, "variables", {})),
            "run": self.run_id,
            "started": self.started,
            "kept": KeptValues(
                placeholders(self.keepers()) if self.kept is None else self.kept, self.keepers(), step.index
            ),
        }

    def expectations(self, step: Step, context: Mapping[str, Any] | None = None) -> Expect:
        """The step's expectations with template expressions in paths and expected values rendered.

        (`{{ patients.x.kvnr }}` as a value, `entry.resource[source.site={{ sites.gp }}]` as a path.)
        """
        context = self.template_context(step) if context is None else context
        checks = tuple(
            replace(
                check,
                path=SimplePath.parse(render_text(check.path.text, context)) if "{{" in check.path.text else check.path,
                expected=render_text(check.expected, context)
                if isinstance(check.expected, str) and "{{" in check.expected
                else check.expected,
            )
            for check in step.expect.checks
        )
        return replace(step.expect, checks=checks)

    def step_by_id(self, step_id: str) -> Step:
        """The step named `step_id` (the parser made sure it exists)."""
        return next(step for step in self.steps if step.id == step_id)


def load_scenarios(folder: Path = SCENARIOS_DIR) -> list[Scenario]:
    """Every `*.yaml` in `folder`, sorted by journey then name; the problems of all files are raised together."""
    scenarios: list[Scenario] = []
    problems: list[Problem] = []
    known = frozenset(load_requirements())
    for path in sorted(folder.glob("*.yaml")):
        try:
            scenarios.append(load_scenario(path, known))
        except FileProblemsError as exc:
            problems.extend(exc.problems)
    if problems:
        raise FileProblemsError(problems)
    return sorted(scenarios, key=lambda scenario: (scenario.journey, scenario.name))


def load_scenario(path: Path, requirement_ids: frozenset[str] | None = None) -> Scenario:
    """Parse and validate one scenario file; raises `FileProblemsError` listing every problem with its line."""
    known = requirement_ids if requirement_ids is not None else frozenset(load_requirements())
    root, problems = load_document(path)
    scenario = _Parser(path, problems, known).scenario(root)
    problems.raise_if_any()
    steps = _check_rendering(scenario, problems)
    problems.raise_if_any()
    return replace(scenario, steps=steps)


def _check_rendering(scenario: Scenario, problems: Problems) -> tuple[Step, ...]:
    """Render every template and query now, so a broken one fails at load with its step's line.

    Returns the steps, each with the kept values its renderings used (`Step.uses_kept`).
    """
    environment = template_environment(scenario.file.parent / "templates")
    steps = []
    for step in scenario.steps:
        context = scenario.template_context(step)
        try:
            scenario.expectations(step, context)
            for value in step.headers.values():
                render_text(value, {**context, "certificates": _ANY_CERTIFICATE})
            if isinstance(step.action, Read | FhirRequest):
                render_text(step.action.query if isinstance(step.action, Read) else step.action.path, context)
            if not isinstance(step.action, Read) and template_of(step.action) is not None:
                step_body(scenario, step, environment, context)
        except TemplateProblemError as exc:
            problems.add(step.line, f"step {step.index}: {exc}")
        except jinja2.TemplateError as exc:
            problems.add(step.line, f"step {step.index}: query: {exc}")
        except PathSyntaxError as exc:
            problems.add(step.line, f"step {step.index}: a path, once rendered: {exc}")
        steps.append(replace(step, uses_kept=tuple(sorted(context["kept"].used))))
    return tuple(steps)


class _AnyCertificate(dict[str, str]):
    """Stands in for the targets' client certificates when headers are rendered at load time."""

    def __missing__(self, kind: str) -> str:
        return f"<the {kind} certificate>"


_ANY_CERTIFICATE = _AnyCertificate()


def template_of(action: Action) -> str | None:
    """The template a step's body is rendered from, if it has one."""
    match action:
        case Ingest() | FhirRequest() | TrustCentreCall():
            return action.template
        case Trust():
            return action.bundle
        case _:
            return None


def template_environment(folder: Path) -> jinja2.Environment:
    """Jinja2 for JSON templates: unknown names fail (StrictUndefined), nothing is HTML-escaped."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - the output is FHIR JSON, never HTML
        keep_trailing_newline=True,
    )


def render_json(environment: jinja2.Environment, name: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """Render template `name` and parse it as a JSON object; any failure names the template and the line."""
    try:
        text = environment.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblemError(f"template {name} line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateNotFound:
        raise TemplateProblemError(f"template {name}: not found in {environment.loader}") from None
    except (jinja2.UndefinedError, TypeError, ValueError) as exc:
        raise TemplateProblemError(f"template {name} line {_template_line(exc, name)}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        shown = text.splitlines()[exc.lineno - 1] if text.splitlines() else ""
        raise TemplateProblemError(
            f"template {name} rendered invalid JSON at output line {exc.lineno}: {exc.msg} in {shown.strip()!r}"
        ) from None
    if not isinstance(data, dict):
        raise TemplateProblemError(f"template {name} rendered JSON that is not an object (a FHIR resource)")
    return data


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render a one-line template (a read step's query) with the same strict rules as file templates."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - URLs, not HTML
    return environment.from_string(text).render(context)


def step_body(
    scenario: Scenario,
    step: Step,
    environment: jinja2.Environment | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON a step sends: rendered from its template, a patient's record or a corpus file."""
    action = step.action
    template = template_of(action)
    if template is not None:
        folder = scenario.file.parent / "templates"
        context = scenario.template_context(step) if context is None else context
        return render_json(environment or template_environment(folder), template, context)
    if isinstance(action, FhirRequest) and action.record is not None:
        return _record(scenario, action.record)
    if not isinstance(action, Ingest):
        raise TypeError(f"step {step.index} of {scenario.name} is a {step.kind} step without a body")
    source = scenario.patients[action.patient] if action.patient else None
    corpus = action.corpus or (source.corpus if source else None)
    if corpus is not None:
        return load_bundle(corpus_file(corpus)).bundle
    if action.patient is None:
        raise ValueError(f"step {step.index} of {scenario.name} has nothing to ingest")
    return _record(scenario, action.patient)


def _record(scenario: Scenario, patient: str) -> dict[str, Any]:
    source = scenario.patients[patient]
    if source.profile is None:
        raise ValueError(f"patient {patient} of {scenario.name} has no synthetic profile to make a record from")
    return patient_record(source.profile).bundle()


def _template_line(exc: BaseException, name: str) -> int | str:
    """Jinja rewrites tracebacks so template frames carry the template's file name and line."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename.endswith(name)]
    return frames[-1].lineno or "?" if frames else "?"


class _Parser:
    """Reads one scenario file node by node, noting each problem with its line."""

    def __init__(self, path: Path, problems: Problems, requirement_ids: frozenset[str]) -> None:
        self.path = path
        self.problems = problems
        self.requirement_ids = requirement_ids
        self.actors: dict[str, Actor] = {}
        self.patients: dict[str, PatientSource] = {}
        #: Step ids named by later steps (retry, audit), with the line that names them.
        self.references: list[tuple[str, int, int]] = []
        #: Kept value name -> the step that keeps it (a name is kept by one step only).
        self.kept: dict[str, int] = {}

    def scenario(self, root: Node) -> Scenario:
        fields = Fields(root, self.problems, "the scenario")
        name = fields.text("name", required=True) or self.path.stem
        if name != self.path.stem:
            self.problems.add(fields.line, f"name {name!r} must match the file name {self.path.stem!r}")
        title = fields.text("title", required=True) or ""
        journey = fields.integer("journey", required=True, minimum=0) or 0
        if journey > 8:
            self.problems.add(
                fields.line, f"journey must be one of DESIGN.md's journeys 1 to 8 (0: none), got {journey}"
            )
        verifies = self._requirement_ids(fields, "the scenario")
        for actor_name, node in fields.mapping("actors", required=True):
            self.actors[actor_name] = self._actor(actor_name, node)
        for patient_name, node in fields.mapping("patients"):
            self.patients[patient_name] = self._patient(patient_name, node)
        steps = tuple(self._step(index, node) for index, node in enumerate(fields.sequence("steps", required=True), 1))
        fields.finish()
        if fields.has("steps") and not steps:
            self.problems.add(fields.line, "a scenario needs at least one step")
        self._check_references(steps)
        return Scenario(name, title, journey, self.path, verifies, self.actors, self.patients, steps)

    def _check_references(self, steps: tuple[Step, ...]) -> None:
        """Step ids are unique, and a step names only an earlier one."""
        seen: dict[str, int] = {}
        for step in steps:
            if step.id is None:
                continue
            if step.id in seen:
                self.problems.add(step.line, f"step {step.index}: id {step.id!r} is also step {seen[step.id]}'s")
            seen.setdefault(step.id, step.index)
        for step_id, index, line in self.references:
            if seen.get(step_id, index) >= index:
                known = ", ".join(s for s, i in seen.items() if i < index) or "none"
                self.problems.add(line, f"step {index}: no earlier step has the id {step_id!r}; earlier ids: {known}")

    def _requirement_ids(self, fields: Fields, where: str) -> tuple[str, ...]:
        ids = fields.strings("verifies")
        for identifier, line in ids:
            if identifier not in self.requirement_ids:
                self.problems.add(
                    line, f"{where}: unknown requirement id {identifier!r} (see conformance/requirements.yaml)"
                )
        return tuple(identifier for identifier, _ in ids)

    def _actor(self, name: str, node: Node) -> Actor:
        fields = Fields(node, self.problems, f"actor {name}")
        actor = Actor(name, fields.text("site", required=True) or "", fields.text("credential") or "suite")
        fields.finish()
        return actor

    def _patient(self, name: str, node: Node) -> PatientSource:
        fields = Fields(node, self.problems, f"patient {name}")
        corpus = fields.text("corpus")
        if corpus is not None:
            self._corpus(corpus, fields)
            fields.finish()
            if any(fields.has(key) for key in _PROFILE_KEYS):
                self.problems.add(fields.line, f"patient {name}: give either `corpus` or a synthetic profile, not both")
            return PatientSource(name, corpus=corpus)
        seed = fields.integer("seed", required=True)
        site = fields.text("site") or "dic"
        gender = fields.text("gender", choices=("female", "male"))
        birth_year = fields.integer("birth_year", minimum=1900)
        codes = {key: tuple(code for code, _ in fields.strings(key)) for key in _PROFILE_KEYS[4:]}
        consent = tuple(code for code, _ in fields.strings("consent")) if fields.has("consent") else None
        fresh = fields.flag("fresh", default=False)
        fields.finish()
        if seed is None:
            return PatientSource(name)
        try:
            profile = PatientProfile(
                seed=seed,
                site=site,
                gender=gender,
                birth_year=birth_year,
                conditions=codes["conditions"],
                procedures=codes["procedures"],
                observations=codes["observations"],
                medications=codes["medications"],
            )
            if consent is not None:
                profile = replace(profile, consent=consent)
        except ValueError as exc:
            self.problems.add(fields.line, f"patient {name}: {exc}")
            return PatientSource(name)
        return PatientSource(name, profile=profile, fresh=fresh)

    def _corpus(self, reference: str, fields: Fields) -> None:
        try:
            corpus_file(reference)
        except CorpusError as exc:
            self.problems.add(fields.line, str(exc))

    def _step(self, index: int, node: Node) -> Step:
        where = f"step {index}"
        fields = Fields(node, self.problems, where)
        kinds = [kind for kind in STEP_KINDS if fields.has(kind)]
        if len(kinds) != 1:
            self.problems.add(node.line, f"{where} needs exactly one of {', '.join(STEP_KINDS)}, got {kinds or 'none'}")
        kind = kinds[0] if kinds else "wait"
        body = fields.node(kind) or Node({}, node.line)
        action_fields = Fields(body, self.problems, f"{where} ({kind})")
        actor = None if kind in ("wait", "audit") else self._actor_ref(action_fields, "at", required=True)
        action = self._action(kind, action_fields, index)
        action_fields.finish()
        title = fields.text("title") or f"{kind} {_summary(action)}"
        verifies = self._requirement_ids(fields, where)
        applies_to = fields.strings("applies_to")
        for capability, line in applies_to:
            if capability not in CAPABILITIES:
                self.problems.add(
                    line, f"{where}: applies_to {capability!r} is not a capability: {', '.join(CAPABILITIES)}"
                )
        step_id = fields.text("id")
        if step_id is not None and not _STEP_ID.fullmatch(step_id):
            self.problems.add(fields.line, f"{where}: id {step_id!r}: lowercase letters, digits and '-'")
        headers = {key: str(value.value) for key, value in fields.mapping("headers")}
        cell = self._cell(fields, where)
        expect_node = fields.node("expect")
        expect = self._expect(expect_node, where) if expect_node is not None else Expect()
        answered = kind not in ("control", "audit", "wait") or expect != Expect()  # a wait with expect polls
        keep = self._keep(fields, index, kind, answers=answered)
        if kind == "trust" and not expect.status:
            wanted = "the refusal or acceptance it must get"
            self.problems.add(node.line, f"{where}: a trust step needs `expect: {{status: ...}}`, {wanted}")
        fields.finish()
        return Step(
            index,
            node.line,
            kind,
            title,
            actor,
            action,
            expect,
            verifies,
            tuple(c for c, _ in applies_to),
            step_id,
            headers,
            cell,
            keep,
        )

    def _keep(self, fields: Fields, index: int, kind: str, *, answers: bool) -> dict[str, SimplePath]:
        """`keep: {name: path}`: names later steps use as `kept.<name>`, each kept by one step, paths that parse."""
        where = f"step {index}"
        keep: dict[str, SimplePath] = {}
        for name, node in fields.mapping("keep"):
            if not KEPT_NAME.fullmatch(name):
                self.problems.add(node.line, f"{where}: keep {name!r}: a name of lowercase letters, digits and '_'")
            elif name in self.kept:
                self.problems.add(node.line, f"{where}: keep {name!r} is already kept by step {self.kept[name]}")
            if not isinstance(node.value, str):
                self.problems.add(node.line, f"{where}: keep {name!r} needs a path, got {node.value!r}")
                continue
            try:
                keep[name] = SimplePath.parse(node.value)
            except PathSyntaxError as exc:
                self.problems.add(node.line, f"{where}: keep {name!r}: {exc}")
            self.kept.setdefault(name, index)
        if keep and not answers:
            self.problems.add(fields.line, f"{where}: a {kind} step gets no answer to keep values from")
        return keep

    def _cell(self, fields: Fields, where: str) -> tuple[str, str] | None:
        """`cell: {caller: ..., operation: ...}`; a cell needs a status to expect, or it documents nothing."""
        found = fields.node("cell")
        if found is None:
            return None
        cell = Fields(found, self.problems, f"{where} (cell)")
        caller, operation = cell.text("caller", required=True), cell.text("operation", required=True)
        cell.finish()
        expect = fields.node("expect")
        if expect is None or not isinstance(expect.value, dict) or "status" not in expect.value:
            self.problems.add(found.line, f"{where}: a matrix cell needs `expect: {{status: ...}}`")
        return (caller, operation) if caller and operation else None

    def _actor_ref(self, fields: Fields, key: str, *, required: bool = False) -> str | None:
        name = fields.text(key, required=required)
        if name is not None and name not in self.actors:
            found = fields.node(key)
            line = found.line if found else fields.line
            self.problems.add(
                line, f"{fields.where}: `{key}` names unknown actor {name!r}; actors: {', '.join(self.actors)}"
            )
        return name

    def _patient_ref(self, fields: Fields, name: str | None, line: int) -> None:
        if name is not None and name not in self.patients:
            self.problems.add(
                line, f"{fields.where}: unknown patient {name!r}; patients: {', '.join(self.patients) or 'none'}"
            )

    def _step_ref(self, fields: Fields, key: str, index: int) -> str:
        name = fields.text(key, required=True) or ""
        found = fields.node(key)
        self.references.append((name, index, found.line if found else fields.line))
        return name

    def _template_ref(self, fields: Fields, key: str, *, required: bool = False) -> str | None:
        template = fields.text(key, required=required)
        if template is not None and not (self.path.parent / "templates" / template).is_file():
            self.problems.add(
                fields.line, f"{fields.where}: no template {template!r} in {self.path.parent / 'templates'}"
            )
        return template

    def _variables(self, fields: Fields) -> Mapping[str, Any]:
        found = fields.node("vars")
        variables = found.plain() if found is not None else {}
        if not isinstance(variables, dict):
            self.problems.add(fields.line, f"{fields.where}: `vars` must be a mapping")
            return {}
        return variables

    def _action(self, kind: str, fields: Fields, index: int) -> Action:  # noqa: C901, PLR0911, PLR0912 -- one case per kind
        match kind:
            case "ingest":
                return self._ingest(fields)
            case "consent":
                return self._consent(fields)
            case "process":
                return self._process(fields)
            case "retry":
                return Retry(self._step_ref(fields, "of", index))
            case "read":
                service = fields.text("service", choices=READ_SERVICES) or "fhir"
                return Read(service, fields.text("query", required=True) or "")
            case "fhir":
                return self._fhir(fields)
            case "trustcentre":
                certificate = fields.text("certificate", choices=CERTIFICATES)
                operation = fields.text("operation", required=True) or ""
                if operation and not re.fullmatch(r"(gpas|gics|epix)/\$[A-Za-z-]+", operation):
                    self.problems.add(fields.line, f"{fields.where}: operation {operation!r}: <gpas|gics|epix>/$<name>")
                template = self._template_ref(fields, "template", required=True) or ""
                return TrustCentreCall(operation, template, certificate, self._variables(fields))
            case "trust":
                return self._trust(fields)
            case "control":
                return Control(fields.text("action", required=True, choices=CONTROL_ACTIONS) or "stop")
            case "audit":
                since = self._step_ref(fields, "since", index)
                processes = tuple(p for p, _ in fields.strings("processes", required=True))
                for process, line in fields.strings("processes"):
                    if process not in PROCESSES:
                        self.problems.add(line, f"{fields.where}: unknown process {process!r}; known: {PROCESSES}")
                return AuditCheck(since, processes)
            case _:
                polled = self._step_ref(fields, "of", index) if fields.node("of") is not None else None
                return Wait(fields.number("seconds", required=True) or 0, polled)

    def _ingest(self, fields: Fields) -> Ingest:
        patient = fields.text("patient")
        self._patient_ref(fields, patient, fields.line)
        template, corpus = self._template_ref(fields, "template"), fields.text("corpus")
        record = fields.flag("record", default=False)
        if [template is not None, record, corpus is not None].count(True) != 1:
            self.problems.add(
                fields.line, f"{fields.where}: an ingest step needs exactly one of `template`, `record: true`, `corpus`"
            )
        if corpus is not None:
            self._corpus(corpus, fields)
        if record and patient is None:
            self.problems.add(fields.line, f"{fields.where}: `record: true` needs `patient`")
        ingest_format = fields.text("format", choices=INGEST_FORMATS) or "bundle"
        corrupt_line = fields.integer("corrupt_line", minimum=1)
        if corrupt_line is not None and ingest_format != "ndjson":
            self.problems.add(fields.line, f"{fields.where}: `corrupt_line` needs `format: ndjson`")
        return Ingest(patient, template, record, corpus, self._variables(fields), ingest_format, corrupt_line)

    def _consent(self, fields: Fields) -> Consent:
        patient = fields.text("patient", required=True) or ""
        self._patient_ref(fields, patient or None, fields.line)
        action = fields.text("action", required=True, choices=CONSENT_ACTIONS) or "check"
        policies = tuple(
            code.removeprefix("2.16.840.1.113883.3.1937.777.24.5.3.")
            for code, _ in fields.strings("policies", required=True)
        )
        return Consent(patient, action, policies, fields.text("domain") or "MII")

    def _process(self, fields: Fields) -> StartProcess:
        process = fields.text("name", required=True, choices=PROCESSES) or "ping"
        target = self._actor_ref(fields, "target", required=process in {"ping", "careSummary", "dataSend"})
        patients = fields.strings("patients", required=process in {"careSummary", "dataSend"})
        for patient, line in patients:
            self._patient_ref(fields, patient, line)
        project = fields.text("project", required=process == "dataSend")
        criteria = {}
        for key, node in fields.mapping("criteria", required=process == "feasibility"):
            if key not in CRITERIA:
                self.problems.add(node.line, f"{fields.where}: unknown criterion {key!r}; known: {', '.join(CRITERIA)}")
            criteria[key] = node.value
        if process == "feasibility" and fields.has("criteria") and "condition-code" not in criteria:
            self.problems.add(fields.line, f"{fields.where}: feasibility criteria need `condition-code`")
        payload = fields.integer("payload_bytes", minimum=0)
        idempotency_key = fields.text("idempotency_key")
        return StartProcess(process, target, tuple(p for p, _ in patients), project, criteria, payload, idempotency_key)

    def _fhir(self, fields: Fields) -> FhirRequest:
        method = fields.text("method", choices=FHIR_METHODS) or "GET"
        path = fields.text("path") or ""
        template, record = self._template_ref(fields, "template"), fields.text("record")
        self._patient_ref(fields, record, fields.line)
        if method == "GET" and (template or record):
            self.problems.add(fields.line, f"{fields.where}: a GET sends no body (`template`, `record`)")
        if method != "GET" and (template is None) == (record is None):
            self.problems.add(fields.line, f"{fields.where}: a {method} needs exactly one of `template`, `record`")
        service = fields.text("service", choices=FHIR_SERVICES) or "fhir"
        return FhirRequest(method, path, template, record, self._variables(fields), service)

    def _trust(self, fields: Fields) -> Trust:
        certificate = fields.text("certificate", required=True, choices=CERTIFICATES) or NO_CERTIFICATE
        process = fields.text("process", required=True, choices=PROCESSES) or "ping"
        requester = self._actor_ref(fields, "requester")
        bundle = self._template_ref(fields, "bundle")
        patient = fields.text("patient")
        self._patient_ref(fields, patient, fields.line)
        project = fields.text("project")
        if bundle is not None and process not in ("careSummary", "dataSend"):
            self.problems.add(fields.line, f"{fields.where}: only careSummary and dataSend carry a `bundle`")
        return Trust(certificate, process, requester, bundle, project, patient)

    def _expect(self, node: Node, where: str) -> Expect:
        fields = Fields(node, self.problems, f"{where} expect")
        status = tuple(int(code) for code, _ in fields.strings("status") if code.isdigit())
        for code, line in fields.strings("status"):
            if not code.isdigit() or not 100 <= int(code) <= 599:
                self.problems.add(line, f"{fields.where}: status {code!r} is not an HTTP status code")
        count = self._count(fields)
        checks = tuple(check for item in fields.sequence("fhir") if (check := self._check(item, fields.where)))
        invariants = fields.strings("invariants")
        for name, line in invariants:
            if name not in INVARIANTS:
                self.problems.add(line, f"{fields.where}: unknown invariant {name!r}; known: {', '.join(INVARIANTS)}")
        expect = Expect(
            status=status,
            content_type=fields.text("content_type"),
            resource_type=fields.text("resource_type"),
            count=count,
            checks=checks,
            invariants=tuple(name for name, _ in invariants),
            headers={key.lower(): str(value.value) for key, value in fields.mapping("headers")},
        )
        fields.finish()
        return expect

    def _count(self, fields: Fields) -> tuple[int, int | None] | None:
        found = fields.node("count")
        if found is None:
            return None
        if isinstance(found.value, int) and not isinstance(found.value, bool) and found.value >= 0:
            return found.value, found.value
        bounds = Fields(found, self.problems, f"{fields.where} count")
        low, high = bounds.integer("min"), bounds.integer("max")
        bounds.finish()
        if low is None and high is None:
            self.problems.add(found.line, f"{fields.where}: count must be a number or {{min: n, max: m}}")
            return None
        return low or 0, high

    def _check(self, node: Node, where: str) -> PathCheck | None:
        fields = Fields(node, self.problems, f"{where} check")
        text = fields.text("path", required=True)
        kinds = [kind for kind in CHECK_KINDS if fields.has(kind)]
        if len(kinds) != 1:
            self.problems.add(node.line, f"{where} check needs exactly one of {', '.join(CHECK_KINDS)}")
        value = fields.node(kinds[0]) if kinds else None
        fields.finish()
        if text is None or value is None or len(kinds) != 1:
            return None
        try:
            path = SimplePath.parse(text)
        except PathSyntaxError as exc:
            self.problems.add(node.line, f"{where} check: {exc}")
            return None
        return PathCheck(path, kinds[0], value.plain())


def _summary(action: Action) -> str:  # noqa: C901, PLR0911 -- one line per kind of step
    match action:
        case Ingest():
            what = action.template or action.corpus or f"record of {action.patient}"
            return what + (" as NDJSON" if action.format == "ndjson" else "")
        case Consent():
            return f"{action.action} {','.join(action.policies)} for {action.patient}"
        case StartProcess():
            return action.process + (f" to {action.target}" if action.target else "")
        case Retry():
            return f"the process of step {action.of}"
        case Read():
            return f"{action.service} {action.query}"
        case FhirRequest():
            where = " at the portal" if action.service == "portal" else ""
            return f"{action.method} {action.path or '(base)'}{where}"
        case TrustCentreCall():
            door = (
                f"the peer door with the {action.certificate} certificate" if action.certificate else "the public door"
            )
            return f"{action.operation} at {door}"
        case Trust():
            shown = (
                "no certificate" if action.certificate == NO_CERTIFICATE else f"the {action.certificate} certificate"
            )
            claimed = f", claiming to be {action.requester}" if action.requester else ""
            return f"{action.process} at the peer door with {shown}{claimed}"
        case Control():
            return f"{action.action} the peer door"
        case AuditCheck():
            return f"no {', '.join(action.processes)} since step {action.since}"
        case Wait():
            return f"{action.seconds:g}s" + (f", polling step {action.of}" if action.of else "")
        case _ as unreachable:
            assert_never(unreachable)
