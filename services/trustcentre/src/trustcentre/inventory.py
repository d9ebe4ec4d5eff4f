"""What the trust centre holds, store by store, as counts and digests (`/ttp-fhir/fhir/$inventory`).

Like MOSAIC's statistics pages, but with a digest per store, so a site can tell that a restored trust
centre (or a replica) holds the same pseudonyms, consents, persons and audit trail as the one it came
from, without either answer carrying a pseudonym, a name or a key. Stores: the pseudonym domains, and per
domain its pseudonyms; the secondary pseudonyms; per consent domain its consents and every signer's policy
states today; the persons (MPI), their identities, the identifiers linked to them (the links), the
possible matches; the audit trail but the inventories' own records (reading it changes nothing).
Values are compared as stored, MPIs included: two trust centres agree only when they hold the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Engine, select

from servicekit.audit import AuditRecord
from servicekit.inventory import BATCH_ROWS, OPERATION, Store, digest_query, digest_rows, inventory_endpoint
from servicekit.purpose import OPERATIONS
from trustcentre.auth import Role
from trustcentre.consent_templates import ConsentRegistry
from trustcentre.consents import parsed
from trustcentre.db import (
    audit_log,
    consents,
    domains,
    person_demographics,
    person_identifiers,
    persons,
    possible_matches,
    pseudonyms,
    secondary_pseudonyms,
)
from trustcentre.policy_states import current_policy_states
from trustcentre.web import Endpoint


def trustcentre_stores(connection: Connection, registry: ConsentRegistry) -> list[Store]:
    """Every store of the trust centre, in a fixed order."""
    names = list(connection.execute(select(domains.c.name).order_by(domains.c.name)).scalars())
    found = [digest_query(connection, "domains", select(domains.c.name, domains.c.settings).order_by(domains.c.name))]
    found += [
        digest_query(
            connection,
            f"pseudonyms/{name}",
            select(pseudonyms.c.original, pseudonyms.c.pseudonym)
            .where(pseudonyms.c.domain == name)
            .order_by(pseudonyms.c.original),
        )
        for name in names
    ]
    secondary = secondary_pseudonyms.c
    found.append(
        digest_query(
            connection,
            "secondary-pseudonyms",
            select(secondary.domain, secondary.original, secondary.pseudonym).order_by(
                secondary.domain, secondary.pseudonym
            ),
        )
    )
    consent_domains = sorted({*registry.domains, *connection.execute(select(consents.c.domain).distinct()).scalars()})
    for name in consent_domains:
        found.append(_consents(connection, name))
        if name in registry.domains:
            found.append(digest_rows(f"policy-states/{name}", _policy_states(connection, registry, name)))
    found += _persons(connection)
    found.append(audit_log.store(connection, leave_out={OPERATION}))
    return found


def _consents(connection: Connection, domain: str) -> Store:
    c = consents.c
    columns = (c.id, c.person_system, c.person_value, c.date_time, c.status, c.resource, c.template, c.related)
    return digest_query(connection, f"consents/{domain}", select(*columns).where(c.domain == domain).order_by(c.id))


def _policy_states(connection: Connection, registry: ConsentRegistry, name: str) -> Iterator[list[Any]]:
    """Each signer's state of every policy of the domain today, signer by signer."""
    domain, today = registry.domains[name], datetime.now(UTC).date()
    c = consents.c
    rows = connection.execute(
        select(c.person_system, c.person_value, c.resource)
        .where(c.domain == name)
        .order_by(c.person_system, c.person_value, c.date_time, c.created, c.id)
        .execution_options(yield_per=BATCH_ROWS)
    )
    for (system, value), signed in groupby(rows, key=lambda row: (row[0], row[1])):
        states = current_policy_states(parsed([row[2] for row in signed], domain), today, domain.policies)
        yield [system, value, {key: state.value for key, state in sorted(states.items())}]


def _persons(connection: Connection) -> list[Store]:
    """The MPI: persons, their identities, the identifiers linked to them, the possible matches."""
    d, i, m = person_demographics.c, person_identifiers.c, possible_matches.c
    identity = (d.id, d.mpi, d.family, d.given, d.birth_date, d.sex, d.source, d.resource)
    match = (m.mpi, m.candidate_mpi, m.score, m.status, m.resolved_by, m.comment)
    return [
        digest_query(
            connection, "persons", select(persons.c.mpi, persons.c.reference_identity).order_by(persons.c.mpi)
        ),
        digest_query(connection, "identities", select(*identity).order_by(d.id)),
        digest_query(connection, "links", select(i.system, i.value, i.mpi, i.source).order_by(i.system, i.value)),
        digest_query(connection, "possible-matches", select(*match).order_by(m.mpi, m.candidate_mpi)),
    ]


def trustcentre_inventory(engine: Engine, registry: ConsentRegistry) -> Endpoint:
    """`$inventory` for the site's administrator (role `audit-read`, no node's site), audited."""

    def audit(caller: str, outcome: str, detail: str) -> None:
        audit_log.record_alone(engine, AuditRecord(caller, OPERATION, (), outcome, OPERATIONS, detail))

    return inventory_endpoint(
        engine, Role.AUDIT_READ, lambda connection: trustcentre_stores(connection, registry), audit
    )
