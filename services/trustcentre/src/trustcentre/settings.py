"""The trust centre's configuration: environment variables naming files, secrets only in files.

Read once at start-up; any mistake stops the service with a message naming the variable or file
and what is wrong, rather than a half-configured trust centre.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servicekit.allowlist import AllowListError, NodeRole, parse_allow_list
from servicekit.auth import Authenticator, authenticator_from_entries
from servicekit.config import ConfigError, read_file, read_json, with_password
from servicekit.identity import Federation, revoked_serials
from servicekit.limits import DEFAULT_INPUT_LIMITS, InputLimits, input_limits_from_environment
from trustcentre.auth import Role
from trustcentre.consent_templates import MII_BROAD_CONSENT, ConsentRegistry, registry_from_config

MIN_SECRET_BYTES = 32
DEFAULT_DATABASE_URL = "sqlite:////var/lib/trustcentre/trustcentre.db"


@dataclass(frozen=True)
class Settings:
    """Everything the app needs, resolved."""

    database_url: str
    secret: bytes
    authenticator: Authenticator
    site: str = "hubnode"
    domains: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Research project -> its pseudonym domain: what a purpose may name, and the purpose of each domain.
    projects: Mapping[str, str] = field(default_factory=dict)
    #: The federation's research nodes (by the allow list): who gets a ticket for a patient's research pseudonyms.
    research_sites: tuple[str, ...] = ()
    #: Consent domains, policies and templates (gICS); the MII broad consent unless the stack declares some.
    consent_domains: ConsentRegistry = MII_BROAD_CONSENT
    max_batch: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    input_limits: InputLimits = DEFAULT_INPUT_LIMITS

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        """Resolve TC_* variables (see services/trustcentre/README.md)."""
        url = environ.get("TC_DATABASE_URL", DEFAULT_DATABASE_URL)
        if "TC_DB_PASSWORD_FILE" in environ:
            url = with_password(url, read_file("TC_DB_PASSWORD_FILE", environ).strip(), "TC_DATABASE_URL")
        secret = read_file("TC_SECRET_FILE", environ).strip().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"TC_SECRET_FILE: the pseudonym secret must be at least {MIN_SECRET_BYTES} bytes")
        callers = read_json("TC_CALLERS_FILE", environ)
        domains = read_json("TC_DOMAINS_FILE", environ) if "TC_DOMAINS_FILE" in environ else {"domains": []}
        site = environ.get("TC_SITE", "hubnode")
        federation = _federation(site, environ)
        return cls(
            database_url=url,
            secret=secret,
            authenticator=authenticator_from_config(callers, federation),
            site=site,
            research_sites=research_sites(federation),
            domains=domains_from_config(domains),
            projects=projects_from_config(read_json("TC_PROJECTS_FILE", environ))
            if "TC_PROJECTS_FILE" in environ
            else {},
            consent_domains=registry_from_config(
                read_json("TC_CONSENT_DOMAINS_FILE", environ),
                f"TC_CONSENT_DOMAINS_FILE={environ['TC_CONSENT_DOMAINS_FILE']}",
            )
            if "TC_CONSENT_DOMAINS_FILE" in environ
            else MII_BROAD_CONSENT,
            input_limits=input_limits_from_environment("TC", environ, DEFAULT_INPUT_LIMITS),
        )


def authenticator_from_config(config: Any, federation: Federation | None) -> Authenticator:  # noqa: ANN401
    """Callers from `{"callers": [{"name", "roles", "token_sha256" | "certificate": true, "site", ...}]}`."""
    entries = config.get("callers") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        raise ConfigError('TC_CALLERS_FILE: expected {"callers": [...]}')
    return authenticator_from_entries(entries, "TC_CALLERS_FILE", Role, federation)


def research_sites(federation: Federation | None) -> tuple[str, ...]:
    """The sites of the allow list's research nodes."""
    if federation is None:
        return ()
    return tuple(sorted(peer.site for peer in federation.allow_list.peers if peer.role == NodeRole.RESEARCH))


def _federation(site: str, environ: Mapping[str, str]) -> Federation | None:
    """Nodes of the federation calling through the gateway's peer door (TC_ALLOW_LIST_FILE and its friends)."""
    if not environ.get("TC_ALLOW_LIST_FILE"):
        return None
    try:
        allow_list = parse_allow_list(read_json("TC_ALLOW_LIST_FILE", environ))
    except AllowListError as exc:
        raise ConfigError(f"TC_ALLOW_LIST_FILE={environ['TC_ALLOW_LIST_FILE']}: {exc}") from None
    secret = read_file("TC_GATEWAY_SECRET_FILE", environ).strip()
    if not secret:
        raise ConfigError(f"TC_GATEWAY_SECRET_FILE={environ['TC_GATEWAY_SECRET_FILE']}: the file is empty")
    revoked: frozenset[int] = frozenset()
    if environ.get("TC_CRL_FILE"):
        if not environ.get("TC_CA_FILE"):
            raise ConfigError("TC_CRL_FILE: set TC_CA_FILE too, to check who signed the revocation list")
        revoked = revoked_serials(Path(environ["TC_CRL_FILE"]), Path(environ["TC_CA_FILE"]), "TC_CRL_FILE")
    return Federation(site, secret, allow_list, revoked)


def projects_from_config(config: Any) -> dict[str, str]:  # noqa: ANN401
    """Research projects: `{"<project>": {"domain": "<pseudonym domain>", ...}}` -> project -> domain."""
    if not isinstance(config, dict):
        raise ConfigError('TC_PROJECTS_FILE: expected {"<project>": {"domain": "<pseudonym domain>"}}')
    projects = {}
    for name, project in config.items():
        if not isinstance(project, dict) or not isinstance(project.get("domain"), str) or not project["domain"]:
            raise ConfigError(f"TC_PROJECTS_FILE: project {name!r} needs a string domain")
        projects[str(name)] = project["domain"]
    return projects


def domains_from_config(config: Any) -> dict[str, Mapping[str, Any]]:  # noqa: ANN401
    """Domains declared by the stack: `{"domains": [{"name": ..., settings...}]}`."""
    entries = config.get("domains") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        raise ConfigError('TC_DOMAINS_FILE: expected {"domains": [...]}')
    declared: dict[str, Mapping[str, Any]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"TC_DOMAINS_FILE: domains[{index}] needs a string name")
        declared[entry["name"]] = {k: v for k, v in entry.items() if k != "name"}
    return declared
