"""What every request of the portal shares: its settings, database, sessions and clients of the node's services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx
from cryptography import x509
from prometheus_client import Counter
from sqlalchemy import Engine

from portal.keycloak import KeycloakAdmin
from portal.oidc import Oidc
from portal.receipts import Signer
from portal.records import Records
from portal.sessions import SessionStore
from portal.settings import Settings
from portal.trustcentre import TrustCentre
from portal.upstream import FhirClient

#: The path the gateway serves the portal under; every page and link lies below it.
BASE_PATH = "/portal"


@dataclass(frozen=True)
class Transports:
    """Where each service is reached; tests put in-process apps here, production leaves them None."""

    idp: httpx.AsyncBaseTransport | None = None
    connector: httpx.AsyncBaseTransport | None = None
    trustcentre: httpx.AsyncBaseTransport | None = None


@dataclass(frozen=True)
class PortalState:
    """The portal's long-lived parts, made once at start-up."""

    settings: Settings
    engine: Engine
    sessions: SessionStore
    oidc: Oidc
    keycloak: KeycloakAdmin
    records: Records
    trustcentre: TrustCentre
    #: Sign-ins finished, by `outcome` (`success`, `refused`), for the metrics.
    sign_ins: Counter
    #: Signs consent receipts with the node's key (None: the node has no certificate, receipts go unsigned).
    signer: Signer | None = None
    #: The federation CA receipts are checked against.
    ca: x509.Certificate | None = None
    base_path: str = BASE_PATH

    @classmethod
    def make(cls, settings: Settings, engine: Engine, transports: Transports, sign_ins: Counter) -> PortalState:
        """Clients for the identity provider, the connector and the trust centre, as the settings say."""
        verify: str | bool = str(settings.ca_file) if settings.ca_file else True
        connector = FhirClient(
            "connector", settings.connector_url, settings.connector_token, transport=transports.connector
        )
        trustcentre = FhirClient(
            "trust centre",
            settings.trustcentre_url,
            settings.trustcentre_token,
            verify=verify,
            transport=transports.trustcentre,
        )
        return cls(
            settings=settings,
            engine=engine,
            sessions=SessionStore(engine, timedelta(minutes=settings.session_minutes)),
            oidc=Oidc(settings, transport=transports.idp),
            keycloak=KeycloakAdmin(
                settings.idp_url, settings.service_client_id, settings.service_client_secret, transport=transports.idp
            ),
            records=Records(connector),
            trustcentre=TrustCentre(trustcentre),
            sign_ins=sign_ins,
            signer=Signer.from_files(settings.node_certificate, settings.node_key)
            if settings.node_certificate and settings.node_key
            else None,
            ca=x509.load_pem_x509_certificate(settings.ca_file.read_bytes()) if settings.ca_file else None,
        )

    async def aclose(self) -> None:
        """Close every client's connection pool."""
        for client in (self.oidc, self.keycloak, self.records, self.trustcentre):
            await client.aclose()
