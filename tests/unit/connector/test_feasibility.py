"""Feasibility counts: criteria from inputs, distinct patients, small counts obfuscated, counts rounded, a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.db import connect
from connector.feasibility import (
    Criteria,
    FeasibilityPolicy,
    NodeCount,
    PatientTally,
    aggregate_outputs,
    criteria_from,
    from_answer,
    spend_budget,
)
from connector.tasks import Process, Values, parse_task, request_task
from servicekit.fhir import FhirError

POLICY = FeasibilityPolicy()


def values(outputs: list[dict]) -> Values:
    return parse_task({**request_task(Process.FEASIBILITY, []), "output": outputs}).outputs


@pytest.mark.parametrize(
    ("count", "label"), [(0, "dic:0"), (1, "dic:<5"), (4, "dic:<5"), (5, "dic:5-9"), (9, "dic:5-9"), (17, "dic:15-19")]
)
def test_small_counts_leave_the_node_as_less_than_five_and_the_rest_as_a_band_of_five(count: int, label: str) -> None:
    assert POLICY.obfuscate("dic", count).label == label


def count_patients(resources: list[dict[str, Any]], criteria: Criteria) -> int:
    tally = PatientTally(criteria)
    tally.add(resources)
    return tally.count


def test_the_subtraction_attack_of_the_security_review_no_longer_finds_two_patients() -> None:
    # C50 in any year: 7 at the dic; born 1956 or later: 5. Exact counts gave away 2 patients born before 1956.
    everyone, younger = POLICY.obfuscate("dic", 7), POLICY.obfuscate("dic", 5)
    assert everyone.count == younger.count == 5


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10_000))
def test_the_difference_of_two_reported_counts_never_reveals_an_exact_count_of_one_to_four(a: int, b: int) -> None:
    first, second = POLICY.obfuscate("dic", a).count, POLICY.obfuscate("dic", b).count
    if first is not None and second is not None:
        assert abs(first - second) == 0 or abs(first - second) >= POLICY.granularity


def test_a_requester_gets_only_its_daily_budget_of_questions(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'connector.db'}")
    policy = FeasibilityPolicy(daily_budget=3)
    assert [spend_budget(engine, "research", policy) for _ in range(4)] == [True, True, True, False]
    assert spend_budget(engine, "practice", policy)  # each requester has its own


def test_a_careless_peers_exact_small_count_is_obfuscated_at_the_asker() -> None:
    answer = values(
        [
            {
                "type": {"coding": [{"system": "https://hubnode.org/fhir/CodeSystem/process-output", "code": "count"}]},
                "valueInteger": 3,
            }
        ]
    )
    assert from_answer("practice", answer, POLICY) == NodeCount("practice", None)


def test_a_careless_peers_unrounded_count_is_rounded_at_the_asker() -> None:
    code = {"type": {"coding": [{"system": "https://hubnode.org/fhir/CodeSystem/process-output", "code": "count"}]}}
    assert from_answer("practice", values([{**code, "valueInteger": 13}]), POLICY) == NodeCount("practice", 10)


def test_the_aggregate_sums_the_rounded_counts_and_flags_obfuscation() -> None:
    outputs = aggregate_outputs([NodeCount("a", 5), NodeCount("b", None), NodeCount("c", 0)])
    assert [
        (o["type"]["coding"][0]["code"], next(v for k, v in o.items() if k.startswith("value"))) for o in outputs
    ] == [("count", 5), ("node-count", "a:5-9"), ("node-count", "b:<5"), ("node-count", "c:0"), ("obfuscated", True)]


def test_patients_are_counted_once_however_many_matching_conditions_they_have() -> None:
    patient = {"resourceType": "Patient", "id": "1", "gender": "female", "birthDate": "1970-01-01"}
    conditions = [
        {
            "resourceType": "Condition",
            "code": {"coding": [{"system": Criteria("C").system, "code": code}]},
            "subject": {"reference": "Patient/1"},
        }
        for code in ("C50.1", "c50.9", "C61")
    ]
    assert count_patients([patient, *conditions], Criteria("C50")) == 1
    assert count_patients([patient, *conditions], Criteria("C50", birth_year_min=1971)) == 0
    assert count_patients([patient, *conditions], Criteria("C50", gender="male")) == 0
    assert count_patients(conditions, Criteria("C50")) == 0
    assert count_patients([*conditions, patient], Criteria("C50")) == 1, "a patient included after its Conditions"
    pages = PatientTally(Criteria("C50"))
    for page in ([conditions[0]], [], [patient], conditions[1:]):
        pages.add(page)
    assert pages.count == 1, "folded page by page, the same count"


def test_criteria_round_trip_through_task_inputs_and_bad_ones_are_refused() -> None:
    criteria = Criteria("C50", gender="female", birth_year_min=1950, birth_year_max=1980)
    assert criteria_from(parse_task(request_task(Process.FEASIBILITY, criteria.inputs())).inputs) == criteria
    with pytest.raises(FhirError, match="birth-year-min 1990 is after birth-year-max 1980"):
        criteria_from(
            parse_task(
                request_task(Process.FEASIBILITY, Criteria("C50", birth_year_min=1990, birth_year_max=1980).inputs())
            ).inputs
        )
    with pytest.raises(FhirError, match="gender must be one of"):
        criteria_from(parse_task(request_task(Process.FEASIBILITY, Criteria("C50", gender="robot").inputs())).inputs)
