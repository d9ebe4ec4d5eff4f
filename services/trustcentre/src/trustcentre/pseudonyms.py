"""Pseudonym domains and their original <-> pseudonym pairs, kept unique under concurrent writers.

A new pseudonym is the scheme's first candidate for (secret, domain, original); because that is
deterministic, two clients creating the same original at once compute the same candidate, one
insert wins, the other's `ON CONFLICT DO NOTHING` finds the winner's row: one pseudonym per person
per domain without locks. A candidate that collides with another original's pseudonym moves on to
the next attempt, and so does one a secondary pseudonym of the domain already holds (`trustcentre.secondary`).

Besides pairs it makes, a domain takes pairs brought from elsewhere (`insert_pairs`, e.g. migrated from
another gPAS), and its pairs can be deleted, or anonymised: the original is replaced by a marker, so
the pseudonym stays known (data carrying it stays valid) but leads to nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, literal, select, update

from servicekit.db import insert_ignoring_conflicts, one_of
from servicekit.fhir import FhirError
from trustcentre.db import domains, pseudonyms, secondary_pseudonyms
from trustcentre.pseudonym_scheme import DomainSettings, candidate, looks_like_pseudonym, settings_from_mapping

MAX_ATTEMPTS = 20
#: What an anonymised original becomes, followed by its pseudonym (unique in the domain, as the column must
#: be). Originals starting with it are refused as input (`trustcentre.gpas_api`), so no caller can make one.
ANONYMISED = "#anonymised#"
#: Both tables of a domain's pairs: one pseudonym per original, and the secondary ones.
_PAIR_TABLES = (pseudonyms, secondary_pseudonyms)


class Inserted(StrEnum):
    """What became of one pair given to `PseudonymStore.insert_pairs`."""

    CREATED = "created"
    #: The domain already holds exactly this pair: nothing to do.
    EXISTS = "exists"
    #: The pseudonym does not fit the domain (prefix, length, alphabet, check character).
    INVALID = "invalid"
    #: The original has another pseudonym, or the pseudonym belongs to another original.
    CONFLICT = "conflict"


class PseudonymStore:
    """Domains and pseudonyms over one database."""

    def __init__(self, engine: Engine, secret: bytes) -> None:
        self._engine = engine
        self._secret = secret

    def declare_domains(self, declared: Mapping[str, Mapping[str, Any]]) -> None:
        """Create the domains the stack declares; existing ones keep their settings (and pseudonyms)."""
        with self._engine.begin() as connection:
            for name, settings in declared.items():
                self.add_domain(connection, name, settings)

    def add_domain(self, connection: Connection, name: str, settings: Mapping[str, Any], description: str = "") -> bool:
        """Create a domain unless it exists; True if created. Bad settings are a 400 naming the key."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise FhirError(400, "invalid", f"domain name {name!r}: 1-64 letters, digits, '-', '_' or '.'")
        try:
            parsed = settings_from_mapping(settings)
        except ValueError as exc:
            raise FhirError(400, "invalid", f"domain {name!r}: {exc}") from None
        before = connection.execute(select(domains.c.name).where(domains.c.name == name)).first()
        row = {"name": name, "settings": _settings_row(parsed), "description": description}
        insert_ignoring_conflicts(connection, domains, [row])
        return before is None

    def domain_names(self, connection: Connection) -> list[str]:
        """Every domain, sorted."""
        return sorted(connection.execute(select(domains.c.name)).scalars())

    def settings(self, connection: Connection, name: str) -> DomainSettings:
        """A domain's settings; an unknown domain is a 400 listing the known ones."""
        found = self.find_settings(connection, name)
        if found is None:
            known = ", ".join(self.domain_names(connection)) or "none"
            raise FhirError(400, "not-found", f"unknown domain {name!r}; known domains: {known}", ("target",))
        return found

    @staticmethod
    def find_settings(connection: Connection, name: str) -> DomainSettings | None:
        """A domain's settings, or None for a domain that does not exist."""
        stored = connection.execute(select(domains.c.settings).where(domains.c.name == name)).scalar_one_or_none()
        return None if stored is None else settings_from_mapping(stored)

    def pseudonymize(
        self, connection: Connection, domain: str, originals: Sequence[str], *, create: bool
    ) -> dict[str, str]:
        """Original -> pseudonym for every original that has (or, with `create`, now gets) one."""
        settings = self.settings(connection, domain)
        wanted = list(dict.fromkeys(originals))
        if not create:
            return self._pseudonyms_of(connection, domain, wanted)
        # Insert first, read after: an original that has a pseudonym conflicts and keeps it, so
        # one INSERT and one SELECT serve new and existing originals alike.
        found: dict[str, str] = {}
        missing = wanted
        attempt = 0
        while missing:
            if attempt == MAX_ATTEMPTS:
                raise FhirError(
                    409, "conflict", f"domain {domain!r} found no free pseudonym after {MAX_ATTEMPTS} attempts"
                )
            candidates = {o: candidate(self._secret, domain, o, settings, attempt) for o in missing}
            held = _held(connection, secondary_pseudonyms, domain, list(candidates.values()))
            rows = [{"domain": domain, "original": o, "pseudonym": p} for o, p in candidates.items() if p not in held]
            insert_ignoring_conflicts(connection, pseudonyms, rows)
            found.update(self._pseudonyms_of(connection, domain, missing))
            missing = [o for o in missing if o not in found]
            attempt += 1
        return found

    def depseudonymize(self, connection: Connection, domain: str, values: Sequence[str]) -> dict[str, str]:
        """Pseudonym (primary or secondary) -> original for every known one (malformed ones are never looked up)."""
        settings = self.settings(connection, domain)
        plausible = [v for v in dict.fromkeys(values) if looks_like_pseudonym(v, settings)]
        found: dict[str, str] = {}
        for table in _PAIR_TABLES:
            rows = connection.execute(
                select(table.c.pseudonym, table.c.original).where(
                    table.c.domain == domain, one_of(connection, table.c.pseudonym, plausible)
                )
            )
            found.update((str(key), str(value)) for key, value in rows)
        return found

    def delete(self, connection: Connection, domain: str, originals: Sequence[str]) -> dict[str, list[str]]:
        """Delete every pair of these originals; returns original -> the pseudonyms that were deleted."""
        self.settings(connection, domain)
        return _each_table(connection, domain, originals, delete)

    def anonymize(self, connection: Connection, domain: str, originals: Sequence[str]) -> dict[str, list[str]]:
        """Replace these originals by the anonymised marker; returns original -> its pseudonyms, which stay."""
        self.settings(connection, domain)
        return _each_table(
            connection,
            domain,
            originals,
            lambda table: update(table).values(original=literal(ANONYMISED) + table.c.pseudonym),
        )

    def insert_pairs(self, connection: Connection, domain: str, pairs: Sequence[tuple[str, str]]) -> list[Inserted]:
        """Store given (original, pseudonym) pairs in an existing domain; what became of each, in order.

        A pair is stored only if its pseudonym fits the domain and neither its original nor its pseudonym
        is taken; later pairs of the same request see the earlier ones.
        """
        settings = self.settings(connection, domain)
        pseudonym_of = self._pseudonyms_of(connection, domain, list(dict.fromkeys(o for o, _ in pairs)))
        used = held(connection, domain, [p for _, p in pairs])
        outcomes: list[Inserted] = []
        for original, pseudonym in pairs:
            if not looks_like_pseudonym(pseudonym, settings):
                outcomes.append(Inserted.INVALID)
            elif pseudonym_of.get(original) == pseudonym:
                outcomes.append(Inserted.EXISTS)
            elif original in pseudonym_of or pseudonym in used:
                outcomes.append(Inserted.CONFLICT)
            else:
                outcomes.append(Inserted.CREATED)
                pseudonym_of[original] = pseudonym
                used.add(pseudonym)
        created = [pair for pair, outcome in zip(pairs, outcomes, strict=True) if outcome is Inserted.CREATED]
        insert_ignoring_conflicts(
            connection, pseudonyms, [{"domain": domain, "original": o, "pseudonym": p} for o, p in created]
        )
        # A concurrent writer may have stored either side first: what is stored now decides.
        stored = self._pseudonyms_of(connection, domain, [o for o, _ in created])
        return [
            Inserted.CONFLICT if outcome is Inserted.CREATED and stored.get(o) != p else outcome
            for (o, p), outcome in zip(pairs, outcomes, strict=True)
        ]

    @staticmethod
    def _pseudonyms_of(connection: Connection, domain: str, originals: Iterable[str]) -> dict[str, str]:
        rows = connection.execute(
            select(pseudonyms.c.original, pseudonyms.c.pseudonym).where(
                pseudonyms.c.domain == domain, one_of(connection, pseudonyms.c.original, list(originals))
            )
        )
        return {str(key): str(value) for key, value in rows}


