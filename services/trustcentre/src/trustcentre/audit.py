"""Every operation leaves a record: who, what, about whom, why, with what outcome, when.

Records are written in the same transaction as the operation they describe (a failed operation is
recorded on its own), and are read back as FHIR `AuditEvent`s so the portal can show patients
which projects used their data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, true

from trustcentre.db import audit_events, audit_subjects, bulk_insert

AUDIT_SOURCE_SYSTEM = "urn:hubnode:trustcentre"
PURPOSE_SYSTEM = "urn:hubnode:project"
#: FHIR AuditEvent.outcome: 0 success, 4 minor failure (refused request), 8 serious failure.
OUTCOME_CODES = {"success": "0", "refused": "4", "failed": "8"}


@dataclass(frozen=True)
class AuditRecord:
    """One operation as it is remembered."""

    caller: str
    operation: str
    subjects: Sequence[str]
    outcome: str
    purpose: str | None = None
    detail: str = ""


def record(connection: Connection, entry: AuditRecord) -> None:
    """Write one record inside the caller's transaction."""
    event_id = connection.execute(
        insert(audit_events)
        .values(
            recorded=datetime.now(UTC),
            caller=entry.caller,
            operation=entry.operation,
            outcome=entry.outcome,
            purpose=entry.purpose,
            detail=entry.detail[:2000],
        )
        .returning(audit_events.c.id)
    ).scalar_one()
    subjects = sorted(set(entry.subjects))
    bulk_insert(connection, audit_subjects, [{"event_id": event_id, "subject": s} for s in subjects])


def record_alone(engine: Engine, entry: AuditRecord) -> None:
    """Write one record in a transaction of its own (for refused or failed operations)."""
    with engine.begin() as connection:
        record(connection, entry)


def search(
    engine: Engine, subject: str | None, since: date | None, until: date | None, limit: int = 500
) -> dict[str, Any]:
    """AuditEvents about `subject` (an original, pseudonym or person id) within dates, as a Bundle."""
    conditions = []
    if since is not None:
        conditions.append(audit_events.c.recorded >= datetime(since.year, since.month, since.day, tzinfo=UTC))
    if until is not None:
        end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
        conditions.append(audit_events.c.recorded < end)
    if subject is not None:
        about = select(audit_subjects.c.event_id).where(audit_subjects.c.subject == subject)
        conditions.append(audit_events.c.id.in_(about))
    query = select(audit_events).where(and_(true(), *conditions)).order_by(audit_events.c.id.desc()).limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
        ids = [row["id"] for row in rows]
        subjects: dict[int, list[str]] = {event_id: [] for event_id in ids}
        for event_id, value in connection.execute(
            select(audit_subjects.c.event_id, audit_subjects.c.subject).where(audit_subjects.c.event_id.in_(ids))
        ):
            subjects[event_id].append(value)
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(rows),
        "entry": [{"resource": as_audit_event(row, subjects[row["id"]])} for row in reversed(rows)],
    }


def as_audit_event(row: Any, subjects: Sequence[str]) -> dict[str, Any]:  # noqa: ANN401 -- a result row mapping
    """One stored record as a FHIR R4 AuditEvent."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(row["id"]),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": AUDIT_SOURCE_SYSTEM, "code": row["operation"]}],
        "action": "E",
        "recorded": _iso(row["recorded"]),
        "outcome": OUTCOME_CODES.get(row["outcome"], "8"),
        "agent": [{"who": {"display": row["caller"]}, "requestor": True}],
        "source": {"observer": {"display": "hubnode trust centre"}},
        "entity": [{"what": {"identifier": {"value": subject}}} for subject in subjects],
    }
    if row["outcome"] != "success" and row["detail"]:
        event["outcomeDesc"] = row["detail"]
    if row["purpose"]:
        event["purposeOfEvent"] = [{"coding": [{"system": PURPOSE_SYSTEM, "code": row["purpose"]}]}]
    return event


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
