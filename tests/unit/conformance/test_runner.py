"""The runner against a stand-in federation (httpx.MockTransport): what it sends, how it judges what comes back."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conformance.results import Outcome, StepResult
from conformance.runner import Runner, RunOptions
from conformance.scenario import Scenario, load_scenario
from conformance.targets import ClientCertificate, NodeTarget, Targets
from fixtures.synthetic import synthetic_person
from infra import pki
from servicekit.kvnr import KVNR_SYSTEM

ANNA = synthetic_person(2101, site="dic", gender="female", birth_year=1968)
HEADER = """\
name: journey
title: A test journey
journey: 2
actors:
  hospital: {site: dic}
  gp: {site: practice}
  reader: {site: practice, credential: read-only}
patients:
  anna: {seed: 2101, site: dic, gender: female, birth_year: 1968, conditions: [C50.4]}
steps:
"""
Handler = Callable[[httpx.Request], httpx.Response]


def fhir(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"content-type": "application/fhir+json"})


def bundle(*resources: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if total is not None:
        found["total"] = total
    return found


def consented(value: bool) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "consented", "valueBoolean": value}]}


def audit_event(event_id: int, process: str, peer: str, outcome: str = "0") -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "id": str(event_id),
        "subtype": [{"system": "urn:hubnode:connector", "code": process}],
        "outcome": outcome,
        "agent": [{"who": {"display": f"peer:{peer}"}, "requestor": True}],
    }


class Federation:
    """Two stand-in nodes: routes by (method, host + path), each node's audit log as a list of AuditEvents."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], Handler] = {}
        self.audit: dict[str, list[dict[str, Any]]] = {"dic.test": [], "practice.test": []}

    def route(self, method: str, where: str, answer: httpx.Response | Handler) -> None:
        self.routes[method, where] = answer if callable(answer) else (lambda _request: answer)

    def record(self, host: str, process: str, peer: str, outcome: str = "0") -> None:
        events = self.audit[host]
        events.append(audit_event(len(events) + 1, process, peer, outcome))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/fhir/AuditEvent":
            return fhir(200, bundle(*self.audit[request.url.host]))
        handler = self.routes.get((request.method, request.url.host + request.url.path))
        if handler is None:
            return fhir(404, {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "no such route"}]})
        return handler(request)

    def sent(self, method: str, where: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.host + r.url.path == where]


def node(tmp_path: Path, site: str, capabilities: set[str], tokens: tuple[str, ...] = ("suite",)) -> NodeTarget:
    files = {}
    for name in tokens:
        files[name] = tmp_path / f"{site}-{name}.token"
        files[name].write_text(f"{site}-{name}-secret\n")
    return NodeTarget(
        site=site,
        role=site,
        public_url=f"https://{site}.test",
        fhir_url=f"https://{site}.test/fhir",
        trustcentre_url=f"https://{site}.test/ttp-fhir/fhir" if "trustcentre" in capabilities else None,
        peer_url=None,
        ca_file=None,
        tokens=files,
        client_certificates={},
        capabilities=frozenset(capabilities),
    )


NODE_CAPABILITIES = {"ingest", "read", "processes", "audit"}


@pytest.fixture
def targets(tmp_path: Path) -> Targets:
    dic = node(tmp_path, "dic", {*NODE_CAPABILITIES, "trustcentre"}, ("suite", "trustcentre"))
    practice = node(tmp_path, "practice", NODE_CAPABILITIES, ("suite", "read-only"))
    return Targets("test federation", {"dic": dic, "practice": practice}, {"hubnode": "0.1.0"})


def scenario(tmp_path: Path, steps: str) -> Scenario:
    path = tmp_path / "journey.yaml"
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(steps), "  "))
    return load_scenario(path)


def run(targets: Targets, federation: Federation, journey: Scenario) -> list[StepResult]:
    options = RunOptions(run_id="run1", poll_interval_s=0.01)
    [result] = Runner(targets, transport=httpx.MockTransport(federation), options=options).run([journey]).scenarios
    return list(result.steps)


def test_an_ingest_posts_the_bundle_with_the_actors_token_and_passes_when_expectations_hold(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    response = {"resourceType": "Bundle", "type": "transaction-response", "entry": [{"response": {"status": "201"}}]}
    federation.route("POST", "dic.test/fhir", fhir(200, response))
    journey = scenario(
        tmp_path,
        """\
        - ingest: {at: hospital, patient: anna, record: true}
          expect:
            status: 200
            content_type: application/fhir+json
            resource_type: Bundle
            fhir: [{path: type, equals: transaction-response}]
        """,
    )
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.PASSED, step.message
    assert step.exchanges == ()
    [sent] = federation.sent("POST", "dic.test/fhir")
    assert sent.headers["authorization"] == "Bearer dic-suite-secret"
    assert sent.headers["content-type"] == "application/fhir+json"
    body = json.loads(sent.content)
    assert body["type"] == "transaction"
    assert ANNA.kvnr in sent.content.decode()


def test_an_unmet_expectation_fails_and_keeps_the_exchange_with_the_nodes_diagnostics(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    refusal = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "Bundle.entry[1]"}]}
    federation.route("POST", "dic.test/fhir", fhir(422, refusal))
    journey = scenario(
        tmp_path,
        """\
        - ingest: {at: hospital, patient: anna, record: true}
          expect: {status: 200, resource_type: Bundle}
        """,
    )
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.FAILED
    assert "status 422, expected 200" in step.message
    assert "resource type OperationOutcome, expected Bundle" in step.message
    assert "the node said: Bundle.entry[1]" in step.message
    [exchange] = step.exchanges
    assert (exchange.method, exchange.url, exchange.status) == ("POST", "https://dic.test/fhir", 422)
    assert '"resourceType": "Bundle"' in exchange.request
    assert "Bundle.entry[1]" in exchange.response
    assert "dic-suite-secret" not in exchange.request + exchange.response


