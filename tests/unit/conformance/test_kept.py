"""`keep:`: a value an answer held, carried to later steps; mistakes found at load, missing values named at run."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest

from conformance._yaml import FileProblemsError
from conformance.results import Outcome
from conformance.scenario import load_scenario
from conformance.targets import Targets
from tests.unit.conformance.test_runner import Federation, fhir, node, run

HEADER = """\
name: journey
title: Round trips through a trust centre
journey: 0
actors:
  tc: {site: dic}
steps:
"""
PSEUDONYMIZE = '{"resourceType": "Parameters", "parameter": [{"name": "original", "valueString": "o-{{ run }}"}]}\n'
RESOLVE = '{"resourceType": "Parameters", "parameter": [{"name": "pseudonym", "valueString": {{ kept.psn|tojson }}}]}'
ROUND_TRIP = """\
- trustcentre: {at: tc, operation: gpas/$pseudonymizeAllowCreate, template: pseudonymize.json.j2}
  expect: {status: 200}
  keep: {psn: "parameter[name=pseudonym].part[name=pseudonym].valueIdentifier.value"}
- trustcentre: {at: tc, operation: gpas/$dePseudonymize, template: resolve.json.j2}
  expect:
    status: 200
    fhir:
      - {path: "parameter[name=original].part[name=original].valueIdentifier.value", equals: "o-{{ run }}"}
      - {path: "parameter[name=original].part[name=pseudonym].valueIdentifier.value", equals: "{{ kept.psn }}"}
