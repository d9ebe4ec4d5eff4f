"""A malformed scenario fails with file, line and what is wrong - every problem at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conformance._yaml import FileProblemsError
from conformance.scenario import (
    Consent,
    StartProcess,
    TemplateProblemError,
    Trust,
    load_scenario,
    render_json,
    template_environment,
)

GOOD = """\
name: {name}
title: A small journey
journey: 2
actors:
  hospital: {{site: dic}}
  gp: {{site: practice, credential: clinician}}
patients:
  anna: {{seed: 1, gender: female, conditions: [C50.4]}}
steps:
  - consent: {{at: hospital, patient: anna, action: grant, policies: ["5", "8"]}}
    expect: {{status: 200}}
  - ingest: {{at: hospital, patient: anna, template: visit.json.j2, vars: {{date: "2024-01-02"}}}}
    expect: {{status: 200, count: {{min: 1}}, fhir: [{{path: "entry[0].response.status", exists: true}}]}}
  - process: {{at: hospital, name: careSummary, target: gp, patients: [anna]}}
    verifies: [HUB-PROC-02]
    expect: {{status: 201, invariants: [consent-enforced]}}
"""
VISIT = '{"resourceType": "Bundle", "type": "transaction", "id": "{{ patient.patient_id }}-{{ vars.date }}"}\n'


def write(tmp_path: Path, text: str, name: str = "journey", templates: dict[str, str] | None = None) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    for template, body in (templates or {"visit.json.j2": VISIT}).items():
        (tmp_path / "templates" / template).write_text(body)
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(FileProblemsError) as caught:
        load_scenario(path)
    return [str(problem) for problem in caught.value.problems]


def test_a_well_formed_scenario_parses_into_frozen_steps(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD.format(name="journey")))
    assert [step.kind for step in scenario.steps] == ["consent", "ingest", "process"]
    assert scenario.actors["gp"].credential == "clinician"
    assert scenario.steps[0].action == Consent("anna", "grant", ("5", "8"))
    assert isinstance(scenario.steps[2].action, StartProcess)
    assert scenario.steps[2].requirements() == ("HUB-PROC-02", "HUB-INV-03")
    assert scenario.steps[1].expect.count == (1, None)
    assert scenario.sites() == {"dic", "practice"}


def test_an_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    text = GOOD.format(name="journey").replace("    expect: {status: 200}\n", "    expext: {status: 200}\n", 1)
    path = write(tmp_path, text)
    assert problems_of(path) == [f"{path}:11: step 1: unknown key `expext`"]


def test_an_unknown_actor_is_named_with_the_line_of_the_reference(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="journey").replace("target: gp", "target: lab"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:14: ")
    assert "unknown actor 'lab'" in problem


def test_an_unknown_requirement_id_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="journey").replace("HUB-PROC-02", "HUB-PROC-99"))
    assert problems_of(path) == [
        f"{path}:15: step 3: unknown requirement id 'HUB-PROC-99' (see conformance/requirements.yaml)"
    ]


def test_a_bad_path_is_named_with_the_line_of_its_check(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="journey").replace("entry[0].response", "entry[0.response"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:13: step 2 expect check: ")
    assert "not closed" in problem


def test_every_problem_of_a_file_is_listed_at_once_in_line_order(tmp_path: Path) -> None:
    text = (
        GOOD.format(name="other")
        .replace("journey: 2", "journey: 9")
        .replace("action: grant", "action: give")
        .replace("name: careSummary", "name: teleport")
    )
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert [problem.split(":")[1] for problem in problems] == ["1", "1", "10", "14"]
    assert "must match the file name 'journey'" in problems[0]
    assert "journey must be one of DESIGN.md's journeys 1 to 8" in problems[1]
    assert "`action` must be one of grant, withdraw, check; got 'give'" in problems[2]
    assert "`name` must be one of ping, careSummary, feasibility, dataSend" in problems[3]


def test_a_missing_required_key_names_the_line_of_its_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="journey").replace("patients: [anna]", "project: x"))
    assert problems_of(path) == [f"{path}:14: step 3 (process) needs `patients`"]


def test_yaml_syntax_errors_carry_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="journey").replace("  gp: {site: practice", "  gp: {site: [practice"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:6: not valid YAML")


def test_a_key_given_twice_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="journey").replace("journey: 2\n", "journey: 2\njourney: 3\n"))
    assert problems_of(path) == [f"{path}:4: key 'journey' appears twice"]


def test_a_step_with_two_kinds_is_refused(tmp_path: Path) -> None:
    text = GOOD.format(name="journey").replace("  - consent:", "  - wait: {seconds: 1}\n    consent:", 1)
    path = write(tmp_path, text)
    assert any(
        ":10: step 1 needs exactly one of ingest, consent, process, retry, read, fhir, trustcentre, trust, control,"
        " audit, wait" in p
        for p in problems_of(path)
    )


def test_a_template_using_an_undefined_name_fails_at_load_with_the_step_and_template_line(tmp_path: Path) -> None:
    templates = {"visit.json.j2": '{"resourceType": "Bundle",\n "id": "{{ vars.missing }}"}\n'}
    path = write(tmp_path, GOOD.format(name="journey"), templates=templates)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:12: step 2: template visit.json.j2 line 2: ")
    assert "missing" in problem


def test_a_template_that_renders_invalid_json_names_the_template_and_output_line(tmp_path: Path) -> None:
    templates = {"visit.json.j2": '{"resourceType": "Bundle",\n "id": {{ vars.date }}}\n'}
    path = write(tmp_path, GOOD.format(name="journey"), templates=templates)
    [problem] = problems_of(path)
    assert "template visit.json.j2 rendered invalid JSON at output line 2" in problem
    assert "2024-01-02" in problem


def test_a_missing_template_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.format(name="journey").replace("visit.json.j2", "gone.json.j2"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:12: ")
    assert "no template 'gone.json.j2'" in problem


def test_template_syntax_errors_carry_the_template_line(tmp_path: Path) -> None:
    (tmp_path / "broken.json.j2").write_text('{\n"a": {% if %}\n}')
    with pytest.raises(TemplateProblemError, match=r"template broken\.json\.j2 line 2: "):
        render_json(template_environment(tmp_path), "broken.json.j2", {})


def test_templates_are_not_html_escaped(tmp_path: Path) -> None:
    (tmp_path / "t.json.j2").write_text('{"text": "{{ value }}"}')
    assert render_json(template_environment(tmp_path), "t.json.j2", {"value": "<b>&"}) == {"text": "<b>&"}


TRUST = """\
name: journey
title: The peer doors
journey: 2
actors:
  hospital: {site: dic}
  registry: {site: research}
