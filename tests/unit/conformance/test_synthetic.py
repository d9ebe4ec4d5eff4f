from __future__ import annotations

import pytest
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given, settings

from fixtures.consents import MII_CONSENT_PROFILE
from fixtures.strategies import bundles, patient_profiles
from fixtures.synthetic import (
    ATC_SYSTEM,
    ICD10GM_SYSTEM,
    LOINC_LAB_CATEGORY,
    LOINC_SYSTEM,
    OBSERVATION_CATEGORY_SYSTEM,
    OPS_SYSTEM,
    ORGANIZATION_SYSTEM,
    PROFILES,
    PatientProfile,
    canonical_json,
    patient_record,
    synthetic_person,
)
from servicekit.kvnr import KVNR_SYSTEM, is_valid_kvnr
from tests.conftest import examples

FULL = PatientProfile(
    seed=42,
    conditions=("C50.4", "G35"),
    procedures=("5-870.a2",),
    observations=("edss", "2857-1"),
    medications=("L02BA01",),
)


def test_the_same_profile_gives_the_same_bytes() -> None:
    assert canonical_json(patient_record(FULL).bundle()) == canonical_json(patient_record(FULL).bundle())


def test_different_seeds_give_different_people() -> None:
    first, second = patient_record(FULL).person, patient_record(PatientProfile(seed=43)).person
    assert (first.kvnr, first.mrn) != (second.kvnr, second.mrn)


def test_synthetic_person_is_the_person_in_the_record() -> None:
    assert synthetic_person(42) == patient_record(FULL).person


def test_unknown_codes_are_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match=r"unknown ICD-10-GM code X99\.9; known: C50\.4"):
        PatientProfile(seed=1, conditions=("X99.9",))


@settings(max_examples=examples(25))
@given(bundles())
def test_generated_bundles_are_valid_r4b(bundle: dict) -> None:
    Bundle.model_validate(bundle)


@settings(max_examples=examples(25))
@given(patient_profiles())
def test_generated_bundles_have_the_mii_shape(profile: PatientProfile) -> None:
    bundle = patient_record(profile).bundle()
    assert bundle["type"] == "transaction"
    ids = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        assert entry["fullUrl"].endswith(entry["request"]["url"])
        ids.add(entry["request"]["url"])
    by_type: dict[str, list[dict]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    [patient] = by_type["Patient"]
    kvnr = next(i["value"] for i in patient["identifier"] if i["system"] == KVNR_SYSTEM)
    assert is_valid_kvnr(kvnr)
    assert patient["birthDate"].startswith(str(profile.birth_year))
    for condition in by_type["Condition"]:
        assert condition["code"]["coding"][0]["system"] == ICD10GM_SYSTEM
    for procedure in by_type.get("Procedure", []):
        assert procedure["code"]["coding"][0]["system"] == OPS_SYSTEM
    for statement in by_type.get("MedicationStatement", []):
        assert statement["medicationCodeableConcept"]["coding"][0]["system"] == ATC_SYSTEM
    for resource in (r for resources in by_type.values() for r in resources):
        for reference in _references(resource):
            assert reference in ids, f"{resource['id']} refers to {reference}, which is not in the bundle"
    [consent] = by_type["Consent"]
    assert consent["meta"]["profile"] == [MII_CONSENT_PROFILE]
    assert consent["provision"]["type"] == "deny"


def test_a_lab_observation_has_what_the_mii_lab_profile_requires_and_others_only_their_category() -> None:
    """The MII 2026 lab profile's required slices: an OBI identifier with an assigner, LOINC 26436-6 and laboratory."""
    record = patient_record(PatientProfile(seed=7, observations=("718-7", "8867-4")))
    lab, vital = (r for r in record.resources if r["resourceType"] == "Observation")
    assert lab["meta"]["profile"] == [PROFILES["Observation"]]
    [identifier] = lab["identifier"]
    assert identifier["type"]["coding"] == [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "OBI"}]
    assert identifier["assigner"] == {"identifier": {"system": ORGANIZATION_SYSTEM, "value": "dic"}}
    assert {(c["system"], c["code"]) for c in lab["category"][0]["coding"]} == {
        (LOINC_SYSTEM, LOINC_LAB_CATEGORY),
        (OBSERVATION_CATEGORY_SYSTEM, "laboratory"),
    }
    assert [c["code"] for c in vital["category"][0]["coding"]] == ["vital-signs"]


def test_a_profile_without_consent_codes_has_no_consent_resource() -> None:
    bundle = patient_record(PatientProfile(seed=5, consent=())).bundle()
    assert "Consent" not in {entry["resource"]["resourceType"] for entry in bundle["entry"]}


def _references(data: object) -> list[str]:
    if isinstance(data, dict):
        found = [data["reference"]] if isinstance(data.get("reference"), str) else []
        return found + [r for value in data.values() for r in _references(value)]
    if isinstance(data, list):
        return [r for value in data for r in _references(value)]
    return []
