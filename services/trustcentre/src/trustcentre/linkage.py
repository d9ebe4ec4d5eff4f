"""Identity linkage (E-PIX-like): identifiers from many sources -> one master person id (MPI).

Only a shared identifier links automatically, and only an identifier its source may assert: one of
the source's own identifier systems, or a KVNR (the same number at every site). An identifier of
another source's system is never linked nor stored, or any node could attach a victim's identity to a
number another site will later use for someone else; if it already belongs to a person, the two
become a possible match for review. Similar demographics never merge anything either: they become a
possible match that a person with the review role links or keeps apart. Identifiers that already
belong to two different persons are not moved; that conflict is recorded for review too.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from servicekit.db import insert_ignoring_conflicts
from servicekit.fhir import FhirError
from servicekit.kvnr import KVNR_SYSTEM, kvnr_problem
from trustcentre.db import person_demographics, person_identifiers, persons, possible_matches
from trustcentre.matching import Demographics, classify, similarity

RESOLUTIONS = ("link", "separate")
CONFLICT_SCORE = 1.0


@dataclass(frozen=True)
class Identifier:
    """A person identifier from one source: hospital MRN, practice id, KVNR, ..."""

    system: str
    value: str


@dataclass(frozen=True)
class Asserter:
    """Who asserts identifiers: the source (site) they come from and the systems it owns (None: any)."""

    source: str
    own_systems: frozenset[str] | None

    def may_link(self, identifier: Identifier) -> bool:
        """Whether this source may link a person by `identifier`."""
        return self.own_systems is None or identifier.system == KVNR_SYSTEM or identifier.system in self.own_systems


@dataclass(frozen=True)
class LinkResult:
    """The person the identifiers belong to, whether it is new, what a reviewer should look at, what was ignored."""

    mpi: str
    created: bool
    possible_matches: tuple[tuple[int, str, float], ...]
    ignored: tuple[Identifier, ...] = ()


def check_identifiers(identifiers: Sequence[Identifier]) -> None:
    """Refuse malformed identifiers (a KVNR with a wrong check digit) before anything is stored."""
    for identifier in identifiers:
        if identifier.system == KVNR_SYSTEM and (problem := kvnr_problem(identifier.value)):
            raise FhirError(400, "invalid", f"KVNR {identifier.value!r}: {problem}", ("identifier",))


def link(
    connection: Connection, identifiers: Sequence[Identifier], asserter: Asserter, demographics: Demographics | None
) -> LinkResult:
    """Attach the identifiers `asserter` may link to their person (new if none is known); report possible matches."""
    check_identifiers(identifiers)
    linkable = [i for i in identifiers if asserter.may_link(i)]
    foreign = tuple(i for i in identifiers if not asserter.may_link(i))
    if not linkable:
        raise FhirError(
            403,
            "forbidden",
            f"source {asserter.source!r} may assert none of these identifiers: only its own systems or a KVNR",
            ("identifier",),
        )
    owners = _owners(connection, linkable)
    distinct = sorted(set(owners.values()))
    created = not distinct
    mpi = distinct[0] if distinct else _new_person(connection)
    unowned = [i for i in linkable if i not in owners]
    if len(distinct) <= 1:
        insert_ignoring_conflicts(
            connection,
            person_identifiers,
            [{"system": i.system, "value": i.value, "mpi": mpi, "source": asserter.source} for i in unowned],
        )
    others = [*distinct[1:], *sorted(set(_owners(connection, foreign).values()) - {mpi, *distinct})]
    matches = [_record_match(connection, mpi, other, CONFLICT_SCORE) for other in others]
    if demographics is not None:
        matches += _compare_and_store(connection, mpi, demographics, asserter.source, compare=created)
    return LinkResult(mpi, created, tuple(matches), foreign)


def _owners(connection: Connection, identifiers: Sequence[Identifier]) -> dict[Identifier, str]:
    owners: dict[Identifier, str] = {}
    for identifier in identifiers:
        mpi = connection.execute(
            select(person_identifiers.c.mpi).where(
                person_identifiers.c.system == identifier.system, person_identifiers.c.value == identifier.value
            )
        ).scalar_one_or_none()
        if mpi is not None:
            owners[identifier] = mpi
    return owners


def _new_person(connection: Connection) -> str:
    mpi = f"MPI-{uuid.uuid4().hex[:16].upper()}"
    connection.execute(persons.insert().values(mpi=mpi))
    return mpi


def _compare_and_store(
    connection: Connection, mpi: str, demographics: Demographics, source: str, *, compare: bool
) -> list[tuple[int, str, float]]:
    """Store what this source says of the person (once); a new person is compared with everyone known.

    A full scan: fine for a hub's thousands of persons; blocking (by birth year, say) is the next
    step when a node holds millions.
    """
    matches: list[tuple[int, str, float]] = []
    if compare:
        known = connection.execute(select(person_demographics).where(person_demographics.c.mpi != mpi)).mappings()
        best: dict[str, float] = {}
        for row in known:
            other = Demographics(row["family"], row["given"], row["birth_date"], row["sex"])
            score = round(similarity(demographics, other), 4)
            if classify(score) != "none":
                best[row["mpi"]] = max(score, best.get(row["mpi"], 0.0))
        matches = [_record_match(connection, mpi, other_mpi, score) for other_mpi, score in sorted(best.items())]
    statement = {
        "mpi": mpi,
        "family": demographics.family,
        "given": demographics.given,
        "birth_date": demographics.birth_date,
        "sex": demographics.sex,
        "source": source,
    }
    said_before = connection.execute(
        select(person_demographics.c.id).where(
            *(
                person_demographics.c[column].is_(None) if value is None else person_demographics.c[column] == value
                for column, value in statement.items()
            )
        )
    ).first()
    if said_before is None:  # a replay says nothing new: one row per thing said, however often it is said
        connection.execute(person_demographics.insert().values(**statement))
    return matches


def _record_match(connection: Connection, mpi: str, candidate: str, score: float) -> tuple[int, str, float]:
    insert_ignoring_conflicts(
        connection, possible_matches, [{"mpi": mpi, "candidate_mpi": candidate, "score": score, "status": "open"}]
    )
    match_id = connection.execute(
        select(possible_matches.c.id).where(
            possible_matches.c.mpi == mpi, possible_matches.c.candidate_mpi == candidate
        )
    ).scalar_one()
    return int(match_id), candidate, score


def open_matches(connection: Connection) -> list[dict[str, Any]]:
    """Possible matches waiting for review, oldest first."""
    rows = connection.execute(
        select(possible_matches).where(possible_matches.c.status == "open").order_by(possible_matches.c.id)
    ).mappings()
    return [dict(row) for row in rows]


def resolve(connection: Connection, match_id: int, resolution: str, reviewer: str) -> dict[str, Any]:
    """Link the two persons of a possible match (the candidate's records move) or keep them apart."""
    if resolution not in RESOLUTIONS:
        raise FhirError(400, "invalid", f"resolution {resolution!r}: one of {', '.join(RESOLUTIONS)}", ("resolution",))
    match = connection.execute(select(possible_matches).where(possible_matches.c.id == match_id)).mappings().first()
    if match is None:
        raise FhirError(404, "not-found", f"no possible match {match_id}", ("id",))
    if match["status"] != "open":
        raise FhirError(409, "conflict", f"possible match {match_id} is already {match['status']}", ("id",))
    if resolution == "link":
        for table in (person_identifiers, person_demographics):
            connection.execute(update(table).where(table.c.mpi == match["candidate_mpi"]).values(mpi=match["mpi"]))
    status = "linked" if resolution == "link" else "separated"
    connection.execute(
        update(possible_matches)
        .where(possible_matches.c.id == match_id)
        .values(status=status, resolved_by=reviewer, resolved=datetime.now(UTC))
    )
    return {**dict(match), "status": status}
