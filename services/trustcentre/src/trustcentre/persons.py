"""The ids a node knows a person by: one per node, never the master person id (MPI) itself.

A node's connector keys its one Patient per person by the id the trust centre gives it here. The MPI
stays inside the trust centre: a node that learnt it could pseudonymise it in a research project's
domain and find the person at the research node. Each node's ids are pseudonyms of the MPI in a
domain of its own (`persons.<site>`), so they are stable, differ from node to node, and map back to
the person only here. A scoped caller's pseudonymisation originals are these ids (`gpas_api`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from trustcentre.pseudonyms import PseudonymStore

PERSON_SYSTEM = "urn:hubnode:person"
DOMAIN_PREFIX = "persons."
#: Long enough never to collide across millions of persons; the check character catches typos.
_SETTINGS = {"prefix": "P", "length": 16, "check_digit": True}


def domain_of(site: str) -> str:
    """The internal pseudonym domain of one node's person ids."""
    return f"{DOMAIN_PREFIX}{site}"


class PersonIds:
    """Per-node person ids over the pseudonym store."""

    def __init__(self, store: PseudonymStore) -> None:
        self._store = store
        self._declared: set[str] = set()

    def of(self, connection: Connection, site: str, mpis: Sequence[str]) -> dict[str, str]:
        """MPI -> the id `site` knows the person by (made on first use)."""
        domain = self._domain(connection, site)
        return self._store.pseudonymize(connection, domain, mpis, create=True)

    def resolve(self, connection: Connection, site: str, person_ids: Sequence[str]) -> dict[str, str]:
        """Person id (of `site`) -> MPI, for the ids `site` was given; unknown ones are left out."""
        return self._store.depseudonymize(connection, self._domain(connection, site), person_ids)

    def _domain(self, connection: Connection, site: str) -> str:
        domain = domain_of(site)
        if domain not in self._declared:
            self._store.add_domain(connection, domain, _SETTINGS, f"the ids node {site} knows persons by")
            self._declared.add(domain)
        return domain
