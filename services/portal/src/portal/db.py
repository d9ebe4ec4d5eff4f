"""The portal's tables: server-side sessions, emergency accesses and its own audit trail (SQLite in its volume)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Connection, DateTime, Engine, Index, Integer, MetaData, String, Table, Text

from servicekit import db as servicekit_db
from servicekit.audit import AuditLog
from servicekit.db import Migration

metadata = MetaData()

#: A browser's session, known by the SHA-256 of its cookie (the cookie itself is never stored).
sessions = Table(
    "sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False, index=True),
    Column("data", JSON, nullable=False),
)

#: A clinician's access to one patient's record outside their consent ("break the glass"), until it expires.
emergency_accesses = Table(
    "emergency_accesses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("clinician", String(255), nullable=False),
    Column("person_id", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("started", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Index("ix_emergency_accesses_who", "clinician", "person_id"),
)

audit_log = AuditLog(metadata, "urn:hubnode:portal", "hubnode portal")


def _v1_create_tables(connection: Connection) -> None:
    metadata.create_all(connection)


def _v2_emergency_accesses(connection: Connection) -> None:
    emergency_accesses.create(connection, checkfirst=True)


#: Ordered schema steps; append, never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (_v1_create_tables, _v2_emergency_accesses)


def connect(url: str) -> Engine:
    """An engine for `url` (sqlite:///path), schema migrated."""
    return servicekit_db.connect(url, MIGRATIONS)
