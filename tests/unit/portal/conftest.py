"""An in-process node for the portal: a stand-in Keycloak, the real trust centre and the real connector (on FakeFhir).

The portal runs with its production wiring; only the transports are in-process. Helpers sign users
in the way a browser does: `/portal/login` -> the identity provider -> `/portal/auth/callback`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from starlette.testclient import TestClient

from connector.app import create_app as create_connector
from connector.auth import Role as ConnectorRole
from fixtures.consents import broad_consent
from infra.pki import issue_ca, issue_node
from portal.app import create_app
from portal.portal_state import Transports
from portal.settings import Settings
from servicekit.auth import Authenticator, Caller, token_hash
from tests.unit.connector.conftest import connector_settings
from tests.unit.connector.fake_fhir import FakeFhir
from tests.unit.portal.stand_in_idp import (
    BACK_CHANNEL,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    REALM,
    SERVICE_ID,
    SERVICE_SECRET,
    StandInIdp,
)
from trustcentre.app import create_app as create_trustcentre
from trustcentre.auth import Role
from trustcentre.settings import Settings as TrustCentreSettings

SITE = "dic"
SOURCE = "https://hubnode.org/fhir/sid/source"
CLINIC = "https://clinic.example/pid"
KVNR = "http://fhir.de/sid/gkv/kvid-10"
PORTAL_URL = "https://node.test/portal"
PORTAL_TC_ROLES = frozenset(
    {Role.ENROLMENT, Role.CONSENT_READ, Role.CONSENT_WRITE, Role.CONSENT_CHECK, Role.AUDIT_READ}
)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def trustcentre_settings(tmp_path: Path) -> TrustCentreSettings:
    systems = frozenset({f"{SOURCE}/{SITE}", CLINIC})
    callers = {
        "admin": Caller("site-admin", frozenset(Role)),
        "connector": Caller(
            "connector", frozenset({Role.LINKAGE, Role.CONSENT_CHECK, Role.PSEUDONYMIZE}), SITE, systems, frozenset()
        ),
        "portal": Caller("portal", PORTAL_TC_ROLES, SITE, systems, frozenset()),
    }
    return TrustCentreSettings(
        database_url=f"sqlite:///{tmp_path / 'trustcentre.db'}",
        secret=b"k" * 32,
        authenticator=Authenticator({token_hash(f"token-of-{n}"): c for n, c in callers.items()}, {}),
        site=SITE,
    )


def node_pki(tmp_path: Path) -> dict[str, Path]:
    """The federation CA and this node's certificate and key as files, as `hubnode up` hands them over."""
    now = datetime.now(UTC)
    ca = issue_ca("test-federation", now)
    node = issue_node(ca, SITE, [f"{SITE}.hubnode.test"], now)
    files = {
        "ca_file": tmp_path / "ca.crt",
        "node_certificate": tmp_path / "node.crt",
        "node_key": tmp_path / "node.key",
    }
    files["ca_file"].write_bytes(ca.certificate.public_bytes(Encoding.PEM))
    files["node_certificate"].write_bytes(node.certificate.public_bytes(Encoding.PEM))
    files["node_key"].write_bytes(node.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return files


def portal_settings(tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        **node_pki(tmp_path),
        "site": SITE,
        "public_url": PORTAL_URL,
        "issuer": ISSUER,
        "idp_url": f"{BACK_CHANNEL}{REALM}",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "service_client_id": SERVICE_ID,
        "service_client_secret": SERVICE_SECRET,
        "connector_url": "http://connector.test/fhir",
        "connector_token": "token-of-portal",
        "trustcentre_url": "http://trustcentre.test/ttp-fhir/fhir",
        "trustcentre_token": "token-of-portal",
        "database_url": f"sqlite:///{tmp_path / 'portal.db'}",
        "local_system": CLINIC,
        "peers": ("practice",),
    }
    return Settings(**{**values, **changes})


class PortalFhir(FakeFhir):
    """FakeFhir that also narrows a search to a patient (`subject=Patient/<id>`), as HAPI does."""

    def _search(self, kind: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found = super()._search(kind, params)
        for name, value in params:
            if name in ("subject", "patient"):
                found = [r for r in found if r.get("subject", r.get("patient", {})).get("reference") == value]
        return found


@dataclass
class Node:
    """The portal and what stands behind it, with the helpers tests use."""

    portal: TestClient
    idp: StandInIdp
    connector: TestClient
    trustcentre: TestClient
    fhir: FakeFhir

    def sign_in(self, username: str) -> httpx.Response:
        """Sign `username` in through the identity provider; the answer of the callback."""
        started = self.portal.get("/portal/login", follow_redirects=False)
        assert started.status_code == 303, started.text
        authorize = self.idp_client.get(f"{started.headers['location']}&username={username}", follow_redirects=False)
        callback = urlsplit(authorize.headers["location"])
        return self.portal.get(f"{callback.path}?{callback.query}", follow_redirects=False)

    @property
    def idp_client(self) -> TestClient:
        return TestClient(self.idp.app(), base_url="https://idp.test")

    def csrf(self, path: str = "/portal/") -> str:
        page = self.portal.get(path)
        found = CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def ingest(self, kvnr: str, mrn: str, *resources: dict[str, Any]) -> None:
        """A source system's bundle at the connector: the Patient and its resources."""
        patient = {
            "resourceType": "Patient",
            "id": f"p-{mrn}",
            "identifier": [{"system": KVNR, "value": kvnr}, {"system": CLINIC, "value": mrn}],
            "name": [{"family": "Muster", "given": ["Erika"]}],
            "gender": "female",
            "birthDate": "1960-05-01",
        }
        entries = [patient, *resources]
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in entries
            ],
        }
        answer = self.connector.post("/fhir", json=bundle, headers=_bearer("source"))
        assert answer.status_code == 200, answer.text

    def consent(self, kvnr: str, *codes: str) -> None:
        """The site's staff record a broad consent at the trust centre (by KVNR, as the journeys do)."""
        consent = broad_consent({"system": KVNR, "value": kvnr}, "2025-01-01T10:00:00+00:00", *codes)
        body = {
            "resourceType": "Parameters",
            "parameter": [{"name": "domain", "valueString": "MII"}, {"name": "resource", "resource": consent}],
        }
        answer = self.trustcentre.post("/ttp-fhir/fhir/gics/$addConsent", json=body, headers=_bearer("admin"))
        assert answer.status_code == 200, answer.text

    def enrol(self, patient: str, mrn: str) -> None:
        """Staff issue a code for `mrn`; the signed-in patient redeems it."""
        self.sign_in("staff")
        issued = self.portal.post("/portal/staff/enrolments", data={"csrf": self.csrf(), "kind": "local", "value": mrn})
        assert issued.status_code == 200, issued.text
        code = re.search(r'id="enrolment-code">([A-Z0-9-]+)<', issued.text)
        assert code, issued.text
        self.sign_in(patient)
        redeemed = self.portal.post("/portal/me/enrol", data={"csrf": self.csrf(), "code": code.group(1)})
        assert redeemed.status_code == 200, redeemed.text