"""


def pair(name: str, original: str, pseudonym: str) -> dict[str, object]:
    parts = [("original", original), ("pseudonym", pseudonym)]
    return {"name": name, "part": [{"name": n, "valueIdentifier": {"value": v}} for n, v in parts]}


def write(tmp_path: Path, steps: str) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "pseudonymize.json.j2").write_text(PSEUDONYMIZE)
    (tmp_path / "templates" / "resolve.json.j2").write_text(RESOLVE)
    path = tmp_path / "journey.yaml"
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(steps), "  "))
    return path


@pytest.fixture
def trustcentre(tmp_path: Path) -> Targets:
    return Targets("t", {"dic": node(tmp_path, "dic", {"trustcentre"}, ("trustcentre",))})


def gateway(made: str, resolved: str | None) -> Federation:
    """A trust centre that makes pseudonym `made` and resolves `resolved` (None: it knows none) to the original."""
    federation = Federation()
    created = {"resourceType": "Parameters", "parameter": [pair("pseudonym", "o-run1", made)]}
    federation.route("POST", "dic.test/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate", fhir(200, created))

    def resolve(request: httpx.Request) -> httpx.Response:
        asked = json.loads(request.content)["parameter"][0]["valueString"]
        known = resolved is not None and asked == resolved
        found = [pair("original", "o-run1", asked)] if known else [{"name": "error", "part": []}]
        return fhir(200, {"resourceType": "Parameters", "parameter": found})

    federation.route("POST", "dic.test/ttp-fhir/fhir/gpas/$dePseudonymize", resolve)
    return federation


def test_a_kept_value_is_sent_by_a_later_step_and_expected_back(tmp_path: Path, trustcentre: Targets) -> None:
    federation = gateway("psn-42", "psn-42")
    made, resolved = run(trustcentre, federation, load_scenario(write(tmp_path, ROUND_TRIP)))
    assert made.outcome is Outcome.PASSED, made.message
    assert resolved.outcome is Outcome.PASSED, resolved.message
    [asked] = federation.sent("POST", "dic.test/ttp-fhir/fhir/gpas/$dePseudonymize")
    assert json.loads(asked.content)["parameter"] == [{"name": "pseudonym", "valueString": "psn-42"}]


def test_a_round_trip_that_does_not_come_back_fails_on_the_kept_value(tmp_path: Path, trustcentre: Targets) -> None:
    _, resolved = run(trustcentre, gateway("psn-42", None), load_scenario(write(tmp_path, ROUND_TRIP)))
    assert resolved.outcome is Outcome.FAILED
    assert "expected every value to equal 'o-run1', got []" in resolved.message


def test_a_keep_path_reaching_nothing_fails_its_step_and_holds_back_the_steps_using_it(
    tmp_path: Path, trustcentre: Targets
) -> None:
    federation = gateway("psn-42", "psn-42")
    steps = ROUND_TRIP.replace("part[name=pseudonym].valueIdentifier", "part[name=pseudonym].valueString")
    made, resolved = run(trustcentre, federation, load_scenario(write(tmp_path, steps)))
    assert made.outcome is Outcome.FAILED
    assert made.message == (
        "keep psn: parameter[name=pseudonym].part[name=pseudonym].valueString.value reached nothing in the answer"
    )
    assert resolved.outcome is Outcome.ERROR
    assert resolved.message.startswith("uses kept.psn of step 1 (trustcentre gpas/$pseudonymizeAllowCreate")
    assert resolved.message.endswith("which failed")
    assert federation.sent("POST", "dic.test/ttp-fhir/fhir/gpas/$dePseudonymize") == []


def test_a_value_kept_by_a_step_that_was_not_applicable_makes_its_users_not_applicable(
    tmp_path: Path, trustcentre: Targets
) -> None:
    steps = "- applies_to: [portal]\n  " + ROUND_TRIP.removeprefix("- ")
    made, resolved = run(trustcentre, gateway("psn-42", "psn-42"), load_scenario(write(tmp_path, steps)))
    assert made.outcome is resolved.outcome is Outcome.NOT_APPLICABLE
    assert resolved.message.endswith("which is not applicable here")


def test_the_first_value_is_kept_and_the_load_notes_which_steps_use_it(tmp_path: Path, trustcentre: Targets) -> None:
    scenario = load_scenario(write(tmp_path, ROUND_TRIP))
    assert [step.uses_kept for step in scenario.steps] == [(), ("psn",)]
    assert scenario.keepers() == {"psn": 1}
    federation = gateway("psn-1", "psn-1")
    twice = {"resourceType": "Parameters", "parameter": [pair("pseudonym", "a", "psn-1"), pair("pseudonym", "b", "x")]}
    federation.route("POST", "dic.test/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate", fhir(200, twice))
    _, resolved = run(trustcentre, federation, scenario)
    assert resolved.outcome is Outcome.PASSED, resolved.message


def problems_of(path: Path) -> list[str]:
    with pytest.raises(FileProblemsError) as caught:
        load_scenario(path)
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            ROUND_TRIP.replace("keep: {psn:", "keep: {other:"),
            "step 2: query: kept.psn: no step keeps a value 'psn' (kept names: other)",
        ),
        (
            ROUND_TRIP.replace('"{{ kept.psn }}"', '"{{ kept.nothing }}"'),
            "step 2: query: kept.nothing: no step keeps a value 'nothing' (kept names: psn)",
        ),
        (
            "- trustcentre: {at: tc, operation: gpas/$dePseudonymize, template: resolve.json.j2}\n" + ROUND_TRIP,
            "step 1: template resolve.json.j2 line 1: kept.psn is kept by step 2, which comes after this one",
        ),
        (ROUND_TRIP.replace("{psn:", "{Psn:"), "step 1: keep 'Psn': a name of lowercase letters, digits and '_'"),
        (ROUND_TRIP.replace('"parameter[name=pseudonym].', '"parameter[name=pseudonym.'), "step 1: keep 'psn': "),
        (ROUND_TRIP.replace('{psn: "parameter', '{psn: 7, x: "parameter'), "step 1: keep 'psn' needs a path, got 7"),
        (ROUND_TRIP + '  keep: {psn: "parameter"}\n', "step 2: keep 'psn' is already kept by step 1"),
        ("- control: {at: tc, action: stop}\n  keep: {x: id}\n", "step 1: a control step gets no answer to keep"),
    ],
    ids=["never kept", "unknown in expect", "kept later", "name", "path", "not a path", "kept twice", "no answer"],
)
def test_keep_mistakes_fail_at_load_with_the_step(tmp_path: Path, steps: str, message: str) -> None:
    problems = problems_of(write(tmp_path, steps))
    assert any(message in problem for problem in problems), problems
