"""E-PIX identities: what one source says of a person (a `person_demographics` row), stored, found, moved.

A person (MPI) has any number of identities; one of them may be its reference identity, the data that
counts for the person. Candidates for a new identity are found only through the blocking keys
(`trustcentre.blocking`), so the search costs the same with a thousand persons as with a million.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, RowMapping, or_, select, update

from servicekit.db import one_of
from servicekit.fhir import FhirError
from trustcentre.blocking import keys_of, search_keys
from trustcentre.db import person_demographics, person_identifiers, persons
from trustcentre.matching import Demographics

if TYPE_CHECKING:
    from trustcentre.linkage import Identifier


class Stored(StrEnum):
    """What storing an identity did."""

    NEW = "new"
    SAID_BEFORE = "said-before"
    UPDATED = "updated"


@dataclass(frozen=True)
class Candidate:
    """A stored identity of another person that shares a blocking key with a new one."""

    mpi: str
    demographics: Demographics


def store(
    connection: Connection,
    mpi: str,
    demographics: Demographics,
    source: str,
    resource: Mapping[str, Any] | None = None,
) -> tuple[int, Stored]:
    """Store what `source` says of the person once; a replay with a new resource (address, ...) updates it."""
    statement = {
        "mpi": mpi,
        "family": demographics.family,
        "given": demographics.given,
        "birth_date": demographics.birth_date,
        "sex": demographics.sex,
        "source": source,
    }
    said_before = connection.execute(
        select(person_demographics.c.id, person_demographics.c.resource).where(
            *(
                person_demographics.c[column].is_(None) if value is None else person_demographics.c[column] == value
                for column, value in statement.items()
            )
        )
    ).first()
    if said_before is not None:  # a replay says nothing new: one row per thing said, however often it is said
        if resource is None or said_before.resource == resource:
            return int(said_before.id), Stored.SAID_BEFORE
        connection.execute(
            update(person_demographics).where(person_demographics.c.id == said_before.id).values(resource=resource)
        )
        return int(said_before.id), Stored.UPDATED
    keys = keys_of(demographics)
    identity_id = connection.execute(
        person_demographics.insert()
        .values(**statement, family_key=keys.family_key, given_key=keys.given_key, resource=resource)
        .returning(person_demographics.c.id)
    ).scalar_one()
    return int(identity_id), Stored.NEW


def candidates(connection: Connection, demographics: Demographics, other_than: str) -> list[Candidate]:
    """Identities of other persons sharing a blocking key with `demographics` (indexed lookups only)."""
    family_keys, given_keys = search_keys(demographics)
    conditions = [
        *([one_of(connection, person_demographics.c.family_key, sorted(family_keys))] if family_keys else []),
        *([one_of(connection, person_demographics.c.given_key, sorted(given_keys))] if given_keys else []),
    ]
    if not conditions:
        return []
    rows = connection.execute(
        select(
            person_demographics.c.mpi,
            person_demographics.c.family,
            person_demographics.c.given,
            person_demographics.c.birth_date,
            person_demographics.c.sex,
        ).where(or_(*conditions), person_demographics.c.mpi != other_than)
    ).mappings()
    return [Candidate(row["mpi"], demographics_of(row)) for row in rows]


def of_person(connection: Connection, mpi: str) -> list[dict[str, Any]]:
    """The identities of a person, oldest first."""
    rows = connection.execute(
        select(person_demographics).where(person_demographics.c.mpi == mpi).order_by(person_demographics.c.id)
    ).mappings()
    return [dict(row) for row in rows]


def find(connection: Connection, identity_id: int, where: str) -> dict[str, Any]:
    """One identity by its id, or a 404 naming the parameter `where` that named it."""
    row = connection.execute(select(person_demographics).where(person_demographics.c.id == identity_id)).mappings()
    found = row.first()
    if found is None:
        raise FhirError(404, "not-found", f"no identity {identity_id}", (where,))
    return dict(found)


def move_by_identifier(connection: Connection, identifier: Identifier, target: str) -> tuple[str, list[int]]:
    """Assign an identifier, and the identities of its person that were sent with it, to `target`; 404 if unknown."""
    mpi = connection.execute(
        select(person_identifiers.c.mpi).where(
            person_identifiers.c.system == identifier.system, person_identifiers.c.value == identifier.value
        )
    ).scalar_one_or_none()
    if mpi is None:
        raise FhirError(
            404, "not-found", f"no identity carries {identifier.system}|{identifier.value}", ("identityIdentifier",)
        )
    wanted = {"system": identifier.system, "value": identifier.value}
    sent_with = [
        row["id"]
        for row in of_person(connection, mpi)
        if wanted in [{"system": i.get("system"), "value": i.get("value")} for i in _identifiers_in(row["resource"])]
    ]
    move(connection, sent_with, target)
    connection.execute(
        update(person_identifiers)
        .where(person_identifiers.c.system == identifier.system, person_identifiers.c.value == identifier.value)
        .values(mpi=target)
    )
    return str(mpi), sent_with


def identifiers_of(connection: Connection, mpi: str) -> list[dict[str, str]]:
    """The identifiers linked to a person, as FHIR Identifiers."""
    rows = connection.execute(
        select(person_identifiers.c.system, person_identifiers.c.value)
        .where(person_identifiers.c.mpi == mpi)
        .order_by(person_identifiers.c.system, person_identifiers.c.value)
    )
    return [{"system": row.system, "value": row.value} for row in rows]


def demographics_of(row: Mapping[str, Any] | RowMapping) -> Demographics:
    """What linkage compares of a stored identity."""
    return Demographics(row["family"], row["given"], row["birth_date"], row["sex"])


def move(connection: Connection, identity_ids: Sequence[int], target: str) -> None:
    """Assign identities (and the identifiers sent with them) to the person `target`."""
    if not identity_ids:
        return
    for identity_id in identity_ids:
        row = find(connection, identity_id, "identity")
        for identifier in _identifiers_in(row["resource"]):
            connection.execute(
                update(person_identifiers)
                .where(
                    person_identifiers.c.system == identifier.get("system"),
                    person_identifiers.c.value == identifier.get("value"),
                    person_identifiers.c.mpi == row["mpi"],
                )
                .values(mpi=target)
            )
        connection.execute(
            update(persons)
            .where(persons.c.mpi == row["mpi"], persons.c.reference_identity == identity_id)
            .values(reference_identity=None)
        )
    connection.execute(
        update(person_demographics).where(one_of(connection, person_demographics.c.id, identity_ids)).values(mpi=target)
    )


def set_reference(connection: Connection, mpi: str, identity_id: int) -> None:
    """Make one of the person's identities its reference identity."""
    row = find(connection, identity_id, "identityReference")
    if row["mpi"] != mpi:
        raise FhirError(
            422, "business-rule", f"identity {identity_id} belongs to another person than {mpi}", ("identityReference",)
        )
    connection.execute(update(persons).where(persons.c.mpi == mpi).values(reference_identity=identity_id))


def _identifiers_in(resource: Any) -> list[dict[str, Any]]:  # noqa: ANN401 -- stored JSON
    found = resource.get("identifier") if isinstance(resource, dict) else None
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []
