"""KnownPersons: what the connector remembers of a person's record, and what it must not."""

from __future__ import annotations

import pytest

from connector.known_persons import KnownPersons, written_version

MRN = {"system": "https://clinic.example/mrn", "value": "m1"}


@pytest.mark.parametrize(
    ("response", "version"),
    [
        ({"etag": 'W/"3"', "location": "Patient/x/_history/3"}, "3"),
        ({"etag": "4"}, "4"),
        ({"location": "Patient/x/_history/5"}, "5"),
        ({"status": "200 OK"}, None),
    ],
)
def test_the_version_written_is_read_from_the_etag_else_the_location(response: dict[str, str], version: str) -> None:
    assert written_version(response) == version


def test_a_written_patient_is_recalled_at_the_version_hapi_gave_it() -> None:
    persons = KnownPersons()
    persons.remember("M1", {"resourceType": "Patient", "identifier": [MRN]}, {"etag": 'W/"2"'})
    recalled = persons.recall("M1")
    assert recalled is not None
    assert recalled.resource == {"resourceType": "Patient", "identifier": [MRN], "meta": {"versionId": "2"}}


def test_identifiers_holding_a_reference_are_not_remembered_as_sent() -> None:
    persons = KnownPersons()
    persons.remember("M1", {"identifier": [MRN]}, {"etag": "1"})
    assigned = {**MRN, "assigner": {"reference": "urn:uuid:0c2f0f3e-6a8b-4c7e-9a57-2f4f7d1c0b61"}}
    persons.remember("M1", {"identifier": [assigned]}, {"etag": "2"})
    assert persons.recall("M1") is None, "HAPI stores the reference resolved: only a read says how"


def test_a_write_without_a_version_forgets_the_person_and_so_does_forget() -> None:
    persons = KnownPersons()
    persons.remember("M1", {"identifier": [MRN]}, {"etag": "1"})
    persons.remember("M1", {"identifier": [MRN]}, {"status": "200 OK"})
    assert persons.recall("M1") is None
    persons.remember("M2", {"identifier": [MRN]}, {"etag": "1"})
    persons.forget("M2")
    assert persons.recall("M2") is None


def test_the_least_recently_used_person_is_forgotten_beyond_capacity() -> None:
    persons = KnownPersons(capacity=2)
    for person in ("M1", "M2"):
        persons.remember(person, {"identifier": [MRN]}, {"etag": "1"})
    assert persons.recall("M1") is not None
    persons.remember("M3", {"identifier": [MRN]}, {"etag": "1"})
    assert persons.recall("M2") is None
    assert persons.recall("M1") is not None
    assert persons.recall("M3") is not None
