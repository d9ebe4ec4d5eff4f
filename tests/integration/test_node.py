"""A real node (HAPI FHIR on H2 or PostgreSQL) brought up from its plan, used, and taken down."""

from __future__ import annotations

import dataclasses
import json

import docker
import httpx
import pytest

from infra.local import LocalLauncher
from infra.smoke import read_bundle, smoke
from tests.conftest import MII_KDS_DIR
from tests.integration.conftest import assert_confined_as_planned, node_plan, stack_resources

PATIENT_BUNDLE = MII_KDS_DIR / "Bundle-mii-exa-test-data-bundle-pat-1.json"
pytestmark = pytest.mark.usefixtures("built")


@pytest.mark.parametrize("database", ["embedded", "postgres"])
def test_a_confined_node_stores_an_mii_bundle_and_serves_the_patient_back(
    database: str, launcher: LocalLauncher, client: docker.DockerClient
) -> None:
    plan = node_plan(f"itest-{database}", database=database)
    launcher.up([plan])
    base = plan.endpoints["fhir"]

    metadata = httpx.get(f"{base}/metadata", headers={"Accept": "application/fhir+json"}).json()
    assert metadata["resourceType"] == "CapabilityStatement"
    assert metadata["fhirVersion"] == "4.0.1"

    bundle = read_bundle(PATIENT_BUNDLE)
    result = smoke(base, bundle)
    assert result.resources == len(bundle["entry"])
    assert result.patient_reference == "Patient/mii-exa-test-data-patient-1"
    patient = httpx.get(f"{base}/Patient/mii-exa-test-data-patient-1", headers={"Accept": "application/fhir+json"})
    assert patient.json()["id"] == "mii-exa-test-data-patient-1"

    [node] = launcher.status([plan])
    assert node["health"] == "up"
    assert {s["health"] for s in node["services"].values()} == {"healthy"}

    for service in plan.services:
        container = client.containers.get(service.container_name)
        assert container.attrs["Config"]["User"] == service.user
        top = container.top(ps_args="-o pid,user")["Processes"]
        assert top, f"{service.component} runs no process"
        assert all(row[1] != "root" for row in top), f"{service.component} runs a root process: {top}"
        bindings = container.attrs["HostConfig"]["PortBindings"] or {}
        assert all(b["HostIp"] == "127.0.0.1" for binds in bindings.values() for b in binds)
        assert_confined_as_planned(client, service)

    removed = launcher.down(plan.stack)
    assert removed.containers == len(plan.services)
    assert stack_resources(client, plan.stack) == {"containers": [], "networks": []}


def test_data_survives_taking_the_node_down_and_up_again(launcher: LocalLauncher) -> None:
    plan = node_plan("itest-restart")
    launcher.up([plan])
    base = plan.endpoints["fhir"]
    smoke(base, read_bundle(PATIENT_BUNDLE))
    launcher.down(plan.stack)

    launcher.up([plan])
    patient = httpx.get(f"{base}/Patient/mii-exa-test-data-patient-1", headers={"Accept": "application/fhir+json"})
    assert patient.status_code == 200


def test_conditional_create_does_not_duplicate(launcher: LocalLauncher) -> None:
    plan = node_plan("itest-conditional")
    launcher.up([plan])
    base = plan.endpoints["fhir"]
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:hubnode:test", "value": "42"}]}
    headers = {"Content-Type": "application/fhir+json", "If-None-Exist": "identifier=urn:hubnode:test|42"}
    first = httpx.post(f"{base}/Patient", content=json.dumps(patient), headers=headers)
    second = httpx.post(f"{base}/Patient", content=json.dumps(patient), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    found = httpx.get(f"{base}/Patient", params={"identifier": "urn:hubnode:test|42"}).json()
    assert found["total"] == 1


def test_up_again_replaces_only_what_changed(launcher: LocalLauncher, client: docker.DockerClient) -> None:
    plan = node_plan("itest-incremental", database="postgres")
    launcher.up([plan])
    first = {s.component: client.containers.get(s.container_name).id for s in plan.services}

    assert {(c.component, c.action) for c in launcher.changes([plan])} == {("db", "keep"), ("fhir", "keep")}
    launcher.up([plan])
    assert {s.component: client.containers.get(s.container_name).id for s in plan.services} == first

    db, fhir = plan.services
    changed = dataclasses.replace(fhir, env={**fhir.env, "TZ": "Europe/Berlin"})
    changed_plan = dataclasses.replace(plan, services=(db, changed))
    assert {(c.component, c.action) for c in launcher.changes([changed_plan])} == {("db", "keep"), ("fhir", "replace")}
    launcher.up([changed_plan])
    now = {s.component: client.containers.get(s.container_name).id for s in plan.services}
    assert now["db"] == first["db"]
    assert now["fhir"] != first["fhir"]
    assert httpx.get(f"{plan.endpoints['fhir']}/metadata").status_code == 200
