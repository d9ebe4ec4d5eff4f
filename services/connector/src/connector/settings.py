"""The connector's configuration: CN_* environment variables (docs/federation.md), secrets only in files.

Read once at start-up; any mistake stops the service with a ConfigError naming the variable or file
and what is wrong, rather than a half-configured connector that fails on its first request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from connector.auth import Role
from connector.feasibility import FeasibilityPolicy
from connector.profiles import Mode, Policy
from connector.resource_ids import Scheme
from connector.retries import RetryPolicy
from servicekit.allowlist import AllowList, AllowListError, NodeRole, parse_allow_list
from servicekit.auth import Authenticator, authenticator_from_entries
from servicekit.config import ConfigError, read_file, read_json, with_password
from servicekit.identity import Federation, revoked_serials
from servicekit.limits import InputLimits, input_limits_from_environment

DEFAULT_DATABASE_URL = "sqlite:////var/lib/connector/connector.db"
DEFAULT_SOURCE_SYSTEM = "https://hubnode.org/fhir/sid/source"
#: A careSummary or dataSend bundle travels to a peer base64-encoded in one string: 16 MiB carries a
#: bundle of 12 MiB (the MII example bundles are 2-200 kB).
DEFAULT_INPUT_LIMITS = InputLimits(json_max_string_bytes=16 * 1024 * 1024)
_SITE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_TTP_NAME = re.compile(r"\S(.{0,253}\S)?")


@dataclass(frozen=True)
class ClientCertificate:
    """The node certificate the connector presents for outgoing mutual TLS, and the CA it trusts."""

    certificate: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class TtpContract:
    """What the trust centre behind the URL expects beyond the IGs' shapes: its domains and our source name."""

    #: Link by the E-PIX IG's `$addPatient` in this domain; None: by hubnode's `$requestMPI`.
    epix_domain: str | None = None
    #: The E-PIX source this node's identities come from (None: the node's site).
    epix_source: str | None = None
    #: The gICS domain whose policies the connector asks about.
    consent_domain: str = "MII"


