"""The TTP gateway group: every HUB-TTP requirement checked, requests in the IGs' shapes, checks that can fail.

A small stand-in gateway answers in the IGs' response shapes (gPAS, gICS, E-PIX examples); a stand-in that
breaks the contract in one way must fail the step that checks it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.parameters import Parameters

from conformance.requirements import load_requirements
from conformance.results import Outcome
from conformance.scenario import SCENARIOS_DIR, Scenario, Step, TrustCentreCall, load_scenario, step_body
from conformance.targets import Targets
from tests.unit.conformance.test_runner import Federation, fhir, node, run

SCENARIO = load_scenario(SCENARIOS_DIR / "ttp-gateway.yaml")
BASE = "dic.test/ttp-fhir/fhir"
GPAS = "https://ths-greifswald.de/gpas"
MATCH_STATUS = "https://ths-greifswald.de/fhir/CodeSystem/epix/MatchStatus"
NOT_FOUND = {"system": "http://hl7.org/fhir/issue-type", "code": "not-found", "display": "Not Found"}


def test_every_ttp_requirement_is_verified_by_a_step_of_the_ttp_group() -> None:
    ttp = {rid for rid, requirement in load_requirements().items() if requirement.area == "ttp"}
    verified = {rid for step in SCENARIO.steps for rid in step.verifies}
    assert ttp
    assert ttp == {rid for rid in verified if rid.startswith("HUB-TTP-")}
    assert all(isinstance(step.action, TrustCentreCall) for step in SCENARIO.steps)


def test_the_ttp_group_speaks_at_the_public_door_with_the_trustcentre_credential() -> None:
    assert {actor.credential for actor in SCENARIO.actors.values()} == {"trustcentre"}
    assert all(isinstance(step.action, TrustCentreCall) and step.action.certificate is None for step in SCENARIO.steps)


@pytest.mark.parametrize("step", SCENARIO.steps, ids=lambda step: f"{step.index}-{step.title[:40]}")
def test_every_ttp_request_is_an_r4_parameters_unique_to_the_run(step: Step) -> None:
    kept = {name: 5654986 if name.endswith("link") else f"{name.replace('_', '-')}-1" for name in SCENARIO.keepers()}
    body = step_body(SCENARIO.for_run("run-1", SCENARIO.started, kept), step)
    Parameters.model_validate(body)
    again = step_body(SCENARIO.for_run("run-2", SCENARIO.started, kept), step)
    assert (body != again) is ("run-1" in json.dumps(body))


def part(name: str, value: object, kind: str = "valueIdentifier") -> dict[str, Any]:
    if kind == "valueIdentifier":
        return {"name": name, "valueIdentifier": {"system": GPAS, "value": value}}
    return {"name": name, kind: value}


def parameters(*items: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(items)}


def asked(request: httpx.Request, name: str) -> list[Any]:
    return [p.get("valueString") for p in json.loads(request.content)["parameter"] if p["name"] == name]


class Gpas:
    """gPAS as the IG's examples answer: per item, an `error` part for what it does not know."""

    def __init__(self, *, whole_request_fails: bool = False) -> None:
        self.pseudonyms: dict[str, str] = {}
        self.counter = itertools.count(1)
        self.whole_request_fails = whole_request_fails

    def pair(self, name: str, original: str) -> dict[str, Any]:
        target = part("target", "MIRACUM")
        return {
            "name": name,
            "part": [target, part("original", original), part("pseudonym", self.pseudonyms[original])],
        }

    def allow_create(self, request: httpx.Request) -> httpx.Response:
        for original in asked(request, "original"):
            self.pseudonyms.setdefault(original, f"mrcm_{next(self.counter)}")
        return fhir(200, parameters(*(self.pair("pseudonym", o) for o in asked(request, "original"))))

    def pseudonymize(self, request: httpx.Request) -> httpx.Response:
        originals = asked(request, "original")
        if self.whole_request_fails and any(o not in self.pseudonyms for o in originals):
            return fhir(404, {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "unknown original"}]})
        found = [
            self.pair("pseudonym", o)
            if o in self.pseudonyms
            else {"name": "error", "part": [part("original", o), part("error-code", NOT_FOUND, "valueCoding")]}
            for o in originals
        ]
        return fhir(200, parameters(*found))

    def resolve(self, request: httpx.Request) -> httpx.Response:
        originals = {p: o for o, p in self.pseudonyms.items()}
        return fhir(200, parameters(*(self.pair("original", originals[p]) for p in asked(request, "pseudonym"))))

    def route(self, federation: Federation) -> None:
        federation.route("POST", f"{BASE}/gpas/$pseudonymizeAllowCreate", self.allow_create)
        federation.route("POST", f"{BASE}/gpas/$pseudonymize", self.pseudonymize)
        federation.route("POST", f"{BASE}/gpas/$dePseudonymize", self.resolve)


