"""The shipped scenarios: they parse, their templates render, they cover the eight journeys of DESIGN.md."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.bundle import Bundle

from conformance.requirements import load_requirements
from conformance.scenario import SCENARIOS_DIR, Ingest, Read, Scenario, Trust, load_scenarios, step_body, template_of

SCENARIOS = load_scenarios()
INGEST_STEPS = [
    pytest.param(scenario, step, id=f"{scenario.name}-{step.index}")
    for scenario in SCENARIOS
    for step in scenario.steps
    if isinstance(step.action, Ingest)
]


def test_every_scenario_file_parses() -> None:
    assert len(SCENARIOS) == len(list(SCENARIOS_DIR.glob("*.yaml")))


def test_the_scenarios_cover_the_eight_journeys_of_the_design() -> None:
    assert {scenario.journey for scenario in SCENARIOS} - {0} == set(range(1, 9))


def test_every_trust_requirement_is_verified_by_a_trust_step() -> None:
    trust = {rid for rid in load_requirements() if rid.startswith("HUB-TRUST-")}
    verified = {rid for s in SCENARIOS for step in s.steps if isinstance(step.action, Trust) for rid in step.verifies}
    assert trust
    assert trust <= verified


def test_every_requirement_is_verified_by_some_step() -> None:
    """None is left "not run": each is checked by a step, which may be not applicable where a capability is missing."""
    verified = {rid for scenario in SCENARIOS for step in scenario.steps for rid in step.requirements()}
    assert set(load_requirements()) - verified == set()


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.journey], ids=lambda s: s.name)
def test_each_journey_spans_at_least_two_nodes(scenario: Scenario) -> None:
    assert len(scenario.sites()) >= 2


def test_journeys_do_not_share_patients() -> None:
    seeds = [source.profile.seed for s in SCENARIOS for source in s.patients.values() if source.profile]
    assert len(seeds) == len(set(seeds))


def test_every_requirement_id_a_scenario_names_exists() -> None:
    known = load_requirements()
    named = {rid for scenario in SCENARIOS for rid in scenario.requirements()}
    assert named <= set(known)


def test_portal_checks_are_marked_so_they_are_reported_not_applicable_without_a_portal() -> None:
    portal_reads = [
        step for s in SCENARIOS for step in s.steps if isinstance(step.action, Read) and step.action.service == "portal"
    ]
    assert portal_reads
    assert all("portal" in step.applies_to for step in portal_reads)


@pytest.mark.parametrize(("scenario", "step"), INGEST_STEPS)
def test_every_ingest_step_renders_a_valid_r4b_bundle_unless_it_is_meant_to_be_invalid(scenario, step) -> None:
    bundle = step_body(scenario, step)
    if step.expect.status == (422,):
        assert bundle["resourceType"] == "Bundle"
    else:
        Bundle.model_validate(bundle)


def test_every_template_is_used_by_some_scenario() -> None:
    used = {template_of(step.action) for s in SCENARIOS for step in s.steps}
    folder = SCENARIOS_DIR / "templates"
    shipped = {path.relative_to(folder).as_posix() for path in folder.rglob("*.json.j2")}
    assert shipped == used - {None}
