"""Which node of the federation is calling: one identity check for every service behind the gateway.

The gateway terminates mutual TLS and passes the verified client certificate on in headers it always
overwrites (docs/federation.md, "Gateway"). Those headers count only together with the gateway's secret
(compared in constant time); the certificate's SHA-512 thumbprint must then be on the allow list, its
serial must not be on the federation's revocation list, and a node may not call its own door. Missing
proof is a 401, a known-but-unwelcome caller a 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from servicekit.allowlist import AllowList, Peer
from servicekit.config import ConfigError
from servicekit.fhir import FhirError

GATEWAY_SECRET_HEADER = "x-hubnode-gateway-secret"  # noqa: S105 -- a header name, not a secret
CLIENT_VERIFY_HEADER = "x-hubnode-client-verify"
CLIENT_CERT_HEADER = "x-hubnode-client-cert"
CLIENT_SUBJECT_HEADER = "x-hubnode-client-subject"


def thumbprint(certificate: x509.Certificate) -> str:
    """The allow list's thumbprint of a certificate: lowercase hex SHA-512 of its DER."""
    return hashlib.sha512(certificate.public_bytes(Encoding.DER)).hexdigest()


def through_gateway(headers: Mapping[str, str], gateway_secret: str) -> bool:
    """Whether the request carries this node's gateway secret (constant-time comparison)."""
    presented = headers.get(GATEWAY_SECRET_HEADER, "")
    return bool(gateway_secret) and hmac.compare_digest(presented.encode(), gateway_secret.encode())


def claims_certificate(headers: Mapping[str, str]) -> bool:
    """Whether a request carries the gateway's client-certificate headers at all (they may be forged)."""
    return any(headers.get(name) for name in (CLIENT_VERIFY_HEADER, CLIENT_CERT_HEADER, CLIENT_SUBJECT_HEADER))


@dataclass(frozen=True)
class Federation:
    """What a service needs to know a peer: its own site, the gateway secret, the allow list, revoked serials."""

    site: str
    gateway_secret: str
    allow_list: AllowList
    revoked: frozenset[int] = frozenset()

    def identify(self, headers: Mapping[str, str], now: datetime | None = None) -> Peer:
        """The allow-listed organisation behind a request from the peer door; FhirError 401/403 otherwise."""
        if not through_gateway(headers, self.gateway_secret):
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
        if certificate.serial_number in self.revoked:
            raise FhirError(401, "security", "the client certificate has been revoked by the federation")
        print_ = thumbprint(certificate)
        peer = self.allow_list.by_thumbprint(print_)
        if peer is None:
            subject = certificate.subject.rfc4514_string()
            raise FhirError(
                403, "forbidden", f"certificate {subject!r} (SHA-512 {print_[:16]}...) is not on the allow list"
            )
        if peer.site == self.site:
            raise FhirError(403, "forbidden", f"{peer.site!r} is this node: a node does not call its own peer door")
        return peer


def revoked_serials(crl_file: Path, ca_file: Path, variable: str) -> frozenset[int]:
    """The serials on the federation's CRL (PEM), checked against the CA that signed it.

    A CRL the CA did not sign is a configuration error (the service stops), not a reason to accept anyone.
    """
    try:
        crl = x509.load_pem_x509_crl(crl_file.read_bytes())
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{variable}={crl_file}: cannot read the revocation list or its CA ({exc})") from None
    if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise ConfigError(f"{variable}={crl_file}: the revocation list is not signed by the federation CA {ca_file}")
    return frozenset(entry.serial_number for entry in crl)