def held(connection: Connection, domain: str, values: Sequence[str]) -> set[str]:
    """Those of `values` that are a pseudonym of the domain already, primary or secondary."""
    return {value for table in _PAIR_TABLES for value in _held(connection, table, domain, values)}


def _held(connection: Connection, table: Table, domain: str, values: Sequence[str]) -> set[str]:
    query = select(table.c.pseudonym).where(table.c.domain == domain, one_of(connection, table.c.pseudonym, values))
    return set(connection.execute(query).scalars())


def _each_table(
    connection: Connection, domain: str, originals: Sequence[str], change: Callable[[Table], Any]
) -> dict[str, list[str]]:
    """Apply `change` (an UPDATE or DELETE of a table) to the originals' pairs in both tables; what was there."""
    wanted = list(dict.fromkeys(originals))
    found: dict[str, list[str]] = {}
    for table in _PAIR_TABLES:
        mine = (table.c.domain == domain, one_of(connection, table.c.original, wanted))
        for original, pseudonym in connection.execute(select(table.c.original, table.c.pseudonym).where(*mine)):
            found.setdefault(str(original), []).append(str(pseudonym))
        connection.execute(change(table).where(*mine))
    return found


def _settings_row(settings: DomainSettings) -> dict[str, Any]:
    return {
        "alphabet": settings.alphabet,
        "length": settings.length,
        "prefix": settings.prefix,
        "check_digit": settings.check_digit,
        "multiple_pseudonyms": settings.multiple_pseudonyms,
    }
