from __future__ import annotations

import hashlib
import hmac
import re
import string
from itertools import permutations
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trustcentre import pseudonym_scheme
from trustcentre.pseudonym_scheme import (
    DEFAULT_ALPHABET,
    DomainSettings,
    candidate,
    has_valid_check_character,
    looks_like_pseudonym,
    random_pseudonym,
    settings_from_mapping,
)

SECRET = bytes(range(32))
PRINTABLE = sorted(set(string.printable) - set(string.whitespace))
SIZE_14_ERROR = (
    "alphabet: a check character needs an alphabet size that is odd, a multiple of 4 or 10 times an odd number,"
    " got 14; add or remove a character, or set check_digit to false"
)


def supports_check_character(size: int) -> bool:
    return size % 2 == 1 or size % 4 == 0 or size % 10 == 0


@st.composite
def domain_settings(draw: st.DrawFn) -> DomainSettings:
    check_digit = draw(st.booleans())
    sizes = st.integers(10, len(PRINTABLE)).filter(lambda n: not check_digit or supports_check_character(n))
    alphabet = "".join(draw(st.permutations(PRINTABLE))[: draw(sizes)])
    prefix = draw(st.text(string.ascii_letters + string.digits + "_-", max_size=16))
    return DomainSettings(alphabet, draw(st.integers(6, 64)), prefix, check_digit)


checked_settings = domain_settings().filter(lambda s: s.check_digit)
originals = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)


