"""The portal's tables: server-side sessions and its own audit trail (SQLite in its volume)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Connection, DateTime, Engine, MetaData, String, Table

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

audit_log = AuditLog(metadata, "urn:hubnode:portal", "hubnode portal")


def _v1_create_tables(connection: Connection) -> None:
    metadata.create_all(connection)


#: Ordered schema steps; append, never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (_v1_create_tables,)


def connect(url: str) -> Engine:
    """An engine for `url` (sqlite:///path), schema migrated."""
    return servicekit_db.connect(url, MIGRATIONS)
