"""Tickets for a patient's federation-wide ledger: which other nodes to ask, without telling anyone who.

A node's portal shows a patient every use of their data, also at other nodes. It cannot ask them by
name: each node knows the person by its own id, a research node by a pseudonym, and the portal's node
must learn none of these. So the portal asks here (`$ledgerTickets`, for a person its node enrolled)
and gets one opaque ticket per node that knows the person: each clinical node holding an id of them,
and each research node for every research pseudonym (one ticket per pseudonym, so a research node
never learns that two of its pseudonyms are one person). The portal's connector hands each ticket to
its node over the peer door; that node redeems it here (`$redeemLedgerTicket`, only the node it was
issued for, for `VALIDITY`) and learns the one name it already knows the person by, and who asked.
What is stored of a ticket is its hash.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS
from trustcentre.aliases import person_of_site
from trustcentre.auth import Role
from trustcentre.db import audit_log, ledger_tickets
from trustcentre.fhir import Parameters, parameters
from trustcentre.persons import PERSON_SYSTEM
from trustcentre.web import Context, Endpoint, operation

VALIDITY = timedelta(minutes=10)
#: The system of a research pseudonym's name in a redeemed ticket: the domain is in the value's `system`.
PSEUDONYM_SYSTEM_PREFIX = "urn:hubnode:pseudonym:"
REFUSED = "this ledger ticket is not valid here: unknown, expired or issued for another node"


def ticket_hash(ticket: str) -> str:
    """What is stored of a ticket."""
    return hashlib.sha256(ticket.encode()).hexdigest()


def _site(context: Context, what: str) -> str:
    site = context.caller.site
    if site is None:
        raise FhirError(403, "forbidden", f"ledger tickets are {what} by a node, for its site")
    return site


def ledger_ticket_endpoints(research_sites: Sequence[str]) -> Mapping[str, Endpoint]:
    """`$ledgerTickets` for a node's portal (role `audit-read`), `$redeemLedgerTicket` for a connector (`ledger`)."""

    def issue(context: Context, params: Parameters) -> dict[str, Any]:
        site = _site(context, "asked for")
        named = params.identifiers("person")
        if len(named) != 1 or named[0][0] != PERSON_SYSTEM:
            raise FhirError(400, "invalid", f"name the person by exactly one {PERSON_SYSTEM} identifier", ("person",))
        person_id = named[0][1]
        now = datetime.now(UTC)
        with context.engine.begin() as connection:
            aliases = person_of_site(connection, site, person_id)
            if aliases is None:
                raise FhirError(403, "forbidden", f"{person_id!r} is not a person id of {site!r}", ("person",))
            wanted = [
                *(
                    (other, PERSON_SYSTEM, value)
                    for other, value in sorted(aliases.person_ids.items())
                    if other != site
                ),
                *(
                    (node, f"{PSEUDONYM_SYSTEM_PREFIX}{domain}", value)
                    for domain, value in sorted(aliases.research.items())
                    for node in research_sites
                    if node != site
                ),
            ]
            connection.execute(delete(ledger_tickets).where(ledger_tickets.c.expires < now))
            issued = []
            for audience, system, value in wanted:
                ticket = secrets.token_urlsafe(24)
                connection.execute(
                    ledger_tickets.insert().values(
                        ticket_sha256=ticket_hash(ticket),
                        mpi=aliases.mpi,
                        requester=site,
                        audience=audience,
                        name_system=system,
                        name_value=value,
                        issued=now,
                        expires=now + VALIDITY,
                    )
                )
                issued.append((audience, ticket))
            sites = ", ".join(sorted({audience for audience, _ in issued})) or "none"
            detail = f"{len(issued)} ledger ticket(s) for {sites}"
            audit_log.record(
                connection, context.success("$ledgerTickets", [aliases.mpi, person_id], OPERATIONS, detail)
            )
        expires = (now + VALIDITY).isoformat(timespec="seconds")
        return parameters(
            *(
                {
                    "name": "ticket",
                    "part": [
                        {"name": "site", "valueString": audience},
                        {"name": "ticket", "valueString": ticket},
                        {"name": "expires", "valueDateTime": expires},
                    ],
                }
                for audience, ticket in issued
            )
        )

    def redeem(context: Context, params: Parameters) -> dict[str, Any]:
        site = _site(context, "redeemed")
        ticket = params.string("ticket") or ""
        now = datetime.now(UTC)
        with context.engine.begin() as connection:
            row = connection.execute(
                select(ledger_tickets).where(
                    ledger_tickets.c.ticket_sha256 == ticket_hash(ticket), ledger_tickets.c.audience == site
                )
            ).first()
            expires = None if row is None else row.expires.replace(tzinfo=row.expires.tzinfo or UTC)
            if row is None or expires is None or expires < now:
                raise FhirError(404, "not-found", REFUSED, ("ticket",))
            detail = f"ledger ticket of {row.requester} redeemed"
            audit_log.record(
                connection, context.success("$redeemLedgerTicket", [row.mpi, row.name_value], OPERATIONS, detail)
            )
        return parameters(
            {"name": "requester", "valueString": row.requester},
            {"name": "name", "valueIdentifier": {"system": row.name_system, "value": row.name_value}},
        )

    return {
        "$ledgerTickets": operation("$ledgerTickets", Role.AUDIT_READ, issue),
        "$redeemLedgerTicket": operation("$redeemLedgerTicket", Role.LEDGER, redeem),
    }
