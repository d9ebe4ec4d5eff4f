"""The gPAS IG's own examples: every request example posted unchanged, every answer shaped like the IG's.

Shape is names, parts and value types (and which keys an Identifier or Coding carries), not values:
generated pseudonyms differ from the IG's. The requests run in an order in which each answer can be
compared with a response example that shows both success and failure (pairs inserted first, so the
examples' pseudonym `mrcm_T0TYNV21` is one the trust centre then knows).
"""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.unit.trustcentre.conftest import headers, settings
from trustcentre.app import create_app

EXAMPLES = Path(__file__).resolve().parents[3] / "fixtures" / "data" / "ttp-fhir-ig" / "gpas"
#: The domains the IG's examples use: MIRACUM's pseudonyms look like `mrcm_T0TYNV21` (no check character),
#: and secondary pseudonyms are made in a domain that allows several per original.
IG_DOMAINS = {
    "MIRACUM": {
        "prefix": "mrcm_",
        "length": 8,
        "alphabet": string.digits + string.ascii_uppercase,
        "check_digit": False,
    },
    "Datensatz-Ebene": {"multiple_pseudonyms": True},
}
#: The IG's operation (file name part) -> the path the gateway serves it at (the definition's `code`).
OPERATIONS = {
    "InsertValuePseudonymPairs": "$insertValuePseudonymPairs",
    "PseudonymizeAllowCreate": "$pseudonymizeAllowCreate",
    "Pseudonymize": "$pseudonymize",
    "DePseudonymize": "$dePseudonymize",
    "PseudonymizeSecondary": "$pseudonymize-secondary",
    "AnonymizeOriginals": "$anonymizeOriginals",
    "DeletePseudonyms": "$deletePseudonyms",
}
Shape = tuple[str, tuple[tuple[str, str, tuple[str, ...]], ...]]


def example(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / f"Parameters-Parameters-{name}.json").read_text(encoding="utf-8")))


def shape(parameter: dict[str, Any]) -> Shape:
    """A parameter's name and, per part, its name, value type and the keys of that value."""
    parts = []
    for part in parameter["part"]:
        [kind] = [key for key in part if key.startswith("value")]
        parts.append((part["name"], kind, tuple(sorted(part[kind]))))
    return parameter["name"], tuple(parts)


def shapes(resource: dict[str, Any]) -> list[Shape]:
    return [shape(parameter) for parameter in resource["parameter"]]


def response_shapes(operation: str) -> set[Shape]:
    """Every parameter shape of the operation's response examples."""
    return {
        s
        for path in EXAMPLES.glob(f"*-{operation}-response-example-*.json")
        for s in shapes(example(path.stem.removeprefix("Parameters-Parameters-")))
    }


@pytest.fixture
def ig_client(database_url: str) -> Iterator[TestClient]:
    configured = dataclasses.replace(settings(database_url), domains=IG_DOMAINS)
    with TestClient(create_app(configured), raise_server_exceptions=False) as test_client:
        yield test_client


def post_request_example(client: TestClient, operation: str) -> dict[str, Any]:
    """The operation's request example, posted byte for byte as the admin; the answer must be a 200 Parameters."""
    raw = (EXAMPLES / f"Parameters-Parameters-{operation}-request-example-1.json").read_bytes()
    response = client.post(f"/ttp-fhir/fhir/gpas/{OPERATIONS[operation]}", content=raw, headers=headers("admin"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["resourceType"] == "Parameters"
    unknown = set(shapes(answer)) - response_shapes(operation)
    assert not unknown, f"{operation}: shapes the IG's examples do not show: {unknown}"
    return dict(answer)


def test_every_request_example_is_vendored_and_every_operation_has_one() -> None:
    requests = sorted(path.name for path in EXAMPLES.glob("*-request-example-*.json"))
    assert requests == sorted(f"Parameters-Parameters-{name}-request-example-1.json" for name in OPERATIONS)


def test_every_request_example_is_answered_in_the_shape_of_the_response_examples(ig_client: TestClient) -> None:
    inserted = post_request_example(ig_client, "InsertValuePseudonymPairs")
    assert shapes(inserted) == shapes(example("InsertValuePseudonymPairs-response-example-1"))

    created = post_request_example(ig_client, "PseudonymizeAllowCreate")
    assert shapes(created) == shapes(example("PseudonymizeAllowCreate-response-example-1"))
    # The inserted pair is the one pseudonymisation answers, as in the IG's examples.
    assert created["parameter"][0] == example("PseudonymizeAllowCreate-response-example-1")["parameter"][0]

    found = post_request_example(ig_client, "Pseudonymize")
    assert shapes(found) == shapes(example("Pseudonymize-response-example-1"))
    assert found["parameter"] == created["parameter"]

    # `mrcm_T0TYNV21` is known, `mrcm_9GELEUVU` is not: one original and one error, as the error example.
    # (That example names its answered item `pseudonym`; the definition and example 1 say `original`.)
    revealed = post_request_example(ig_client, "DePseudonymize")
    assert shapes(revealed) == [
        shapes(example("DePseudonymize-response-example-1"))[0],
        shapes(example("DePseudonymize-response-example-2"))[1],
    ]
    assert revealed["parameter"][0] == example("DePseudonymize-response-example-1")["parameter"][0]

    secondary = post_request_example(ig_client, "PseudonymizeSecondary")
    assert [name for name, _ in shapes(secondary)] == ["secondarypseudonym", "secondarypseudonym"]

    # Both originals known: both anonymised, as the IG's example says of the first; then none is left
    # to delete, which the delete example shows for its second.
    anonymized = post_request_example(ig_client, "AnonymizeOriginals")
    codes = [p["part"][2]["valueCoding"]["code"] for p in anonymized["parameter"]]
    assert codes == ["MSG_UPDATED", "MSG_UPDATED"]
    deleted = post_request_example(ig_client, "DeletePseudonyms")
    assert [p["part"][2]["valueCoding"] for p in deleted["parameter"]] == [
        example("DeletePseudonyms-response-example-1")["parameter"][1]["part"][2]["valueCoding"]
    ] * 2


def test_the_error_examples_shapes_are_answered_for_unknown_domains(ig_client: TestClient) -> None:
    unknown_domain = json.dumps(example("InsertValuePseudonymPairs-request-example-1")).replace("MIRACUM", "DOMAINXY")
    response = ig_client.post(
        "/ttp-fhir/fhir/gpas/$insertValuePseudonymPairs", content=unknown_domain, headers=headers("admin")
    )
    assert response.status_code == 200, response.text
    assert response.json()["parameter"] == example("InsertValuePseudonymPairs-response-example-2")["parameter"]

    unknown_domain = json.dumps(example("PseudonymizeSecondary-request-example-1")).replace(
        "Datensatz-Ebene", "DOMAINXY"
    )
    response = ig_client.post(
        "/ttp-fhir/fhir/gpas/$pseudonymize-secondary", content=unknown_domain, headers=headers("admin")
    )
    assert response.status_code == 200, response.text
    assert response.json()["parameter"] == example("PseudonymizeSecondary-response-example-2")["parameter"]
