"""An in-process connector: a fake HAPI (tests.unit.connector.fake_fhir) and the real trust centre over ASGI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from connector.app import create_app
from connector.auth import Role
from connector.settings import Settings
from servicekit.allowlist import NodeRole
from servicekit.auth import Authenticator, Caller, token_hash
from tests.conftest import MII_KDS_DIR
from tests.unit.connector.fake_fhir import FakeFhir
from tests.unit.trustcentre.conftest import settings as trustcentre_settings
from trustcentre.app import create_app as create_trustcentre

ROLES = {
    "source": frozenset({Role.INGEST}),
    "reader": frozenset({Role.READ}),
    "auditor": frozenset({Role.AUDIT_READ}),
    "nobody": frozenset(),
}
MII_BUNDLES = sorted(MII_KDS_DIR.glob("Bundle-*.json"))
TRUSTCENTRE_TOKEN = "token-of-connector"  # the trust centre's test caller with linkage and consent roles


def headers(who: str, content_type: str = "application/fhir+json") -> dict[str, str]:
    return {"Authorization": f"Bearer token-of-{who}", "Content-Type": content_type}


def mii_bundle(name: str) -> dict[str, Any]:
    return json.loads((MII_KDS_DIR / f"Bundle-mii-exa-test-data-bundle-{name}.json").read_text())


def connector_settings(tmp_path: Path, **changes: Any) -> Settings:
    callers = {token_hash(f"token-of-{name}"): Caller(name, roles) for name, roles in ROLES.items()}
    values: dict[str, Any] = {
        "site": "dic",
        "role": NodeRole.DIC,
        "fhir_url": "http://hapi.test/fhir",
        "trustcentre_url": "http://tc.test/ttp-fhir/fhir",
        "authenticator": Authenticator(callers, {}),
        "database_url": f"sqlite:///{tmp_path / 'connector.db'}",
        "trustcentre_token": TRUSTCENTRE_TOKEN,
        "max_body_bytes": 4 * 1024 * 1024,
    }
    return Settings(**{**values, **changes})


@pytest.fixture
def fhir() -> FakeFhir:
    return FakeFhir()


@pytest.fixture
def trustcentre_transport(tmp_path: Path) -> httpx.ASGITransport:
    app = create_trustcentre(trustcentre_settings(f"sqlite:///{tmp_path / 'trustcentre.db'}"))
    return httpx.ASGITransport(app=app)


@pytest.fixture
def client(tmp_path: Path, fhir: FakeFhir, trustcentre_transport: httpx.ASGITransport) -> Iterator[TestClient]:
    app = create_app(
        connector_settings(tmp_path), hapi_transport=fhir.transport(), trustcentre_transport=trustcentre_transport
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
