"""What each kind of step needs from the targets, and the requests it makes: one `match` per question.

A new step kind is added here (its needs and its calls) and in `conformance.scenario` (its YAML);
mypy's exhaustiveness check on the `match` statements names every place a kind was forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, assert_never
from urllib.parse import quote

import jinja2
from cryptography import x509
from cryptography.x509.oid import NameOID

from conformance.contract import NDJSON, Process
from conformance.http import Call, CannotRunError
from conformance.logins import LoginFailedError
from conformance.requests import (
    bundle_input,
    criterion,
    is_consented,
    parameters,
    policy,
    process_task,
    task_input,
)
from conformance.scenario import (
    NO_CERTIFICATE,
    NO_CREDENTIAL,
    AuditCheck,
    Consent,
    Control,
    FhirRequest,
    Ingest,
    Read,
    Retry,
    Scenario,
    StartProcess,
    Step,
    TemplateProblemError,
    Trust,
    TrustCentreCall,
    Wait,
    render_text,
    step_body,
)
from conformance.targets import NodeTarget, Targets
from fixtures.consents import broad_consent
from fixtures.corpora import CorpusError, corpus_file, load_bundle
from fixtures.kvnr import KVNR_SYSTEM

#: The credential (token name in the targets file) the suite uses for its own checks at a node (audit).
SUITE_CREDENTIAL = "suite"
#: The credential of the trust-centre node used for consent, pseudonym and trust-centre audit calls.
TRUSTCENTRE_CREDENTIAL = "trustcentre"
#: Read services: the capability each needs at the actor's node.
READ_CAPABILITIES = {"fhir": "read", "audit": "audit", "trustcentre": "trustcentre", "portal": "portal"}


@dataclass(frozen=True)
class Need:
    """Something a step needs of the targets: a capability at a site (None: the federation's trust centre).

    With `credential`, the node must hold that token; with `certificate`, that client certificate.
    """

    site: str | None
    capability: str
    credential: str | None = None
    certificate: str | None = None


class Sender(NamedTuple):
    """Who sends a step's requests: the node they go to, the actor's token there (if any), extra headers."""

    node: NodeTarget
    token: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Scene:
    """What building a step's requests needs: the scenario, the targets, the run's id, earlier steps' Tasks."""

    scenario: Scenario
    targets: Targets
    run_id: str
    #: Step id -> the Task the step started (for `retry`).
    tasks: Mapping[str, Mapping[str, Any]]
    #: Idempotency key (as the scenario writes it) -> the Task the first step with that key started.
    keyed_tasks: Mapping[str, Mapping[str, Any]]

    def node(self, site: str) -> NodeTarget:
        """The target of `site`; CannotRunError if it is not among them."""
        node = self.targets.nodes.get(site)
        if node is None:
            raise CannotRunError(f"site {site!r} is not among the targets")
        return node

    def trustcentre(self) -> NodeTarget:
        """The node that hosts the federation's trust centre."""
        node = self.targets.trustcentre()
        if node is None or node.trustcentre_url is None:
            raise CannotRunError("no target offers a trust centre")
        return node


def needs(scenario: Scenario, step: Step) -> Iterator[Need]:  # noqa: C901, PLR0912 -- one branch per kind of step
    """What the step's own action needs (invariants add theirs, see `conformance.checks`)."""
    if step.actor is None:
        if isinstance(step.action, AuditCheck):
            for site in sorted({actor.site for actor in scenario.actors.values()}):
                yield Need(site, "audit", SUITE_CREDENTIAL)
        return
    actor = scenario.actors[step.actor]
    optional = actor.credential == NO_CREDENTIAL or actor.credential.endswith("?")
    credential = None if optional else actor.credential
    for capability in step.applies_to:
        yield Need(actor.site, capability, credential)
    match step.action:
        case Ingest():
            yield Need(actor.site, "ingest", credential)
        case Consent():
            yield Need(None, "trustcentre", TRUSTCENTRE_CREDENTIAL)
        case StartProcess(target=target):
            yield Need(actor.site, "processes", credential)
            if target is not None:  # the receiving node takes part: without it, the outcome tells nothing
                yield Need(scenario.actors[target].site, "processes")
        case Retry():
            yield Need(actor.site, "processes", credential)
        case Read(service=service):
            yield Need(
                actor.site,
                READ_CAPABILITIES[service],
                TRUSTCENTRE_CREDENTIAL if service == "trustcentre" else credential,
            )
        case FhirRequest(service=service):
            yield Need(actor.site, "portal" if service == "portal" else "fhir", credential)
        case TrustCentreCall(certificate=certificate):
            if certificate is None:
                yield Need(
                    actor.site, "trustcentre", None if actor.credential == NO_CREDENTIAL else TRUSTCENTRE_CREDENTIAL
                )
            else:
                yield Need(actor.site, "trustcentre")
                yield Need(actor.site, "mtls", certificate=None if certificate == NO_CERTIFICATE else certificate)
        case Trust(certificate=certificate):  # the node's audit shows the refusal or the answer
            yield Need(actor.site, "mtls", certificate=None if certificate == NO_CERTIFICATE else certificate)
            yield Need(actor.site, "audit", SUITE_CREDENTIAL)
        case Control():
            yield Need(actor.site, "control")
        case AuditCheck() | Wait():
            return
        case _ as unreachable:
            assert_never(unreachable)


def calls(scene: Scene, step: Step) -> list[Call]:  # noqa: C901, PLR0911 -- one branch per kind of step
    """The HTTP requests the step makes (none for `control`, `audit` and `wait`, which the runner handles)."""
    if step.actor is None:
        return []
    actor = scene.scenario.actors[step.actor]
    node = scene.node(actor.site)
    uses_token = isinstance(step.action, Ingest | StartProcess | Retry | Read | FhirRequest)
    token = _token(node, actor.credential) if uses_token else None
    headers = _headers(scene, step, node)
    sender = Sender(node, token, headers)
    match step.action:
        case Ingest() as action:
            return [_ingest_call(scene, step, action, sender)]
        case Consent() as action:
            return _consent_calls(scene, action)
        case StartProcess() as action:
            return [Call(node, "POST", f"{node.fhir_url}/Task", token, _task(scene, action), headers=headers)]
        case Retry(of=of):
            task = scene.tasks.get(of)
            if task is None or not isinstance(task.get("id"), str):
                raise CannotRunError(f"step {of!r} started no Task to retry")
            return [Call(node, "POST", f"{node.fhir_url}/Task/{task['id']}/$retry", token, headers=headers)]
        case Read() as action:
            return [_read_call(scene, step, action, sender)]
        case FhirRequest() as action:
            body = _body(scene, step) if action.method != "GET" else None
            base = _portal_base(node) if action.service == "portal" else node.fhir_url
            url = f"{base}/{_rendered(scene, step, 'path', action.path)}".rstrip("/")
            return [Call(node, action.method, url, token, body, headers=headers)]
        case TrustCentreCall() as action:
            return [_trustcentre_call(scene, step, action, node, headers)]
        case Trust() as action:
            return [_peer_call(scene, step, action, sender)]
        case Control() | AuditCheck() | Wait():
            return []
        case _ as unreachable:
            assert_never(unreachable)


def _token(node: NodeTarget, credential: str) -> str | None:
    """The actor's bearer token: none for `none`, and for an optional `name?` only where the node has one."""
    if credential == NO_CREDENTIAL or (credential.endswith("?") and not node.has_credential(credential[:-1])):
        return None
    try:
        return node.token(credential.removesuffix("?"))
    except LoginFailedError as exc:
        raise CannotRunError(f"cannot sign in as {credential}: {exc}") from None


def identifier_of(scenario: Scenario, patient: str) -> dict[str, str]:
    """How processes and the trust centre name a patient: the KVNR, which is the same at every site.

    A corpus patient is named by the first identifier of the corpus file's Patient.
    """
    person = scenario.persons().get(patient)
    if person is not None:
        return {"system": KVNR_SYSTEM, "value": person.kvnr}
    source = scenario.patients[patient]
    if source.corpus is None:
        raise CannotRunError(f"patient {patient} has neither a synthetic profile nor a corpus file")
    for entry in load_bundle(corpus_file(source.corpus)).bundle.get("entry", []):
        resource = entry.get("resource", {})
        for identifier in resource.get("identifier", []) if resource.get("resourceType") == "Patient" else []:
            if isinstance(identifier.get("system"), str) and isinstance(identifier.get("value"), str):
                return {"system": identifier["system"], "value": identifier["value"]}
    raise CannotRunError(f"the corpus file of patient {patient} holds no Patient with an identifier")


def certificate_site(path: Path) -> str:
    """The site a client certificate claims: its subject's common name ("" if it names none)."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CannotRunError(f"cannot read the certificate {path}: {exc}") from None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else ""


def requester(scene: Scene, action: Trust, node: NodeTarget) -> str | None:
    """The site a trust step's Task names: the `requester` actor's, else the certificate's (none without one)."""
    if action.requester is not None:
        return scene.scenario.actors[action.requester].site
    if action.certificate == NO_CERTIFICATE:
        return None
    return certificate_site(node.client_certificates[action.certificate].cert) or None


def _body(scene: Scene, step: Step) -> dict[str, Any]:
    try:
        return step_body(scene.scenario, step)
    except (TemplateProblemError, CorpusError, ValueError) as exc:
        raise CannotRunError(f"cannot build the body: {exc}") from None


def _ingest_call(scene: Scene, step: Step, action: Ingest, sender: Sender) -> Call:
    bundle = _body(scene, step)
    node, token, headers = sender
    if action.format == "bundle":
        return Call(node, "POST", node.fhir_url, token, bundle, headers=headers)
    lines = [_json_line(entry["resource"]) for entry in bundle.get("entry", []) if isinstance(entry, dict)]
    if action.corrupt_line is not None:
        if action.corrupt_line > len(lines):
            raise CannotRunError(f"corrupt_line {action.corrupt_line}: the NDJSON has only {len(lines)} lines")
        lines[action.corrupt_line - 1] = '{"resourceType": "Observation", "status": '  # cut off: not JSON
    ndjson = "\n".join(lines) + "\n"
    return Call(node, "POST", f"{node.fhir_url}/$import", token, ndjson, headers=headers, content_type=NDJSON)


def _json_line(resource: Mapping[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def _consent_calls(scene: Scene, action: Consent) -> list[Call]:
    """The trust centre's gICS operations: `$addConsent`, `$withdrawConsent`, one `$isConsented` per policy."""
    node = scene.trustcentre()
    token = node.token(TRUSTCENTRE_CREDENTIAL)
    person = identifier_of(scene.scenario, action.patient)
    base = f"{node.trustcentre_url}/gics"
    domain = {"name": "domain", "valueString": action.domain}
    if action.action == "grant":
        consent = broad_consent(person, datetime.now(UTC).isoformat(timespec="seconds"), *action.policies)
        body = parameters(domain, {"name": "resource", "resource": consent})
        return [Call(node, "POST", f"{base}/$addConsent", token, body)]
    if action.action == "withdraw":
        body = parameters(
            {"name": "personIdentifier", "valueIdentifier": person}, domain, *map(policy, action.policies)
        )
        return [Call(node, "POST", f"{base}/$withdrawConsent", token, body)]
    return [
        Call(node, "POST", f"{base}/$isConsented", token, is_consented(person, code, action.domain))
        for code in action.policies
    ]


def _task(scene: Scene, action: StartProcess) -> dict[str, Any]:
    """The Task the public API starts a process with (docs/federation.md, "Public API")."""
    inputs = []
    if action.target is not None:
        inputs.append(task_input("target", "valueString", scene.scenario.actors[action.target].site))
    inputs += [task_input("patient", "valueIdentifier", identifier_of(scene.scenario, p)) for p in action.patients]
    if action.project is not None:
        inputs.append(task_input("project", "valueString", action.project))
    inputs += [criterion(name, value) for name, value in action.criteria.items()]
    if action.payload_bytes is not None:
        inputs.append(task_input("payload-bytes", "valueInteger", action.payload_bytes))
    key = f"{scene.run_id}-{action.idempotency_key}" if action.idempotency_key else None
    return process_task(Process(action.process), inputs, idempotency_key=key)


def _read_call(scene: Scene, step: Step, action: Read, sender: Sender) -> Call:
    node, token, headers = sender
    query = _rendered(scene, step, "query", action.query).lstrip("/")
    if action.service == "trustcentre":
        return Call(node, "GET", f"{node.trustcentre_url}/{query}", node.token(TRUSTCENTRE_CREDENTIAL), headers=headers)
    base = _portal_base(node) if action.service == "portal" else node.fhir_url
    return Call(node, "GET", f"{base}/{query}", token, headers=headers)


def _portal_base(node: NodeTarget) -> str:
    """The portal's FHIR API under the node's public door (docs/scenarios.md, `read`)."""
    return f"{node.public_url}/portal/fhir"


def _rendered(scene: Scene, step: Step, field: str, text: str) -> str:
    """A step's text field with `{{ patients.<name>.kvnr }}` and the like filled in."""
    try:
        return render_text(text, scene.scenario.template_context(step))
    except jinja2.TemplateError as exc:
        raise CannotRunError(f"{field}: {exc}") from None


def _trustcentre_call(
    scene: Scene, step: Step, action: TrustCentreCall, node: NodeTarget, headers: dict[str, str]
) -> Call:
    body = _body(scene, step)
    if action.certificate is None:
        actor = scene.scenario.actors[str(step.actor)]
        token = None if actor.credential == NO_CREDENTIAL else node.token(TRUSTCENTRE_CREDENTIAL)
        return Call(node, "POST", f"{node.trustcentre_url}/{action.operation}", token, body, headers=headers)
    if node.peer_url is None:
        raise CannotRunError(f"node {node.site} has no `peer_url` in the targets file")
    certificate = None if action.certificate == NO_CERTIFICATE else node.client_certificates[action.certificate]
    url = f"{node.peer_url}/ttp-fhir/fhir/{action.operation}"
    return Call(node, "POST", url, None, body, certificate=certificate, headers=headers)


def _peer_call(scene: Scene, step: Step, action: Trust, sender: Sender) -> Call:
    """The peer Task of docs/federation.md's "Peer API", with the certificate it is presented with."""
    node = sender.node
    if node.peer_url is None:
        raise CannotRunError(f"node {node.site} has no `peer_url` in the targets file")
    certificate = None if action.certificate == NO_CERTIFICATE else node.client_certificates[action.certificate]
    key = f"{scene.run_id}-{scene.scenario.name}-{step.index}"
    inputs = []
    if action.project is not None:
        inputs.append(task_input("project", "valueString", action.project))
    if action.bundle is not None:
        inputs.append(bundle_input(_body(scene, step)))
    task = process_task(Process(action.process), inputs, requester=requester(scene, action, node), idempotency_key=key)
    return Call(node, "POST", f"{node.peer_url}/fhir/Task", None, task, certificate, headers=sender.headers)


def _headers(scene: Scene, step: Step, node: NodeTarget) -> dict[str, str]:
    """A step's extra headers, rendered: `{{ certificates.valid }}` is that client certificate, URL-encoded PEM.

    A certificate is public; sending one in a header is what a caller forging the gateway's identity
    headers would do.
    """
    if not step.headers:
        return {}
    context = {
        **scene.scenario.template_context(step),
        "certificates": {
            kind: quote(pair.cert.read_text(encoding="ascii")) for kind, pair in node.client_certificates.items()
        },
    }
    try:
        return {name: render_text(value, context) for name, value in step.headers.items()}
    except (jinja2.TemplateError, OSError) as exc:
        raise CannotRunError(f"headers: {exc}") from None
