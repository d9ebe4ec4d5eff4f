"""The trust centre's tables and their migrations, one schema for SQLite and PostgreSQL.

SQLite is the embedded default (a file in the container's volume); PostgreSQL is for production.
How engines are made and migrations applied is the service kit's (`servicekit.db`).
"""

from __future__ import annotations

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
    func,
    inspect,
    select,
    text,
    update,
)

from servicekit import db as servicekit_db
from servicekit.audit import AuditLog
from servicekit.db import Migration
from trustcentre.blocking import keys_of
from trustcentre.matching import Demographics

metadata = MetaData()

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
    #: The identity (person_demographics.id) whose data counts for the person (E-PIX reference identity).
    Column("reference_identity", Integer, nullable=True),
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
    #: Blocking keys (`trustcentre.blocking`): a new person is compared only with rows sharing one.
    Column("family_key", String(96), nullable=True),
    Column("given_key", String(96), nullable=True),
    #: The Patient resource as the source sent it (E-PIX identity: addresses, identifiers, extensions).
    Column("resource", JSON, nullable=True),
    Index("ix_person_demographics_family_key", "family_key"),
    Index("ix_person_demographics_given_key", "given_key"),
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
    Column("comment", Text, nullable=True),
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
    #: The template (`<domain>;<name>;<version>`) a consent was computed from; None for a posted Consent.
    Column("template", String(255), nullable=True),
    #: The resources that came with it (Patient, QuestionnaireResponse, Provenance, DocumentReference).
    Column("related", JSON, nullable=True),
    Index("ix_consents_person", "domain", "person_system", "person_value"),
)

#: One-time codes binding a portal login to a person: issued by a site's staff, redeemed once at that site.
enrolments = Table(
    "enrolments",
    metadata,
    Column("code_sha256", String(64), primary_key=True),
    Column("mpi", String(64), ForeignKey("persons.mpi"), nullable=False),
    Column("site", String(128), nullable=False),
    Column("issued_by", String(128), nullable=False),
    Column("issued", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Column("redeemed", DateTime(timezone=True), nullable=True),
    Column("account", String(255), nullable=True),
)

#: Tickets for one patient's ledger at another node (`trustcentre.ledger_tickets`): the name that node knows
#: the person by, for the node it was issued for, until it expires.
ledger_tickets = Table(
    "ledger_tickets",
    metadata,
    Column("ticket_sha256", String(64), primary_key=True),
    Column("mpi", String(64), ForeignKey("persons.mpi"), nullable=False),
    Column("requester", String(128), nullable=False),
    Column("audience", String(128), nullable=False),
    Column("name_system", String(255), nullable=False),
    Column("name_value", String(255), nullable=False),
    Column("issued", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False, index=True),
)

#: Further pseudonyms of one original in a domain that allows several (gPAS's secondary pseudonyms):
#: unique per domain, and never equal to a primary pseudonym of the domain (`trustcentre.pseudonyms`).
secondary_pseudonyms = Table(
    "secondary_pseudonyms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("domain", String(64), ForeignKey("domains.name"), nullable=False),
    Column("original", String(255), nullable=False),
    Column("pseudonym", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("domain", "pseudonym", name="uq_secondary_pseudonym_value"),
    Index("ix_secondary_pseudonyms_original", "domain", "original"),
)

audit_log = AuditLog(metadata, "urn:hubnode:trustcentre", "hubnode trust centre")


def _v1_create_tables(connection: Connection) -> None:
    metadata.create_all(connection)


def _v3_enrolments(connection: Connection) -> None:
    enrolments.create(connection, checkfirst=True)


def _v4_ledger_tickets(connection: Connection) -> None:
    ledger_tickets.create(connection, checkfirst=True)


def _v5_secondary_pseudonyms(connection: Connection) -> None:
    secondary_pseudonyms.create(connection, checkfirst=True)


def _v6_consent_templates(connection: Connection) -> None:
    """Consents computed from a template remember it and the resources they came with."""
    present = {column["name"] for column in inspect(connection).get_columns("consents")}
    if "template" not in present:
        connection.execute(text("ALTER TABLE consents ADD COLUMN template VARCHAR(255)"))
    if "related" not in present:
        connection.execute(text("ALTER TABLE consents ADD COLUMN related JSON"))


def _v7_epix_identities(connection: Connection) -> None:
    """E-PIX identities: blocking keys (indexed, filled in for rows stored before), resource, reference, comment."""
    added = {
        "persons": [("reference_identity", "INTEGER")],
        "person_demographics": [("family_key", "VARCHAR(96)"), ("given_key", "VARCHAR(96)"), ("resource", "JSON")],
        "possible_matches": [("comment", "TEXT")],
    }
    for table, columns in added.items():
        present = {column["name"] for column in inspect(connection).get_columns(table)}
        for name, sql_type in columns:
            if name not in present:
                connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))
    for index in person_demographics.indexes:
        index.create(connection, checkfirst=True)
    rows = connection.execute(select(person_demographics).where(person_demographics.c.family_key.is_(None))).mappings()
    for row in list(rows):
        keys = keys_of(Demographics(row["family"], row["given"], row["birth_date"], row["sex"]))
        connection.execute(
            update(person_demographics)
            .where(person_demographics.c.id == row["id"])
            .values(family_key=keys.family_key, given_key=keys.given_key)
        )


#: Ordered schema steps; append, never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (
    _v1_create_tables,
    audit_log.add_query_column,
    _v3_enrolments,
    _v4_ledger_tickets,
    _v5_secondary_pseudonyms,
    _v6_consent_templates,
    _v7_epix_identities,
)


def connect(url: str) -> Engine:
    """An engine for `url` (sqlite:///path or postgresql+psycopg://...), schema migrated."""
    return servicekit_db.connect(url, MIGRATIONS)
