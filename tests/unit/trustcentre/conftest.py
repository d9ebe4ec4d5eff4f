"""An in-process trust centre on a fresh SQLite file, with one token per role set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from servicekit.auth import Authenticator, Caller, token_hash
from trustcentre.app import create_app
from trustcentre.auth import Role
from trustcentre.settings import Settings

TOKENS = {
    "admin": frozenset(Role),
    "connector": frozenset({Role.PSEUDONYMIZE, Role.CONSENT_READ, Role.LINKAGE}),
    "nobody": frozenset(),
}
SECRET = b"k" * 32
DOMAINS = {"study": {"prefix": "S", "length": 10}, "clinic": {}}


def headers(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer token-of-{who}", "Content-Type": "application/fhir+json"}


def settings(database_url: str) -> Settings:
    callers = {token_hash(f"token-of-{name}"): Caller(name, roles) for name, roles in TOKENS.items()}
    return Settings(
        database_url=database_url,
        secret=SECRET,
        authenticator=Authenticator(callers, {}),
        domains=DOMAINS,
        max_batch=1000,
        max_body_bytes=512 * 1024,
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trustcentre.db'}"


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings(database_url)), raise_server_exceptions=False) as test_client:
        yield test_client
