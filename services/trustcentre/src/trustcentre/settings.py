"""The trust centre's configuration: environment variables naming files, secrets only in files.

Read once at start-up; any mistake stops the service with a message naming the variable or file
and what is wrong, rather than a half-configured trust centre.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from trustcentre.auth import Authenticator, Caller, Role

MIN_SECRET_BYTES = 32
DEFAULT_DATABASE_URL = "sqlite:////var/lib/trustcentre/trustcentre.db"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the variable or file at fault."""


@dataclass(frozen=True)
class Settings:
    """Everything the app needs, resolved."""

    database_url: str
    secret: bytes
    authenticator: Authenticator
    site: str = "hubnode"
    domains: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_batch: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Settings:
        """Resolve TC_* variables (see services/trustcentre/README.md)."""
        url = environ.get("TC_DATABASE_URL", DEFAULT_DATABASE_URL)
        if "TC_DB_PASSWORD_FILE" in environ:
            url = _with_password(url, _read("TC_DB_PASSWORD_FILE", environ).strip())
        secret = _read("TC_SECRET_FILE", environ).strip().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"TC_SECRET_FILE: the pseudonym secret must be at least {MIN_SECRET_BYTES} bytes")
        callers = _json("TC_CALLERS_FILE", environ)
        domains = _json("TC_DOMAINS_FILE", environ) if "TC_DOMAINS_FILE" in environ else {"domains": []}
        return cls(
            database_url=url,
            secret=secret,
            authenticator=authenticator_from_config(callers, environ.get("TC_CERTIFICATE_HEADER") or None),
            site=environ.get("TC_SITE", "hubnode"),
            domains=domains_from_config(domains),
        )


def authenticator_from_config(config: Any, certificate_header: str | None) -> Authenticator:  # noqa: ANN401
    """Callers from `{"callers": [{"name", "roles", "token_sha256" | "certificate_subject"}]}`."""
    entries = config.get("callers") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        raise ConfigError('TC_CALLERS_FILE: expected {"callers": [...]}')
    by_token: dict[str, Caller] = {}
    by_subject: dict[str, Caller] = {}
    known_roles = {role.value: role for role in Role}
    for index, entry in enumerate(entries):
        where = f"TC_CALLERS_FILE: callers[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: needs a string name")
        roles = entry.get("roles", [])
        if not isinstance(roles, list) or any(r not in known_roles for r in roles):
            raise ConfigError(f"{where}.roles: {roles!r}; known roles: {', '.join(known_roles)}")
        caller = Caller(entry["name"], frozenset(known_roles[r] for r in roles))
        if isinstance(entry.get("token_sha256"), str):
            by_token[entry["token_sha256"].lower()] = caller
        if isinstance(entry.get("certificate_subject"), str):
            by_subject[entry["certificate_subject"]] = caller
        if "token_sha256" not in entry and "certificate_subject" not in entry:
            raise ConfigError(f"{where}: needs token_sha256 or certificate_subject")
    return Authenticator(by_token, by_subject, certificate_header)


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


def _read(variable: str, environ: Mapping[str, str]) -> str:
    path = environ.get(variable)
    if not path:
        raise ConfigError(f"{variable} is not set: it must name a file")
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from None


def _json(variable: str, environ: Mapping[str, str]) -> Any:  # noqa: ANN401
    try:
        return json.loads(_read(variable, environ))
    except ValueError as exc:
        raise ConfigError(f"{variable}={environ[variable]}: not valid JSON ({exc})") from None


def _with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        raise ConfigError(
            "TC_DATABASE_URL must name a user (postgresql+psycopg://user@host/db) to use TC_DB_PASSWORD_FILE"
        )
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{quote(password, safe='')}@{host}"