def test_a_step_whose_node_lacks_a_capability_is_not_applicable_and_sends_nothing(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    journey = scenario(
        tmp_path,
        """\
        - applies_to: [portal]
          read: {at: gp, service: portal, query: "QuestionnaireResponse?patient.identifier={{ patients.anna.kvnr }}"}
          expect: {status: 200}
        - read: {at: hospital, service: trustcentre, query: "AuditEvent"}
          expect: {status: 200}
        """,
    )
    portal, trustcentre = run(targets, federation, journey)
    assert portal.outcome is Outcome.NOT_APPLICABLE
    assert portal.message == "node practice lacks the capability 'portal'"
    assert trustcentre.outcome is Outcome.FAILED  # applicable: the trust centre's route is missing, so 404
    assert [r.url.path for r in federation.requests] == ["/ttp-fhir/fhir/AuditEvent"]


def test_a_credential_the_targets_file_does_not_give_makes_a_step_not_applicable(tmp_path: Path) -> None:
    practice = node(tmp_path, "practice", NODE_CAPABILITIES, ("suite",))
    targets = Targets("one node", {"practice": practice})
    journey = scenario(
        tmp_path,
        """\
        - ingest: {at: reader, patient: anna, record: true}
          expect: {status: 403}
        """,
    )
    [step] = run(targets, Federation(), journey)
    assert step.outcome is Outcome.NOT_APPLICABLE
    assert "no credential 'read-only'" in step.message


def test_a_failed_set_up_marks_the_patients_later_steps_as_errors_while_other_steps_still_run(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    federation.route("POST", "dic.test/fhir", fhir(500, {"resourceType": "OperationOutcome", "issue": []}))
    federation.route("GET", "practice.test/fhir/Patient", fhir(200, bundle(total=0)))
    journey = scenario(
        tmp_path,
        """\
        - ingest: {at: hospital, patient: anna, record: true}
          expect: {status: 200}
        - read: {at: gp, query: "Condition?patient.identifier={{ patients.anna.kvnr }}"}
          expect: {status: 200}
        - read: {at: gp, query: "Patient?gender=female"}
          expect: {status: 200, count: 0}
        """,
    )
    ingest, about_anna, unrelated = run(targets, federation, journey)
    assert ingest.outcome is Outcome.FAILED
    assert about_anna.outcome is Outcome.ERROR
    assert about_anna.message.startswith("depends on step 1 (ingest record of anna), which failed")
    assert unrelated.outcome is Outcome.PASSED
    assert not federation.sent("GET", "practice.test/fhir/Condition")


def test_a_node_that_cannot_be_reached_is_an_error_and_the_run_goes_on(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    federation.route("GET", "dic.test/fhir/Patient", refuse)
    federation.route("GET", "practice.test/fhir/Patient", fhir(200, bundle(total=2)))
    journey = scenario(
        tmp_path,
        """\
        - read: {at: hospital, query: "Patient?gender=female"}
          expect: {status: 200}
        - read: {at: gp, query: "Patient?gender=female"}
          expect: {status: 200, count: {min: 3}}
        """,
    )
    unreachable, counted = run(targets, federation, journey)
    assert unreachable.outcome is Outcome.ERROR
    assert "ConnectError: connection refused" in unreachable.message
    assert unreachable.exchanges[0].status is None
    assert counted.outcome is Outcome.FAILED
    assert counted.message == "count 2, expected at least 3"


def test_a_process_starts_the_task_the_public_api_describes(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route("POST", "dic.test/fhir/Task", fhir(201, {"resourceType": "Task", "status": "completed"}))
    journey = scenario(
        tmp_path,
        """\
        - process: {at: hospital, name: careSummary, target: gp, patients: [anna], idempotency_key: j2-anna}
          expect: {status: 201, fhir: [{path: status, equals: completed}]}
        """,
    )
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.PASSED, step.message
    task = json.loads(federation.sent("POST", "dic.test/fhir/Task")[0].content)
    assert task["instantiatesCanonical"] == "https://hubnode.org/fhir/process/careSummary|1.0"
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["identifier"] == [{"system": "https://hubnode.org/fhir/sid/idempotency-key", "value": "run1-j2-anna"}]
    inputs = {item["type"]["coding"][0]["code"]: item for item in task["input"]}
    assert inputs["target"]["valueString"] == "practice"
    assert inputs["patient"]["valueIdentifier"] == {"system": KVNR_SYSTEM, "value": ANNA.kvnr}


def test_a_failed_task_says_why_in_the_message(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    task = {"resourceType": "Task", "status": "failed", "statusReason": {"text": "peer 'practice' unreachable"}}
    federation.route("POST", "dic.test/fhir/Task", fhir(201, task))
    journey = scenario(
        tmp_path,
        """\
        - process: {at: hospital, name: ping, target: gp, payload_bytes: 10}
          expect: {status: 201, fhir: [{path: status, equals: completed}]}
        """,
    )
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.FAILED
    assert "the Task failed: peer 'practice' unreachable" in step.message


def careSummary_at_the_nodes(federation: Federation, *, received: bool, task_status: str = "completed") -> None:  # noqa: N802
    """The hospital's connector: audits its side, and the practice's side if the exchange reached it."""

    def start(_request: httpx.Request) -> httpx.Response:
        federation.record("dic.test", "careSummary", "practice", "0" if task_status == "completed" else "8")
        if received:
            federation.record("practice.test", "careSummary", "dic")
        return fhir(201, {"resourceType": "Task", "status": task_status})

    federation.route("POST", "dic.test/fhir/Task", start)


AUDITED = """\
- process: {at: hospital, name: careSummary, target: gp, patients: [anna]}
  expect: {status: 201, invariants: [cross-node-audited]}
"""


def test_cross_node_audited_holds_when_both_ends_hold_a_new_record(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.record("practice.test", "careSummary", "dic")  # an older exchange must not count
    careSummary_at_the_nodes(federation, received=True)
    [step] = run(targets, federation, scenario(tmp_path, AUDITED))
    assert step.outcome is Outcome.PASSED, step.message
    assert step.requirements == ("HUB-INV-04",)


def test_cross_node_audited_is_violated_when_the_receiver_recorded_nothing_new(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    federation.record("practice.test", "careSummary", "dic")  # from before the step
    careSummary_at_the_nodes(federation, received=False)
    [step] = run(targets, federation, scenario(tmp_path, AUDITED))
    assert step.outcome is Outcome.FAILED
    assert step.message == "cross-node-audited: practice holds no new AuditEvent of careSummary from dic"
    assert any("/fhir/AuditEvent?date=ge" in exchange.url for exchange in step.exchanges)


@pytest.mark.parametrize(
    ("process", "peer", "outcome"),
    [("ping", "dic", "0"), ("careSummary", "research", "0"), ("careSummary", "dic", "4")],
    ids=["other process", "other peer", "refused"],
)
def test_cross_node_audited_counts_only_a_record_of_this_exchange(
    tmp_path: Path, targets: Targets, process: str, peer: str, outcome: str
) -> None:
    federation = Federation()

    def start(_request: httpx.Request) -> httpx.Response:
        federation.record("dic.test", "careSummary", "practice")
        federation.record("practice.test", process, peer, outcome)
        return fhir(201, {"resourceType": "Task", "status": "completed"})

    federation.route("POST", "dic.test/fhir/Task", start)
    [step] = run(targets, federation, scenario(tmp_path, AUDITED))
    assert step.outcome is Outcome.FAILED
    assert step.message == "cross-node-audited: practice holds no new AuditEvent of careSummary from dic"


def test_a_step_failing_its_expectations_shows_its_own_exchange_not_the_audit_the_runner_read(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    careSummary_at_the_nodes(federation, received=True)
    journey = scenario(tmp_path, AUDITED.replace("status: 201", "status: 201, fhir: [{path: status, equals: failed}]"))
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.FAILED
    assert [exchange.url for exchange in step.exchanges] == ["https://dic.test/fhir/Task"]


def test_cross_node_audited_needs_the_audit_capability_at_both_ends(tmp_path: Path, targets: Targets) -> None:
    practice = node(tmp_path, "practice", {"ingest", "read", "processes"}, ("suite",))
    reduced = Targets("no audit at the practice", {**targets.nodes, "practice": practice})
    [step] = run(reduced, Federation(), scenario(tmp_path, AUDITED))
    assert step.outcome is Outcome.NOT_APPLICABLE
    assert step.message == "node practice lacks the capability 'audit'"


def test_a_process_to_a_node_not_among_the_targets_is_not_applicable_not_failed(
    tmp_path: Path, targets: Targets
) -> None:
    """A federation under test without the receiving node cannot show what the process does there."""
    alone = Targets("the dic alone", {"dic": targets.nodes["dic"]})
    federation = Federation()
    careSummary_at_the_nodes(federation, received=True)
    [step] = run(
        alone,
        federation,
        scenario(
            tmp_path,
            "- process: {at: hospital, name: careSummary, target: gp, patients: [anna]}\n  expect: {status: 201}\n",
        ),
    )
    assert step.outcome is Outcome.NOT_APPLICABLE
    assert step.message == "site 'practice' is not among the targets"
    assert not federation.sent("POST", "dic.test/fhir/Task"), "nothing was started"


CONSENT_ENFORCED = """\
- process: {at: hospital, name: careSummary, target: gp, patients: [anna]}
  expect: {status: 201, invariants: [consent-enforced]}
"""


def test_consent_enforced_is_violated_when_a_patient_without_consent_was_sent(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route("POST", "dic.test/ttp-fhir/fhir/gics/$isConsented", fhir(200, consented(value=False)))
    careSummary_at_the_nodes(federation, received=True)
    [step] = run(targets, federation, scenario(tmp_path, CONSENT_ENFORCED))
    assert step.outcome is Outcome.FAILED
    assert "consent-enforced: the Task is 'completed' although anna gave no consent .5" in step.message
    assert "consent-enforced: practice received a careSummary from dic although anna gave no consent" in step.message
    [asked] = federation.sent("POST", "dic.test/ttp-fhir/fhir/gics/$isConsented")
    parameters = {p["name"]: p for p in json.loads(asked.content)["parameter"]}
    assert parameters["personIdentifier"]["valueIdentifier"] == {"system": KVNR_SYSTEM, "value": ANNA.kvnr}
    assert parameters["policy"]["valueCoding"]["code"] == "2.16.840.1.113883.3.1937.777.24.5.3.5"
    assert asked.headers["authorization"] == "Bearer dic-trustcentre-secret"


def test_consent_enforced_holds_when_the_process_without_consent_failed_and_nothing_arrived(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    federation.route("POST", "dic.test/ttp-fhir/fhir/gics/$isConsented", fhir(200, consented(value=False)))
    careSummary_at_the_nodes(federation, received=False, task_status="failed")
    [step] = run(targets, federation, scenario(tmp_path, CONSENT_ENFORCED))
    assert step.outcome is Outcome.PASSED, step.message


def test_an_invariant_that_cannot_be_checked_is_an_error_not_a_pass(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route("POST", "dic.test/ttp-fhir/fhir/gics/$isConsented", fhir(503, {}))
    careSummary_at_the_nodes(federation, received=False, task_status="failed")
    [step] = run(targets, federation, scenario(tmp_path, CONSENT_ENFORCED))
    assert step.outcome is Outcome.ERROR
    assert "$isConsented answered 503" in step.message


def test_identifying_data_on_a_research_read_is_reported_where_it_is(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    leaked = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": ANNA.birth_date}
    federation.route("GET", "practice.test/fhir/Patient", fhir(200, bundle(leaked, total=1)))
    journey = scenario(
        tmp_path,
        """\
        - read: {at: gp, query: "Patient?gender=female"}
          expect: {status: 200, count: 1, invariants: [no-identifying-data]}
        """,
    )
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.FAILED
    assert f"no-identifying-data: $.entry[0].resource.birthDate: '{ANNA.birth_date}' contains" in step.message


def pseudonymised(pseudonym: str, domain: str = "research-demo") -> dict[str, Any]:
    system = f"https://hubnode.org/fhir/sid/pseudonym/{domain}"
    return {"resourceType": "Patient", "id": pseudonym, "identifier": [{"system": system, "value": pseudonym}]}


def trust_centre_resolving(federation: Federation, originals: dict[str, str]) -> None:
    def resolve(request: httpx.Request) -> httpx.Response:
        asked = [p["valueString"] for p in json.loads(request.content)["parameter"] if p["name"] == "pseudonym"]
        parts = [
            {
                "name": "original",
                "part": [
                    {"name": "original", "valueIdentifier": {"value": originals[p]}},
                    {"name": "pseudonym", "valueIdentifier": {"value": p}},
                ],
            }
            for p in asked
            if p in originals
        ]
        return fhir(200, {"resourceType": "Parameters", "parameter": parts})

    federation.route("POST", "dic.test/ttp-fhir/fhir/gpas/$dePseudonymize", resolve)


PSEUDONYM_READ = """\
- read: {at: gp, query: "Patient?gender=female"}
  expect: {status: 200, invariants: [one-pseudonym-per-domain]}
"""


def test_two_pseudonyms_of_one_person_in_a_domain_are_a_violation(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route("GET", "practice.test/fhir/Patient", fhir(200, bundle(pseudonymised("RD1"), pseudonymised("RD2"))))
    trust_centre_resolving(federation, {"RD1": "mpi-7", "RD2": "mpi-7"})
    [step] = run(targets, federation, scenario(tmp_path, PSEUDONYM_READ))
    assert step.outcome is Outcome.FAILED
    assert step.message == "one-pseudonym-per-domain: one person has two pseudonyms in research-demo: RD1 and RD2"


def test_a_pseudonym_that_changes_between_steps_is_a_violation(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    answers = iter([bundle(pseudonymised("RD1")), bundle(pseudonymised("RD9"))])
    federation.route("GET", "practice.test/fhir/Patient", lambda _request: fhir(200, next(answers)))
    trust_centre_resolving(federation, {"RD1": "mpi-7", "RD9": "mpi-7"})
    first, second = run(targets, federation, scenario(tmp_path, PSEUDONYM_READ + PSEUDONYM_READ))
    assert first.outcome is Outcome.PASSED, first.message
    assert second.outcome is Outcome.FAILED
    assert "a person's pseudonym was RD1 at journey step 1, now RD9" in second.message


def test_a_patient_without_a_pseudonym_or_with_an_unknown_one_is_a_violation(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    plain = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": KVNR_SYSTEM, "value": ANNA.kvnr}]}
    federation.route("GET", "practice.test/fhir/Patient", fhir(200, bundle(plain, pseudonymised("RD5"))))
    trust_centre_resolving(federation, {})
    [step] = run(targets, federation, scenario(tmp_path, PSEUDONYM_READ))
    assert step.outcome is Outcome.FAILED
    assert "Patient/p1 carries no pseudonym" in step.message
    assert "RD5 is not a pseudonym the trust centre knows in research-demo" in step.message


def test_a_consent_check_asks_once_per_policy_and_each_answer_must_meet_the_expectation(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()
    answers = iter([consented(value=True), consented(value=False)])
    federation.route("POST", "dic.test/ttp-fhir/fhir/gics/$isConsented", lambda _request: fhir(200, next(answers)))
    journey = scenario(
        tmp_path,
        """\
        - consent: {at: hospital, patient: anna, action: check, policies: ["5", "8"]}
          expect: {status: 200, fhir: [{path: "parameter[name=consented].valueBoolean", equals: true}]}
        """,
    )
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.FAILED
    assert len(federation.requests) == 2
    assert step.message.startswith("POST https://dic.test/ttp-fhir/fhir/gics/$isConsented: parameter[name=consented]")
    assert "got [False]" in step.message


def test_a_grant_sends_an_mii_consent_to_add_consent(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route("POST", "dic.test/ttp-fhir/fhir/gics/$addConsent", fhir(200, {"resourceType": "Parameters"}))
    journey = scenario(
        tmp_path,
        """\
        - consent: {at: gp, patient: anna, action: grant, policies: ["5", "8"]}
          expect: {status: 200, resource_type: Parameters}
        """,
    )
    [step] = run(targets, federation, journey)
    assert step.outcome is Outcome.PASSED, step.message
    body = json.loads(federation.requests[0].content)
    resource = next(p["resource"] for p in body["parameter"] if p["name"] == "resource")
    assert resource["patient"]["identifier"] == {"system": KVNR_SYSTEM, "value": ANNA.kvnr}
    codes = [p["code"][0]["coding"][0]["code"] for p in resource["provision"]["provision"]]
    assert codes == ["2.16.840.1.113883.3.1937.777.24.5.3.5", "2.16.840.1.113883.3.1937.777.24.5.3.8"]


def test_a_wait_polls_the_task_until_the_expectation_holds(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route(
        "POST", "dic.test/fhir/Task", fhir(201, {"resourceType": "Task", "id": "t1", "status": "requested"})
    )
    states = iter(["in-progress", "in-progress", "completed"])
    federation.route(
        "GET", "dic.test/fhir/Task/t1", lambda _r: fhir(200, {"resourceType": "Task", "status": next(states)})
    )
    journey = scenario(
        tmp_path,
        """\
        - process: {at: hospital, name: ping, target: gp}
          expect: {status: 201}
        - wait: {seconds: 5}
          expect: {fhir: [{path: status, equals: completed}]}
        """,
    )
    started, waited = run(targets, federation, journey)
    assert started.outcome is Outcome.PASSED
    assert waited.outcome is Outcome.PASSED, waited.message
    assert len(federation.sent("GET", "dic.test/fhir/Task/t1")) == 3


def test_a_wait_may_poll_an_earlier_step_by_its_id(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route("POST", "dic.test/fhir/Task", fhir(201, {"resourceType": "Task", "id": "t1", "status": "failed"}))
    states = iter(["failed", "completed"])
    federation.route(
        "GET", "dic.test/fhir/Task/t1", lambda _r: fhir(200, {"resourceType": "Task", "status": next(states)})
    )
    federation.route("GET", "dic.test/fhir/Patient", fhir(200, {"resourceType": "Bundle", "type": "searchset"}))
    journey = scenario(
        tmp_path,
        """        - process: {at: hospital, name: ping, target: gp}
          id: started
        - read: {at: hospital, query: Patient}
        - wait: {seconds: 5, of: started}
          expect: {fhir: [{path: status, equals: completed}]}
        """,
    )
    _, _, waited = run(targets, federation, journey)
    assert waited.outcome is Outcome.PASSED, waited.message
    assert len(federation.sent("GET", "dic.test/fhir/Task/t1")) == 2
    assert len(federation.sent("GET", "dic.test/fhir/Patient")) == 1, "the step before it is not polled"


def test_a_wait_that_runs_out_of_time_fails_with_the_last_answer(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.route(
        "POST", "dic.test/fhir/Task", fhir(201, {"resourceType": "Task", "id": "t1", "status": "requested"})
    )
    federation.route("GET", "dic.test/fhir/Task/t1", fhir(200, {"resourceType": "Task", "status": "in-progress"}))
    journey = scenario(
        tmp_path,
        """\
        - process: {at: hospital, name: ping, target: gp}
        - wait: {seconds: 0.05}
          expect: {fhir: [{path: status, equals: completed}]}
        """,
    )
    _, waited = run(targets, federation, journey)
    assert waited.outcome is Outcome.FAILED
    assert "got ['in-progress']" in waited.message


def certificate_of(tmp_path: Path, site: str) -> ClientCertificate:
    """A node certificate for `site` from a throwaway CA, as PEM files (the mock transport never presents it)."""
    now = datetime.now(UTC)
    issued = pki.issue_node(pki.issue_ca("test", now), site, (), now)
    cert, key = tmp_path / f"{site}.crt", tmp_path / f"{site}.key"
    cert.write_bytes(pki.certificate_pem(issued.certificate))
    key.write_bytes(pki.key_pem(issued.key))
    return ClientCertificate(cert, key)


@pytest.fixture
def doors(tmp_path: Path, targets: Targets) -> Targets:
    """The federation with a peer door at the hospital, its `valid` certificate being the practice's."""
    hospital = replace(
        targets.nodes["dic"],
        peer_url="https://peer.dic.test",
        client_certificates={"valid": certificate_of(tmp_path, "practice")},
        capabilities=targets.nodes["dic"].capabilities | {"mtls"},
    )
    return replace(targets, nodes={**targets.nodes, "dic": hospital})


REFUSED = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "not on the allow list"}]}


def peer_door(federation: Federation, status: int, answer: object, audited: tuple[str, str, str] | None) -> None:
    """The hospital's peer door answers `status` with `answer`, auditing (process, peer, outcome) if given."""

    def knock(_request: httpx.Request) -> httpx.Response:
        if audited is not None:
            federation.record("dic.test", *audited)
        return fhir(status, answer)

    federation.route("POST", "peer.dic.test/fhir/Task", knock)


def trust_step(certificate: str, process: str = "ping", status: int = 403, requester: str = "") -> str:
    claimed = f", requester: {requester}" if requester else ""
    return f"""\
- trust: {{at: hospital, certificate: {certificate}, process: {process}{claimed}}}
  expect: {{status: {status}}}
"""


def test_a_trust_step_posts_a_peer_task_claiming_the_certificates_site_and_passes_an_audited_refusal(
    tmp_path: Path, doors: Targets
) -> None:
    federation = Federation()
    federation.record("dic.test", "peer-task", "unknown", "4")  # an older refusal must not count
    peer_door(federation, 403, REFUSED, ("peer-task", "unknown", "4"))
    [step] = run(doors, federation, scenario(tmp_path, trust_step("valid", "careSummary")))
    assert step.outcome is Outcome.PASSED, step.message
    [sent] = federation.sent("POST", "peer.dic.test/fhir/Task")
    assert "authorization" not in sent.headers
    task = json.loads(sent.content)
    assert task["instantiatesCanonical"] == "https://hubnode.org/fhir/process/careSummary|1.0"
    assert task["requester"]["identifier"]["value"] == "practice"
    assert task["identifier"][0]["value"] == "run1-journey-1"


def test_a_trust_step_can_claim_another_requester_and_without_a_certificate_claims_none(
    tmp_path: Path, doors: Targets
) -> None:
    federation = Federation()
    peer_door(federation, 403, REFUSED, ("peer-task", "unknown", "4"))
    run(doors, federation, scenario(tmp_path, trust_step("valid", requester="hospital") + trust_step("none")))
    claimed, anonymous = (json.loads(r.content) for r in federation.sent("POST", "peer.dic.test/fhir/Task"))
    assert claimed["requester"]["identifier"]["value"] == "dic"
    assert "requester" not in anonymous


@pytest.mark.parametrize(
    ("answer", "audited", "message"),
    [
        (REFUSED, None, "dic holds no new AuditEvent of a refusal"),
        (REFUSED, ("ping", "practice", "0"), "dic holds no new AuditEvent of a refusal"),
        ({"error": "forbidden"}, ("peer-task", "unknown", "4"), "the refusal is without resourceType, not an Operat"),
    ],
    ids=["not audited", "audited as served", "no OperationOutcome"],
)
def test_a_refusal_that_is_not_audited_or_no_operation_outcome_fails(
    tmp_path: Path, doors: Targets, answer: object, audited: tuple[str, str, str] | None, message: str
) -> None:
    federation = Federation()
    peer_door(federation, 403, answer, audited)
    [step] = run(doors, federation, scenario(tmp_path, trust_step("valid")))
    assert step.outcome is Outcome.FAILED
    assert message in step.message


@pytest.mark.parametrize(
    ("audited", "passed"),
    [(("ping", "practice", "0"), True), (("ping", "research", "0"), False), (None, False)],
    ids=["audited", "audited for another peer", "not audited"],
)
def test_an_accepted_peer_task_must_be_audited_as_answered_for_the_certificates_site(
    tmp_path: Path, doors: Targets, audited: tuple[str, str, str] | None, *, passed: bool
) -> None:
    federation = Federation()
    peer_door(federation, 200, {"resourceType": "Task", "status": "completed"}, audited)
    [step] = run(doors, federation, scenario(tmp_path, trust_step("valid", status=200)))
    assert (step.outcome is Outcome.PASSED) is passed, step.message
    if not passed:
        assert step.message == "dic holds no new AuditEvent of ping answered for practice"


def test_a_refusal_where_an_acceptance_is_expected_fails_with_the_nodes_reason(tmp_path: Path, doors: Targets) -> None:
    federation = Federation()
    peer_door(federation, 403, REFUSED, ("peer-task", "unknown", "4"))
    [step] = run(doors, federation, scenario(tmp_path, trust_step("valid", status=200)))
    assert step.outcome is Outcome.FAILED
    assert step.message == "status 403, expected 200; the node said: not on the allow list"


def test_a_trust_step_without_the_door_or_the_certificate_is_not_applicable_and_sends_nothing(
    tmp_path: Path, targets: Targets, doors: Targets
) -> None:
    federation = Federation()
    [no_door] = run(targets, federation, scenario(tmp_path, trust_step("valid")))
    [no_certificate] = run(doors, federation, scenario(tmp_path, trust_step("expired")))
    assert no_door.outcome is no_certificate.outcome is Outcome.NOT_APPLICABLE
    assert no_door.message == "node dic lacks the capability 'mtls'"
    assert no_certificate.message == "node dic has no client certificate 'expired' in the targets file"
    assert federation.requests == []


def test_a_retry_posts_retry_for_the_task_the_named_step_started(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    failed = {"resourceType": "Task", "id": "t1", "status": "failed", "statusReason": {"text": "peer down"}}
    federation.route("POST", "dic.test/fhir/Task", fhir(201, failed))
    federation.route("POST", "dic.test/fhir/Task/t1/$retry", fhir(200, {**failed, "status": "completed"}))
    journey = scenario(
        tmp_path,
        """\
        - id: first-try
          process: {at: hospital, name: ping, target: gp}
          expect: {status: 201, fhir: [{path: status, equals: failed}]}
        - retry: {at: hospital, of: first-try}
          expect: {status: 200, fhir: [{path: status, equals: completed}]}
        """,
    )
    first, retried = run(targets, federation, journey)
    assert (first.outcome, retried.outcome) == (Outcome.PASSED, Outcome.PASSED), retried.message
    [retry] = federation.sent("POST", "dic.test/fhir/Task/t1/$retry")
    assert retry.headers["authorization"] == "Bearer dic-suite-secret"


def test_a_retry_of_a_step_that_was_not_applicable_is_not_applicable(tmp_path: Path, targets: Targets) -> None:
    journey = scenario(
        tmp_path,
        """\
        - id: first-try
          applies_to: [portal]
          process: {at: hospital, name: ping, target: gp}
        - retry: {at: hospital, of: first-try}
        """,
    )
    _, retried = run(targets, Federation(), journey)
    assert retried.outcome is Outcome.NOT_APPLICABLE
    assert retried.message == "refers to step 1, which is not applicable here"


def test_control_steps_run_the_targets_commands_and_need_the_control_capability(tmp_path: Path) -> None:
    log = tmp_path / "door.log"
    command = ("python3", "-c", f"import sys; open({str(log)!r}, 'a').write(sys.argv[1] + ' ')")
    practice = replace(
        node(tmp_path, "practice", {*NODE_CAPABILITIES, "control"}),
        controls={"stop": (*command, "stop"), "start": (*command, "start")},
    )
    dic = node(tmp_path, "dic", NODE_CAPABILITIES)
    journey = scenario(
        tmp_path,
        """\
        - control: {at: gp, action: stop}
        - control: {at: gp, action: start}
        - control: {at: hospital, action: stop}
        """,
    )
    stopped, started, elsewhere = run(Targets("t", {"dic": dic, "practice": practice}), Federation(), journey)
    assert (stopped.outcome, started.outcome) == (Outcome.PASSED, Outcome.PASSED)
    assert log.read_text() == "stop start "
    assert elsewhere.outcome is Outcome.NOT_APPLICABLE
    assert elsewhere.message == "node dic lacks the capability 'control'"


def test_a_control_command_that_fails_is_an_error_naming_it(tmp_path: Path) -> None:
    practice = replace(
        node(tmp_path, "practice", {*NODE_CAPABILITIES, "control"}),
        controls={"stop": ("python3", "-c", "raise SystemExit(3)"), "start": ("true",)},
    )
    journey = scenario(tmp_path, "- control: {at: gp, action: stop}\n")
    [step] = run(Targets("t", {"practice": practice}), Federation(), journey)
    assert step.outcome is Outcome.ERROR
    assert "stop practice: python3 -c raise SystemExit(3) exited 3" in step.message


def test_an_audit_check_finds_a_successful_exchange_recorded_since_the_step_it_names(
    tmp_path: Path, targets: Targets
) -> None:
    federation = Federation()

    def withdraw(_request: httpx.Request) -> httpx.Response:
        federation.record("practice.test", "careSummary", "dic")  # something slipped through afterwards
        return fhir(200, {"resourceType": "Parameters"})

    federation.route("POST", "dic.test/ttp-fhir/fhir/gics/$withdrawConsent", withdraw)
    journey = scenario(
        tmp_path,
        """\
        - id: withdrawal
          consent: {at: hospital, patient: anna, action: withdraw, policies: ["5"]}
          expect: {status: 200}
        - audit: {since: withdrawal, processes: [careSummary, dataSend]}
        """,
    )
    _, audited = run(targets, federation, journey)
    assert audited.outcome is Outcome.FAILED
    assert audited.message == "practice recorded a successful careSummary with peer:dic (AuditEvent/1)"


def test_an_audit_check_passes_when_nothing_was_sent_since(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    federation.record("practice.test", "careSummary", "dic")  # before: not counted
    federation.route("POST", "dic.test/ttp-fhir/fhir/gics/$withdrawConsent", fhir(200, {"resourceType": "Parameters"}))
    journey = scenario(
        tmp_path,
        """\
        - id: withdrawal
          consent: {at: hospital, patient: anna, action: withdraw, policies: ["5"]}
        - audit: {since: withdrawal, processes: [careSummary]}
        """,
    )
    _, audited = run(targets, federation, journey)
    assert audited.outcome is Outcome.PASSED, audited.message


def test_headers_name_a_targets_client_certificate_as_a_forger_would_send_it(tmp_path: Path, targets: Targets) -> None:
    now = datetime.now(UTC)
    issued = pki.issue_node(pki.issue_ca("fed", now), "practice", (), now)
    (tmp_path / "valid.crt").write_bytes(pki.certificate_pem(issued.certificate))
    (tmp_path / "valid.key").write_bytes(pki.key_pem(issued.key))
    dic = replace(
        targets.nodes["dic"],
        client_certificates={"valid": ClientCertificate(tmp_path / "valid.crt", tmp_path / "valid.key")},
    )
    federation = Federation()
    federation.route("GET", "dic.test/fhir/Patient", fhir(401, {"resourceType": "OperationOutcome", "issue": [{}]}))
    journey = scenario(
        tmp_path,
        """\
        - read: {at: hospital, query: "Patient?_count=1"}
          headers: {X-Hubnode-Client-Cert: "{{ certificates.valid }}", X-Hubnode-Client-Verify: SUCCESS}
          expect: {status: 401}
        """,
    )
    [step] = run(replace(targets, nodes={**targets.nodes, "dic": dic}), federation, journey)
    assert step.outcome is Outcome.PASSED, step.message
    [sent] = federation.sent("GET", "dic.test/fhir/Patient")
    assert sent.headers["x-hubnode-client-cert"].startswith("-----BEGIN%20CERTIFICATE-----")
    assert sent.headers["x-hubnode-client-verify"] == "SUCCESS"


def test_a_replayed_key_must_answer_the_first_task_without_a_new_exchange(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    answers = iter([fhir(201, {"resourceType": "Task", "id": "t1", "status": "completed"})])

    def start(_request: httpx.Request) -> httpx.Response:
        return next(answers, fhir(200, {"resourceType": "Task", "id": "t2", "status": "completed"}))

    federation.route("POST", "dic.test/fhir/Task", start)
    journey = scenario(
        tmp_path,
        """\
        - process: {at: hospital, name: careSummary, target: gp, patients: [anna], idempotency_key: same}
          expect: {status: 201}
        - process: {at: hospital, name: careSummary, target: gp, patients: [anna], idempotency_key: same}
          expect: {invariants: [idempotent-replay]}
        """,
    )
    _, replay = run(targets, federation, journey)
    assert replay.outcome is Outcome.FAILED
    assert "the replay answered Task/t2, the first start Task/t1" in replay.message


def test_a_read_must_be_audited_with_its_patients_and_query(tmp_path: Path, targets: Targets) -> None:
    federation = Federation()
    patient = {"resourceType": "Patient", "id": "p1"}

    def read(request: httpx.Request) -> httpx.Response:
        events = federation.audit["dic.test"]
        query = base64.b64encode(request.url.query).decode()
        events.append(
            {
                "resourceType": "AuditEvent",
                "id": str(len(events) + 1),
                "subtype": [{"code": "read"}],
                "entity": [{"what": {"identifier": {"value": "Patient/p1"}}}, {"query": query}],
            }
        )
        return fhir(200, bundle(patient))

    federation.route("GET", "dic.test/fhir/Patient", read)
    federation.route("GET", "practice.test/fhir/Patient", fhir(200, bundle(patient)))
    journey = scenario(
        tmp_path,
        """\
        - read: {at: hospital, query: "Patient?gender=female&_count=5"}
          expect: {status: 200, invariants: [read-audited]}
        - read: {at: gp, query: "Patient?gender=female"}
          expect: {status: 200, invariants: [read-audited]}
        """,
    )
    audited, silent = run(targets, federation, journey)
    assert audited.outcome is Outcome.PASSED, audited.message
    assert silent.outcome is Outcome.FAILED
    assert "practice recorded no read naming Patient/p1 and 'gender=female'" in silent.message


def test_an_optional_credential_is_sent_only_where_the_targets_file_has_it(tmp_path: Path) -> None:
    open_server = replace(node(tmp_path, "dic", {"fhir"}, ()), tokens={})
    federation = Federation()
    statement = {"resourceType": "CapabilityStatement", "status": "active", "date": "2026", "kind": "instance",
                 "fhirVersion": "4.0.1", "format": ["json"]}  # fmt: skip
    federation.route("GET", "dic.test/fhir/metadata", fhir(200, statement))
    path = tmp_path / "journey.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: journey
        title: t
        journey: 0
        actors: {server: {site: dic, credential: "suite?"}}
        steps:
          - fhir: {at: server, method: GET, path: metadata}
            expect: {status: 200, fhir: [{path: fhirVersion, equals: "{{ '4.0' }}.1"}], invariants: [valid-fhir]}
        """)
    )
    [step] = run(Targets("open", {"dic": open_server}), federation, load_scenario(path))
    assert step.outcome is Outcome.PASSED, step.message
    assert "authorization" not in federation.sent("GET", "dic.test/fhir/metadata")[0].headers


def test_a_fhir_step_s_path_is_a_template(tmp_path: Path) -> None:
    server = node(tmp_path, "dic", {"fhir"})
    federation = Federation()
    federation.route("GET", "dic.test/fhir/Patient", fhir(200, {"resourceType": "Bundle", "type": "searchset"}))
    path = tmp_path / "journey.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: journey
        title: t
        journey: 0
        actors: {server: {site: dic}}
        patients: {frieda: {seed: 9201, site: dic, gender: female, birth_year: 1966, conditions: [I10]}}
        steps:
          - fhir: {at: server, method: GET, path: "Patient?identifier=kvnr|{{ patients.frieda.kvnr }}"}
            expect: {status: 200}
        """)
    )
    scenario = load_scenario(path)
    [step] = run(Targets("t", {"dic": server}), federation, scenario)
    assert step.outcome is Outcome.PASSED, step.message
    [sent] = federation.sent("GET", "dic.test/fhir/Patient")
    assert sent.url.params["identifier"] == f"kvnr|{scenario.persons()['frieda'].kvnr}"


def test_a_fresh_patient_is_a_new_person_in_every_run_and_the_same_within_one(tmp_path: Path) -> None:
    path = tmp_path / "journey.yaml"
    path.write_text(
        textwrap.dedent("""\
        name: journey
        title: t
        journey: 0
        actors: {server: {site: dic}}
        patients:
          kept: {seed: 1, conditions: [I10]}
          fresh: {seed: 1, fresh: true, conditions: [I10]}
        steps:
          - wait: {seconds: 0}
        """)
    )
    scenario = load_scenario(path)
    first, second = scenario.for_run("run-1", "2026-01-01T00:00:00Z"), scenario.for_run("run-2", "2026-01-01T00:00:00Z")
    assert first.persons()["kept"] == second.persons()["kept"] == scenario.persons()["kept"]
    assert first.persons()["fresh"].kvnr != second.persons()["fresh"].kvnr
    assert first.persons()["fresh"] == scenario.for_run("run-1", "2026-01-02T00:00:00Z").persons()["fresh"]
    targets = Targets("t", {"dic": node(tmp_path, "dic", {"fhir"})})
    run_of = Runner(targets, options=RunOptions(run_id="run-1")).start(scenario)
    assert run_of.scene.scenario.persons()["fresh"] == first.persons()["fresh"]
