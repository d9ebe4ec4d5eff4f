"""Demographic similarity for identity linkage (E-PIX-like), without I/O.

The trust centre never merges two identities on demographics alone: ``match`` and ``possible`` both become a
possible-match record for a person to review; only shared identifiers (e.g. the same KVNR) link automatically.
The score therefore ranks candidates for review; it does not decide.

Score: a weighted mean of family name 0.25, given name 0.30 (Jaro-Winkler on normalised names), birth date
0.35 (exact 1, day and month swapped 0.7, same year only 0.3) and sex 0.10 (agree 1, differ 0). A missing
name or birth date counts as no agreement, so the same names without a birth date stay below ``possible``;
sex only counts when both records state one, so an unrecorded sex neither helps nor hurts. The weights are
set by hand, not estimated from data (no Fellegi-Sunter m/u probabilities yet).

Thresholds (``classify``), with the scores of the worked examples in the tests:
``match`` from 0.92 (a typo in one name, same birth date: Meier/Meyer 0.97);
``possible`` from 0.80 (day and month swapped 0.895; same-sex twins Anna/Lena 0.90);
``none`` below (same names but another birth date 0.65, or the same year only 0.755; no birth date 0.65).
A name that is no plausible misspelling of the other (Jaro-Winkler below 0.85) caps the score at 0.90, so
such a pair is at most ``possible``: with a million persons, people sharing a given name, birth date and sex
are common, and their family names alone must not make them a ``match``. A new family name with the same
given name, birth date and sex scores 0.75 plus a quarter of the family names' Jaro-Winkler, so it lands
between ``none`` (Meier/Schulz 0.75) and ``possible`` (Meier/Becker 0.925, capped to 0.90).
Given and family name entered the wrong way round are also compared crosswise; that reading counts at
0.95 of its score, so a swap of otherwise equal records is still a ``match`` (0.95) but never a perfect one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Literal

SEXES = frozenset({"male", "female", "other", "unknown"})
MATCH_THRESHOLD = 0.92
POSSIBLE_THRESHOLD = 0.80

_FAMILY_WEIGHT, _GIVEN_WEIGHT, _BIRTH_DATE_WEIGHT, _SEX_WEIGHT = 0.25, 0.30, 0.35, 0.10
_SWAPPED_DAY_MONTH, _SAME_YEAR, _SWAPPED_NAMES = 0.7, 0.3, 0.95
_PLAUSIBLE_MISSPELLING, _AT_MOST_POSSIBLE = 0.85, 0.90
_GERMAN_TRANSLITERATION = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})  # casefold already makes ß and ẞ ss
_SEPARATORS = re.compile(r"[\s\-\u2010\u2011\u2012\u2013]+")
_WINKLER_PREFIX, _WINKLER_SCALE, _WINKLER_BOOST_FROM = 4, 0.1, 0.7


@dataclass(frozen=True)
class Demographics:
    """What a source system knows about a person, as far as linkage compares it."""

    family: str
    given: str
    birth_date: date | None = None
    sex: str | None = None

    def __post_init__(self) -> None:
        if self.sex is not None and self.sex not in SEXES:
            raise ValueError(f"sex: must be one of {', '.join(sorted(SEXES))} or None, got {self.sex!r}")


def normalise_name(name: str) -> str:
    """A name reduced to what spelling variants share: Müller-Lüdenscheidt -> mueller luedenscheidt."""
    german = unicodedata.normalize("NFC", name).casefold().translate(_GERMAN_TRANSLITERATION)
    unaccented = "".join(c for c in unicodedata.normalize("NFKD", german) if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", unaccented).strip()


def jaro_winkler(first: str, second: str) -> float:
    """Jaro-Winkler similarity (prefix scale 0.1 over up to 4 characters, boost only above Jaro 0.7)."""
    jaro = _jaro(first, second)
    if jaro <= _WINKLER_BOOST_FROM:
        return jaro
    prefix = 0
    for a, b in zip(first[:_WINKLER_PREFIX], second[:_WINKLER_PREFIX], strict=False):
        if a != b:
            break
        prefix += 1
    return jaro + prefix * _WINKLER_SCALE * (1 - jaro)


def similarity(a: Demographics, b: Demographics) -> float:
    """How alike two records are, from 0 (nothing in common) to 1 (same names, birth date and sex)."""
    crosswise = (_weighted_agreement(_swapped(a), b) + _weighted_agreement(a, _swapped(b))) / 2  # symmetric
    return max(_weighted_agreement(a, b), _SWAPPED_NAMES * crosswise)


def _swapped(record: Demographics) -> Demographics:
    return Demographics(record.given, record.family, record.birth_date, record.sex)


def _weighted_agreement(a: Demographics, b: Demographics) -> float:
    family, given = _name_agreement(a.family, b.family), _name_agreement(a.given, b.given)
    weighted = [
        (_FAMILY_WEIGHT, family),
        (_GIVEN_WEIGHT, given),
        (_BIRTH_DATE_WEIGHT, _birth_date_agreement(a.birth_date, b.birth_date)),
    ]
    if a.sex not in {None, "unknown"} and b.sex not in {None, "unknown"}:
        weighted.append((_SEX_WEIGHT, float(a.sex == b.sex)))
    score = sum(weight * agreement for weight, agreement in weighted) / sum(weight for weight, _ in weighted)
    return score if min(family, given) >= _PLAUSIBLE_MISSPELLING else min(score, _AT_MOST_POSSIBLE)


def classify(score: float) -> Literal["match", "possible", "none"]:
    """The review class of a similarity score; both ``match`` and ``possible`` go to a human."""
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"score: must be between 0 and 1, got {score}")
    if score >= MATCH_THRESHOLD:
        return "match"
    if score >= POSSIBLE_THRESHOLD:
        return "possible"
    return "none"


def _name_agreement(first: str, second: str) -> float:
    first, second = normalise_name(first), normalise_name(second)
    return jaro_winkler(first, second) if first and second else 0.0


def _birth_date_agreement(first: date | None, second: date | None) -> float:
    if first is None or second is None or first.year != second.year:
        return 0.0
    if first == second:
        return 1.0
    if (first.day, first.month) == (second.month, second.day):
        return _SWAPPED_DAY_MONTH
    return _SAME_YEAR


def _jaro(first: str, second: str) -> float:
    if first == second:
        return 1.0
    if not first or not second:
        return 0.0
    window = max(max(len(first), len(second)) // 2 - 1, 0)
    matched_in_second = [False] * len(second)
    matched_first: list[str] = []
    for i, character in enumerate(first):
        for j in range(max(0, i - window), min(len(second), i + window + 1)):
            if not matched_in_second[j] and second[j] == character:
                matched_in_second[j] = True
                matched_first.append(character)
                break
    matches = len(matched_first)
    if matches == 0:
        return 0.0
    matched_second = [c for c, matched in zip(second, matched_in_second, strict=True) if matched]
    transpositions = sum(x != y for x, y in zip(matched_first, matched_second, strict=True)) / 2
    return (matches / len(first) + matches / len(second) + (matches - transpositions) / matches) / 3