def test_defaults_avoid_confusable_characters() -> None:
    settings = DomainSettings()
    assert settings == DomainSettings(
        alphabet="23456789ABCDEFGHJKLMNPQRSTUVWXYZ", length=12, prefix="", check_digit=True
    )
    assert settings.pseudonym_length == 13
    assert DomainSettings(prefix="PSN_", check_digit=False).pseudonym_length == 16


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"alphabet": "ABCDEFGHJK M"}, "alphabet: only printable ASCII without whitespace is allowed, got ' '"),
        ({"alphabet": "ABCDEFGHJKÄ"}, "alphabet: only printable ASCII without whitespace is allowed, got 'Ä'"),
        ({"alphabet": "ABCDEFGHJKAB"}, "alphabet: duplicate characters 'AB'"),
        ({"alphabet": "ABCDEFGHJ"}, "alphabet: needs at least 10 distinct characters, got 9"),
        ({"alphabet": "ABCDEFGHJKLMNP"}, SIZE_14_ERROR),
        ({"length": 5}, "length: must be between 6 and 64, got 5"),
        ({"length": 65}, "length: must be between 6 and 64, got 65"),
        ({"prefix": "P" * 17}, "prefix: at most 16 characters, got 17"),
        ({"prefix": "psn.x y"}, "prefix: only A-Z, a-z, 0-9, '_' and '-' are allowed, got ' .'"),
    ],
)
def test_settings_reject(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        DomainSettings(**arguments)


def test_an_alphabet_without_a_check_character_may_have_any_size() -> None:
    assert DomainSettings(alphabet="ABCDEFGHJKLMNP", check_digit=False).alphabet == "ABCDEFGHJKLMNP"


@pytest.mark.parametrize("size", range(10, len(PRINTABLE) + 1))
def test_check_character_is_offered_for_the_documented_sizes(size: int) -> None:
    alphabet = "".join(PRINTABLE[:size])
    if supports_check_character(size):
        assert DomainSettings(alphabet=alphabet).alphabet == alphabet
    else:
        with pytest.raises(ValueError, match="needs an alphabet size that is odd"):
            DomainSettings(alphabet=alphabet)


def test_settings_from_mapping_fills_defaults() -> None:
    assert settings_from_mapping({"length": 8, "prefix": "S1_"}) == DomainSettings(length=8, prefix="S1_")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"size": 8, "Length": 8},
            "unknown setting(s) Length, size; known: alphabet, check_digit, length, multiple_pseudonyms, prefix",
        ),
        ({"length": "12"}, "length: must be int, got str"),
        ({"length": True}, "length: must be int, got bool"),
        ({"alphabet": 1234567890}, "alphabet: must be str, got int"),
        ({"prefix": None}, "prefix: must be str, got NoneType"),
        ({"check_digit": "yes"}, "check_digit: must be bool, got str"),
        ({"length": 3}, "length: must be between 6 and 64, got 3"),
    ],
)
def test_settings_from_mapping_rejects(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        settings_from_mapping(values)


@pytest.mark.parametrize(
    ("secret", "domain", "original", "attempt", "message"),
    [
        (SECRET[:31], "study", "A123456780", 0, "secret: must be at least 32 bytes, got 31"),
        (SECRET, "", "A123456780", 0, "domain: must not be empty"),
        (SECRET, "study", "", 0, "original: must not be empty"),
        (SECRET, "stu\x00dy", "A123456780", 0, "domain: must not contain NUL characters"),
        (SECRET, "study", "A12\x00", 0, "original: must not contain NUL characters"),
        (SECRET, "study", "A123456780", -1, "attempt: must be 0 or more, got -1"),
    ],
)
def test_candidate_rejects(secret: bytes, domain: str, original: str, attempt: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        candidate(secret, domain, original, DomainSettings(), attempt)


@pytest.mark.parametrize("alphabet", ["0123456789ABCDEF", "".join(PRINTABLE[:93])])
def test_candidate_follows_the_documented_derivation(alphabet: str) -> None:
    # With 93 characters bytes from 186 up are rejected, and 64 characters need more than one stream block.
    settings = DomainSettings(alphabet=alphabet, length=64, prefix="X-", check_digit=False)
    key = hmac.new(SECRET, b"study\x00A123456780\x003", hashlib.sha256).digest()
    stream = b"".join(hmac.new(key, block.to_bytes(4, "big"), hashlib.sha256).digest() for block in range(1, 9))
    accepted = [byte % len(alphabet) for byte in stream if byte < 256 - 256 % len(alphabet)]
    expected = "X-" + "".join(alphabet[value] for value in accepted[:64])
    assert candidate(SECRET, "study", "A123456780", settings, 3) == expected


def test_damm_check_character_of_the_published_example() -> None:
    digits = DomainSettings(alphabet=string.digits)
    # Damm's algorithm, worked example: 572 has the check digit 4.
    assert has_valid_check_character("5724", digits)
    assert not has_valid_check_character("5723", digits)


def test_check_character_question_needs_a_check_character() -> None:
    message = "check_digit: this domain's pseudonyms have no check character"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        has_valid_check_character("ABCDEFGH", DomainSettings(check_digit=False))


@pytest.mark.parametrize("size", [10, 11, 12, 30, 32, 64, 90, 93])
def test_quasigroup_is_latin_and_totally_anti_symmetric(size: int) -> None:
    table = pseudonym_scheme._quasigroup(size)
    everything = list(range(size))
    assert all(sorted(row) == everything for row in table)
    assert all(sorted(row[column] for row in table) == everything for column in everything)
    assert all(
        table[table[c][x]][y] != table[table[c][y]][x] for c in everything for x, y in permutations(everything, 2)
    )


@pytest.mark.parametrize(
    ("value", "settings"),
    [
        ("PSN-", DomainSettings(prefix="PSN-")),
        ("XSN-23456789ABCD", DomainSettings(prefix="PSN-")),
        ("PSN-23456789ABC0", DomainSettings(prefix="PSN-")),
    ],
)
def test_check_character_is_false_for_malformed_input(value: str, settings: DomainSettings) -> None:
    assert not has_valid_check_character(value, settings)


@given(checked_settings, originals, st.integers(0, 5))
def test_candidates_look_like_pseudonyms(settings: DomainSettings, original: str, attempt: int) -> None:
    pseudonym = candidate(SECRET, "study", original, settings, attempt)
    assert looks_like_pseudonym(pseudonym, settings)
    assert candidate(SECRET, "study", original, settings, attempt) == pseudonym


@given(domain_settings().filter(lambda s: not s.check_digit), originals)
def test_candidates_without_check_character_look_like_pseudonyms(settings: DomainSettings, original: str) -> None:
    assert looks_like_pseudonym(candidate(SECRET, "study", original, settings, 0), settings)


@given(domain_settings())
def test_random_pseudonyms_look_like_pseudonyms_of_their_domain(settings: DomainSettings) -> None:
    drawn = {random_pseudonym(settings) for _ in range(3)}
    assert all(looks_like_pseudonym(value, settings) for value in drawn)
    assert len(drawn) == 3 or settings.length < 8, "256 bits drawn afresh each time"


@given(checked_settings, originals, st.data())
def test_a_substituted_character_breaks_the_check(settings: DomainSettings, original: str, data: st.DataObject) -> None:
    pseudonym = candidate(SECRET, "study", original, settings, 0)
    position = data.draw(st.integers(len(settings.prefix), len(pseudonym) - 1))
    replacement = data.draw(st.sampled_from(settings.alphabet).filter(lambda c: c != pseudonym[position]))
    typo = pseudonym[:position] + replacement + pseudonym[position + 1 :]
    assert not has_valid_check_character(typo, settings)
    assert not looks_like_pseudonym(typo, settings)


@given(checked_settings, originals, st.data())
def test_swapped_neighbours_break_the_check(settings: DomainSettings, original: str, data: st.DataObject) -> None:
    pseudonym = candidate(SECRET, "study", original, settings, 0)
    position = data.draw(st.integers(len(settings.prefix), len(pseudonym) - 2))
    assume(pseudonym[position] != pseudonym[position + 1])
    swapped = pseudonym[:position] + pseudonym[position + 1] + pseudonym[position] + pseudonym[position + 2 :]
    assert not looks_like_pseudonym(swapped, settings)


@given(originals, st.text(min_size=1, max_size=20).filter(lambda d: "\x00" not in d and d != "study"))
def test_domains_get_different_pseudonyms(original: str, other_domain: str) -> None:
    settings = DomainSettings()
    assert candidate(SECRET, "study", original, settings, 0) != candidate(SECRET, other_domain, original, settings, 0)


@given(originals)
def test_attempts_and_secrets_change_the_candidate(original: str) -> None:
    settings = DomainSettings()
    first = candidate(SECRET, "study", original, settings, 0)
    assert first != candidate(SECRET, "study", original, settings, 1)
    assert first != candidate(bytes(reversed(SECRET)), "study", original, settings, 0)


@pytest.mark.parametrize("alphabet", [string.digits, DEFAULT_ALPHABET, "".join(PRINTABLE[:93])])
def test_every_alphabet_character_can_appear(alphabet: str) -> None:
    settings = DomainSettings(alphabet=alphabet, length=64, check_digit=False)
    seen = set().union(*(candidate(SECRET, "study", f"original {n}", settings, 0) for n in range(40)))
    assert seen == set(alphabet)


def test_looks_like_pseudonym_rejects_malformed_values() -> None:
    settings = DomainSettings(prefix="PSN-")
    pseudonym = candidate(SECRET, "study", "A123456780", settings, 0)
    assert looks_like_pseudonym(pseudonym, settings)
    for malformed in (pseudonym[:-1], pseudonym + "2", pseudonym.lower(), "PSX-" + pseudonym[4:]):
        assert not looks_like_pseudonym(malformed, settings), malformed
