"""Stored consents per person and consent domain; nothing is ever overwritten, so history stays.

A person is known by identifiers (as in gICS); a consent is filed under the identifier its
`patient` reference carries. A withdrawal is one more consent, denying policies from a date on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, or_, select

from servicekit.fhir import FhirError
from trustcentre.aliases import aliases_of, mpis_of
from trustcentre.consent_templates import ConsentDomain
from trustcentre.db import consents
from trustcentre.mii_consent import ConsentInvalid, MiiConsent, parse_mii_consent, read_consent

MAX_CONSENT_ID = 64


@dataclass(frozen=True)
class PersonIdentifier:
    """How gICS names a person: an Identifier's system and value."""

    system: str
    value: str


@dataclass(frozen=True)
class StoredConsent:
    """One stored consent: the Consent, the template it came from and the resources that came with it."""

    resource: Mapping[str, Any]
    template: str | None
    related: Sequence[Mapping[str, Any]]
    person: PersonIdentifier


def add_consent(
    connection: Connection,
    domain: ConsentDomain,
    resource: Mapping[str, Any],
    template: str | None = None,
    related: Sequence[Mapping[str, Any]] = (),
) -> tuple[str, PersonIdentifier]:
    """Check a Consent (an MII one, or one computed from `template`) and store it.

    Returns its id and whom it is about.
    """
    try:
        policies = domain.policy_keys()
        consent = read_consent(dict(resource), policies) if template else parse_mii_consent(dict(resource), policies)
    except ConsentInvalid as invalid:
        raise FhirError(422, "invariant", "; ".join(invalid.problems), ("Consent",)) from None
    if not consent.patient_identifiers:
        raise FhirError(
            422,
            "required",
            "Consent.patient.identifier: the trust centre files consents under a person identifier",
            ("Consent.patient.identifier",),
        )
    system, value = consent.patient_identifiers[0]
    consent_id = _consent_id(connection, resource)
    stored = {**resource, "id": consent_id}
    connection.execute(
        insert(consents).values(
            id=consent_id,
            domain=domain.name,
            person_system=system,
            person_value=value,
            date_time=consent.date_time,
            status=consent.status,
            resource=stored,
            template=template,
            related=list(related) if related else None,
        )
    )
    return consent_id, PersonIdentifier(system, value)


def _consent_id(connection: Connection, resource: Mapping[str, Any]) -> str:
    """The resource's own id when it is free, else a new one: a replayed id never replaces a consent."""
    given = resource.get("id")
    if isinstance(given, str) and 0 < len(given) <= MAX_CONSENT_ID:
        taken = connection.execute(select(consents.c.id).where(consents.c.id == given)).first()
        if taken is None:
            return given
    return uuid.uuid4().hex


def stored_consents(
    connection: Connection,
    domain: str,
    persons: Sequence[PersonIdentifier] | None = None,
    template: str | None = None,
) -> list[StoredConsent]:
    """The stored consents of `domain`, oldest first: about any of `persons` (None: anyone), of `template`.

    A linked person's consents are found under any of their names (`trustcentre.aliases`): a withdrawal a
    patient gave in the portal, filed under the id their node knows them by, counts when a connector asks
    by their KVNR.
    """
    query = select(consents).where(consents.c.domain == domain)
    if persons is not None:
        if not persons:
            return []
        names = {(p.system, p.value) for p in persons}
        for mpi in mpis_of(connection, names):
            names |= aliases_of(connection, mpi).filed_under
        query = query.where(
            or_(*((consents.c.person_system == s) & (consents.c.person_value == v) for s, v in sorted(names)))
        )
    if template is not None:
        query = query.where(consents.c.template == template)
    rows = connection.execute(query.order_by(consents.c.date_time, consents.c.created)).mappings()
    return [
        StoredConsent(
            row["resource"],
            row["template"],
            row["related"] or [],
            PersonIdentifier(row["person_system"], row["person_value"]),
        )
        for row in rows
    ]


def parsed(resources: Sequence[Mapping[str, Any]], domain: ConsentDomain) -> list[MiiConsent]:
    """Stored resources as the plain data policy decisions need (they were checked when stored)."""
    policies = domain.policy_keys()
    return [read_consent(dict(resource), policies) for resource in resources]
