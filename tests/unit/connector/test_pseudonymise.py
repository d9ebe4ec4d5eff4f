"""The research extract keeps nothing identifying, for any patient and any resources (property)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.pseudonymise import pseudonymise, replacement_identifier

KVNR = "http://fhir.de/sid/gkv/kvid-10"
SOURCE = "https://hubnode.org/fhir/sid/source/dic"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ORGANIZATION = "http://dsf.dev/sid/organization-identifier"
PSEUDONYM_DOMAIN = "https://hubnode.org/fhir/sid/pseudonym-domain"
token = st.from_regex(r"Xq[a-z]{6,10}", fullmatch=True)
ids = st.from_regex(r"Zz[0-9a-z]{6,12}", fullmatch=True)
birth_dates = st.dates(min_value=date(1920, 1, 1), max_value=date(1999, 12, 31))


@st.composite
def patients(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str]]:
    """A patient and their resources, and every identifying string put into them."""
    family, given_name, street, city, phone, kvnr, source_id, note = (draw(token) for _ in range(8))
    patient_id = draw(ids)
    birth = draw(birth_dates).isoformat()
    identifying = [family, given_name, street, city, phone, kvnr, source_id, note, patient_id, birth]
    patient = {
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{"system": KVNR, "value": kvnr}, {"system": SOURCE, "value": f"Patient/{source_id}"}],
        "name": [{"family": family, "given": [given_name]}],
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"line": [street], "city": city}],
        "gender": draw(st.sampled_from(["female", "male", "other", "unknown"])),
        "birthDate": birth,
        "text": {"status": "generated", "div": f"<div>{family}</div>"},
        "extension": [
            {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": family}
        ],
        "contact": [{"name": {"family": family}}],
    }
    resources: list[dict[str, Any]] = [patient]
    for kind in draw(
        st.lists(
            st.sampled_from(["Condition", "Observation", "Encounter", "RelatedPerson", "Practitioner"]), max_size=6
        )
    ):
        resource_id, site, local_type = draw(ids), draw(token), draw(token)
        identifying.extend((resource_id, site, local_type))
        site_types = f"https://{site}.example.org/fhir/CodeSystem/identifier-types"
        practitioner = {"reference": f"Practitioner/{draw(ids)}", "display": family}
        resource: dict[str, Any] = {
            "resourceType": kind,
            "id": resource_id,
            "identifier": [
                {
                    "type": {
                        "coding": [{"system": V2_0203, "code": "OBI"}, {"system": site_types, "code": local_type}]
                    },
                    "system": SOURCE,
                    "value": f"{kind}/{draw(token)}",
                    "assigner": {"identifier": {"system": ORGANIZATION, "value": site}, "display": family},
                }
            ],
            "extension": [{"url": "http://example.org/x", "valueHumanName": {"family": family}}],
            "text": {"status": "generated", "div": f"<div>{given_name} {family}</div>"},
        }
        subject = {"reference": f"Patient/{patient_id}", "display": f"{given_name} {family}"}
        code = {"coding": [{"system": "http://loinc.org", "code": "1234-5", "display": "Lab"}], "text": note}
        if kind == "Condition":
            resource.update(subject=subject, code=code, note=[{"text": f"{note} said"}], asserter=practitioner)
        elif kind == "Observation":
            resource.update(status="final", subject=subject, code=code, performer=[practitioner])
            resource.update(note=[{"text": f"{note} said"}], effectiveDateTime="2024-02-03")
        elif kind == "Encounter":
            resource.update(status="finished", subject=subject, participant=[{"individual": practitioner}])
            place = {"reference": f"Location/{draw(ids)}", "display": street}
            resource.update(location=[{"location": place, "period": {"start": "2024-02-03"}}])
            resource["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}
        else:
            resource.update(name=[{"family": family}], telecom=[{"value": phone}], address=[{"city": city}])
            if kind == "RelatedPerson":
                resource["patient"] = {"reference": f"Patient/{patient_id}"}
        resources.append(resource)
        identifying.extend(v["value"].split("/")[1] for v in resource["identifier"])
    return resources, identifying


@given(patients(), st.from_regex(r"S[A-Z0-9]{8}", fullmatch=True))
def test_no_identifying_element_survives_pseudonymisation(
    drawn: tuple[list[dict[str, Any]], list[str]], pseudonym: str
) -> None:
    resources, identifying = drawn
    extract = pseudonymise(resources, resources[0]["id"], pseudonym, "study")
    text = json.dumps(extract)
    for value in identifying:
        assert value not in text
    assert KVNR not in text
    assert SOURCE not in text
    clinical = [r["resourceType"] for r in resources if r["resourceType"] in ("Condition", "Observation", "Encounter")]
    assert sorted(r["resourceType"] for r in extract[1:]) == sorted(clinical), "every clinical resource is kept"
    assert extract[0]["birthDate"] == resources[0]["birthDate"][:4]


@given(patients(), st.from_regex(r"S[A-Z0-9]{8}", fullmatch=True))
def test_every_reference_to_the_patient_points_at_the_pseudonymised_patient(
    drawn: tuple[list[dict[str, Any]], list[str]], pseudonym: str
) -> None:
    resources, _ = drawn
    extract = pseudonymise(resources, resources[0]["id"], pseudonym, "study")
    assert extract[0]["id"] == pseudonym
    assert extract[0]["identifier"] == [{"system": "https://hubnode.org/fhir/sid/pseudonym/study", "value": pseudonym}]
    for resource in extract[1:]:
        assert resource["subject"] == {"reference": f"Patient/{pseudonym}"}
        assert "performer" not in resource
        assert "location" not in resource, "an Encounter.location whose Location was dropped goes entirely"


@given(patients(), st.from_regex(r"S[A-Z0-9]{8}", fullmatch=True))
def test_each_kept_resource_gets_one_identifier_made_of_its_new_id_and_the_domain(
    drawn: tuple[list[dict[str, Any]], list[str]], pseudonym: str
) -> None:
    resources, _ = drawn
    extract = pseudonymise(resources, resources[0]["id"], pseudonym, "study")
    for resource in extract[1:]:
        assert resource["identifier"] == [
            {
                "type": {"coding": [{"system": V2_0203, "code": "OBI"}]},
                "system": f"https://hubnode.org/fhir/sid/pseudonym/study/{resource['resourceType']}",
                "value": resource["id"],
                "assigner": {"identifier": {"system": PSEUDONYM_DOMAIN, "value": "study"}},
            }
        ]


def test_a_replacement_identifier_has_a_type_or_assigner_only_where_the_original_had_one() -> None:
    original = {"system": SOURCE, "value": "Observation/1"}
    assert replacement_identifier("study", "Observation", "n1", [original]) == {
        "system": "https://hubnode.org/fhir/sid/pseudonym/study/Observation",
        "value": "n1",
    }
    typed = {"type": {"coding": [{"system": "http://fhir.de/CodeSystem/identifier-type-de-basis", "code": "KVZ10"}]}}
    assert replacement_identifier("study", "Encounter", "n2", [original, typed | original])["type"] == typed["type"]


def test_a_resource_without_identifiers_gets_none_and_a_single_identifier_stays_single() -> None:
    patient = {"resourceType": "Patient", "id": "p"}
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "q",
        "status": "completed",
        "identifier": {"system": SOURCE, "value": "QuestionnaireResponse/q"},
    }
    condition = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"}}
    _, kept_condition, kept_response = pseudonymise([patient, response, condition], "p", "S1", "study")
    assert "identifier" not in kept_condition
    assert kept_response["identifier"] == {
        "system": "https://hubnode.org/fhir/sid/pseudonym/study/QuestionnaireResponse",
        "value": kept_response["id"],
    }


@given(patients())
def test_a_replay_gives_the_same_ids_whatever_the_order_of_the_resources(
    drawn: tuple[list[dict[str, Any]], list[str]],
) -> None:
    resources, _ = drawn
    first = pseudonymise(resources, resources[0]["id"], "S1234", "study")
    second = pseudonymise(list(reversed(resources)), resources[0]["id"], "S1234", "study")
    assert first == second


def test_a_pseudonym_that_is_no_fhir_id_gets_a_derived_patient_id() -> None:
    extract = pseudonymise([{"resourceType": "Patient", "id": "1"}], "1", "S_1 2", "study")
    assert extract[0]["id"] != "S_1 2"
    assert extract[0]["identifier"][0]["value"] == "S_1 2"


def test_pseudonymising_a_patient_who_is_not_among_the_resources_is_an_error() -> None:
    with pytest.raises(ValueError, match="no Patient/1"):
        pseudonymise([], "1", "S1", "study")
