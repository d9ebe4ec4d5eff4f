"""Validation (structure + MII rules) and the pure transform to a HAPI transaction, on the 22 real KDS bundles."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from connector import mii_rules
from connector.hapi import Read
from connector.ingest import with_identifiers_of, with_person_records
from connector.transform import (
    NAMESPACE,
    PERSON_SYSTEM,
    Origins,
    SourceKey,
    bundle_from_ndjson,
    person_key,
    to_transaction,
)
from connector.validation import validate
from tests.unit.connector.conftest import MII_BUNDLES, mii_bundle

SYSTEM = "https://hubnode.org/fhir/sid/source/dic"


def references(value: Any) -> list[str]:
    if isinstance(value, list):
        return [r for item in value for r in references(item)]
    if not isinstance(value, dict):
        return []
    found = [r for item in value.values() for r in references(item)]
    return [*found, value["reference"]] if isinstance(value.get("reference"), str) else found


def test_all_22_mii_bundles_are_there() -> None:
    assert len(MII_BUNDLES) == 22


@pytest.mark.parametrize("path", MII_BUNDLES, ids=lambda p: p.stem.removeprefix("Bundle-mii-exa-test-data-bundle-"))
def test_every_real_mii_bundle_validates_and_becomes_one_conditional_update_per_entry(path: Path) -> None:
    bundle = json.loads(path.read_text())
    assert validate(bundle["entry"]) == []
    transaction = to_transaction(bundle["entry"], SYSTEM)
    assert len(transaction["entry"]) == len(bundle["entry"])
    full_urls = {e["fullUrl"] for e in transaction["entry"]}
    for original, entry in zip(bundle["entry"], transaction["entry"], strict=True):
        kind = original["resource"]["resourceType"]
        assert entry["request"]["method"] == "PUT"
        assert entry["request"]["url"].startswith(f"{kind}?identifier=")
        assert "id" not in entry["resource"]
        assert set(references(entry["resource"])) <= full_urls  # every reference in the KDS bundles is internal


def test_replaying_a_bundle_gives_an_identical_transaction() -> None:
    bundle = mii_bundle("onkologie-1")
    assert to_transaction(copy.deepcopy(bundle)["entry"], SYSTEM) == to_transaction(bundle["entry"], SYSTEM)


def test_the_source_identifier_keys_each_entry_and_references_point_at_its_placeholder() -> None:
    bundle = mii_bundle("pat-1")
    transaction = to_transaction(bundle["entry"], SYSTEM)
    patient, consent = transaction["entry"][0], transaction["entry"][1]
    key = SourceKey("Patient", SYSTEM, "Patient/mii-exa-test-data-patient-1")
    assert patient["request"]["url"] == f"Patient?identifier={SYSTEM}|Patient/mii-exa-test-data-patient-1"
    assert patient["fullUrl"] == key.full_url
    assert {"system": SYSTEM, "value": "Patient/mii-exa-test-data-patient-1"} in patient["resource"]["identifier"]
    assert consent["resource"]["patient"]["reference"] == key.full_url
    assert bundle["entry"][1]["resource"]["patient"]["reference"] == "Patient/mii-exa-test-data-patient-1"  # untouched


def test_a_reference_outside_the_bundle_becomes_a_conditional_reference_on_its_source_identifier() -> None:
    entry = {
        "resource": {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/p-1/_history/2"},
            "focus": [{"reference": "#contained"}, {"reference": "https://elsewhere.example/Patient/9"}],
        }
    }
    [result] = to_transaction([entry], SYSTEM)["entry"]
    assert result["resource"]["subject"]["reference"] == f"Patient?identifier={SYSTEM}|Patient/p-1"
    assert [f["reference"] for f in result["resource"]["focus"]] == [
        "#contained",
        "https://elsewhere.example/Patient/9",
    ]


def test_conditional_urls_escape_the_token_search_separators() -> None:
    key = SourceKey("QuestionnaireResponse", "urn:x", "a,b|c$d\\e f")
    assert key.conditional_url == "QuestionnaireResponse?identifier=urn:x|a%5C%2Cb%5C%7Cc%5C%24d%5C%5Ce%20f"


def test_a_resource_with_a_single_identifier_keeps_its_own_as_key() -> None:
    own = {"system": "urn:example:qr", "value": "qr-1"}
    entry = {"resource": {"resourceType": "QuestionnaireResponse", "id": "q", "status": "completed", "identifier": own}}
    [result] = to_transaction([entry], SYSTEM)["entry"]
    assert result["request"]["url"] == "QuestionnaireResponse?identifier=urn:example:qr|qr-1"
    assert result["resource"]["identifier"] == own


def test_an_entry_without_id_is_keyed_by_its_urn_uuid_full_url() -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}], "gender": "female"}
    entries = [{"fullUrl": "urn:uuid:0b5f6e0c-6c1f-4b43-9a1e-0f1e2d3c4b5a", "resource": patient}]
    assert validate(entries) == []
    [result] = to_transaction(entries, SYSTEM)["entry"]
    assert result["request"]["url"].endswith("|Patient/0b5f6e0c-6c1f-4b43-9a1e-0f1e2d3c4b5a")


def test_every_problem_of_every_entry_is_named() -> None:
    entries = [
        {"resource": {"resourceType": "Patient", "id": "p"}},
        {"resource": {"resourceType": "Binary", "id": "b", "contentType": "text/plain"}},
        {"resource": {"resourceType": "Nope"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}},
        {"resource": {"resourceType": "Patient", "id": "p", "identifier": [{"value": "1"}], "gender": "male"}},
        {"request": {"method": "DELETE", "url": "Patient/p"}, "resource": {"resourceType": "Patient"}},
        {
            "resource": {
                "resourceType": "Encounter",
                "id": "e",
                "status": "finished",
                "class": {"code": "IMP"},
                "subject": {"reference": "urn:uuid:nowhere"},
            }
        },
        "not an entry",
    ]
    found = {(p.expression, p.message.split(" ")[0]) for p in validate(entries)}
    assert ("Bundle.entry[0].resource.identifier", "is") in found
    assert ("Bundle.entry[0].resource.gender", "is") in found
    assert ("Bundle.entry[1].resource", "a") in found  # Binary has no identifier
    assert ("Bundle.entry[2].resource.resourceType", "'Nope'") in found
    assert ("Bundle.entry[3].resource.id", "is") in found
    assert ("Bundle.entry[3].resource.subject", "is") in found
    assert ("Bundle.entry[4].resource", "Patient/p") in found  # the same source id twice
    assert ("Bundle.entry[5].resource", "request.method") in found
    assert ("Bundle.entry[6].resource.subject.reference", "urn:uuid:nowhere") in found
    assert ("Bundle.entry[7].resource", "the") in found


@pytest.mark.parametrize(
    ("change", "expression"),
    [
        (lambda c: c["code"]["coding"][0].pop("version"), "code.coding[0].version"),
        (lambda c: c["code"]["coding"][0].update(code="not a code"), "code.coding[0].code"),
        (lambda c: c["code"].update(coding=[{"system": "urn:other", "code": "x"}]), "code.coding"),
    ],
)
def test_an_mii_diagnosis_needs_a_versioned_icd_10_gm_code(change: Any, expression: str) -> None:
    condition = {
        "resourceType": "Condition",
        "meta": {"profile": [f"{mii_rules.DIAGNOSE_PROFILE}|2025.0.0"]},
        "code": {"coding": [{"system": mii_rules.ICD10GM, "version": "2024", "code": "C50.4"}]},
        "subject": {"reference": "Patient/p"},
    }
    assert mii_rules.problems(condition) == []
    change(condition)
    assert [path for path, _ in mii_rules.problems(condition)] == [expression]


def test_an_mii_consent_denies_at_the_top_and_permits_policies_with_periods() -> None:
    consent = next(e["resource"] for e in mii_bundle("pat-1")["entry"] if e["resource"]["resourceType"] == "Consent")
    assert mii_rules.problems(consent) == []
    consent["provision"]["type"] = "permit"
    consent["provision"]["provision"][0]["code"][0]["coding"][0]["system"] = "urn:other"
    del consent["provision"]["provision"][1]["period"]
    consent["meta"]["profile"] = ["http://example.org/other-consent"]
    assert sorted(path for path, _ in mii_rules.problems(consent)) == [
        "meta.profile",
        "provision.provision[0].code[0].coding",
        "provision.provision[1].period",
        "provision.type",
    ]


def test_medication_codes_are_atc_or_pzn_and_lab_results_loinc() -> None:
    statement = {
        "resourceType": "MedicationStatement",
        "subject": {"reference": "Patient/p"},
        "medicationCodeableConcept": {"coding": [{"system": "urn:other", "code": "x"}]},
    }
    assert [p for p, _ in mii_rules.problems(statement)] == ["medicationCodeableConcept.coding"]
    lab = {
        "resourceType": "Observation",
        "meta": {"profile": [mii_rules.LABOR_PROFILE]},
        "subject": {},
        "code": {"coding": [{"system": mii_rules.LOINC, "code": "7187"}]},
    }
    assert sorted(p for p, _ in mii_rules.problems(lab)) == ["code.coding[0].code", "effective"]


def test_ndjson_lines_become_entries_and_bad_lines_are_named() -> None:
    bundle, places, problems = bundle_from_ndjson(b'{"resourceType": "Patient", "id": "a"}\n\n[1]\n{"x": 1\n')
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["a"]
    assert places == ["line 1"]
    assert [(p.line, p.message.split(" (")[0]) for p in problems] == [
        (3, "is not a FHIR resource"),
        (4, "is not valid JSON"),
    ]
    assert bundle_from_ndjson(b'{"resourceType": "Patient"}\n\xff\n')[2][0].line == 2


def test_a_transaction_bundle_line_contributes_its_entries_and_other_bundles_are_resources() -> None:
    patients = [{"resourceType": "Patient", "id": name} for name in ("a", "b", "c")]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": p} for p in patients[1:]]}
    document = {"resourceType": "Bundle", "id": "d", "type": "document"}
    empty = {"resourceType": "Bundle", "type": "collection", "entry": []}
    body = "\n".join(json.dumps(line) for line in (patients[0], transaction, document, empty)).encode()
    bundle, places, problems = bundle_from_ndjson(body)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["a", "b", "c", "d"]
    assert places == ["line 1", "line 2 Bundle.entry[0].resource", "line 2 Bundle.entry[1].resource", "line 3"]
    assert [(p.line, p.message) for p in problems] == [(4, "is a collection Bundle without entries: nothing to import")]


def test_an_entry_equal_to_one_before_it_is_taken_once_and_a_differing_twin_stays() -> None:
    shared = {"fullUrl": "https://x/Organization/o", "resource": {"resourceType": "Organization", "id": "o"}}
    changed = {**shared, "resource": {**shared["resource"], "name": "other"}}
    lines = [{"resourceType": "Bundle", "type": "transaction", "entry": [entry]} for entry in (shared, shared, changed)]
    bundle, places, _ = bundle_from_ndjson("\n".join(map(json.dumps, lines)).encode())
    assert bundle["entry"] == [shared, changed]
    assert places == ["line 1 Bundle.entry[0].resource", "line 3 Bundle.entry[0].resource"]


def test_a_linked_patient_is_written_at_an_id_of_its_person_id_and_keeps_its_source_identifier() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": PERSON_SYSTEM, "value": "M1"}]}
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
    bundle = to_transaction([{"resource": patient}, {"resource": condition}], "https://src.example/practice")
    stored_patient, stored_condition = bundle["entry"]
    assert stored_patient["request"]["url"] == person_key("M1").request_url
    assert person_key("M1").request_url == f"Patient/hn-{uuid.uuid5(NAMESPACE, f'{PERSON_SYSTEM}|M1').hex}"
    other_source = to_transaction([{"resource": {**patient, "id": "x9"}}], "https://src.example/dic")
    assert other_source["entry"][0]["request"]["url"] == stored_patient["request"]["url"], "one Patient per person"
    assert {"system": "https://src.example/practice", "value": "Patient/p1"} in stored_patient["resource"]["identifier"]
    assert stored_condition["resource"]["subject"]["reference"] == stored_patient["fullUrl"]


def test_a_second_source_keeps_the_identifiers_the_node_already_has_for_the_person() -> None:
    stored = {
        "identifier": [
            {"system": "https://src.example/dic", "value": "Patient/a"},
            {"system": PERSON_SYSTEM, "value": "M1"},
        ]
    }
    arriving = {
        "resourceType": "Patient",
        "identifier": [{"system": PERSON_SYSTEM, "value": "M1"}, {"system": "k", "value": "1"}],
    }
    merged = with_identifiers_of(arriving, stored)
    assert merged["identifier"] == [
        {"system": PERSON_SYSTEM, "value": "M1"},
        {"system": "k", "value": "1"},
        {"system": "https://src.example/dic", "value": "Patient/a"},
    ]


def test_a_persons_patient_is_written_only_over_the_version_of_the_record_it_was_merged_with() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": PERSON_SYSTEM, "value": "M1"}]}
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
    transaction = to_transaction([{"resource": patient}, {"resource": condition}], "https://src.example/dic")
    before = copy.deepcopy(transaction)
    stored = {"meta": {"versionId": "7"}, "identifier": [{"system": "k", "value": "1"}]}
    over_stored = with_person_records(transaction, {0: Read(stored)})
    first_record = with_person_records(transaction, {0: Read(None)})
    after_deletion = with_person_records(transaction, {0: Read(None, deleted=True)})
    assert "ifMatch" not in after_deletion["entry"][0]["request"], "HAPI keeps no version of a deleted one to match"
    assert over_stored["entry"][0]["request"]["ifMatch"] == 'W/"7"'
    assert {"system": "k", "value": "1"} in over_stored["entry"][0]["resource"]["identifier"]
    assert first_record["entry"][0]["request"]["ifMatch"] == 'W/"0"', "no record yet: only if none was made meanwhile"
    assert first_record["entry"][0]["resource"] == transaction["entry"][0]["resource"]
    assert over_stored["entry"][1] == first_record["entry"][1] == transaction["entry"][1], "only the person's entry"
    assert transaction == before, "the transaction is kept as made, for another try"


BASE = "https://hubnode.org/fhir/sid/source"


def stored_as(entry: dict[str, Any], hapi_id: str) -> dict[str, Any]:
    """What a node's HAPI holds after the transaction `entry`, and sends on in a careSummary."""
    return {"resource": {**entry["resource"], "id": hapi_id}}


