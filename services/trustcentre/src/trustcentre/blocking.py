"""Blocking keys for identity linkage: which stored persons a new one is compared with, without I/O.

Comparing a new person with everyone known costs a full scan per request; with a million persons
that is seconds. Instead each stored record carries two keys, indexed, and a new record is only
scored against records sharing one of them:

- ``family_key``: the Cologne phonetic code of the family name and the birth year (survives typos and
  spellings that sound alike, Meier/Meyer/Maier, Müller/Mueller, and a wrong day or month);
- ``given_key``: the code of the given name and the whole birth date (survives a new or misspelt
  family name, e.g. after marriage).

A search also looks the names up the other way round (given name as family name and vice versa), so
swapped name fields still meet. A record whose year and both codes are all wrong is not found: the
price of not scanning everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from trustcentre.matching import Demographics, normalise_name

_VOWELS = frozenset("aeijouy")
_C_HARD_AT_START = frozenset("ahkloqrux")
_C_HARD = frozenset("ahkoqux")
_SIMPLE = {"b": "1", "f": "3", "v": "3", "w": "3", "g": "4", "k": "4", "q": "4", "l": "5", "m": "6"}
_SIMPLE |= {"n": "6", "r": "7", "s": "8", "z": "8"}


@dataclass(frozen=True)
class BlockingKeys:
    """The two keys stored with a record (None where the name they need is empty)."""

    family_key: str | None
    given_key: str | None


def cologne_phonetics(name: str) -> str:
    """The Kölner Phonetik code of a name (after `normalise_name`: Müller and Mueller both give 657)."""
    letters = [c for c in normalise_name(name) if "a" <= c <= "z"]
    digits = "".join(
        _code(letter, letters[index - 1] if index else "", letters[index + 1] if index + 1 < len(letters) else "")
        for index, letter in enumerate(letters)
    )
    collapsed = [d for i, d in enumerate(digits) if i == 0 or d != digits[i - 1]]
    return "".join(d for i, d in enumerate(collapsed) if d != "0" or i == 0)


def keys_of(demographics: Demographics) -> BlockingKeys:
    """The keys to store with a record."""
    return BlockingKeys(
        _key(demographics.family, _year(demographics.birth_date)),
        _key(demographics.given, _day(demographics.birth_date)),
    )


def search_keys(demographics: Demographics) -> tuple[frozenset[str], frozenset[str]]:
    """The family and given keys a new record looks for, its names taken either way round."""
    year, day = _year(demographics.birth_date), _day(demographics.birth_date)
    names = (demographics.family, demographics.given)
    family = {_key(name, year) for name in names}
    given = {_key(name, day) for name in names}
    return frozenset(k for k in family if k), frozenset(k for k in given if k)


def _key(name: str, when: str) -> str | None:
    code = cologne_phonetics(name)
    return f"{code}:{when}" if code else None


def _year(birth_date: date | None) -> str:
    return str(birth_date.year) if birth_date else ""


def _day(birth_date: date | None) -> str:
    return birth_date.isoformat() if birth_date else ""


def _code(letter: str, before: str, after: str) -> str:  # noqa: PLR0911 -- one rule per letter
    """The digits of one letter in its context (`before` is empty at the start, `after` at the end)."""
    if letter in _VOWELS:
        return "0"
    if letter == "h":
        return ""
    if letter == "p":
        return "3" if after == "h" else "1"
    if letter in "dt":
        return "8" if after and after in "csz" else "2"
    if letter == "x":
        return "8" if before and before in "ckq" else "48"
    if letter == "c":
        if not before:
            return "4" if after and after in _C_HARD_AT_START else "8"
        return "4" if after and after in _C_HARD and before not in "sz" else "8"
    return _SIMPLE.get(letter, "")
