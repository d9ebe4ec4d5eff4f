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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, or_, select, update

from servicekit.db import insert_ignoring_conflicts
from servicekit.fhir import FhirError
from servicekit.kvnr import KVNR_SYSTEM, kvnr_problem
from trustcentre import identities
from trustcentre.db import person_demographics, person_identifiers, persons, possible_matches
from trustcentre.identities import Stored
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
    #: The identity the demographics were stored as (None without demographics), and what storing did.
    identity: int | None = None
    stored: Stored | None = None
    #: Whether the identifiers already belonged to more than one person.
    multiple: bool = False


def check_identifiers(identifiers: Sequence[Identifier]) -> None:
    """Refuse malformed identifiers (a KVNR with a wrong check digit) before anything is stored."""
    for identifier in identifiers:
        if identifier.system == KVNR_SYSTEM and (problem := kvnr_problem(identifier.value)):
            raise FhirError(400, "invalid", f"KVNR {identifier.value!r}: {problem}", ("identifier",))


def link(
    connection: Connection,
    identifiers: Sequence[Identifier],
    asserter: Asserter,
    demographics: Demographics | None,
    resource: Mapping[str, Any] | None = None,
) -> LinkResult:
    """Attach the identifiers `asserter` may link to their person (new if none is known); report possible matches.

    With demographics the statement is stored as an identity of the person (`resource`: the Patient it
    came in); a new person is first compared with the stored identities sharing a blocking key.
    """
    check_identifiers(identifiers)
    linkable = [i for i in identifiers if asserter.may_link(i)]
    foreign = tuple(i for i in identifiers if not asserter.may_link(i))
    if identifiers and not linkable:
        raise FhirError(
            403,
            "forbidden",
            f"source {asserter.source!r} may assert none of these identifiers: only its own systems or a KVNR",
            ("identifier",),
        )
    if not identifiers and demographics is None:
        raise FhirError(400, "required", "a person needs an identifier or a name to be linked", ("identifier",))
    owners = _owners(connection, linkable)
    distinct = sorted(set(owners.values()))
    created = not distinct
    mpi = distinct[0] if distinct else _new_person(connection)
    unowned = sorted((i for i in linkable if i not in owners), key=lambda i: (i.system, i.value))  # one lock order
    if len(distinct) <= 1:
        insert_ignoring_conflicts(
            connection,
            person_identifiers,
            [{"system": i.system, "value": i.value, "mpi": mpi, "source": asserter.source} for i in unowned],
        )
    if created:
        mpi, created, distinct = _settle_new_person(connection, mpi, linkable)
    others = [*distinct[1:], *sorted(set(_owners(connection, foreign).values()) - {mpi, *distinct})]
    matches = [_record_match(connection, mpi, other, CONFLICT_SCORE) for other in others]
    if demographics is None:
        return LinkResult(mpi, created, tuple(matches), foreign, multiple=len(distinct) > 1)
    if created:
        matches += _compare(connection, mpi, demographics)
    identity, stored = identities.store(connection, mpi, demographics, asserter.source, resource)
    return LinkResult(mpi, created, tuple(matches), foreign, identity, stored, multiple=len(distinct) > 1)


def attach(connection: Connection, mpi: str, identifiers: Sequence[Identifier], asserter: Asserter) -> bool:
    """Add identifiers to a known person; refuse ones not the asserter's or already another person's."""
    check_identifiers(identifiers)
    for identifier in identifiers:
        if not asserter.may_link(identifier):
            raise FhirError(
                403, "forbidden", f"source {asserter.source!r} may not assert {identifier.system}", ("identifier",)
            )
    owners = _owners(connection, identifiers)
    taken = sorted({f"{i.system}|{i.value}" for i, owner in owners.items() if owner != mpi})
    if taken:
        raise FhirError(409, "conflict", f"identifiers of another person: {', '.join(taken)}", ("identifier",))
    unowned = [i for i in identifiers if i not in owners]
    insert_ignoring_conflicts(
        connection,
        person_identifiers,
        [{"system": i.system, "value": i.value, "mpi": mpi, "source": asserter.source} for i in unowned],
    )
    return bool(unowned)


def _settle_new_person(
    connection: Connection, mpi: str, identifiers: Sequence[Identifier]
) -> tuple[str, bool, list[str]]:
    """The person a link that made `mpi` ends with, when links sharing identifiers ran side by side.

    On PostgreSQL two links of one new person (a KVNR, each with its own record's id) can both find no
    owner and each make a person; the unique index lets one claim the shared identifier and makes the
    other's insert wait for it and then do nothing. Whatever the loser's new person did claim (its own
    record's id) moves to the winner's and the new person is dropped: (person, created, the persons
    owning the identifiers, the one taken first).
    """
    others = sorted(set(_owners(connection, identifiers).values()) - {mpi})
    if not others:
        return mpi, True, []
    winner = others[0]
    connection.execute(update(person_identifiers).where(person_identifiers.c.mpi == mpi).values(mpi=winner))
    connection.execute(persons.delete().where(persons.c.mpi == mpi))
    return winner, False, others


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