def honouring(*systems: str, sent: frozenset[tuple[str, str]] = frozenset()) -> Origins:
    """Origins a receiver honours: those of the sender's own systems, and records it sent the sender before."""
    return Origins(BASE, lambda system, value: system in systems or (system, value) in sent)


def test_a_journey_sent_back_to_where_it_came_from_updates_the_originals_instead_of_storing_twins() -> None:
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "IMP"}}
    [at_dic] = to_transaction([{"resource": encounter}], f"{BASE}/dic", honouring(f"{BASE}/dic"))["entry"]
    [at_practice] = to_transaction([stored_as(at_dic, "123")], f"{BASE}/dic", honouring(f"{BASE}/dic"))["entry"]
    sent = frozenset({(f"{BASE}/dic", "Encounter/e1")})  # the dic sent it to the practice, so it may come back
    back = honouring(f"{BASE}/practice", sent=sent)
    [back_at_dic] = to_transaction([stored_as(at_practice, "456")], f"{BASE}/practice", back)["entry"]
    assert at_dic["request"]["url"] == at_practice["request"]["url"] == back_at_dic["request"]["url"]
    assert at_dic["request"]["url"] == f"Encounter?identifier={BASE}/dic|Encounter/e1"
    # references the practice makes to its own copy (Encounter/456) still find the original at the dic
    assert {"system": f"{BASE}/practice", "value": "Encounter/456"} in back_at_dic["resource"]["identifier"]


