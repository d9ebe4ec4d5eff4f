from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicekit.kvnr import KVNR_SYSTEM, is_valid_kvnr, kvnr_problem, make_kvnr

# Test numbers published in gematik's VSDM 2 specification (GitHub gematik/spec-VSDM2, files
# src/fhir/input/fsh/examples/VSDDatensatzGKV-<number>.fsh): a source independent of this implementation.
GEMATIK_EXAMPLES = [
    "A123456780",
    "B234567895",
    "C345678908",
    "D456789013",
    "E567890127",
    "F678901231",
    "G789012344",
    "H890123459",
    "I901234562",
    "J012345677",
    "K123456781",
    "L234567896",
    "M345678909",
    "N456789014",
    "O567890128",
    "P678901232",
    "Z987654321",
]

letters = st.sampled_from(string.ascii_uppercase)
eight_digits = st.text(string.digits, min_size=8, max_size=8)


def test_system_is_the_german_base_profile_naming_system() -> None:
    assert KVNR_SYSTEM == "http://fhir.de/sid/gkv/kvid-10"


@pytest.mark.parametrize("number", GEMATIK_EXAMPLES)
def test_published_examples_are_valid(number: str) -> None:
    assert kvnr_problem(number) is None
    assert is_valid_kvnr(number)
    assert make_kvnr(number[0], number[1:9]) == number


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("A12345678", "a KVNR has 10 characters, got 9"),
        ("A1234567801", "a KVNR has 10 characters, got 11"),
        ("", "a KVNR has 10 characters, got 0"),
        ("a123456780", "the first character must be a letter A-Z, got 'a'"),
        ("Ä123456780", "the first character must be a letter A-Z, got 'Ä'"),
        ("1123456780", "the first character must be a letter A-Z, got '1'"),
        ("A1234 6780", "character 6 must be a digit 0-9, got ' '"),
        ("A12345678X", "character 10 must be a digit 0-9, got 'X'"),
        ("A12345678\u0663", "character 10 must be a digit 0-9, got '\u0663'"),  # ARABIC-INDIC DIGIT THREE
        ("A123456781", "the check digit should be 0, got 1"),
        ("A213456780", "the check digit should be 9, got 0"),  # swapped neighbours
        # The HL7 Deutschland base profile's illustration (identifier-kvid-10) is not a valid number.
        ("G995030567", "the check digit should be 9, got 7"),
    ],
)
def test_problems_name_the_reason(value: str, problem: str) -> None:
    assert kvnr_problem(value) == problem
    assert not is_valid_kvnr(value)


@pytest.mark.parametrize(
    ("letter", "digits", "message"),
    [
        ("a", "12345678", "letter: must be one letter A-Z, got 'a'"),
        ("", "12345678", "letter: must be one letter A-Z, got ''"),
        ("AB", "12345678", "letter: must be one letter A-Z, got 'AB'"),
        ("A", "1234567", "eight_digits: must be exactly 8 digits 0-9, got '1234567'"),
        ("A", "1234567x", "eight_digits: must be exactly 8 digits 0-9, got '1234567x'"),
    ],
)
def test_make_kvnr_rejects(letter: str, digits: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_kvnr(letter, digits)


@given(letters, eight_digits)
def test_made_numbers_are_valid(letter: str, digits: str) -> None:
    assert is_valid_kvnr(make_kvnr(letter, digits))


@given(letters, eight_digits, st.integers(1, 9), st.sampled_from(string.digits))
def test_a_mistyped_digit_is_caught(letter: str, digits: str, position: int, replacement: str) -> None:
    number = make_kvnr(letter, digits)
    typo = number[:position] + replacement + number[position + 1 :]
    assert is_valid_kvnr(typo) is (typo == number)


@given(st.text(max_size=12))
def test_validity_and_problem_agree_for_any_text(value: str) -> None:
    assert is_valid_kvnr(value) is (kvnr_problem(value) is None)
