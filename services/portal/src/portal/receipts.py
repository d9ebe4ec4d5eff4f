"""Consent receipts any node can verify: a JWS signed with the node's key, its certificate inside.

The receipt (consent version, policy, decision, day it counts from, time, node) is signed ES256 with
the node's federation key; the header carries the node's certificate (`x5c`). Any portal of the
federation checks it with the federation CA alone: the certificate must be one the CA issued and
valid at signing time, and the signature must be its key's. Nothing is looked up, so a patient can
show the receipt anywhere in the federation.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

ALGORITHM = "ES256"
TYPE = "hubnode-consent-receipt+jws"


class _ReceiptRegistry(jws.JWSRegistry):
    """joserfc's registry, with room in the header for the node's certificate (about 700 bytes as `x5c`)."""

    max_header_length = 4096


REGISTRY = _ReceiptRegistry(algorithms=[ALGORITHM])


class ReceiptInvalidError(Exception):
    """A receipt that does not verify; the message says why."""


@dataclass(frozen=True)
class Signer:
    """The node's certificate and key, as the portal reads them from its secret files."""

    certificate: x509.Certificate
    key: ECKey

    @classmethod
    def from_files(cls, certificate: Path, key: Path) -> Signer:
        """Read the node certificate (PEM) and its private key (PEM)."""
        return cls(x509.load_pem_x509_certificate(certificate.read_bytes()), ECKey.import_key(key.read_bytes()))

    def sign(self, receipt: dict[str, Any]) -> str:
        """The receipt as a compact JWS, with the node's certificate in its header."""
        header = {
            "alg": ALGORITHM,
            "typ": TYPE,
            "x5c": [base64.b64encode(self.certificate.public_bytes(Encoding.DER)).decode("ascii")],
        }
        payload = json.dumps(receipt, sort_keys=True).encode()
        return jws.serialize_compact(header, payload, self.key, registry=REGISTRY)


def verify(token: str, ca: x509.Certificate) -> tuple[dict[str, Any], str]:
    """The receipt and the node (certificate's common name) that signed it; ReceiptInvalidError otherwise."""
    certificate = _certificate(token, ca)
    try:
        key = ECKey.import_key(certificate.public_key())  # type: ignore[arg-type]
        receipt = json.loads(jws.deserialize_compact(token.strip(), key, registry=REGISTRY).payload)
        signed = datetime.fromisoformat(str(receipt["recorded"]))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ReceiptInvalidError(f"the signature does not check: {exc}") from None
    if not certificate.not_valid_before_utc <= signed.astimezone(UTC) <= certificate.not_valid_after_utc:
        raise ReceiptInvalidError("the node's certificate was not valid when the receipt says it was signed")
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return receipt, str(names[0].value) if names else ""


def _certificate(token: str, ca: x509.Certificate) -> x509.Certificate:
    """The signer's certificate from the header, if the federation CA issued it."""
    try:
        header = jws.extract_compact(token.strip().encode(), registry=REGISTRY).headers()
        chain = header.get("x5c")
        certificate = x509.load_der_x509_certificate(base64.b64decode(chain[0])) if isinstance(chain, list) else None
        if certificate is not None:
            certificate.verify_directly_issued_by(ca)
    except (JoseError, ValueError, TypeError, IndexError, InvalidSignature) as exc:
        raise ReceiptInvalidError(f"not a receipt of this federation: {exc}") from None
    if certificate is None or header.get("alg") != ALGORITHM:
        raise ReceiptInvalidError("not a hubnode receipt: no ES256 signature with a certificate")
    return certificate
