"""Who is calling, and may they do this? Callers and their roles come from the node's configuration.

A caller proves itself with a bearer token (its SHA-256 is configured, never the token itself) or,
inside the federation, with a client certificate whose verified subject the node's gateway passes
on in a header it strips from outside traffic. Roles are plain strings each service names (a
`StrEnum` works), so one authenticator serves every service.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from servicekit.config import ConfigError
from servicekit.fhir import FhirError


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a name for the audit trail and the roles it holds."""

    name: str
    roles: frozenset[str]

    def require(self, role: str) -> None:
        """Refuse with 403 unless the caller holds `role`."""
        if role not in self.roles:
            raise FhirError(403, "forbidden", f"caller {self.name!r} lacks the role {str(role)!r} for this operation")


@dataclass(frozen=True)
class Authenticator:
    """Maps request credentials to a configured caller."""

    by_token_hash: Mapping[str, Caller]
    by_certificate_subject: Mapping[str, Caller]
    certificate_header: str | None = None

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller behind a request's headers; 401 with a reason otherwise."""
        if self.certificate_header and (subject := headers.get(self.certificate_header)):
            caller = self.by_certificate_subject.get(subject)
            if caller is None:
                raise FhirError(401, "security", f"client certificate subject {subject!r} is not a known caller")
            return caller
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise FhirError(401, "login", "authenticate with 'Authorization: Bearer <token>' or a client certificate")
        presented = hashlib.sha256(token.strip().encode()).hexdigest()
        for known, caller in self.by_token_hash.items():
            if hmac.compare_digest(known, presented):
                return caller
        raise FhirError(401, "security", "the bearer token is not valid")


def token_hash(token: str) -> str:
    """What the configuration stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def authenticator_from_entries(
    entries: Any,  # noqa: ANN401 -- decoded JSON, checked here
    variable: str,
    known_roles: Iterable[str],
    certificate_header: str | None = None,
) -> Authenticator:
    """Callers from `[{"name", "roles", "token_sha256" | "certificate_subject"}]` read from `variable`."""
    if not isinstance(entries, list):
        raise ConfigError(f"{variable}: expected a list of callers")
    by_token: dict[str, Caller] = {}
    by_subject: dict[str, Caller] = {}
    roles_known = {str(role): role for role in known_roles}
    for index, entry in enumerate(entries):
        where = f"{variable}: callers[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: needs a string name")
        roles = entry.get("roles", [])
        if not isinstance(roles, list) or any(r not in roles_known for r in roles):
            raise ConfigError(f"{where}.roles: {roles!r}; known roles: {', '.join(roles_known)}")
        caller = Caller(entry["name"], frozenset(roles_known[r] for r in roles))
        if isinstance(entry.get("token_sha256"), str):
            by_token[entry["token_sha256"].lower()] = caller
        if isinstance(entry.get("certificate_subject"), str):
            by_subject[entry["certificate_subject"]] = caller
        if "token_sha256" not in entry and "certificate_subject" not in entry:
            raise ConfigError(f"{where}: needs token_sha256 or certificate_subject")
    return Authenticator(by_token, by_subject, certificate_header)