steps:
  - trust: {at: hospital, certificate: valid, process: careSummary, requester: registry}
    verifies: [HUB-TRUST-06]
    expect: {status: 403}
"""


def test_a_trust_step_parses_with_its_certificate_process_and_claimed_requester(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, TRUST))
    [step] = scenario.steps
    assert (step.kind, step.actor) == ("trust", "hospital")
    assert step.action == Trust("valid", "careSummary", "registry")
    assert step.title == "trust careSummary at the peer door with the valid certificate, claiming to be registry"
    assert step.requirements() == ("HUB-TRUST-06",)
    assert scenario.sites() == {"dic", "research"}


KINDS = "none, valid, own, other-ca, expired, revoked, not-allowed, wrong-role"


@pytest.mark.parametrize(
    ("written", "wrong", "message"),
    [
        ("certificate: valid", "certificate: forged", f"`certificate` must be one of {KINDS}; got 'forged'"),
        ("process: careSummary", "process: teleport", "`process` must be one of ping, careSummary, feasibility"),
        ("requester: registry", "requester: lab", "`requester` names unknown actor 'lab'"),
        ("expect: {status: 403}", "expect: {resource_type: OperationOutcome}", "a trust step needs `expect: {status"),
    ],
    ids=["certificate kind", "process", "requester", "expected status"],
)
def test_a_malformed_trust_step_is_named_with_its_line(tmp_path: Path, written: str, wrong: str, message: str) -> None:
    path = write(tmp_path, TRUST.replace(written, wrong))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:8: step 1")
    assert message in problem


def test_a_trust_step_without_certificate_or_process_names_both(tmp_path: Path) -> None:
    path = write(tmp_path, TRUST.replace("certificate: valid, process: careSummary, ", ""))
    assert problems_of(path) == [
        f"{path}:8: step 1 (trust) needs `certificate`",
        f"{path}:8: step 1 (trust) needs `process`",
    ]


STEPS = """\
name: journey
title: A small journey
journey: 2
actors:
  hospital: {{site: dic}}