def _compare(connection: Connection, mpi: str, demographics: Demographics) -> list[tuple[int, str, float]]:
    """Record a possible match with each person whose identity sharing a blocking key is similar enough."""
    best: dict[str, float] = {}
    for candidate in identities.candidates(connection, demographics, other_than=mpi):
        score = round(similarity(demographics, candidate.demographics), 4)
        if classify(score) != "none":
            best[candidate.mpi] = max(score, best.get(candidate.mpi, 0.0))
    return [_record_match(connection, mpi, other, score) for other, score in sorted(best.items())]


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


def open_matches(
    connection: Connection, mpi: str | None = None, offset: int = 0, count: int | None = None
) -> list[dict[str, Any]]:
    """Possible matches waiting for review (of one person, or all), oldest first, one page of them."""
    query = select(possible_matches).where(possible_matches.c.status == "open")
    if mpi is not None:
        query = query.where(or_(possible_matches.c.mpi == mpi, possible_matches.c.candidate_mpi == mpi))
    rows = connection.execute(query.order_by(possible_matches.c.id).offset(offset).limit(count)).mappings()
    return [dict(row) for row in rows]


def add_match(connection: Connection, mpi: str, other: str, reviewer: str) -> dict[str, Any]:
    """A reviewer's own possible match between two persons, scored by their most alike identities."""
    if mpi == other:
        raise FhirError(422, "business-rule", f"{mpi} cannot be a possible match of itself", ("aliasMpiId",))
    theirs = [identities.demographics_of(row) for row in identities.of_person(connection, other)]
    ours = [identities.demographics_of(row) for row in identities.of_person(connection, mpi)]
    score = round(max((similarity(a, b) for a in ours for b in theirs), default=0.0), 4)
    match_id, _, _ = _record_match(connection, mpi, other, score)
    connection.execute(
        update(possible_matches)
        .where(possible_matches.c.id == match_id)
        .values(status="open", score=score, resolved_by=None, resolved=None, comment=f"added by {reviewer}")
    )
    return match_of(connection, match_id, "linkId")


def resolve(  # noqa: PLR0913 -- the review decision and who made it, why, where the match was named
    connection: Connection,
    match_id: int,
    resolution: str,
    reviewer: str,
    *,
    keep: str | None = None,
    comment: str | None = None,
    where: str = "id",
) -> dict[str, Any]:
    """Link the two persons of a possible match (the other's records move to `keep`) or keep them apart."""
    if resolution not in RESOLUTIONS:
        raise FhirError(400, "invalid", f"resolution {resolution!r}: one of {', '.join(RESOLUTIONS)}", ("resolution",))
    match = match_of(connection, match_id, where)
    if match["status"] != "open":
        raise FhirError(409, "conflict", f"possible match {match_id} is already {match['status']}", (where,))
    kept = keep or match["mpi"]
    if resolution == "link":
        moved = match["candidate_mpi"] if kept == match["mpi"] else match["mpi"]
        for table in (person_identifiers, person_demographics):
            connection.execute(update(table).where(table.c.mpi == moved).values(mpi=kept))
        connection.execute(update(persons).where(persons.c.mpi == moved).values(reference_identity=None))
    status = "linked" if resolution == "link" else "separated"
    _close(connection, [match_id], status, reviewer, comment)
    return {**match, "mpi": kept, "status": status}


def remove_matches(connection: Connection, match_ids: Sequence[int], reviewer: str, comment: str | None) -> None:
    """Withdraw open possible matches (kept, marked `removed`, for the record); unknown or closed ones: 4xx."""
    for match_id in match_ids:
        match = match_of(connection, match_id, "linkId")
        if match["status"] != "open":
            raise FhirError(409, "conflict", f"possible match {match_id} is already {match['status']}", ("linkId",))
    _close(connection, match_ids, "removed", reviewer, comment)


def match_of(connection: Connection, match_id: int, where: str) -> dict[str, Any]:
    """One possible match by its id, or a 404 naming the parameter `where` that named it."""
    match = connection.execute(select(possible_matches).where(possible_matches.c.id == match_id)).mappings().first()
    if match is None:
        raise FhirError(404, "not-found", f"no possible match {match_id}", (where,))
    return dict(match)


def _close(connection: Connection, match_ids: Sequence[int], status: str, reviewer: str, comment: str | None) -> None:
    connection.execute(
        update(possible_matches)
        .where(possible_matches.c.id.in_(match_ids))
        .values(status=status, resolved_by=reviewer, resolved=datetime.now(UTC), comment=comment)
    )
