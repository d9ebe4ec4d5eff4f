"""The federation's PKI: a CA, one certificate per node, thumbprints, and when to reissue.

Pure functions of their inputs (the time included), so that rotation is testable without waiting
and an expired or foreign certificate for a test is made by the same code as a real one. The
shapes follow docs/federation.md, "PKI and allow list": the gateway checks peers against the CA,
and the connector looks their certificates up in the allow list by SHA-512 thumbprint.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
NODE_VALIDITY = timedelta(days=365)
#: How long a revocation list is valid: a node running this long without `hubnode up` refuses every peer.
CRL_VALIDITY = timedelta(days=365)
#: A certificate this close to its end is reissued, so a node never runs into an expiry between runs.
RENEW_BEFORE = timedelta(days=30)
#: Certificates start this long before "now": a peer whose clock is a little behind still accepts them.
CLOCK_SKEW = timedelta(minutes=5)
#: Names every node certificate carries besides the node's host names: tests and tools on the host
#: reach gateways through published loopback ports.
LOOPBACK_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def issue_ca(federation: str, now: datetime, *, validity: timedelta = CA_VALIDITY) -> Issued:
    """A self-signed federation CA (EC P-256) that may sign node certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA"),
        ]
    )
    public = key.public_key()
    certificate = (
        certificate_builder(name, name, public, now, validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue_node(
    ca: Issued, site: str, hosts: Iterable[str], now: datetime, *, validity: timedelta = NODE_VALIDITY
) -> Issued:
    """A node certificate (EC P-256) for TLS server and client use, subject `CN=<site>,O=<CA's federation>`.

    The subject's attributes are in the order that makes nginx's `$ssl_client_s_dn` (RFC 2253,
    last attribute first) read `CN=<site>,O=<federation>`; nodes know each other by the allow list's
    thumbprint, the subject only helps a person reading the gateway's log.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation_of(ca.certificate)),
            x509.NameAttribute(NameOID.COMMON_NAME, site),
        ]
    )
    certificate = (
        certificate_builder(subject, ca.certificate.subject, key.public_key(), now, validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([general_name(n) for n in node_names(hosts)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(certificate, key)


def federation_of(certificate: x509.Certificate) -> str:
    """The federation (subject organisation) a CA or node certificate belongs to; "" if it names none."""
    return _subject(certificate, NameOID.ORGANIZATION_NAME)


def site_of(certificate: x509.Certificate) -> str:
    """The site (subject common name) a node certificate claims; "" if it names none."""
    return _subject(certificate, NameOID.COMMON_NAME)


def _subject(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    values = certificate.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if len(values) == 1 else ""


def certificate_builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, now: datetime, validity: timedelta
) -> x509.CertificateBuilder:
    """A certificate's common part: names, key, a random serial, validity from a little before `now`."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def node_names(hosts: Iterable[str]) -> tuple[str, ...]:
    """The subject alternative names a node certificate for these host names carries, in order."""
    return tuple(dict.fromkeys((*hosts, *LOOPBACK_NAMES)))


def general_name(name: str) -> x509.GeneralName:
    """A subject alternative name: an IP address where `name` is one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def subject_alternative_names(certificate: x509.Certificate) -> frozenset[str]:
    """The DNS names and IP addresses a certificate is valid for, as text."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(str(name.value) for name in extension.value)


def thumbprint(certificate: x509.Certificate) -> str:
    """Lowercase hex SHA-512 of the certificate's DER: how the allow list names a node."""
    return hashlib.sha512(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def needs_reissue(
    certificate: x509.Certificate, ca: x509.Certificate, wanted_names: Iterable[str], now: datetime
) -> str | None:
    """Why a node certificate must be issued anew, or None while it can stay.

    Expired or expiring within `RENEW_BEFORE`, carrying other names than `wanted_names`
    (see `node_names`), or not signed by `ca` (the CA was replaced).
    """
    if not _signed_by(certificate, ca):
        return "not signed by the federation CA"
    expiring = expiry_reason(certificate, now)
    if expiring is not None:
        return expiring
    if subject_alternative_names(certificate) != frozenset(str(general_name(n).value) for n in wanted_names):
        return "host names changed"
    return None


def expiry_reason(certificate: x509.Certificate, now: datetime) -> str | None:
    """`expired`, `expires within 30 days`, or None: the time-based reasons any certificate is replaced."""
    if certificate.not_valid_after_utc <= now:
        return "expired"
    if certificate.not_valid_after_utc - now <= RENEW_BEFORE:
        return f"expires within {RENEW_BEFORE.days} days"
    return None


def _signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issue_crl(
    ca: Issued, revoked: Mapping[int, datetime], now: datetime, *, validity: timedelta = CRL_VALIDITY
) -> x509.CertificateRevocationList:
    """The federation's revocation list: the serials of `revoked` (serial -> when), signed by the CA."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + validity)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    """A revocation list as PEM, as nginx (`ssl_crl`) and the services read it."""
    return crl.public_bytes(serialization.Encoding.PEM)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    """A certificate as PEM, as nginx, httpx and the connector read it."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM: services read it unattended; the file mode protects it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_certificate(pem: bytes) -> x509.Certificate:
    """A certificate from PEM; `ValueError` if it is not one."""
    return x509.load_pem_x509_certificate(pem)


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """An EC private key from unencrypted PEM; `ValueError` if it is no key, `TypeError` if another kind."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"expected an EC private key, got {type(key).__name__}")
    return key


def key_matches(issued: Issued) -> bool:
    """Whether the key belongs to the certificate (a half-replaced pair on disk does not)."""
    return issued.certificate.public_key() == issued.key.public_key()
