from __future__ import annotations

from conformance.invariants import INVARIANTS, identifying_leaks
from conformance.requirements import load_requirements
from fixtures.synthetic import PatientProfile, patient_record

RECORD = patient_record(PatientProfile(seed=11, conditions=("C61",)))
PERSON = RECORD.person


def test_every_invariant_stands_for_a_known_requirement() -> None:
    assert {invariant.requirement for invariant in INVARIANTS.values()} <= set(load_requirements())


def test_the_clinical_record_itself_is_full_of_identifying_data() -> None:
    leaks = identifying_leaks(RECORD.bundle(), [PERSON])
    assert any("identifying element `name`" in leak for leak in leaks)
    assert any(PERSON.kvnr in leak for leak in leaks)


def test_a_pseudonymised_patient_with_gender_and_birth_year_only_does_not_leak() -> None:
    extract = {
        "resourceType": "Patient",
        "id": "psn-7f3a",
        "identifier": [{"system": "https://ths-greifswald.de/gpas", "value": "psn-7f3a"}],
        "gender": PERSON.gender,
        "birthDate": PERSON.birth_date[:4],
    }
    assert identifying_leaks(extract, [PERSON]) == []


def test_a_full_birth_date_or_a_source_identifier_anywhere_is_a_leak() -> None:
    extract = {"resourceType": "Observation", "note": [{"text": f"born {PERSON.birth_date}"}]}
    assert identifying_leaks(extract, [PERSON]) == [
        f"$.note[0].text: 'born {PERSON.birth_date}' contains {PERSON.birth_date} of {PERSON.patient_id}"
    ]
    extract = {"resourceType": "Patient", "identifier": [{"value": PERSON.mrn}]}
    assert len(identifying_leaks(extract, [PERSON])) == 1
