"""Every operation leaves a record: who, what, about whom, why, with what outcome, when.

Records are written in the same transaction as the operation they describe (a refused or failed
operation is recorded on its own), and are read back as FHIR `AuditEvent`s so the portal can show
patients which projects used their data. Each service declares the tables in its own schema.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    insert,
    select,
    true,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from servicekit.db import add_missing_columns, bulk_insert
from servicekit.fhir import FhirError, parse_fhir_date
from servicekit.inventory import BATCH_ROWS, Store, digest_rows
from servicekit.metrics import Reading
from servicekit.purpose import EMERGENCY, codings
from servicekit.web import authenticate, error_response, fhir_response

#: FHIR AuditEvent.outcome: 0 success, 4 minor failure (refused request), 8 serious failure. "warned" is
#: a success with something to say (input stored with validation warnings): its detail is shown.
OUTCOME_CODES = {"success": "0", "warned": "0", "refused": "4", "failed": "8"}
#: Search parameters that name the subject of AuditEvents (the trust centre's and the connector's).
SUBJECT_PARAMETERS = ("entity", "entity-name", "patient")
#: AuditEvent.entity.type of the search a read ran (DICOM/HL7 audit entity type 2: system object).
_QUERY_ENTITY = {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "query"}


@dataclass(frozen=True)
class AuditRecord:
    """One operation as it is remembered."""

    caller: str
    operation: str
    subjects: Sequence[str]
    outcome: str
    purpose: str | None = None
    detail: str = ""
    #: The search a read ran (its query string), shown to the patient as what was asked.
    query: str = ""


class AuditLog:
    """A service's audit tables, how records are written to them and read back as AuditEvents."""

    def __init__(self, metadata: MetaData, source_system: str, observer: str) -> None:
        """Declare `audit_events` and `audit_subjects` in `metadata`; events name `observer` as their source."""
        self.source_system = source_system
        self.observer = observer
        self.events = Table(
            "audit_events",
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("recorded", DateTime(timezone=True), nullable=False),
            Column("caller", String(255), nullable=False),
            Column("operation", String(64), nullable=False),
            Column("outcome", String(16), nullable=False),
            Column("purpose", String(255), nullable=True),
            Column("detail", Text, nullable=False, default=""),
            Column("query", Text, nullable=True),
            Index("ix_audit_recorded", "recorded"),
        )
        self.subjects = Table(
            "audit_subjects",
            metadata,
            Column("event_id", Integer, ForeignKey("audit_events.id"), primary_key=True),
            Column("subject", String(255), primary_key=True, index=True),
        )

    def record(self, connection: Connection, entry: AuditRecord) -> None:
        """Write one record inside the caller's transaction."""
        event_id = connection.execute(
            insert(self.events)
            .values(
                recorded=datetime.now(UTC),
                caller=entry.caller[:255],
                operation=entry.operation[:64],
                outcome=entry.outcome,
                purpose=None if entry.purpose is None else entry.purpose[:255],
                detail=entry.detail[:2000],
                query=entry.query[:2000] or None,
            )
            .returning(self.events.c.id)
        ).scalar_one()
        subjects = sorted({s[:255] for s in entry.subjects})
        bulk_insert(connection, self.subjects, [{"event_id": event_id, "subject": s} for s in subjects])

    def add_query_column(self, connection: Connection) -> None:
        """Schema step for stores made before reads recorded their query (new stores have the column)."""
        add_missing_columns(connection, "audit_events", [Column("query", Text)])

    def store(self, connection: Connection, leave_out: Collection[str] = ()) -> Store:
        """The trail as the inventory store `audit`: every record but those of the operations in `leave_out`.

        Each record with its id, caller, operation, outcome, purpose, detail, query and subjects, in id
        order (its time left out, as `servicekit.inventory` says); records and subjects are read side by side.
        """
        events, subjects_table = self.events, self.subjects
        columns = [events.c[name] for name in ("id", "caller", "operation", "outcome", "purpose", "detail", "query")]
        records = connection.execute(
            select(*columns)
            .where(events.c.operation.not_in(sorted(leave_out)))
            .order_by(events.c.id)
            .execution_options(yield_per=BATCH_ROWS)
        )
        named = connection.execute(
            select(subjects_table.c.event_id, subjects_table.c.subject)
            .order_by(subjects_table.c.event_id, subjects_table.c.subject)
            .execution_options(yield_per=BATCH_ROWS)
        )
        return digest_rows("audit", _with_subjects(records, named))

    def record_alone(self, engine: Engine, entry: AuditRecord) -> None:
        """Write one record in a transaction of its own (for refused or failed operations)."""
        with engine.begin() as connection:
            self.record(connection, entry)

    def written(self, engine: Engine) -> Reading:
        """The records written so far, for the metrics: the trail's highest id, one index lookup however long it is.

        On PostgreSQL a write rolled back leaves its id unused, so the count may run a little ahead.
        """

        def highest_id() -> dict[tuple[str, ...], float]:
            with engine.connect() as connection:
                highest = connection.execute(select(func.max(self.events.c.id))).scalar_one()
            return {(): float(highest or 0)}

        return Reading("hubnode_audit_records", "Audit records this service has written", "counter", (), highest_id)

    def search(
        self,
        engine: Engine,
        subjects: Collection[str] | None,
        since: date | None,
        until: date | None,
        limit: int = 500,
    ) -> dict[str, Any]:
        """AuditEvents about any of `subjects` (None: anyone) within dates (inclusive), as a searchset Bundle."""
        rows, named = self.rows(engine, subjects, since, until, limit)
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(rows),
            "entry": [{"resource": self.as_audit_event(row, named[row["id"]])} for row in rows],
        }

    def rows(
        self,
        engine: Engine,
        subjects: Collection[str] | None,
        since: date | None,
        until: date | None,
        limit: int = 500,
    ) -> tuple[list[Any], dict[int, list[str]]]:
        """The newest `limit` records about any of `subjects` within dates, oldest first, with each one's subjects."""
        events, subjects_table = self.events, self.subjects
        conditions = []
        if since is not None:
            conditions.append(events.c.recorded >= datetime(since.year, since.month, since.day, tzinfo=UTC))
        if until is not None:
            end = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
            conditions.append(events.c.recorded < end)
        if subjects is not None:
            about = select(subjects_table.c.event_id).where(subjects_table.c.subject.in_(sorted(subjects)))
            conditions.append(events.c.id.in_(about))
        query = select(events).where(and_(true(), *conditions)).order_by(events.c.id.desc()).limit(limit)
        with engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
            ids = [row["id"] for row in rows]
            named: dict[int, list[str]] = {event_id: [] for event_id in ids}
            for event_id, value in connection.execute(
                select(subjects_table.c.event_id, subjects_table.c.subject).where(subjects_table.c.event_id.in_(ids))
            ):
                named[event_id].append(value)
        return list(reversed(rows)), named

    def as_audit_event(self, row: Any, subjects: Sequence[str]) -> dict[str, Any]:  # noqa: ANN401 -- a row mapping
        """One stored record as a FHIR R4 AuditEvent."""
        event: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": str(row["id"]),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "subtype": [{"system": self.source_system, "code": row["operation"]}],
            "action": "E",
            "recorded": _iso(row["recorded"]),
            "outcome": OUTCOME_CODES.get(row["outcome"], "8"),
            "agent": [{"who": {"display": row["caller"]}, "requestor": True}],
            "source": {"observer": {"display": self.observer}},
            "entity": [{"what": {"identifier": {"value": subject}}} for subject in subjects],
        }
        if row["outcome"] != "success" and row["detail"]:
            event["outcomeDesc"] = row["detail"]
        if row["purpose"]:
            event["purposeOfEvent"] = [{"coding": codings(row["purpose"])}]
            if row["purpose"] == EMERGENCY and row["detail"]:
                event["purposeOfEvent"][0]["text"] = row["detail"]  # the reason stated for breaking the glass
        if row["query"]:
            query = base64.b64encode(row["query"].encode()).decode("ascii")
            event["entity"].append({"type": _QUERY_ENTITY, "query": query, "description": row["query"][:500]})
        return event

    def endpoint(self, engine: Engine, role: str) -> Callable[[Request], Awaitable[Response]]:
        """`GET .../AuditEvent?date=ge..&date=le..&entity=..` for callers holding `role`."""

        async def audit_events(request: Request) -> Response:
            try:
                authenticate(request).require(role)
                since, until = date_range(request.query_params.getlist("date"))
                return fhir_response(await run_in_threadpool(self.search, engine, subjects_of(request), since, until))
            except FhirError as error:
                return error_response(error)

        return audit_events


