"""Blocking keys: Cologne phonetics, keys stable under spelling variants, candidates found only through them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import inspect, select, text

from servicekit import db as servicekit_db
from trustcentre import identities
from trustcentre.blocking import cologne_phonetics, keys_of, search_keys
from trustcentre.db import MIGRATIONS, connect, person_demographics, persons
from trustcentre.matching import Demographics

GERMAN_LETTERS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöüß", min_size=1, max_size=20)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Müller-Lüdenscheidt", "65752682"),
        ("Wikipedia", "3412"),
        ("Breschnew", "17863"),
        ("Meier", "67"),
        ("Meyer", "67"),
        ("Maier", "67"),
        ("Christoph", "47823"),
        ("Xaver", "4837"),
        ("Anna", "06"),
        ("", ""),
    ],
)
def test_cologne_phonetics_gives_the_published_codes(name: str, code: str) -> None:
    assert cologne_phonetics(name) == code


@given(GERMAN_LETTERS)
def test_the_code_ignores_case_and_umlaut_spellings(name: str) -> None:
    code = cologne_phonetics(name)
    assert cologne_phonetics(name.upper()) == code
    spelt_out = name.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")
    assert cologne_phonetics(spelt_out) == code


@given(GERMAN_LETTERS, st.sampled_from(["é", "è", "ê", "ç", "ñ"]))
def test_a_keys_name_part_ignores_accents(name: str, accented: str) -> None:
    plain = {"é": "e", "è": "e", "ê": "e", "ç": "c", "ñ": "n"}[accented]
    born = date(1970, 3, 4)
    assert keys_of(Demographics(name + accented, name, born)) == keys_of(Demographics(name + plain, name, born))


@given(GERMAN_LETTERS, GERMAN_LETTERS, st.dates(min_value=date(1900, 1, 1)))
def test_a_record_with_swapped_names_looks_for_the_keys_the_stored_one_has(
    family: str, given_name: str, born: date
) -> None:
    stored = keys_of(Demographics(family, given_name, born))
    family_keys, given_keys = search_keys(Demographics(given_name, family, born))
    assert stored.family_key is None or stored.family_key in family_keys
    assert stored.given_key is None or stored.given_key in given_keys


def test_candidates_are_only_the_records_sharing_a_key(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'tc.db'}")
    records = {
        "same-family-and-year": Demographics("Maier", "Otto", date(1970, 12, 1)),
        "same-given-and-date": Demographics("Schulz", "Anna", date(1970, 3, 4)),
        "swapped": Demographics("Anna", "Meyer", date(1970, 3, 4)),
        "other-year": Demographics("Meier", "Anna", date(1971, 3, 4)),
        "other-everything": Demographics("Becker", "Lea", date(1970, 3, 4)),
    }
    with engine.begin() as connection:
        for mpi, record in records.items():
            connection.execute(persons.insert().values(mpi=mpi))
            identities.store(connection, mpi, record, "dic")
        found = identities.candidates(connection, Demographics("Meier", "Anna", date(1970, 3, 4)), other_than="me")
    assert sorted(c.mpi for c in found) == ["same-family-and-year", "same-given-and-date", "swapped"]


def test_the_migration_gives_rows_stored_before_it_their_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = servicekit_db.connect(url, MIGRATIONS[:3])
    with old.begin() as connection:  # the tables as they were before (v1 creates today's)
        for index in ("ix_person_demographics_family_key", "ix_person_demographics_given_key"):
            connection.execute(text(f"DROP INDEX {index}"))
        for table, column in [
            ("persons", "reference_identity"),
            ("person_demographics", "family_key"),
            ("person_demographics", "given_key"),
            ("person_demographics", "resource"),
            ("possible_matches", "comment"),
        ]:
            connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        connection.execute(text("INSERT INTO persons (mpi) VALUES ('m')"))
        connection.execute(
            text(
                "INSERT INTO person_demographics (mpi, family, given, birth_date, source)"
                " VALUES ('m', 'Müller', 'Anna', '1970-03-04', 's')"
            )
        )
    old.dispose()
    with connect(url).connect() as connection:
        row = connection.execute(select(person_demographics.c.family_key, person_demographics.c.given_key)).one()
        indexes = {index["name"] for index in inspect(connection).get_indexes("person_demographics")}
    assert (row.family_key, row.given_key) == ("657:1970", "06:1970-03-04")
    assert {"ix_person_demographics_family_key", "ix_person_demographics_given_key"} <= indexes
