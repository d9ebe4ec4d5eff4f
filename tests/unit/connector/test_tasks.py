"""Process Tasks are built as docs/federation.md says and hostile ones are refused naming the element."""

from __future__ import annotations

from typing import Any

import pytest

from connector.tasks import Process, Status, bundle_input, completed, failed, parameter, parse_task, request_task
from servicekit.fhir import FhirError


def test_a_built_task_parses_back_to_what_was_put_in() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    task = request_task(
        Process.CARE_SUMMARY,
        [parameter("target", "valueString", "dic"), bundle_input(bundle)],
        requester="practice",
        idempotency_key="k",
    )
    assert task["instantiatesCanonical"] == "https://hubnode.org/fhir/process/careSummary|1.0"
    parsed = parse_task(task)
    assert (parsed.process, parsed.status, parsed.requester, parsed.idempotency_key) == (
        Process.CARE_SUMMARY,
        Status.REQUESTED,
        "practice",
        "k",
    )
    assert parsed.inputs.string("target") == "dic"
    assert parsed.inputs.bundle() == bundle


def test_completed_and_failed_tasks_carry_outputs_or_a_reason() -> None:
    task = request_task(Process.PING, [])
    assert failed(task, "down")["statusReason"] == {"text": "down"}
    done = completed(failed(task, "down"), [parameter("x", "valueInteger", 1)])
    assert done["status"] == "completed"
    assert "statusReason" not in done


def mutate(**changes: Any) -> dict[str, Any]:
    return {**request_task(Process.PING, [parameter("target", "valueString", "dic")]), **changes}


@pytest.mark.parametrize(
    ("task", "expression"),
    [
        ([], "Task.resourceType"),
        (mutate(instantiatesCanonical="https://evil.example/ping"), "Task.instantiatesCanonical"),
        (mutate(instantiatesCanonical="https://hubnode.org/fhir/process/rm-rf|1.0"), "Task.instantiatesCanonical"),
        (mutate(status="draft"), "Task.status"),
        (mutate(identifier="k"), "Task.identifier"),
        (mutate(requester={"identifier": {"system": "other", "value": "dic"}}), "Task.requester.identifier"),
        (mutate(input={"type": "x"}), "Task.input"),
        (mutate(input=[{"valueString": "dic"}]), "Task.input[0].type"),
        (mutate(input=[{"type": {"coding": [{"system": "other", "code": "target"}]}}]), "Task.input[0].type"),
        (mutate(statusReason="why"), "Task.statusReason"),
    ],
)
def test_a_malformed_task_is_refused_naming_the_element(task: Any, expression: str) -> None:
    with pytest.raises(FhirError) as refused:
        parse_task(task)
    assert refused.value.status == 400
    assert refused.value.expression == (expression,)


def test_inputs_of_the_wrong_type_or_missing_are_refused() -> None:
    inputs = parse_task(
        mutate(
            input=[
                parameter("target", "valueInteger", 3),
                parameter("bundle", "valueAttachment", {"contentType": "application/fhir+json", "data": "!!"}),
            ]
        )
    ).inputs
    with pytest.raises(FhirError, match="must carry valueString"):
        inputs.string("target")
    with pytest.raises(FhirError, match="base64 of a Bundle"):
        inputs.bundle()
    with pytest.raises(FhirError, match="'patient' is required"):
        inputs.identifiers("patient")
