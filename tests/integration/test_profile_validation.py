"""Profile-aware `$validate` on a fresh node: the MII profiles a resource declares, terminology it cannot check.

And every example the modules publish (fixtures/data/mii-examples), each with exactly its known errors.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import docker
import httpx
import pytest

from fixtures.corpora import mii_kds_bundles
from fixtures.mii_examples import examples, http_send, known_errors, measure
from infra.local import LocalLauncher
from infra.progress import Progress
from tests.integration.conftest import node_plan

pytestmark = pytest.mark.usefixtures("built")

DIAGNOSE = "https://www.medizininformatik-initiative.de/fhir/core/modul-diagnose/StructureDefinition/Diagnose"
SNOMED = "http://snomed.info/sct"


def bundle(name: str) -> list[dict[str, Any]]:
    """The resources of one MII KDS test bundle, e.g. `pat-1`."""
    [found] = [b for b in mii_kds_bundles() if b.name == f"Bundle-mii-exa-test-data-bundle-{name}"]
    return [entry["resource"] for entry in found.bundle["entry"]]


def diagnose_of_pat_1() -> dict[str, Any]:
    """A Condition of pat-1 that declares the MII Diagnose profile."""
    return next(r for r in bundle("pat-1") if DIAGNOSE in r.get("meta", {}).get("profile", []))


@pytest.fixture(scope="module")
def fhir(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The FHIR base of a fresh one-node stack (HAPI on H2), removed after the module."""
    plan = node_plan("itest-profile-validation")
    launcher = LocalLauncher(client, Progress(), tmp_path_factory.mktemp("state"))
    try:
        launcher.up([plan])
        yield plan.endpoints["fhir"]
    finally:
        launcher.down(plan.stack, remove_volumes=True)


def validate(fhir: str, resource: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """The HTTP status and the OperationOutcome issues of `POST {type}/$validate`."""
    response = httpx.post(
        f"{fhir}/{resource['resourceType']}/$validate",
        json=resource,
        headers={"Content-Type": "application/fhir+json"},
        timeout=300,
    )
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return response.status_code, body.get("issue", [])


def errors(issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in issues if i["severity"] in {"error", "fatal"}]


# First in the file: on a cold server the ICU and imaging profiles once made HAPI's terminology service
# fail (HAPI-0888, HTTP 500) while their snapshots were generated.
@pytest.mark.parametrize("name", ["icu-1", "bildgebung-1"])
def test_icu_and_imaging_resources_get_no_server_error(fhir: str, name: str) -> None:
    statuses = {f"{r['resourceType']}/{r['id']}": validate(fhir, r)[0] for r in bundle(name)}
    assert {where: status for where, status in statuses.items() if status >= 500} == {}


def test_every_published_module_example_gets_no_server_error_and_exactly_its_known_errors(fhir: str) -> None:
    measurement = measure(examples(), http_send(fhir))
    assert measurement.server_errors == ()
    known, measured = known_errors().errors, measurement.errors()
    # A new error and a fixed one both fail: then update known-errors.json (python -m fixtures.mii_examples
    # BASE --write-known) and give a new message id its reason.
    differing = {
        key: {"measured": measured.get(key, []), "known": known.get(key, [])} for key in known.keys() | measured.keys()
    }
    assert {key: d for key, d in differing.items() if d["measured"] != d["known"]} == {}


def test_the_resources_of_a_clean_bundle_validate_without_errors(fhir: str) -> None:
    found = {}
    for resource in bundle("pat-1"):
        status, issues = validate(fhir, resource)
        if status != 200 or errors(issues):
            found[f"{resource['resourceType']}/{resource['id']}"] = (status, errors(issues))
    assert found == {}


def test_a_resource_missing_an_element_its_mii_profile_requires_gets_an_error_naming_profile_and_path(
    fhir: str,
) -> None:
    broken = copy.deepcopy(diagnose_of_pat_1())
    del broken["code"]
    status, issues = validate(fhir, broken)
    assert status in {200, 412}
    messages = [i.get("diagnostics", "") for i in errors(issues)]
    assert any("Condition.code" in m and DIAGNOSE in m for m in messages), issues


def test_an_unknown_snomed_code_is_a_warning_and_not_an_error(fhir: str) -> None:
    resource = copy.deepcopy(diagnose_of_pat_1())
    resource["bodySite"] = [{"coding": [{"system": SNOMED, "code": "999999999999999"}]}]
    status, issues = validate(fhir, resource)
    assert status == 200
    assert errors(issues) == []
    warnings = [i.get("diagnostics", "") for i in issues if i["severity"] == "warning"]
    assert any("999999999999999" in w and "cannot be checked offline" in w for w in warnings), issues
