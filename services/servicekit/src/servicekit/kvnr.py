"""The German statutory health insurance number (KVNR, unchangeable 10-character part), checked without I/O.

Layout: one letter A-Z, eight digits, one check digit. The check digit (modulo 10 with weights 1-2-1-2...,
a modified Luhn scheme; GKV-Spitzenverband rules for § 290 SGB V, as described by de.wikipedia.org
"Krankenversichertennummer" and the HL7 Deutschland wiki): the letter becomes its two-digit position in the
alphabet (A = 01 ... Z = 26); these two and the eight digits, ten digits in all, are multiplied from the left
alternately by 1 and 2; the products' digit sums are added; the sum's last digit is the check digit.

The trust centre checks a KVNR before it links identities on it, so a mistyped number is refused with a
reason rather than silently becoming a second person.
"""

from __future__ import annotations

import string

KVNR_SYSTEM = "http://fhir.de/sid/gkv/kvid-10"
_LENGTH = 10
_WEIGHTS = (1, 2) * 5


def kvnr_problem(value: str) -> str | None:
    """Why ``value`` is not a valid KVNR, or None when it is one."""
    if len(value) != _LENGTH:
        return f"a KVNR has {_LENGTH} characters, got {len(value)}"
    letter, digits, check = value[0], value[1:9], value[9]
    if letter not in string.ascii_uppercase:
        return f"the first character must be a letter A-Z, got {letter!r}"
    for position, character in enumerate(value[1:], start=2):
        if character not in string.digits:
            return f"character {position} must be a digit 0-9, got {character!r}"
    expected = _check_digit(letter, digits)
    if check != expected:
        return f"the check digit should be {expected}, got {check}"
    return None


def is_valid_kvnr(value: str) -> bool:
    """Whether ``value`` is a well-formed KVNR with the right check digit."""
    return kvnr_problem(value) is None


def make_kvnr(letter: str, eight_digits: str) -> str:
    """A valid KVNR from its letter and eight digits, for synthetic test data."""
    if len(letter) != 1 or letter not in string.ascii_uppercase:
        raise ValueError(f"letter: must be one letter A-Z, got {letter!r}")
    if len(eight_digits) != 8 or not set(eight_digits) <= set(string.digits):
        raise ValueError(f"eight_digits: must be exactly 8 digits 0-9, got {eight_digits!r}")
    return letter + eight_digits + _check_digit(letter, eight_digits)


def _check_digit(letter: str, eight_digits: str) -> str:
    letter_number = f"{string.ascii_uppercase.index(letter) + 1:02d}"
    products = (int(digit) * weight for digit, weight in zip(letter_number + eight_digits, _WEIGHTS, strict=True))
    return str(sum(product // 10 + product % 10 for product in products) % 10)
