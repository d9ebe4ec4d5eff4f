"""Every name one person goes by here: identifiers linked to them, the id each node knows them by, pseudonyms.

Consents and audit records are filed under whatever identifier their caller used (a KVNR, a clinic's
MRN, a node's person id), so questions about a person ("is there consent?", "who used my data?")
look under all of them. Only linkage decides what belongs to one person: two identifiers never
linked stay two people here too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, or_, select

from trustcentre.db import person_identifiers, pseudonyms
from trustcentre.persons import DOMAIN_PREFIX, PERSON_SYSTEM


@dataclass(frozen=True)
class Aliases:
    """One person's names: the MPI, linked identifiers, node person ids (by site), research pseudonyms (by domain)."""

    mpi: str
    identifiers: frozenset[tuple[str, str]]
    person_ids: dict[str, str]
    research: dict[str, str]

    @property
    def filed_under(self) -> frozenset[tuple[str, str]]:
        """The (system, value) pairs a consent about this person may be filed under."""
        return self.identifiers | {(PERSON_SYSTEM, value) for value in self.person_ids.values()}

    @property
    def values(self) -> frozenset[str]:
        """Every value an audit record may name this person by."""
        pairs = {value for _, value in self.identifiers}
        return frozenset({self.mpi, *pairs, *self.person_ids.values(), *self.research.values()})


def mpis_of(connection: Connection, identifiers: Iterable[tuple[str, str]]) -> set[str]:
    """The persons (MPIs) these identifiers name: linked identifiers, or node person ids."""
    wanted = list(identifiers)
    linked = [(s, v) for s, v in wanted if s != PERSON_SYSTEM]
    ids = [v for s, v in wanted if s == PERSON_SYSTEM]
    found: set[str] = set()
    if linked:
        about = or_(*((person_identifiers.c.system == s) & (person_identifiers.c.value == v) for s, v in linked))
        found |= {mpi for (mpi,) in connection.execute(select(person_identifiers.c.mpi).where(about))}
    if ids:
        query = select(pseudonyms.c.original).where(
            pseudonyms.c.domain.startswith(DOMAIN_PREFIX), pseudonyms.c.pseudonym.in_(ids)
        )
        found |= {mpi for (mpi,) in connection.execute(query)}
    return found


def aliases_of(connection: Connection, mpi: str) -> Aliases:
    """Every name of the person `mpi`."""
    identifiers = frozenset(
        (system, value)
        for system, value in connection.execute(
            select(person_identifiers.c.system, person_identifiers.c.value).where(person_identifiers.c.mpi == mpi)
        )
    )
    person_ids: dict[str, str] = {}
    research: dict[str, str] = {}
    for domain, pseudonym in connection.execute(
        select(pseudonyms.c.domain, pseudonyms.c.pseudonym).where(pseudonyms.c.original == mpi)
    ):
        if domain.startswith(DOMAIN_PREFIX):
            person_ids[domain.removeprefix(DOMAIN_PREFIX)] = pseudonym
        else:
            research[domain] = pseudonym
    return Aliases(mpi, identifiers, person_ids, research)


def person_of_site(connection: Connection, site: str, person_id: str) -> Aliases | None:
    """The person a node (`site`) knows by `person_id`, if it was given that id; None otherwise."""
    row = connection.execute(
        select(pseudonyms.c.original).where(
            pseudonyms.c.domain == f"{DOMAIN_PREFIX}{site}", pseudonyms.c.pseudonym == person_id
        )
    ).first()
    return None if row is None else aliases_of(connection, row.original)