def test_a_peer_naming_a_record_of_this_node_it_was_never_sent_gets_its_own_copy_without_that_name() -> None:
    condition = {"resourceType": "Condition", "id": "c9", "subject": {"reference": "Patient/p"}}
    tampered = {**condition, "identifier": [{"system": f"{BASE}/dic", "value": "Condition/c1"}]}
    [stored] = to_transaction([{"resource": tampered}], f"{BASE}/practice", honouring(f"{BASE}/practice"))["entry"]
    assert stored["request"]["url"] == f"Condition?identifier={BASE}/practice|Condition/c9"
    assert stored["resource"]["identifier"] == [{"system": f"{BASE}/practice", "value": "Condition/c9"}]


def test_a_third_nodes_record_is_keyed_under_the_peer_that_sent_it() -> None:
    condition = {"resourceType": "Condition", "id": "c9", "subject": {"reference": "Patient/p"}}
    relayed = {**condition, "identifier": [{"system": f"{BASE}/research", "value": "Condition/r1"}]}
    [stored] = to_transaction([{"resource": relayed}], f"{BASE}/practice", honouring(f"{BASE}/practice"))["entry"]
    assert stored["request"]["url"] == f"Condition?identifier={BASE}/practice|Condition/c9"


def test_an_origin_is_honoured_only_under_the_origin_base_and_for_the_resource_type() -> None:
    foreign = {"system": "https://elsewhere.example/sid", "value": "Encounter/x"}
    other_type = {"system": f"{BASE}/dic", "value": "Condition/c"}
    encounter = {"resourceType": "Encounter", "id": "e", "status": "finished", "class": {"code": "IMP"}}
    entry = {"resource": {**encounter, "identifier": [foreign, other_type]}}
    [result] = to_transaction([entry], f"{BASE}/practice", honouring(f"{BASE}/dic", f"{BASE}/practice"))["entry"]
    assert result["request"]["url"] == f"Encounter?identifier={BASE}/practice|Encounter/e"
    carried = {"resource": {**encounter, "identifier": [{"system": f"{BASE}/dic", "value": "Encounter/e0"}]}}
    [extract] = to_transaction([carried], "https://hubnode.org/fhir/sid/research-extract/dic")["entry"]
    assert extract["request"]["url"].startswith("Encounter?identifier=https://hubnode.org/fhir/sid/research-extract/")


def test_a_type_the_store_cannot_search_by_identifier_is_put_at_an_id_derived_from_its_key() -> None:
    event = {"resourceType": "AdverseEvent", "id": "a1", "actuality": "actual", "subject": {"reference": "Patient/p"}}
    note = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}
    note["focus"] = [{"reference": "AdverseEvent/a1"}, {"reference": "AdverseEvent/elsewhere"}]
    searchable = {"Observation", "Patient"}
    transaction = to_transaction([{"resource": event}, {"resource": note}], SYSTEM, searchable=searchable)
    stored_event, stored_note = transaction["entry"]
    key = SourceKey("AdverseEvent", SYSTEM, "AdverseEvent/a1", by_id=True)
    assert stored_event["request"]["url"] == f"AdverseEvent/{key.stable_id}"
    assert key.stable_id.startswith("hn-")
    assert stored_event["resource"]["identifier"] == {"system": SYSTEM, "value": "AdverseEvent/a1"}
    assert stored_event["resource"]["subject"]["reference"] == f"Patient?identifier={SYSTEM}|Patient/p"
    assert stored_note["request"]["url"].startswith("Observation?identifier=")
    elsewhere = SourceKey("AdverseEvent", SYSTEM, "AdverseEvent/elsewhere", by_id=True)
    assert [f["reference"] for f in stored_note["resource"]["focus"]] == [
        stored_event["fullUrl"],
        f"AdverseEvent/{elsewhere.stable_id}",
    ]
    again = to_transaction([{"resource": event}, {"resource": note}], SYSTEM, searchable=searchable)
    assert again == transaction
