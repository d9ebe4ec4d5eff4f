"""What the connector remembers of its work, readable as FHIR `AuditEvent` (`GET /fhir/AuditEvent`).

Ingests, reads and every exchange with a peer are recorded (docs/federation.md): who asked, which
operation or process, about which patients (MPI ids or pseudonyms), with what outcome. The tables and
the AuditEvent rendering are the service kit's; this module names the connector's records.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from connector.auth import Role
from connector.db import audit_log
from servicekit.audit import AuditRecord
from servicekit.inventory import OPERATION, Endpoint, inventory_endpoint
from servicekit.purpose import OPERATIONS

INGEST = "ingest"
IMPORT = "$import"
READ = "read"


def exchange_record(  # noqa: PLR0913, PLR0917 -- the fields of one record
    process: str, peer: str, subjects: Sequence[str], outcome: str, detail: str = "", purpose: str | None = None
) -> AuditRecord:
    """The record of one exchange with `peer` (its site) in `process`, at either end."""
    return AuditRecord(f"peer:{peer}", process, subjects, outcome, purpose, detail)


def record_alone(engine: Engine, entry: AuditRecord) -> None:
    """Write `entry` in a transaction of its own (the connector's own writes go to HAPI, not here)."""
    audit_log.record_alone(engine, entry)


def inventory(engine: Engine) -> Endpoint:
    """`GET /fhir/AuditEvent/$inventory`: the trail's count and digest for the site's administrator, audited.

    `hubnode inventory` compares it between a node and its restored copy; its own records are not counted.
    """

    def record(caller: str, outcome: str, detail: str) -> None:
        audit_log.record_alone(engine, AuditRecord(caller, OPERATION, (), outcome, OPERATIONS, detail))

    return inventory_endpoint(
        engine, Role.AUDIT_READ, lambda connection: [audit_log.store(connection, {OPERATION})], record
    )
