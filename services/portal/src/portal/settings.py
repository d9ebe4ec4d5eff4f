"""The portal's configuration: PT_* environment variables, secrets only in files.

Read once at start-up; a mistake stops the portal with a message naming the variable at fault. The
identity provider is known twice on purpose: browsers reach its public issuer through the gateway,
the portal itself its back channel inside the node (`http://idp:8180/idp/...`), where the tokens
still name the public issuer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from servicekit.config import ConfigError, read_file, read_json

DEFAULT_DATABASE_URL = "sqlite:////var/lib/portal/portal.db"
_SITE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")


@dataclass(frozen=True)
class Project:
    """A research project as a patient's ledger describes it (from the stack's `hubnode:projects`)."""

    name: str
    title: str = ""
    summary: str = ""
    recipient: str = ""
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything the portal needs, resolved."""

    site: str
    #: The portal's public base URL as browsers know it (`https://<gateway>/portal`).
    public_url: str
    #: The realm's public issuer: what tokens name and browsers are sent to.
    issuer: str
    #: The same realm on the back channel inside the node: discovery, keys, token endpoint.
    idp_url: str
    client_id: str
    client_secret: str
    service_client_id: str
    service_client_secret: str
    connector_url: str
    connector_token: str
    trustcentre_url: str
    trustcentre_token: str
    database_url: str = DEFAULT_DATABASE_URL
    #: CA the portal trusts for https upstreams (the federation CA: a trust centre behind another node's door).
    ca_file: Path | None = None
    #: Idle minutes after which a signed-in session ends.
    session_minutes: int = 30
    #: The system of this site's own patient numbers (what staff and clinicians search by besides the KVNR).
    local_system: str = ""
    #: Sites a clinician may send a patient's journey to (careSummary).
    peers: tuple[str, ...] = ()
    #: The node's certificate and key (PEM): consent receipts are signed with them.
    node_certificate: Path | None = None
    node_key: Path | None = None
    #: The federation's research projects by name: what the ledger says about a research use.
    projects: Mapping[str, Project] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        """Resolve the PT_* variables (see services/portal/README.md)."""
        site = _required(environ, "PT_SITE")
        if not _SITE.match(site):
            raise ConfigError(f"PT_SITE={site!r}: the node's site id (lowercase letters, digits, '-')")
        public_url = _url(environ, "PT_PUBLIC_URL", https=True)
        minutes = environ.get("PT_SESSION_MINUTES", "30")
        if not minutes.isdigit() or not 1 <= int(minutes) <= 720:
            raise ConfigError(f"PT_SESSION_MINUTES={minutes!r}: whole minutes from 1 to 720")
        ca = environ.get("PT_CA_FILE")
        return cls(
            site=site,
            public_url=public_url,
            issuer=_url(environ, "PT_ISSUER", https=True),
            idp_url=_url(environ, "PT_IDP_URL"),
            client_id=environ.get("PT_CLIENT_ID", "portal"),
            client_secret=_secret(environ, "PT_CLIENT_SECRET_FILE"),
            service_client_id=environ.get("PT_SERVICE_CLIENT_ID", "portal-service"),
            service_client_secret=_secret(environ, "PT_SERVICE_CLIENT_SECRET_FILE"),
            connector_url=_url(environ, "PT_CONNECTOR_URL"),
            connector_token=_secret(environ, "PT_CONNECTOR_TOKEN_FILE"),
            trustcentre_url=_url(environ, "PT_TRUSTCENTRE_URL"),
            trustcentre_token=_secret(environ, "PT_TRUSTCENTRE_TOKEN_FILE"),
            database_url=environ.get("PT_DB_URL", DEFAULT_DATABASE_URL),
            ca_file=Path(ca) if ca else None,
            session_minutes=int(minutes),
            local_system=environ.get("PT_LOCAL_SYSTEM", f"https://hubnode.org/fhir/sid/mrn/{site}"),
            peers=tuple(p for p in environ.get("PT_PEERS", "").split(",") if p),
            node_certificate=_path(environ, "PT_NODE_CERT_FILE"),
            node_key=_path(environ, "PT_NODE_KEY_FILE"),
            projects=_projects(environ) if environ.get("PT_PROJECTS_FILE") else {},
        )


def _projects(environ: Mapping[str, str]) -> dict[str, Project]:
    """`{"<project>": {"title": ..., "summary": ..., "recipient": ..., "categories": [...]}}` from PT_PROJECTS_FILE."""
    config = read_json("PT_PROJECTS_FILE", environ)
    shape = 'PT_PROJECTS_FILE: expected {"<project>": {"title": "", "summary": "", "recipient": "", "categories": []}}'
    if not isinstance(config, dict):
        raise ConfigError(shape)
    projects = {}
    for name, entry in config.items():
        texts = (
            {key: entry.get(key, "") for key in ("title", "summary", "recipient")} if isinstance(entry, dict) else {}
        )
        categories = entry.get("categories", []) if isinstance(entry, dict) else None
        if (
            not texts
            or not all(isinstance(text, str) for text in texts.values())
            or not isinstance(categories, list)
            or not all(isinstance(category, str) for category in categories)
        ):
            raise ConfigError(f"{shape}; project {name!r} is not")
        projects[str(name)] = Project(str(name), **texts, categories=tuple(categories))
    return projects


def _path(environ: Mapping[str, str], variable: str) -> Path | None:
    value = environ.get(variable)
    if not value:
        return None
    if not Path(value).is_file():
        raise ConfigError(f"{variable}={value}: no such file")
    return Path(value)


def _required(environ: Mapping[str, str], variable: str) -> str:
    value = environ.get(variable, "").strip()
    if not value:
        raise ConfigError(f"{variable} is not set")
    return value


def _url(environ: Mapping[str, str], variable: str, *, https: bool = False) -> str:
    value = _required(environ, variable).rstrip("/")
    schemes = ("https://",) if https else ("https://", "http://")
    if not value.startswith(schemes):
        raise ConfigError(f"{variable}={value!r}: a URL starting {' or '.join(schemes)}")
    return value


def _secret(environ: Mapping[str, str], variable: str) -> str:
    value = read_file(variable, environ).strip()
    if not value:
        raise ConfigError(f"{variable}={environ[variable]}: the file is empty")
    return value