def _with_subjects(records: Iterable[Any], named: Iterable[Any]) -> Iterator[list[Any]]:
    """Each record (in id order) with the subjects of its id, from subject rows in (id, subject) order."""
    subjects = iter(named)
    pending = next(subjects, None)
    for record in records:
        found = []
        while pending is not None and pending[0] <= record[0]:
            if pending[0] == record[0]:
                found.append(pending[1])
            pending = next(subjects, None)
        yield [*record, found]


def subjects_of(request: Request) -> list[str] | None:
    """The subjects a search names (`entity=a,b`: either, as FHIR reads commas), None when it names none."""
    value = next((v for p in SUBJECT_PARAMETERS if (v := request.query_params.get(p))), None)
    return None if value is None else [part for part in value.split(",") if part]


def date_range(values: list[str]) -> tuple[date | None, date | None]:
    """FHIR `date=geYYYY-MM-DD&date=leYYYY-MM-DD` search values as an inclusive range."""
    since = until = None
    for value in values:
        prefix, raw = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
        try:
            day = parse_fhir_date(raw)
        except ValueError:
            raise FhirError(400, "invalid", f"date={value!r} is not a FHIR date search value", ("date",)) from None
        if prefix in ("ge", "gt", "eq"):
            since = day
        if prefix in ("le", "lt", "eq"):
            until = day
    return since, until


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
