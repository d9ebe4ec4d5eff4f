from __future__ import annotations

import math
import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustcentre.matching import (
    MATCH_THRESHOLD,
    POSSIBLE_THRESHOLD,
    Demographics,
    classify,
    jaro_winkler,
    normalise_name,
    similarity,
)

BORN = date(1980, 3, 7)
ANNA = Demographics("Meier", "Anna", BORN, "female")

names = st.text(st.characters(codec="utf-8"), max_size=15)
demographics = st.builds(
    Demographics,
    names,
    names,
    st.none() | st.dates(),
    st.sampled_from([None, "male", "female", "other", "unknown"]),
)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        # Winkler's reference pairs, as tabulated for the Jaro-Winkler distance.
        ("MARTHA", "MARHTA", 0.961),
        ("DWAYNE", "DUANE", 0.840),
        ("DIXON", "DICKSONX", 0.813),
        # Jaro (2/8 + 2/8 + 2/2) / 3 = 0.5 is not above 0.7, so the shared prefix earns no boost.
        ("ABCDEFGH", "ABXXXXXX", 0.5),
        # Jaro (7/8 + 7/8 + 1) / 3 = 0.9167; the prefix counts 4 of its 7 characters: 0.9167 + 0.4 * 0.0833.
        ("ABCDEFGH", "ABCDEFGX", 0.95),
        # Characters match within max(6, 6) // 2 - 1 = 2 positions: (1/6 + 1/6 + 1) / 3, then nothing.
        ("ABCDEF", "XXAXXX", 0.444),
        ("ABCDEF", "XXXAXX", 0.0),
        ("ABC", "ABC", 1.0),
        ("ABC", "XYZ", 0.0),
        ("", "", 1.0),
        ("ABC", "", 0.0),
    ],
)
def test_jaro_winkler_reference_values(first: str, second: str, expected: float) -> None:
    assert jaro_winkler(first, second) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(
    ("name", "normalised"),
    [
        ("Müller-Lüdenscheidt", "mueller luedenscheidt"),
        ("MÜLLER", "mueller"),
        ("Mu\u0308ller", "mueller"),  # decomposed umlaut
        ("Straße", "strasse"),
        ("STRAẞE", "strasse"),
        ("Schröder", "schroeder"),
        ("  José   Ñúñez ", "jose nunez"),
        ("Anne-Marie \t von  der-Heide", "anne marie von der heide"),
        ("Jean\u2013Luc", "jean luc"),  # en dash
    ],
)
def test_normalise_name(name: str, normalised: str) -> None:
    assert normalise_name(name) == normalised


def test_demographics_reject_an_unknown_sex_code() -> None:
    message = "sex: must be one of female, male, other, unknown or None, got 'M'"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Demographics("Meier", "Anna", BORN, "M")


@pytest.mark.parametrize(
    ("other", "score", "expected_class"),
    [
        (Demographics("Meyer", "Anna", BORN, "female"), 0.973, "match"),
        (Demographics("Mueller", "Anna", BORN, None), 0.900, "possible"),  # Meier and Müller: two names
        (Demographics("Meier", "Anna", date(1980, 7, 3), "female"), 0.895, "possible"),
        (Demographics("Meier", "Lena", BORN, "female"), 0.900, "possible"),
        (Demographics("Becker", "Anna", BORN, "female"), 0.900, "possible"),
        (Demographics("Schulz", "Anna", BORN, "female"), 0.750, "none"),
        (Demographics("Meier", "Paul", BORN, "male"), 0.750, "none"),
        (Demographics("Meier", "Anna", date(1980, 1, 2), "female"), 0.755, "none"),
        (Demographics("Meier", "Anna", date(1975, 1, 2), "female"), 0.650, "none"),
        (Demographics("Meier", "Anna", None, "female"), 0.650, "none"),
        (Demographics("", "Anna", BORN, "female"), 0.750, "none"),
    ],
)
def test_worked_examples(other: Demographics, score: float, expected_class: str) -> None:
    assert similarity(ANNA, other) == pytest.approx(score, abs=5e-4)
    assert classify(similarity(ANNA, other)) == expected_class


def test_umlaut_spellings_are_the_same_name() -> None:
    assert similarity(Demographics("Müller", "Jürgen", BORN), Demographics("MUELLER", "Juergen", BORN)) == 1.0


def test_empty_names_are_no_agreement() -> None:
    nameless = Demographics("", " - ", BORN, "female")
    assert similarity(nameless, nameless) == pytest.approx(0.45)


def test_sex_counts_only_when_both_records_state_one() -> None:
    unstated = Demographics("Meier", "Anna", BORN, "unknown")
    assert similarity(ANNA, unstated) == similarity(ANNA, Demographics("Meier", "Anna", BORN)) == 1.0
    assert similarity(ANNA, Demographics("Meier", "Anna", BORN, "male")) == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (1.0, "match"),
        (MATCH_THRESHOLD, "match"),
        (math.nextafter(MATCH_THRESHOLD, 0), "possible"),
        (POSSIBLE_THRESHOLD, "possible"),
        (math.nextafter(POSSIBLE_THRESHOLD, 0), "none"),
        (0.0, "none"),
    ],
)
def test_classify_thresholds(score: float, expected: str) -> None:
    assert classify(score) == expected


@pytest.mark.parametrize(
    ("score", "message"),
    [
        (1.5, "score: must be between 0 and 1, got 1.5"),
        (-0.1, "score: must be between 0 and 1, got -0.1"),
        (math.nan, "score: must be between 0 and 1, got nan"),
    ],
)
def test_classify_rejects_scores_outside_the_unit_interval(score: float, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        classify(score)


@given(demographics, demographics)
def test_similarity_is_symmetric_and_bounded(a: Demographics, b: Demographics) -> None:
    assert similarity(a, b) == similarity(b, a)
    assert 0.0 <= similarity(a, b) <= 1.0


@given(demographics.filter(lambda d: d.birth_date is not None and normalise_name(d.family) and normalise_name(d.given)))
def test_identical_records_with_a_birth_date_score_one(record: Demographics) -> None:
    assert similarity(record, record) == 1.0
    assert classify(similarity(record, record)) == "match"


@given(names, names)
def test_jaro_winkler_is_symmetric_and_bounded(first: str, second: str) -> None:
    assert jaro_winkler(first, second) == jaro_winkler(second, first)
    assert 0.0 <= jaro_winkler(first, second) <= 1.0


def test_a_name_that_is_no_misspelling_keeps_a_pair_below_match() -> None:
    soeren = Demographics("Heinmeier", "Sören", BORN, "male")
    other_family = Demographics("Hochmeier", "Sören", BORN, "male")  # Jaro-Winkler 0.80: another name
    typo = Demographics("Heinmaier", "Sören", BORN, "male")  # 0.93: a slip of the pen
    assert similarity(soeren, other_family) == pytest.approx(0.9)
    assert classify(similarity(soeren, other_family)) == "possible"
    assert classify(similarity(soeren, typo)) == "match"
