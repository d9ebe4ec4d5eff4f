"""The trust centre's audit, read: everything for the site's staff, one person's entries for a node's portal.

A node's portal (a scoped caller with `audit-read`) asks for one patient enrolled there, by the id its
node knows them by: `AuditEvent?patient=urn:hubnode:person|<id>`. The answer holds every record that
names the person under any of their names (KVNR, MRNs, other nodes' ids, research pseudonyms), each
showing only this node's id of them and the research pseudonyms, which lead the portal to its own
connector's research extracts; other persons named in the same record, the MPI and other sites'
numbers are left out. Reading a ledger is itself recorded.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from servicekit.audit import AuditRecord, date_range, subjects_of
from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS
from servicekit.web import authenticate, error_response, fhir_response
from trustcentre.aliases import person_of_site
from trustcentre.auth import Role
from trustcentre.db import audit_log
from trustcentre.persons import PERSON_SYSTEM
from trustcentre.web import Endpoint


def audit_endpoint(engine: Engine) -> Endpoint:
    """`GET .../AuditEvent`: the whole trail for unscoped callers, one person's ledger for a node's caller."""

    async def audit_events(request: Request) -> Response:
        try:
            caller = authenticate(request)
            caller.require(Role.AUDIT_READ)
            since, until = date_range(request.query_params.getlist("date"))
            if caller.site is None:
                found = await run_in_threadpool(audit_log.search, engine, subjects_of(request), since, until)
                return fhir_response(found)
            person_id = request.query_params.get("patient", "").removeprefix(f"{PERSON_SYSTEM}|")
            ledger = await run_in_threadpool(_ledger, engine, caller.name, caller.site, person_id, since, until)
            return fhir_response(ledger)
        except FhirError as error:
            return error_response(error)

    return audit_events


def _ledger(  # noqa: PLR0913, PLR0917 -- who asks, about whom, when
    engine: Engine, caller: str, site: str, person_id: str, since: date | None, until: date | None
) -> dict[str, Any]:
    if not person_id:
        raise FhirError(400, "required", f"a node reads one person's ledger: patient={PERSON_SYSTEM}|<id>")
    with engine.begin() as connection:
        aliases = person_of_site(connection, site, person_id)
    if aliases is None:
        raise FhirError(403, "forbidden", f"{person_id!r} is not a person id of {site!r}", ("patient",))
    rows, named = audit_log.rows(engine, aliases.values, since, until)
    audit_log.record_alone(engine, AuditRecord(caller, "read-ledger", [aliases.mpi, person_id], "success", OPERATIONS))
    shown = {person_id, *aliases.research.values()}
    entries = [
        audit_log.as_audit_event(row, [person_id, *(s for s in named[row["id"]] if s in shown and s != person_id)])
        for row in rows
    ]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "entry": [{"resource": e} for e in entries],
    }