@pytest.fixture
def targets(tmp_path: Path) -> Targets:
    return Targets("a TTP gateway", {"dic": node(tmp_path, "dic", {"trustcentre"}, ("trustcentre",))})


def steps(first: int, last: int) -> Scenario:
    """The group's steps `first` to `last` (1-based), which must not use a value kept before `first`."""
    return replace(SCENARIO, steps=SCENARIO.steps[first - 1 : last])


def test_a_gpas_that_answers_as_the_ig_passes_the_round_trip_and_the_per_item_answer(targets: Targets) -> None:
    federation = Federation()
    Gpas().route(federation)
    results = run(targets, federation, steps(1, 3))
    assert [r.outcome for r in results] == [Outcome.PASSED] * 3, [r.message for r in results]
    [resolved] = federation.sent("POST", f"{BASE}/gpas/$dePseudonymize")
    assert asked(resolved, "pseudonym") == ["mrcm_1"]


def test_a_gpas_failing_the_whole_request_for_one_unknown_original_fails_the_per_item_check(targets: Targets) -> None:
    federation = Federation()
    Gpas(whole_request_fails=True).route(federation)
    *_, per_item = run(targets, federation, steps(1, 3))
    assert per_item.outcome is Outcome.FAILED
    assert "status 404, expected 200" in per_item.message
    assert "the node said: unknown original" in per_item.message


def test_a_gpas_resolving_a_pseudonym_to_another_original_fails_the_round_trip(targets: Targets) -> None:
    federation = Federation()
    gpas = Gpas()
    gpas.route(federation)
    wrong = parameters({"name": "original", "part": [part("original", "someone-else"), part("pseudonym", "mrcm_1")]})
    federation.route("POST", f"{BASE}/gpas/$dePseudonymize", fhir(200, wrong))
    _, resolved, _ = run(targets, federation, steps(1, 3))
    assert resolved.outcome is Outcome.FAILED
    assert "expected every value to equal 'round-trip-a-run1', got ['someone-else']" in resolved.message


def consent_bundle(*codes: str) -> dict[str, Any]:
    provisions = [
        {"type": "permit", "code": [{"coding": [{"code": f"2.16.840.1.113883.3.1937.777.24.5.3.{c}"}]}]} for c in codes
    ]
    consent = {"resourceType": "Consent", "provision": {"type": "deny", "provision": provisions}}
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": consent}]}


