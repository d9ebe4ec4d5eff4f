"""A service's database: SQLite (embedded default) or PostgreSQL (production), migrated at start-up.

Migrations are numbered steps recorded in `schema_version`, applied inside one transaction each, so
a node upgraded in place moves forward and a failed step leaves nothing half done. On PostgreSQL several
processes may start at once on one database (a service in two pods): they migrate one after another.
A service moved from SQLite to PostgreSQL takes its old store's rows along once (`adopt_sqlite`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

LOG = logging.getLogger("servicekit.db")
#: Rows an adopted SQLite store is read and written in at a time.
ADOPT_BATCH_ROWS = 5_000

#: One schema step: DDL (and data moves) run inside the step's own transaction.
Migration = Callable[[Connection], None]

#: The PostgreSQL advisory lock migrations are applied under (any number, the same for every service).
MIGRATION_LOCK = 0x68_75_62_6E  # "hubn"

schema_version = Table(
    "schema_version",
    MetaData(),
    Column("version", Integer, primary_key=True),
    Column("applied", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def connect(url: str, migrations: Sequence[Migration]) -> Engine:
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
    migrate(engine, migrations)
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


def migrate(engine: Engine, migrations: Sequence[Migration]) -> int:
    """Apply every migration not yet recorded; returns the schema version now in force.

    On PostgreSQL under a session advisory lock: a second process starting meanwhile waits, then finds
    the steps recorded (without it both would create the same tables and one would fail to start).
    """
    with _migration_lock(engine):
        return _apply(engine, migrations)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock for migrations (SQLite: one process owns the file anyway)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as holder:
        holder.execute(select(func.pg_advisory_lock(MIGRATION_LOCK)))
        holder.commit()
        try:
            yield
        finally:
            holder.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK)))
            holder.commit()


def adopt_sqlite(engine: Engine, source: Path, migrations: Sequence[Migration], metadata: MetaData) -> int:
    """Move the rows of the SQLite store the service kept at `source` into `engine`'s tables, once: how many.

    A node moved to `database: postgres` keeps its history (audit trail, processes, ledgers). The old store
    is migrated to the same schema first; its rows go over in one transaction and only into empty tables,
    under the migration lock; then the file is renamed `<name>.adopted` (kept, never read again).
    """
    with _migration_lock(engine):  # a second process starting meanwhile finds the file adopted
        if not source.is_file():
            return 0
        moved = _move_rows(engine, source, migrations, metadata)
        if moved is None:
            LOG.warning("%s was not adopted: the database holds data already; the file is left as it is", source)
            return 0
        source.rename(source.with_name(f"{source.name}.adopted"))
    LOG.info("adopted %d rows of %s; it is kept as %s.adopted", moved, source, source.name)
    return moved


def _move_rows(engine: Engine, source: Path, migrations: Sequence[Migration], metadata: MetaData) -> int | None:
    """Every row of the store at `source` into `engine`'s tables in one transaction; None if they hold any."""
    old = connect(f"sqlite:///{source}", migrations)
    moved = 0
    try:
        with engine.begin() as target, old.connect() as reading:
            if any(target.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables):
                return None
            for table in metadata.sorted_tables:
                rows = reading.execute(select(table).execution_options(yield_per=ADOPT_BATCH_ROWS)).mappings()
                for batch in rows.partitions(ADOPT_BATCH_ROWS):
                    target.execute(insert(table), [dict(row) for row in batch])
                    moved += len(batch)
                _continue_numbering(target, table)
    finally:
        old.dispose()
    return moved


def _continue_numbering(connection: Connection, table: Table) -> None:
    """After rows came with their ids, PostgreSQL's sequence of an id column continues after the highest."""
    column = table.autoincrement_column
    if column is None or connection.dialect.name != "postgresql":
        return
    sequence = func.pg_get_serial_sequence(table.name, column.name)
    connection.execute(select(func.setval(sequence, func.coalesce(func.max(column), 0) + 1, False)))  # noqa: FBT003


def _apply(engine: Engine, migrations: Sequence[Migration]) -> int:
    with engine.begin() as connection:
        schema_version.create(connection, checkfirst=True)
    with engine.connect() as connection:
        current = connection.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one()
    for version, step in enumerate(migrations, start=1):
        if version <= current:
            continue
        with engine.begin() as connection:
            step(connection)
            connection.execute(insert(schema_version).values(version=version))
    return len(migrations)


def add_missing_columns(connection: Connection, table: str, columns: Sequence[Column[Any]]) -> None:
    """Schema step for stores made before `columns` existed (new stores have them from their first step)."""
    present = {column["name"] for column in inspect(connection).get_columns(table)}
    for column in columns:
        if column.name not in present:
            kind = column.type.compile(connection.dialect)
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))


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
