"""Who is calling, and may they do this? Callers and their roles come from the node's configuration.

A caller proves itself with a bearer token (its SHA-256 is configured, never the token itself) or,
inside the federation, with a client certificate whose verified subject the node's gateway passes
on in a header it strips from outside traffic. Roles name what a caller may do.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from trustcentre.fhir import FhirError


class Role(StrEnum):
    """What a caller may do; each operation requires one."""

    PSEUDONYMIZE = "pseudonymize"
    DEPSEUDONYMIZE = "depseudonymize"
    MANAGE_DOMAINS = "manage-domains"
    CONSENT_READ = "consent-read"
    CONSENT_WRITE = "consent-write"
    LINKAGE = "linkage"
    LINKAGE_REVIEW = "linkage-review"
    AUDIT_READ = "audit-read"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a name for the audit trail and the roles it holds."""

    name: str
    roles: frozenset[Role]

    def require(self, role: Role) -> None:
        """Refuse with 403 unless the caller holds `role`."""
        if role not in self.roles:
            raise FhirError(403, "forbidden", f"caller {self.name!r} lacks the role {role.value!r} for this operation")


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
