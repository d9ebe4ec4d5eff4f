"""Who is calling over the peer API, and whether they may start this process here.

The gateway terminates mutual TLS and passes the verified client certificate on in headers it
overwrites (docs/federation.md, "Gateway"). Those headers are believed only with the gateway's secret
(compared in constant time); the connector then computes the certificate's SHA-512 thumbprint itself
and looks the organisation up in the allow list. Missing proof is a 401, a known-but-unwelcome caller a 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connector.allowlist import AllowList, NodeRole, Peer, permitted
from connector.tasks import Process
from servicekit.fhir import FhirError

GATEWAY_SECRET_HEADER = "x-hubnode-gateway-secret"  # noqa: S105 -- a header name, not a secret
CLIENT_VERIFY_HEADER = "x-hubnode-client-verify"
CLIENT_CERT_HEADER = "x-hubnode-client-cert"


def thumbprint(certificate: x509.Certificate) -> str:
    """The allow list's thumbprint of a certificate: lowercase hex SHA-512 of its DER."""
    return hashlib.sha512(certificate.public_bytes(Encoding.DER)).hexdigest()


def through_gateway(headers: Mapping[str, str], gateway_secret: str) -> bool:
    """Whether the request carries this node's gateway secret (constant-time comparison)."""
    presented = headers.get(GATEWAY_SECRET_HEADER, "")
    return bool(gateway_secret) and hmac.compare_digest(presented.encode(), gateway_secret.encode())


def identify(
    headers: Mapping[str, str], gateway_secret: str, allow_list: AllowList, now: datetime | None = None
) -> Peer:
    """The allow-listed organisation behind a peer request; 401 without proof, 403 if not on the list."""
    if not through_gateway(headers, gateway_secret):
        raise FhirError(401, "security", "peer requests are accepted only through this node's gateway")
    verify = headers.get(CLIENT_VERIFY_HEADER, "")
    if verify != "SUCCESS":
        raise FhirError(401, "security", f"the client certificate was not verified ({verify or 'NONE'})")
    escaped = headers.get(CLIENT_CERT_HEADER, "")
    if not escaped:
        raise FhirError(401, "security", "no client certificate")
    try:
        certificate = x509.load_pem_x509_certificate(unquote(escaped).encode())
    except ValueError:
        raise FhirError(401, "security", "the client certificate is not a PEM certificate") from None
    if (now or datetime.now(UTC)) > certificate.not_valid_after_utc:
        raise FhirError(401, "security", "the client certificate has expired")
    print_ = thumbprint(certificate)
    peer = allow_list.by_thumbprint(print_)
    if peer is None:
        subject = certificate.subject.rfc4514_string()
        raise FhirError(
            403, "forbidden", f"certificate {subject!r} (SHA-512 {print_[:16]}...) is not on the allow list"
        )
    return peer


def authorise(peer: Peer, process: Process, requester: str | None, own_role: NodeRole) -> None:
    """Refuse with 403 unless `peer` may start `process` at this node and names itself as requester."""
    if requester != peer.site:
        raise FhirError(
            403,
            "forbidden",
            f"Task.requester {requester!r} does not match the certificate's organisation {peer.site!r}",
            ("Task.requester",),
        )
    if not permitted(peer.role, process, own_role):
        raise FhirError(
            403,
            "forbidden",
            f"a {peer.role.value} node may not start {process.value} at a {own_role.value} node",
            ("Task.instantiatesCanonical",),
        )
