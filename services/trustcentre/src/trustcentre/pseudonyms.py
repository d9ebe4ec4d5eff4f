"""Pseudonym domains and their original <-> pseudonym pairs, kept unique under concurrent writers.

A new pseudonym is the scheme's first candidate for (secret, domain, original); because that is
deterministic, two clients creating the same original at once compute the same candidate, one
insert wins, the other's `ON CONFLICT DO NOTHING` finds the winner's row: one pseudonym per person
per domain without locks. A candidate that collides with another original's pseudonym moves on to
the next attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, select

from servicekit.db import insert_ignoring_conflicts, one_of
from servicekit.fhir import FhirError
from trustcentre.db import domains, pseudonyms
from trustcentre.pseudonym_scheme import DomainSettings, candidate, looks_like_pseudonym, settings_from_mapping

MAX_ATTEMPTS = 20


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
        stored = connection.execute(select(domains.c.settings).where(domains.c.name == name)).scalar_one_or_none()
        if stored is None:
            known = ", ".join(self.domain_names(connection)) or "none"
            raise FhirError(400, "not-found", f"unknown domain {name!r}; known domains: {known}", ("target",))
        return settings_from_mapping(stored)

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
            rows = [
                {"domain": domain, "original": o, "pseudonym": candidate(self._secret, domain, o, settings, attempt)}
                for o in missing
            ]
            insert_ignoring_conflicts(connection, pseudonyms, rows)
            found.update(self._pseudonyms_of(connection, domain, missing))
            missing = [o for o in missing if o not in found]
            attempt += 1
        return found

    def depseudonymize(self, connection: Connection, domain: str, values: Sequence[str]) -> dict[str, str]:
        """Pseudonym -> original for every known pseudonym (malformed ones are never looked up)."""
        settings = self.settings(connection, domain)
        plausible = [v for v in dict.fromkeys(values) if looks_like_pseudonym(v, settings)]
        rows = connection.execute(
            select(pseudonyms.c.pseudonym, pseudonyms.c.original).where(
                pseudonyms.c.domain == domain, one_of(connection, pseudonyms.c.pseudonym, plausible)
            )
        )
        return {str(key): str(value) for key, value in rows}

    def delete(self, connection: Connection, domain: str, originals: Sequence[str]) -> dict[str, str]:
        """Delete the pairs of these originals; returns original -> the pseudonym that was deleted."""
        self.settings(connection, domain)
        existing = self._pseudonyms_of(connection, domain, list(dict.fromkeys(originals)))
        if existing:
            connection.execute(
                delete(pseudonyms).where(
                    pseudonyms.c.domain == domain, one_of(connection, pseudonyms.c.original, list(existing))
                )
            )
        return existing

    @staticmethod
    def _pseudonyms_of(connection: Connection, domain: str, originals: Iterable[str]) -> dict[str, str]:
        rows = connection.execute(
            select(pseudonyms.c.original, pseudonyms.c.pseudonym).where(
                pseudonyms.c.domain == domain, one_of(connection, pseudonyms.c.original, list(originals))
            )
        )
        return {str(key): str(value) for key, value in rows}


def _settings_row(settings: DomainSettings) -> dict[str, Any]:
    return {
        "alphabet": settings.alphabet,
        "length": settings.length,
        "prefix": settings.prefix,
        "check_digit": settings.check_digit,
    }