patients:
  anna: {{seed: 1, gender: female, conditions: [C50.4]}}
steps:
{steps}
"""


NEW_KIND_MISTAKES = {
    "retry ahead": (
        (
            "  - retry: {at: hospital, of: later}\n"
            "  - id: later\n    process: {at: hospital, name: ping, target: hospital}"
        ),
        "step 1: no earlier step has the id 'later'; earlier ids: none",
    ),
    "id twice": (
        "  - id: twice\n    wait: {seconds: 0}\n  - id: twice\n    wait: {seconds: 0}",
        "step 2: id 'twice' is also step 1's",
    ),
    "id form": ("  - id: Not_An_Id\n    wait: {seconds: 0}", "id 'Not_An_Id': lowercase letters, digits and '-'"),
    "audit since": ("  - audit: {since: nowhere, processes: [careSummary]}", "no earlier step has the id 'nowhere'"),
    "audit process": ("  - audit: {since: x, processes: [teleport]}", "unknown process 'teleport'"),
    "control action": ("  - control: {at: hospital, action: explode}", "`action` must be one of stop, start"),
    "operation": (
        "  - trustcentre: {at: hospital, operation: gpas/pseudonymize, template: visit.json.j2}",
        "operation 'gpas/pseudonymize': <gpas|gics|epix>/$<name>",
    ),
    "get body": ("  - fhir: {at: hospital, method: GET, path: metadata, record: anna}", "a GET sends no body"),
    "corrupt line": (
        "  - ingest: {at: hospital, patient: anna, record: true, corrupt_line: 2}",
        "`corrupt_line` needs `format: ndjson`",
    ),
    "expected template": (
        (
            "  - read: {at: hospital, query: Patient}\n"
            "    expect: {fhir: [{path: id, equals: '{{ patients.nobody.kvnr }}'}]}"
        ),
        "'dict object' has no attribute 'nobody'",
    ),
    "header template": (
        "  - read: {at: hospital, query: Patient}\n    headers: {X: '{{ nothing }}'}",
        "'nothing' is undefined",
    ),
}


@pytest.mark.parametrize(("steps", "message"), NEW_KIND_MISTAKES.values(), ids=NEW_KIND_MISTAKES.keys())
def test_the_new_step_kinds_name_their_mistakes_with_the_step(tmp_path: Path, steps: str, message: str) -> None:
    path = write(tmp_path, STEPS.format(steps=steps))
    assert any(message in problem for problem in problems_of(path)), problems_of(path)


def test_a_path_may_name_an_actors_site_and_is_rendered_before_it_is_applied(tmp_path: Path) -> None:
    text = GOOD.format(name="journey").replace(
        '{path: "entry[0].response.status", exists: true}',
        '{path: "entry[response.location={{ sites.gp }}].response.status", exists: true}',
    )
    scenario = load_scenario(write(tmp_path, text))
    [check] = scenario.expectations(scenario.steps[1]).checks
    assert check.path.text == "entry[response.location=practice].response.status"
    assert check.path.values({"entry": [{"response": {"location": "practice", "status": "201"}}]}) == ["201"]


def test_a_path_that_renders_to_nonsense_fails_at_load_with_its_line(tmp_path: Path) -> None:
    text = (
        GOOD.format(name="journey")
        .replace(
            '{path: "entry[0].response.status", exists: true}', '{path: "entry[id={{ vars.date }}].id", exists: true}'
        )
        .replace('vars: {date: "2024-01-02"}', 'vars: {date: "x]y"}')
    )
    [problem] = problems_of(write(tmp_path, text))
    assert "a path, once rendered" in problem
