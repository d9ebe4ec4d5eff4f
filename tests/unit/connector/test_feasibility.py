"""Feasibility counts: criteria from inputs, distinct patients, small counts obfuscated, sums at the asker."""

from __future__ import annotations

import pytest

from connector.feasibility import (
    Criteria,
    NodeCount,
    aggregate_outputs,
    count_patients,
    criteria_from,
    from_answer,
    obfuscate,
)
from connector.tasks import Process, Values, parse_task, request_task
from servicekit.fhir import FhirError


def values(outputs: list[dict]) -> Values:
    return parse_task({**request_task(Process.FEASIBILITY, []), "output": outputs}).outputs


@pytest.mark.parametrize(("count", "label"), [(0, "dic:0"), (1, "dic:<5"), (4, "dic:<5"), (5, "dic:5"), (17, "dic:17")])
def test_counts_of_one_to_four_leave_the_node_as_less_than_five(count: int, label: str) -> None:
    assert obfuscate("dic", count).label == label


def test_a_careless_peers_exact_small_count_is_obfuscated_at_the_asker() -> None:
    answer = values(
        [
            {
                "type": {"coding": [{"system": "https://hubnode.org/fhir/CodeSystem/process-output", "code": "count"}]},
                "valueInteger": 3,
            }
        ]
    )
    assert from_answer("practice", answer) == NodeCount("practice", None)


def test_the_aggregate_sums_exact_counts_and_flags_obfuscation() -> None:
    outputs = aggregate_outputs([NodeCount("a", 7), NodeCount("b", None), NodeCount("c", 0)])
    assert [
        (o["type"]["coding"][0]["code"], next(v for k, v in o.items() if k.startswith("value"))) for o in outputs
    ] == [("count", 7), ("node-count", "a:7"), ("node-count", "b:<5"), ("node-count", "c:0"), ("obfuscated", True)]


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
