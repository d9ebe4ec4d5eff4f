"""Issue 4 end to end: ingest at the dic, the four processes between real nodes, retries, and what must
never cross (no consent, identifying data to research)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from connector.tasks import Process, parameter
from fixtures.strategies import patient_profiles
from fixtures.synthetic import PatientProfile, patient_record
from servicekit.kvnr import make_kvnr
from tests.conftest import MII_BUNDLES_BREAKING_THEIR_PROFILES, MII_KDS_DIR
from tests.e2e.conftest import STACK, Federation, patient_input, stored_from_now, target_input, task_output

MII_PATIENT_1 = MII_KDS_DIR / "Bundle-mii-exa-test-data-bundle-pat-1.json"
KVNR = "http://fhir.de/sid/gkv/kvid-10"
KVNR_OF_PATIENT_1 = "A123456780"
SOURCE = "https://hubnode.org/fhir/sid/source/dic"
ICD10GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
#: Records of one person sent at the same moment: enough that their writes of the Patient collide.
CONCURRENT_RECORDS = 4


def count(federation: Federation, site: str, query: str) -> int:
    return len(federation.search(site, query))


def test_ingest_is_idempotent_and_invalid_bundles_change_nothing(federation: Federation) -> None:
    bundle = json.loads(MII_PATIENT_1.read_text())
    first = federation.ingest("dic", bundle)
    assert first.status_code == 200, first.text
    stored = count(federation, "dic", "Condition")
    replay = federation.ingest("dic", bundle)
    assert replay.status_code == 200, replay.text
    assert {entry["response"]["status"][:3] for entry in replay.json()["entry"]} == {"200"}
    assert count(federation, "dic", "Condition") == stored
    assert count(federation, "dic", f"Patient?identifier={KVNR}|{KVNR_OF_PATIENT_1}") == 1

    broken = json.loads(MII_PATIENT_1.read_text())
    condition = next(e["resource"] for e in broken["entry"] if e["resource"]["resourceType"] == "Condition")
    condition["clinicalStatus"] = "active"  # a CodeableConcept in FHIR, not a string
    broken["entry"][0]["resource"]["id"] = "someone-new"
    refused = federation.ingest("dic", broken)
    assert refused.status_code == 422
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert count(federation, "dic", f"Patient?identifier={SOURCE}|Patient/someone-new") == 0


@pytest.mark.parametrize(
    "path", sorted(MII_KDS_DIR.glob("*.json")), ids=lambda p: p.stem.removeprefix("Bundle-mii-exa-test-data-bundle-")
)
def test_every_mii_kds_bundle_meeting_its_profiles_is_ingested_and_a_replay_only_updates(
    federation: Federation, path: Path
) -> None:
    bundle = json.loads(path.read_text())
    first = federation.ingest("dic", bundle)
    if path.stem.removeprefix("Bundle-mii-exa-test-data-bundle-") in MII_BUNDLES_BREAKING_THEIR_PROFILES:
        assert first.status_code == 422, first.text
        issues = first.json()["issue"]
        assert all(i["expression"][0].startswith("Bundle.entry[") for i in issues), issues
        assert all("declared profile https://" in i["diagnostics"] for i in issues), issues
        patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        assert count(federation, "dic", f"Patient?identifier={SOURCE}|Patient/{patient}") == 0
        return
    assert first.status_code == 200, first.text
    replay = federation.ingest("dic", bundle)
    assert replay.status_code == 200, replay.text
    assert {entry["response"]["status"][:3] for entry in replay.json()["entry"]} == {"200"}


def test_records_of_one_person_ingested_at_once_all_keep_their_source_identifiers(federation: Federation) -> None:
    kvnr = make_kvnr("C", "16180339")
    bundles = [
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Patient",
                        "id": f"concurrent-{number}",
                        "identifier": [{"system": KVNR, "value": kvnr}],
                        "name": [{"family": "Gleichzeitig", "given": ["Clara"]}],
                        "birthDate": "1961-08-13",
                        "gender": "female",
                    }
                }
            ],
        }
        for number in range(CONCURRENT_RECORDS)
    ]
    with ThreadPoolExecutor(CONCURRENT_RECORDS) as pool:
        answers = list(pool.map(lambda bundle: federation.ingest("dic", bundle), bundles))
    assert [answer.status_code for answer in answers] == [200] * CONCURRENT_RECORDS, [a.text for a in answers]
    [patient] = federation.search("dic", f"Patient?identifier={KVNR}|{kvnr}")
    sources = {i["value"] for i in patient["identifier"] if i["system"] == SOURCE}
    assert sources == {f"Patient/concurrent-{number}" for number in range(CONCURRENT_RECORDS)}


def test_care_summary_reaches_the_practice_once_with_consent(federation: Federation) -> None:
    record = patient_record(PatientProfile(seed=4101, conditions=("C50.4",), procedures=("5-870.a2",)))
    assert federation.ingest("dic", record.bundle()).status_code == 200
    federation.grant(record.person.identifier(), "2", "3", "5")
    inputs = [target_input("practice"), patient_input(KVNR, record.person.kvnr)]

    task = federation.start("dic", Process.CARE_SUMMARY, inputs, key="e2e-care-4101")
    assert task["status"] == "completed", task.get("statusReason")
    assert task_output(task, "resources-sent")[0] >= len(record.resources) - 1  # all but the Consent, or more
    at_practice = f"Condition?patient.identifier={KVNR}|{record.person.kvnr}"
    assert count(federation, "practice", at_practice) == 1

    again = federation.start("dic", Process.CARE_SUMMARY, inputs, key="e2e-care-4101")
    assert again["id"] == task["id"], "the same idempotency key gives the same Task"
    fresh = federation.start("dic", Process.CARE_SUMMARY, inputs, key="e2e-care-4101-b")
    assert fresh["status"] == "completed"
    assert count(federation, "practice", at_practice) == 1, "a second send updates, never duplicates"


def test_a_journey_sent_back_to_its_origin_updates_the_originals_and_the_source_can_still_replay(
    federation: Federation,
) -> None:
    record = patient_record(PatientProfile(seed=4103, conditions=("G35",), procedures=("3-820",)))
    assert federation.ingest("dic", record.bundle()).status_code == 200
    federation.grant(record.person.identifier(), "2", "3", "5")
    at_dic = f"Condition?patient.identifier={KVNR}|{record.person.kvnr}"
    before = count(federation, "dic", at_dic)
    there = [target_input("practice"), patient_input(KVNR, record.person.kvnr)]
    back = [target_input("dic"), patient_input(KVNR, record.person.kvnr)]

    assert federation.start("dic", Process.CARE_SUMMARY, there, key="e2e-round-4103")["status"] == "completed"
    returned = federation.start("practice", Process.CARE_SUMMARY, back, key="e2e-round-4103-back")
    assert returned["status"] == "completed", returned.get("statusReason")
    assert count(federation, "dic", at_dic) == before, "the dic's own journey came back as twins"
    replay = federation.ingest("dic", record.bundle())
    assert replay.status_code == 200, replay.text  # one match per source identifier, not HAPI-2207
    assert count(federation, "dic", at_dic) == before


def test_without_treatment_consent_nothing_crosses(federation: Federation) -> None:
    record = patient_record(PatientProfile(seed=4102, conditions=("C61",), consent=()))
    assert federation.ingest("dic", record.bundle()).status_code == 200
    task = federation.start(
        "dic",
        Process.CARE_SUMMARY,
        [target_input("practice"), patient_input(KVNR, record.person.kvnr)],
        key="e2e-care-4102",
    )
    assert task["status"] == "failed"
    assert "consent" in task["statusReason"]["text"]
    assert count(federation, "practice", f"Patient?identifier={KVNR}|{record.person.kvnr}") == 0


def test_feasibility_counts_per_node_obfuscates_small_counts_and_adds_up(federation: Federation) -> None:
    for seed in range(4200, 4206):  # six at the dic: a count of at least five
        record = patient_record(PatientProfile(seed=seed, conditions=("E11.9",)))
        assert federation.ingest("dic", record.bundle()).status_code == 200
    record = patient_record(PatientProfile(seed=4206, site="practice", conditions=("E11.9",)))
    assert federation.ingest("practice", record.bundle()).status_code == 200  # one at the practice: "<5"

    criteria = [parameter("condition-code", "valueCoding", {"system": ICD10GM, "code": "E11"})]
    task = federation.start("research", Process.FEASIBILITY, criteria, key="e2e-feasibility")
    assert task["status"] == "completed", task.get("statusReason")
    per_node = sorted(task_output(task, "node-count"))
    assert per_node == ["dic:5-9", "practice:<5"]  # six leave the dic as the band 5-9, never exactly
    assert task_output(task, "count") == [5]  # the sum of what the nodes said: the band's lower bound
    assert task_output(task, "obfuscated") == [True]


def test_a_peer_that_is_down_fails_the_task_and_a_retry_completes_it_once(federation: Federation) -> None:
    record = patient_record(PatientProfile(seed=4301, conditions=("I10",)))
    assert federation.ingest("dic", record.bundle()).status_code == 200
    federation.grant(record.person.identifier(), "2", "3", "5")
    gateway = f"hubnode-{STACK}-practice-gateway"
    subprocess.run(["docker", "stop", gateway], check=True, capture_output=True)
    try:
        inputs = [target_input("practice"), patient_input(KVNR, record.person.kvnr)]
        task = federation.start("dic", Process.CARE_SUMMARY, inputs, key="e2e-retry-4301")
        assert task["status"] == "failed"
        assert "practice" in task["statusReason"]["text"]
    finally:
        subprocess.run(["docker", "start", gateway], check=True, capture_output=True)
    _wait_healthy(gateway)
    with federation.client("dic") as client:
        retried = client.post(f"/fhir/Task/{task['id']}/$retry")
        assert retried.status_code in (200, 201), retried.text
        assert retried.json()["status"] == "completed", retried.json().get("statusReason")
        assert client.post(f"/fhir/Task/{task['id']}/$retry").json()["status"] == "completed"
    assert count(federation, "practice", f"Condition?patient.identifier={KVNR}|{record.person.kvnr}") == 1


def _wait_healthy(container: str) -> None:
    for _ in range(60):
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if state == "healthy":
            return
        subprocess.run(["sleep", "1"], check=True)
    pytest.fail(f"{container} did not become healthy again")


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profile=patient_profiles(sites=("dic",)))
def test_nothing_identifying_ever_reaches_the_research_node(federation: Federation, profile: PatientProfile) -> None:
    record = patient_record(profile)
    since = stored_from_now()
    assert federation.ingest("dic", record.bundle()).status_code == 200
    federation.grant(record.person.identifier(), "2", "3", "8")
    task = federation.start(
        "dic",
        Process.DATA_SEND,
        [
            target_input("research"),
            patient_input(KVNR, record.person.kvnr),
            parameter("project", "valueString", "demo-study"),
        ],
        key=f"e2e-datasend-{profile.seed}",
    )
    assert task["status"] == "completed", task.get("statusReason")
    everything = json.dumps([federation.search("research", kind, since) for kind in _RESEARCH_TYPES])
    for value in record.person.identifying_values():
        assert value not in everything, f"{value!r} of {record.person.patient_id} reached the research node"
    assert KVNR not in everything
    assert "https://hubnode.org/fhir/sid/source" not in everything
    pseudonymised = federation.search(
        "research", "Patient", {"identifier": "https://hubnode.org/fhir/sid/pseudonym/research-demo|"}
    )
    assert all(set(p) <= {"resourceType", "id", "meta", "identifier", "gender", "birthDate"} for p in pseudonymised)


_RESEARCH_TYPES = ("Patient", "Encounter", "Condition", "Procedure", "Observation", "MedicationStatement")
