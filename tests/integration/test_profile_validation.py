"""Profile-aware `$validate` on a fresh node: the MII profiles a resource declares, terminology it cannot check.

And every example the modules publish (fixtures/data/mii-examples), each with exactly its known errors;
and what our own code sends (synthetic patients, their research extracts, the scenarios' templated ingests)
validates with no error, so a connector refusing bundles with errors accepts all of it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from conformance.scenario import Ingest, load_scenarios, step_body
from connector.pseudonymise import pseudonymise
from fixtures.corpora import mii_kds_bundles
from fixtures.mii_examples import examples, http_send, known_errors, measure, message_id_of
from fixtures.synthetic import DIAGNOSES, MEASUREMENTS, MEDICATIONS, PROCEDURES, PatientProfile, patient_record
from fixtures.volume import journey_profile
from infra.local import LocalLauncher
from infra.plan import NodePlan
from infra.progress import Progress
from tests.integration.conftest import node_plan

pytestmark = pytest.mark.usefixtures("built")

DIAGNOSE = "https://www.medizininformatik-initiative.de/fhir/core/modul-diagnose/StructureDefinition/Diagnose"
SNOMED = "http://snomed.info/sct"
#: The validator's message ids of HL7's best-practice recommendations on the KDS test data.
BEST_PRACTICE = {
    "http://hl7.org/fhir/StructureDefinition/DomainResource#dom-6",
    "All_observations_should_have_a_performer",
}
RESEARCH_DOMAIN = "research-itest"
_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")
PROFILES = Path(__file__).resolve().parents[2] / "services" / "hapi" / "src" / "main" / "resources" / "profiles"


def bundle(name: str) -> list[dict[str, Any]]:
    """The resources of one MII KDS test bundle, e.g. `pat-1`."""
    [found] = [b for b in mii_kds_bundles() if b.name == f"Bundle-mii-exa-test-data-bundle-{name}"]
    return [entry["resource"] for entry in found.bundle["entry"]]


def diagnose_of_pat_1() -> dict[str, Any]:
    """A Condition of pat-1 that declares the MII Diagnose profile."""
    return next(r for r in bundle("pat-1") if DIAGNOSE in r.get("meta", {}).get("profile", []))


@pytest.fixture(scope="module")
def node(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodePlan]:
    """A fresh one-node stack (HAPI on H2), removed after the module."""
    plan = node_plan("itest-profile-validation")
    launcher = LocalLauncher(client, Progress(), tmp_path_factory.mktemp("state"))
    try:
        launcher.up([plan])
        yield plan
    finally:
        launcher.down(plan.stack, remove_volumes=True)


@pytest.fixture(scope="module")
def fhir(node: NodePlan) -> str:
    """The FHIR base of the fresh node."""
    return node.endpoints["fhir"]


def vendored_profiles() -> int:
    """How many profiles (StructureDefinitions, one per URL) the HAPI image vendors."""
    urls = set()
    for name in (PROFILES / "INDEX").read_text().split():
        if name.endswith(".xml"):  # FHIR XML: the first <url> element is the resource's canonical URL
            text = (PROFILES / name).read_text()
            if "<StructureDefinition " in text and (url := re.search(r'<url value="([^"]+)"', text)):
                urls.add(url[1])
        elif (resource := json.loads((PROFILES / name).read_text()))["resourceType"] == "StructureDefinition":
            urls.add(resource["url"])
    return len(urls)


def test_every_vendored_profiles_snapshot_is_generated_before_the_node_takes_a_request(
    client: docker.DockerClient, node: NodePlan
) -> None:
    """One after another at start: generated on first use by requests at once, they can corrupt a shared base
    definition and refuse a valid resource (hapi-fhir#8034)."""
    [service] = [s for s in node.services if s.component == "fhir"]
    log = client.containers.get(service.container_name).logs().decode(errors="replace")
    generated = re.search(r"snapshots of (\d+) vendored profiles generated in \d+ ms", log)
    assert generated, log[-3000:]
    left_out = re.search(r"(\d+) vendored profiles left out", log)
    assert int(generated[1]) == vendored_profiles() - (int(left_out[1]) if left_out else 0), log[-3000:]
    assert log.index(generated[0]) < log.index("Tomcat started on port")


def validate(fhir: str, resource: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """The HTTP status and the OperationOutcome issues of `POST {type}/$validate`."""
    return validated(fhir, resource["resourceType"], resource)


def validated(fhir: str, resource_type: str, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """The HTTP status and the OperationOutcome issues of `POST {resource_type}/$validate` with `body`."""
    response = httpx.post(
        f"{fhir}/{resource_type}/$validate", json=body, headers={"Content-Type": "application/fhir+json"}, timeout=300
    )
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return response.status_code, outcome.get("issue", [])


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


def test_best_practice_recommendations_are_not_reported(fhir: str) -> None:
    """A narrative (`dom-6`) and an Observation's performer are HL7 best practice, which no MII profile asks for."""
    resources = bundle("pat-1")
    assert not any("text" in r for r in resources)
    assert any(r["resourceType"] == "Observation" and "performer" not in r for r in resources)
    reported = {}
    for resource in resources:
        _, issues = validate(fhir, resource)
        best_practice = [i for i in issues if message_id_of(i) in BEST_PRACTICE]
        if best_practice:
            reported[f"{resource['resourceType']}/{resource['id']}"] = best_practice
    assert reported == {}


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


def journey_profiles() -> dict[str, PatientProfile]:
    """Every synthetic patient the scenarios draw, volume journeys at both care sites, and every code at both."""
    profiles = {
        f"{scenario.name}/{name}": source.profile
        for scenario in load_scenarios()
        for name, source in scenario.patients.items()
        if source.profile is not None
    }
    for site in ("dic", "practice"):
        profiles |= {f"volume/{site}/{seed}": journey_profile(seed, site) for seed in (1, 2, 3, 10_000_001)}
        profiles[f"every-code/{site}"] = PatientProfile(
            seed=99,
            site=site,
            conditions=tuple(DIAGNOSES),
            procedures=tuple(PROCEDURES),
            observations=tuple(MEASUREMENTS),
            medications=tuple(MEDICATIONS),
            visits=2,
        )
        profiles[f"no-consent/{site}"] = replace(journey_profile(4, site), consent=())
    return profiles


JOURNEYS = journey_profiles()


def template_bundles() -> dict[str, list[dict[str, Any]]]:
    """`scenario/step/template` -> the resources of each templated ingest its scenario expects to be accepted."""
    found = {}
    for scenario in load_scenarios():
        for step in scenario.steps:
            action = step.action
            refused = any(status >= HTTPStatus.BAD_REQUEST for status in step.expect.status)
            if isinstance(action, Ingest) and action.template is not None and not refused:
                body = step_body(scenario, step)
                found[f"{scenario.name}/{step.index}/{action.template}"] = [e["resource"] for e in body["entry"]]
    return found


TEMPLATES = template_bundles()


def bundle_errors(fhir: str, resources: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """`Type/id` -> `path: message` of each error `POST Bundle/$validate` finds in a collection of `resources`."""
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"{fhir}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    }
    _, issues = validated(fhir, "Bundle", collection)
    found: dict[str, list[str]] = {}
    for issue in errors(issues):
        message = issue.get("diagnostics", "")
        where = (issue.get("expression") or issue.get("location") or [""])[0]
        entry = _ENTRY.match(where)
        resource = resources[int(entry.group(1))] if entry else None
        name = f"{resource['resourceType']}/{resource['id']}" if resource else "Bundle"
        found.setdefault(name, []).append(f"{where}: {message}")
    return found


def research_extract(profile: PatientProfile) -> list[dict[str, Any]]:
    """The `dataSend` extract of the patient of `profile`, in RESEARCH_DOMAIN."""
    record = patient_record(profile)
    return pseudonymise(record.resources, record.person.patient_id, f"PSN{profile.seed}", RESEARCH_DOMAIN)


@pytest.mark.parametrize("journey", sorted(JOURNEYS))
def test_a_synthetic_patient_validates_against_its_profiles_without_errors(fhir: str, journey: str) -> None:
    assert bundle_errors(fhir, patient_record(JOURNEYS[journey]).resources) == {}


@pytest.mark.parametrize("journey", sorted(JOURNEYS))
def test_the_research_extract_of_a_synthetic_patient_validates_without_errors(fhir: str, journey: str) -> None:
    assert bundle_errors(fhir, research_extract(JOURNEYS[journey])) == {}


@pytest.mark.parametrize("ingest", sorted(TEMPLATES))
def test_a_scenario_template_the_node_should_accept_validates_without_errors(fhir: str, ingest: str) -> None:
    assert bundle_errors(fhir, TEMPLATES[ingest]) == {}


def test_an_error_in_a_synthetic_bundle_is_reported_with_its_resource(fhir: str) -> None:
    resources = [copy.deepcopy(r) for r in patient_record(PatientProfile(seed=5, observations=("718-7",))).resources]
    lab = next(r for r in resources if r["resourceType"] == "Observation")
    del lab["identifier"][0]["assigner"]
    found = bundle_errors(fhir, resources)
    assert list(found) == [f"Observation/{lab['id']}"]
    assert any("assigner" in message for message in found[f"Observation/{lab['id']}"]), found


def test_a_consent_referring_to_its_patient_in_the_bundle_gets_a_warning_for_the_unheld_target_profile(
    fhir: str,
) -> None:
    record = patient_record(PatientProfile(seed=5))
    consent = next(r for r in record.resources if r["resourceType"] == "Consent")
    assert consent["patient"]["reference"] == f"Patient/{record.person.patient_id}"
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"{fhir}/{r['resourceType']}/{r['id']}", "resource": r} for r in record.resources],
    }
    response = httpx.post(
        f"{fhir}/Bundle/$validate", json=collection, headers={"Content-Type": "application/fhir+json"}, timeout=300
    )
    issues = response.json().get("issue", [])
    assert errors(issues) == []
    unheld = [i for i in issues if "expected one of ([])" in i.get("diagnostics", "")]
    assert [i["severity"] for i in unheld] == ["warning"], issues
    assert unheld[0]["diagnostics"].startswith("Not checked, definition not held on this node: "), unheld