@dataclass(frozen=True)
class Project:
    """A research project of the federation: its pseudonym domain, and whether this node sends data for it."""

    domain: str
    send: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything the app needs, resolved."""

    site: str
    role: NodeRole
    fhir_url: str
    trustcentre_url: str
    authenticator: Authenticator
    database_url: str = DEFAULT_DATABASE_URL
    #: A SQLite store this connector kept before its database moved to PostgreSQL: its rows are taken along once.
    adopt_store: Path | None = None
    trustcentre_token: str | None = None
    #: The CA that signed a site's own trust-centre gateway (no client certificate is shown to it).
    trustcentre_ca: Path | None = None
    trustcentre_contract: TtpContract = field(default_factory=TtpContract)
    allow_list: AllowList = field(default_factory=lambda: AllowList(()))
    gateway_secret: str | None = None
    revoked: frozenset[int] = frozenset()
    client_certificate: ClientCertificate | None = None
    projects: Mapping[str, Project] = field(default_factory=dict)
    source_system: str = DEFAULT_SOURCE_SYSTEM
    #: The node's public base (its gateway's public door): Bundle links point here, never at a request's Host.
    public_url: str | None = None
    feasibility: FeasibilityPolicy = field(default_factory=FeasibilityPolicy)
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    max_body_bytes: int = 32 * 1024 * 1024
    max_entries: int = 10_000
    input_limits: InputLimits = DEFAULT_INPUT_LIMITS
    validation: Policy = field(default_factory=Policy)
    #: Whether resources are written at ids derived from their keys where HAPI held nothing at the first write.
    resource_ids: Scheme = Scheme.IDENTIFIER

    @property
    def federation(self) -> Federation:
        """The node as a member of the federation: how a peer calling through the gateway is identified."""
        return Federation(self.site, self.gateway_secret or "", self.allow_list, self.revoked)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        """Resolve the CN_* variables."""
        url = environ.get("CN_DB_URL", DEFAULT_DATABASE_URL)
        if "CN_DB_PASSWORD_FILE" in environ:
            url = with_password(url, read_file("CN_DB_PASSWORD_FILE", environ).strip(), "CN_DB_URL")
        return cls(
            site=_site(environ),
            role=_role(environ),
            fhir_url=_url("CN_FHIR_URL", environ),
            trustcentre_url=_url("CN_TRUSTCENTRE_URL", environ),
            authenticator=callers_from_config(read_json("CN_CALLERS_FILE", environ)),
            database_url=url,
            adopt_store=Path(environ["CN_DB_ADOPT_FILE"]) if environ.get("CN_DB_ADOPT_FILE") else None,
            trustcentre_token=_optional_secret("CN_TRUSTCENTRE_TOKEN_FILE", environ),
            trustcentre_ca=_optional_file("CN_TRUSTCENTRE_CA_FILE", environ),
            trustcentre_contract=_ttp_contract(environ),
            allow_list=_allow_list(environ),
            gateway_secret=_optional_secret("CN_GATEWAY_SECRET_FILE", environ),
            revoked=_revoked(environ),
            client_certificate=_client_certificate(environ),
            projects=_projects(environ),
            source_system=_url("CN_SOURCE_SYSTEM", environ, DEFAULT_SOURCE_SYSTEM).rstrip("/"),
            public_url=_url("CN_PUBLIC_URL", environ) if environ.get("CN_PUBLIC_URL") else None,
            feasibility=FeasibilityPolicy(
                _positive("CN_FEASIBILITY_GRANULARITY", environ, FeasibilityPolicy.granularity),
                _positive("CN_FEASIBILITY_DAILY_BUDGET", environ, FeasibilityPolicy.daily_budget),
            ),
            retry_policy=RetryPolicy(
                _positive("CN_RETRY_FIRST_SECONDS", environ, RetryPolicy.first_seconds),
                _positive("CN_RETRY_LONGEST_SECONDS", environ, RetryPolicy.longest_seconds),
                _count("CN_RETRY_ATTEMPTS", environ, RetryPolicy.attempts),
            ),
            input_limits=input_limits_from_environment("CN", environ, DEFAULT_INPUT_LIMITS),
            validation=Policy(
                _choice("CN_VALIDATION", environ, Policy.profiles, tuple(Mode)),
                _choice("CN_VALIDATION_TERMINOLOGY", environ, Policy.terminology, (Mode.STRICT, Mode.WARN)),
            ),
            resource_ids=_choice("CN_RESOURCE_IDS", environ, Scheme.IDENTIFIER, tuple(Scheme)),
        )


def callers_from_config(config: Any) -> Authenticator:  # noqa: ANN401 -- decoded JSON, checked here
    """Local callers from `[{"name", "token_sha256", "roles": [...]}]` (or `{"callers": [...]}`)."""
    entries = config.get("callers") if isinstance(config, dict) else config
    return authenticator_from_entries(entries, "CN_CALLERS_FILE", Role)


def _site(environ: Mapping[str, str]) -> str:
    site = environ.get("CN_SITE", "")
    if not _SITE.fullmatch(site):
        raise ConfigError(f"CN_SITE={site!r}: a site name (lowercase letters, digits, '-'; at most 63) is required")
    return site


def _role(environ: Mapping[str, str]) -> NodeRole:
    role = environ.get("CN_ROLE", "")
    known = [r.value for r in NodeRole]
    if role not in known:
        raise ConfigError(f"CN_ROLE={role!r}: one of {', '.join(known)}")
    return NodeRole(role)


def _url(variable: str, environ: Mapping[str, str], default: str | None = None) -> str:
    value = environ.get(variable, default or "")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{variable}={value!r}: an http:// or https:// URL is required")
    return value.rstrip("/")


def _optional_secret(variable: str, environ: Mapping[str, str]) -> str | None:
    if not environ.get(variable):
        return None
    secret = read_file(variable, environ).strip()
    if not secret:
        raise ConfigError(f"{variable}={environ[variable]}: the file is empty")
    return secret


def _optional_file(variable: str, environ: Mapping[str, str]) -> Path | None:
    if not environ.get(variable):
        return None
    path = Path(environ[variable])
    if not path.is_file():
        raise ConfigError(f"{variable}={path}: no such file")
    return path


def _ttp_contract(environ: Mapping[str, str]) -> TtpContract:
    """CN_EPIX_DOMAIN (link by E-PIX `$addPatient` there), CN_EPIX_SOURCE, CN_CONSENT_DOMAIN (default MII)."""
    names = {}
    for variable in ("CN_EPIX_DOMAIN", "CN_EPIX_SOURCE", "CN_CONSENT_DOMAIN"):
        value = environ.get(variable)
        if value is not None and not _TTP_NAME.fullmatch(value):
            raise ConfigError(f"{variable}={value!r}: a name of 1-255 characters, no spaces at either end")
        names[variable] = value
    if names["CN_EPIX_SOURCE"] and not names["CN_EPIX_DOMAIN"]:
        raise ConfigError("CN_EPIX_SOURCE: set CN_EPIX_DOMAIN too (the source names identities sent by $addPatient)")
    return TtpContract(names["CN_EPIX_DOMAIN"], names["CN_EPIX_SOURCE"], names["CN_CONSENT_DOMAIN"] or "MII")


def _allow_list(environ: Mapping[str, str]) -> AllowList:
    if not environ.get("CN_ALLOW_LIST_FILE"):
        return AllowList(())
    try:
        return parse_allow_list(read_json("CN_ALLOW_LIST_FILE", environ))
    except AllowListError as exc:
        raise ConfigError(f"CN_ALLOW_LIST_FILE={environ['CN_ALLOW_LIST_FILE']}: {exc}") from None


def _revoked(environ: Mapping[str, str]) -> frozenset[int]:
    if not environ.get("CN_CRL_FILE"):
        return frozenset()
    if not environ.get("CN_CA_FILE"):
        raise ConfigError("CN_CRL_FILE: set CN_CA_FILE too, to check who signed the revocation list")
    return revoked_serials(Path(environ["CN_CRL_FILE"]), Path(environ["CN_CA_FILE"]), "CN_CRL_FILE")


def _positive(variable: str, environ: Mapping[str, str], default: int) -> int:
    value = environ.get(variable, str(default))
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{variable}={value!r}: a whole number of at least 1")
    return int(value)


def _count(variable: str, environ: Mapping[str, str], default: int) -> int:
    value = environ.get(variable, str(default))
    if not value.isdigit():
        raise ConfigError(f"{variable}={value!r}: a whole number (0: none)")
    return int(value)


#: A configured choice among an enum's values (`Mode`, `Scheme`).
Choice = TypeVar("Choice", bound=StrEnum)


def _choice(variable: str, environ: Mapping[str, str], default: Choice, allowed: tuple[Choice, ...]) -> Choice:
    """One of `allowed`, named by its value; else a ConfigError listing them.

    CN_VALIDATION (strict, warn, off), CN_VALIDATION_TERMINOLOGY (strict, warn: never passed unasked),
    CN_RESOURCE_IDS (derived, identifier).
    """
    value = environ.get(variable, default.value)
    if value not in allowed:
        raise ConfigError(f"{variable}={value!r}: one of {', '.join(m.value for m in allowed)}")
    return type(default)(value)


def _client_certificate(environ: Mapping[str, str]) -> ClientCertificate | None:
    variables = ("CN_CLIENT_CERT_FILE", "CN_CLIENT_KEY_FILE", "CN_CA_FILE")
    given = [v for v in variables if environ.get(v)]
    if not given:
        return None
    if len(given) < len(variables):
        missing = ", ".join(v for v in variables if v not in given)
        raise ConfigError(f"{missing}: set together with {', '.join(given)} (mutual TLS needs all three)")
    paths = [Path(environ[v]) for v in variables]
    for variable, path in zip(variables, paths, strict=True):
        if not path.is_file():
            raise ConfigError(f"{variable}={path}: no such file")
    return ClientCertificate(*paths)


def _projects(environ: Mapping[str, str]) -> dict[str, Project]:
    if not environ.get("CN_PROJECTS_FILE"):
        return {}
    config = read_json("CN_PROJECTS_FILE", environ)
    if not isinstance(config, dict):
        raise ConfigError('CN_PROJECTS_FILE: expected {"<project>": {"domain": "<pseudonym domain>", "send": bool}}')
    projects = {}
    for name, project in config.items():
        if not isinstance(project, dict) or not isinstance(project.get("domain"), str) or not project["domain"]:
            raise ConfigError(f"CN_PROJECTS_FILE: project {name!r} needs a string domain")
        if not isinstance(project.get("send", False), bool):
            raise ConfigError(f"CN_PROJECTS_FILE: project {name!r}: send must be true or false")
        projects[str(name)] = Project(project["domain"], project.get("send", False))
    return projects
