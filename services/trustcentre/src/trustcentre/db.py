"""The trust centre's tables and their migrations, one schema for SQLite and PostgreSQL.

SQLite is the embedded default (a file in the container's volume); PostgreSQL is for production.
Migrations are numbered steps recorded in `schema_version`, applied at start-up inside one
transaction each, so a node upgraded in place moves forward and a failed step leaves nothing half done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

domains = Table(
    "domains",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("settings", JSON, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

pseudonyms = Table(
    "pseudonyms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("domain", String(64), ForeignKey("domains.name"), nullable=False),
    Column("original", String(255), nullable=False),
    Column("pseudonym", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("domain", "original", name="uq_pseudonym_original"),
    UniqueConstraint("domain", "pseudonym", name="uq_pseudonym_value"),
)

persons = Table(
    "persons",
    metadata,
    Column("mpi", String(64), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

person_identifiers = Table(
    "person_identifiers",
    metadata,
    Column("system", String(255), primary_key=True),
    Column("value", String(255), primary_key=True),
    Column("mpi", String(64), ForeignKey("persons.mpi"), nullable=False, index=True),
    Column("source", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

person_demographics = Table(
    "person_demographics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mpi", String(64), ForeignKey("persons.mpi"), nullable=False, index=True),
    Column("family", String(255), nullable=False),
    Column("given", String(255), nullable=False),
    Column("birth_date", Date, nullable=True),
    Column("sex", String(16), nullable=True),
    Column("source", String(128), nullable=False),
)

possible_matches = Table(
    "possible_matches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mpi", String(64), ForeignKey("persons.mpi"), nullable=False),
    Column("candidate_mpi", String(64), ForeignKey("persons.mpi"), nullable=False),
    Column("score", Float, nullable=False),
    Column("status", String(16), nullable=False, default="open"),
    Column("resolved_by", String(128), nullable=True),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved", DateTime(timezone=True), nullable=True),
    UniqueConstraint("mpi", "candidate_mpi", name="uq_possible_match_pair"),
)

consents = Table(
    "consents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("domain", String(64), nullable=False),
    Column("person_system", String(255), nullable=False),
    Column("person_value", String(255), nullable=False),
    Column("date_time", DateTime(timezone=True), nullable=False),
    Column("status", String(32), nullable=False),
    Column("resource", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_consents_person", "domain", "person_system", "person_value"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recorded", DateTime(timezone=True), nullable=False),
    Column("caller", String(255), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("purpose", String(255), nullable=True),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_audit_recorded", "recorded"),
)

audit_subjects = Table(
    "audit_subjects",
    metadata,
    Column("event_id", Integer, ForeignKey("audit_events.id"), primary_key=True),
    Column("subject", String(255), primary_key=True, index=True),
)


def _v1_create_tables(connection: Connection) -> None:
    metadata.create_all(connection)


#: Ordered schema steps; append, never edit a released one.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1_create_tables,)


def connect(url: str) -> Engine:
    """An engine for `url` (sqlite:///path or postgresql+psycopg://...), schema migrated."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    else:
        # No server-side prepared statements: after a few runs PostgreSQL switches a prepared
        # statement to a generic plan, and for `= ANY(array)` of a thousand values that plan was
        # six times slower (measured: 60 ms -> 400 ms per 1,000 pseudonyms).
        engine = create_engine(
            url, pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args={"prepare_threshold": None}
        )
    migrate(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:  # noqa: ANN401 -- DB-API objects
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin_immediate
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    """Take SQLite's write lock when a transaction begins, not at its first write.

    A transaction that reads and then writes would otherwise fail at once ("database is locked")
    when another writer committed in between; taking the lock up front makes concurrent callers
    wait their turn (up to the 30 s busy timeout) instead.
    """
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> int:
    """Apply every migration not yet recorded; returns the schema version now in force."""
    with engine.begin() as connection:
        schema_version.create(connection, checkfirst=True)
    current = 0
    with engine.connect() as connection:
        current = connection.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one()
    for version, step in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        with engine.begin() as connection:
            step(connection)
            connection.execute(insert(schema_version).values(version=version))
    return len(MIGRATIONS)


def insert_ignoring_conflicts(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, in the dialect at hand: concurrent writers never fail."""
    bulk_insert(connection, table, rows, ignore_conflicts=True)


def bulk_insert(
    connection: Connection, table: Table, rows: list[dict[str, Any]], *, ignore_conflicts: bool = False
) -> None:
    """Insert many rows (all with the same keys) in one statement.

    On PostgreSQL as `INSERT ... SELECT unnest(array), ...`: one parameter per column however many
    rows, which is several times faster than a statement per row or a bind parameter per value.
    """
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        columns = list(rows[0])
        arrays = [
            func.unnest(bindparam(None, [row[c] for row in rows], type_=postgresql.ARRAY(table.c[c].type)))
            for c in columns
        ]
        statement = postgresql.insert(table).from_select(columns, select(*arrays))
        connection.execute(statement.on_conflict_do_nothing() if ignore_conflicts else statement)
        return
    insert_statement = sqlite.insert(table)
    connection.execute(insert_statement.on_conflict_do_nothing() if ignore_conflicts else insert_statement, rows)


def one_of(connection: Connection, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL as `= ANY(array)`, one parameter however many values."""
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))