def consented(answer: Callable[[str], bool]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        [policy] = [p["valueCoding"]["code"] for p in json.loads(request.content)["parameter"] if p["name"] == "policy"]
        return fhir(200, parameters(part("consented", answer(policy), "valueBoolean")))

    return handler


@pytest.mark.parametrize(
    ("permits", "answer", "failed"),
    [
        (("2", "3", "5", "6", "7", "8"), lambda code: code.endswith(".8"), set()),
        (("2", "3", "5", "6", "7", "8"), lambda _code: True, {3}),
        (("2", "3", "5", "6", "7", "8", "20"), lambda code: code.endswith(".8"), {1}),
        (("2", "3"), lambda _code: False, {1, 2}),
    ],
    ids=["as the IG", "everything consented", "declined module permitted", "accepted module not granted"],
)
def test_add_consent_then_is_consented_holds_a_gics_to_the_modules_the_questionnaire_accepted(
    targets: Targets, permits: tuple[str, ...], answer: Callable[[str], bool], failed: set[int]
) -> None:
    federation = Federation()
    federation.route("POST", f"{BASE}/gics/$addConsent", fhir(200, consent_bundle(*permits)))
    federation.route("POST", f"{BASE}/gics/$isConsented", consented(answer))
    results = run(targets, federation, steps(13, 15))
    assert {i for i, r in enumerate(results, 1) if r.outcome is Outcome.FAILED} == failed, [r.message for r in results]


@pytest.mark.parametrize(("nested", "passes"), [(True, True), (False, False)], ids=["one bundle entry", "flat"])
def test_the_current_consent_is_one_entry_holding_the_consents_resources(
    targets: Targets, nested: bool, passes: bool
) -> None:
    [step] = [s for s in SCENARIO.steps if "currentConsentForPersonAndTemplate" in s.title]
    current = consent_bundle("8")
    answer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": current}]} if nested else current
    federation = Federation()
    federation.route("POST", f"{BASE}/gics/$currentConsentForPersonAndTemplate", fhir(200, answer))
    [result] = run(targets, federation, steps(step.index, step.index))
    assert (result.outcome is Outcome.PASSED) is passes, result.message


def match_result(status: str, mpi: str, identity: str) -> dict[str, Any]:
    person = {
        "resourceType": "Person",
        "identifier": [{"system": "https://ths-greifswald.de/fhir/epix/identifier/MPI", "value": mpi}],
    }
    return parameters(
        {
            "name": "matchResult",
            "part": [
                {"name": "sourceIdentity", "resource": {"resourceType": "Patient"}},
                {"name": "matchStatus", "valueCoding": {"system": MATCH_STATUS, "code": status}},
                {"name": "mpiPerson", "resource": person},
                {"name": "identity", "resource": {"resourceType": "Patient", "id": identity}},
            ],
        }
    )


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (match_result("PERFECT_MATCH", "1001", "52"), None),
        (match_result("MATCH", "1001", "53"), "expected every value to equal 'PERFECT_MATCH', got ['MATCH']"),
        (match_result("PERFECT_MATCH", "1002", "52"), "expected a value '1001' among ['1002']"),
    ],
    ids=["as the IG", "merely a match", "another MPI person"],
)
def test_the_same_identity_twice_must_be_a_perfect_match_with_the_kept_mpi(
    targets: Targets, second: dict[str, Any], message: str | None
) -> None:
    federation = Federation()
    answers = iter([match_result("NO_MATCH", "1001", "52"), second])
    federation.route("POST", f"{BASE}/epix/$addPatient", lambda _request: fhir(200, next(answers)))
    first, again = run(targets, federation, steps(24, 25))
    assert first.outcome is Outcome.PASSED, first.message
    if message is None:
        assert again.outcome is Outcome.PASSED, again.message
    else:
        assert again.outcome is Outcome.FAILED
        assert message in again.message


def test_a_possible_match_that_is_still_listed_after_its_removal_fails(targets: Targets) -> None:
    federation = Federation()
    federation.route("POST", f"{BASE}/epix/$addPatient", fhir(200, match_result("NO_MATCH", "1001", "52")))
    match = {"name": "match", "part": [
        {"name": "matchItem", "resource": {"resourceType": "Patient", "id": "52"}},
        {"name": "matchItem", "resource": {"resourceType": "Patient", "id": "53"}},
        {"name": "matchScore", "valueDecimal": 0.965},
        {"name": "matchResult", "valueDecimal": 0.952},
        {"name": "linkId", "valueInteger": 5654986},
    ]}  # fmt: skip
    federation.route("POST", f"{BASE}/epix/$queryPossibleMatches", fhir(200, parameters(match)))
    federation.route("POST", f"{BASE}/epix/$removePossibleMatches", fhir(200, {"resourceType": "OperationOutcome"}))
    scenario = replace(SCENARIO, steps=(SCENARIO.steps[23], *SCENARIO.steps[26:29]))
    _, listed, removed, still = run(targets, federation, scenario)
    assert (listed.outcome, removed.outcome) == (Outcome.PASSED, Outcome.PASSED), (listed.message, removed.message)
    [sent] = federation.sent("POST", f"{BASE}/epix/$removePossibleMatches")
    assert {"name": "linkId", "valueInteger": 5654986} in json.loads(sent.content)["parameter"]
    assert still.outcome is Outcome.FAILED
    assert "parameter[name=match]: expected no value" in still.message
