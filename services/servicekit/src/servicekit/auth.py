"""Who is calling, and may they do this? Callers, their roles and what they may act on come from configuration.

A caller proves itself with a bearer token (its SHA-256 is configured, never the token itself) or,
inside the federation, with a client certificate the node's gateway verified (`servicekit.identity`:
the allow list's thumbprint decides which node it is, never the certificate's subject). Roles are
plain strings each service names (a `StrEnum` works), so one authenticator serves every service.

A caller acting for a node of the federation is scoped: `site` is the source it speaks for (the trust
centre takes it from here, never from the request), `identifier_systems` the identifiers it may assert
as its own, `domains` the pseudonym domains it may use. The site's administrator has no site: it is
not scoped.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from servicekit.config import ConfigError
from servicekit.fhir import FhirError
from servicekit.identity import Federation, claims_certificate, through_gateway

#: What a caller entry of a callers file may say besides its name and roles.
_ENTRY_KEYS = {"name", "roles", "token_sha256", "site", "certificate", "identifier_systems", "domains"}


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a name for the audit trail, its roles, and what it may act on."""

    name: str
    roles: frozenset[str]
    #: The node it acts for (None: the site's own administrator, not scoped to one source).
    site: str | None = None
    #: Identifier systems it may assert as its own (a KVNR anyone may assert).
    identifier_systems: frozenset[str] = frozenset()
    #: Pseudonym domains it may use (None: every domain).
    domains: frozenset[str] | None = None
    #: Whether it proved itself with a federation certificate (a peer), not a bearer token.
    peer: bool = False

    def require(self, role: str) -> None:
        """Refuse with 403 unless the caller holds `role`."""
        if role not in self.roles:
            raise FhirError(403, "forbidden", f"caller {self.name!r} lacks the role {str(role)!r} for this operation")

    def require_domain(self, domain: str, where: str = "target") -> None:
        """Refuse with 403 unless the caller may use the pseudonym domain `domain`."""
        if self.domains is not None and domain not in self.domains:
            allowed = ", ".join(sorted(self.domains)) or "none"
            raise FhirError(
                403,
                "forbidden",
                f"caller {self.name!r} may not use domain {domain!r}; its domains: {allowed}",
                (where,),
            )


@dataclass(frozen=True)
class Authenticator:
    """Maps request credentials to a configured caller: bearer tokens, and nodes of the federation."""

    by_token_hash: Mapping[str, Caller]
    #: Callers that are nodes of the federation, by site, known by their certificate (with `federation`).
    by_site: Mapping[str, Caller] = field(default_factory=dict)
    federation: Federation | None = None

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller behind a request's headers; 401/403 with a reason otherwise.

        Certificate headers count only with the gateway's secret: without it they are ignored (and the
        request needs a bearer token), so nothing on the node's network can claim to be a peer.
        """
        federation = self.federation
        if (
            federation is not None
            and claims_certificate(headers)
            and through_gateway(headers, federation.gateway_secret)
        ):
            peer = federation.identify(headers)
            caller = self.by_site.get(peer.site)
            if caller is None:
                raise FhirError(403, "forbidden", f"node {peer.site!r} may call nothing here")
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
    federation: Federation | None = None,
) -> Authenticator:
    """Callers from `[{"name", "roles", "token_sha256" | "certificate": true, "site"?, ...}]` read from `variable`.

    A `certificate` caller is a node of the federation, known by its `site` on the allow list.
    """
    if not isinstance(entries, list):
        raise ConfigError(f"{variable}: expected a list of callers")
    by_token: dict[str, Caller] = {}
    by_site: dict[str, Caller] = {}
    roles_known = {str(role): role for role in known_roles}
    for index, entry in enumerate(entries):
        where = f"{variable}: callers[{index}]"
        caller = _caller(entry, where, roles_known)
        if isinstance(entry.get("token_sha256"), str):
            by_token[entry["token_sha256"].lower()] = caller
        elif entry.get("certificate") is True and caller.site is not None:
            by_site[caller.site] = Caller(
                caller.name, caller.roles, caller.site, caller.identifier_systems, caller.domains, peer=True
            )
        else:
            raise ConfigError(f"{where}: needs token_sha256, or certificate: true with a site")
    return Authenticator(by_token, by_site, federation)


def _caller(entry: Any, where: str, roles_known: Mapping[str, str]) -> Caller:  # noqa: ANN401 -- decoded JSON
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"{where}: needs a string name")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(_ENTRY_KEYS)}")
    roles = entry.get("roles", [])
    if not isinstance(roles, list) or any(r not in roles_known for r in roles):
        raise ConfigError(f"{where}.roles: {roles!r}; known roles: {', '.join(roles_known)}")
    site = entry.get("site")
    if site is not None and not (isinstance(site, str) and site):
        raise ConfigError(f"{where}.site: a site name")
    systems, domains = _strings(entry, "identifier_systems", where), _strings(entry, "domains", where)
    return Caller(
        entry["name"],
        frozenset(roles_known[r] for r in roles),
        site,
        frozenset(systems or ()),
        frozenset(domains) if domains is not None else (None if site is None else frozenset()),
    )


def _strings(entry: dict[str, Any], key: str, where: str) -> list[str] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}.{key}: a list of strings")
    return value
