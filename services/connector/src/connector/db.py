"""The connector's tables and their migrations, one schema for SQLite and PostgreSQL.

Besides the audit trail the connector remembers processes: the ones it started (so `$retry` can
finish them with the same idempotency key) and the ones peers asked of it (so a retried request gets
the stored answer instead of doing the work twice), and when a process whose peer was unreachable is
tried again. A started Task is claimed by the connector running it (`claimed_by` until `claimed_until`,
renewed while it runs), so several connectors on one database never run it at once. The Task tables
are generic over the process: the Task itself is stored as JSON, so a new process needs no migration.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
)

from servicekit import db as servicekit_db
from servicekit.audit import AuditLog
from servicekit.db import Migration

metadata = MetaData()

audit_log = AuditLog(metadata, "urn:hubnode:connector", "hubnode connector")


def _task_columns() -> list[Column[object]]:
    return [
        Column("process", String(64), nullable=False),
        Column("status", String(32), nullable=False),
        Column("task_json", JSON, nullable=False),
        Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


def _claim_columns() -> list[Column[object]]:
    return [
        Column("claimed_by", String(128), nullable=True),
        Column("claimed_until", DateTime(timezone=True), nullable=True),
    ]


#: Processes this node started: `id` is the Task id the local API answers with.
started_tasks = Table(
    "started_tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("idempotency_key", String(255), nullable=True, unique=True),
    *_task_columns(),
    *_claim_columns(),
)

#: Processes peers asked of this node: (requester, idempotency key) -> the answer given.
received_tasks = Table(
    "received_tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("requester", String(255), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    *_task_columns(),
    Index("ux_received_tasks_key", "requester", "idempotency_key", unique=True),
)

#: Processes by state, as the metrics count them at every scrape: from the index, not the Tasks' JSON.
process_state_indexes = (
    Index("ix_started_tasks_state", started_tasks.c.process, started_tasks.c.status),
    Index("ix_received_tasks_state", received_tasks.c.process, received_tasks.c.status),
)


#: Records of this node sent to a peer (by origin key): what the peer may send back as an update of them.
sent_records = Table(
    "sent_records",
    metadata,
    Column("peer", String(64), primary_key=True),
    Column("system", String(255), primary_key=True),
    Column("value", String(255), primary_key=True),
    Column("sent", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: Feasibility questions answered per requester and day: the budget that bounds counting by differences.
feasibility_budget = Table(
    "feasibility_budget",
    metadata,
    Column("requester", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("answered", Integer, nullable=False),
)

#: How this node writes what sources send (`connector.resource_ids`): one row, decided at its first write.
resource_ids = Table(
    "resource_ids",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("scheme", String(16), nullable=False),
    Column("decided", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: Processes that failed for an unreachable peer and are tried again by themselves (`connector.retries`).
process_retries = Table(
    "process_retries",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("attempt", Integer, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False, index=True),
)


def _v1_create_tables(connection: Connection) -> None:
    metadata.create_all(connection)


def _v2_federation_authorisation(connection: Connection) -> None:
    """Tables of the sent-records ledger and the feasibility budget; reads audit their query."""
    sent_records.create(connection, checkfirst=True)
    feasibility_budget.create(connection, checkfirst=True)
    audit_log.add_query_column(connection)


def _v3_automatic_retries(connection: Connection) -> None:
    """The plan of automatic attempts of processes whose peer was unreachable."""
    process_retries.create(connection, checkfirst=True)


def _v4_process_state_index(connection: Connection) -> None:
    """The indexes the metrics count processes by state on (new stores have them from the first step)."""
    for index in process_state_indexes:
        index.create(connection, checkfirst=True)


def _v5_task_claims(connection: Connection) -> None:
    """Which connector runs a started Task, and until when (new stores have the columns from the first step)."""
    servicekit_db.add_missing_columns(connection, "started_tasks", _claim_columns())


def _v6_resource_ids(connection: Connection) -> None:
    """The record of how the node writes resources (derived ids or by identifier), decided at the first write."""
    resource_ids.create(connection, checkfirst=True)


#: Ordered schema steps; append, never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (
    _v1_create_tables,
    _v2_federation_authorisation,
    _v3_automatic_retries,
    _v4_process_state_index,
    _v5_task_claims,
    _v6_resource_ids,
)


def connect(url: str, adopt_store: Path | None = None) -> Engine:
    """An engine for `url` (sqlite:///path or postgresql+psycopg://...), schema migrated.

    `adopt_store`: the SQLite file this connector kept before its database moved; its rows come along once.
    """
    engine = servicekit_db.connect(url, MIGRATIONS)
    if adopt_store is not None:
        servicekit_db.adopt_sqlite(engine, adopt_store, MIGRATIONS, metadata)
    return engine