def _bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer token-of-{who}", "Content-Type": "application/fhir+json"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    idp = StandInIdp()
    idp.add("erika", "patient")
    idp.add("paul", "patient")
    idp.add("clara", "clinician")
    idp.add("staff", "site-admin")
    fhir = PortalFhir()
    trustcentre_app = create_trustcentre(trustcentre_settings(tmp_path))
    connector_app = create_connector(
        _connector_settings(tmp_path),
        hapi_transport=fhir.transport(),
        trustcentre_transport=httpx.ASGITransport(app=trustcentre_app),
    )
    transports = Transports(
        idp=httpx.ASGITransport(app=idp.app()),
        connector=httpx.ASGITransport(app=connector_app),
        trustcentre=httpx.ASGITransport(app=trustcentre_app),
    )
    portal_app = create_app(portal_settings(tmp_path), transports)
    with (
        TestClient(portal_app, base_url="https://node.test", raise_server_exceptions=True) as portal,
        TestClient(connector_app, raise_server_exceptions=False) as connector,
        TestClient(trustcentre_app, raise_server_exceptions=False) as trustcentre,
    ):
        yield Node(portal, idp, connector, trustcentre, fhir)


def _connector_settings(tmp_path: Path) -> Any:
    settings = connector_settings(tmp_path)
    portal_roles = frozenset(
        {ConnectorRole.READ, ConnectorRole.INGEST, ConnectorRole.PROCESS, ConnectorRole.AUDIT_READ}
    )
    callers = dict(settings.authenticator.by_token_hash)
    callers[token_hash("token-of-portal")] = Caller("portal", portal_roles)
    return type(settings)(**{**settings.__dict__, "authenticator": Authenticator(callers, {})})


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))
