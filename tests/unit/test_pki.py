from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from infra import pki

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOSTS = ("dic.hubnode.test",)


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.issue_ca("digihub", NOW)


@pytest.fixture(scope="module")
def node(ca: pki.Issued) -> pki.Issued:
    return pki.issue_node(ca, "dic", HOSTS, NOW)


def test_the_ca_is_a_self_signed_p256_ca_for_ten_years(ca: pki.Issued) -> None:
    certificate = ca.certificate
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert certificate.subject == certificate.issuer
    certificate.verify_directly_issued_by(certificate)
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert not usage.digital_signature
    assert certificate.not_valid_after_utc - NOW == timedelta(days=3650)
    assert pki.federation_of(certificate) == "digihub"


def test_a_node_certificate_is_what_the_contract_says(ca: pki.Issued, node: pki.Issued) -> None:
    certificate = node.certificate
    assert isinstance(node.key.curve, ec.SECP256R1)
    # nginx's $ssl_client_s_dn (RFC 2253) is what the trust centre and connector match on
    assert certificate.subject.rfc4514_string() == "CN=dic,O=digihub"
    assert (pki.site_of(certificate), pki.federation_of(certificate)) == ("dic", "digihub")
    assert pki.subject_alternative_names(certificate) == {"dic.hubnode.test", "localhost", "127.0.0.1"}
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not usage.value.key_encipherment
    extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert certificate.not_valid_after_utc - NOW == timedelta(days=365)
    assert certificate.not_valid_before_utc < NOW  # a peer whose clock is a little behind accepts it
    certificate.verify_directly_issued_by(ca.certificate)
    assert pki.key_matches(node)


def test_every_certificate_has_its_own_key_and_serial(ca: pki.Issued, node: pki.Issued) -> None:
    again = pki.issue_node(ca, "dic", HOSTS, NOW)
    assert again.certificate.serial_number != node.certificate.serial_number
    assert not pki.key_matches(pki.Issued(again.certificate, node.key))


def test_the_thumbprint_is_sha512_of_the_der_bytes_in_lowercase_hex(node: pki.Issued) -> None:
    # recomputed from the PEM text alone, without the library's DER encoder
    body = re.sub(r"-----[A-Z ]+-----|\s", "", pki.certificate_pem(node.certificate).decode())
    assert pki.thumbprint(node.certificate) == hashlib.sha512(base64.b64decode(body)).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{128}", pki.thumbprint(node.certificate))


def test_pem_round_trips(node: pki.Issued) -> None:
    assert pki.load_certificate(pki.certificate_pem(node.certificate)) == node.certificate
    key = pki.load_key(pki.key_pem(node.key))
    assert key.private_numbers() == node.key.private_numbers()
    assert pki.key_pem(node.key).startswith(b"-----BEGIN PRIVATE KEY-----")


def test_loading_refuses_what_is_not_an_ec_key(node: pki.Issued) -> None:
    with pytest.raises(ValueError, match="private key"):
        pki.load_key(pki.certificate_pem(node.certificate))
    other_kind = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(TypeError, match="expected an EC private key"):
        pki.load_key(other_kind)
    with pytest.raises(ValueError, match="PEM"):
        pki.load_certificate(b"not a certificate")


def test_node_names_add_the_loopback_names_once() -> None:
    assert pki.node_names(["a.test", "localhost"]) == ("a.test", "localhost", "127.0.0.1")


def test_a_fresh_certificate_stays(ca: pki.Issued, node: pki.Issued) -> None:
    assert pki.needs_reissue(node.certificate, ca.certificate, pki.node_names(HOSTS), NOW) is None
    later = NOW + timedelta(days=365 - 31)
    assert pki.needs_reissue(node.certificate, ca.certificate, pki.node_names(HOSTS), later) is None


@pytest.mark.parametrize(
    ("days", "reason"), [(365 - 30, "expires within 30 days"), (365 - 1, "expires within 30 days"), (365, "expired")]
)
def test_certificates_near_or_past_their_end_are_reissued(
    ca: pki.Issued, node: pki.Issued, days: int, reason: str
) -> None:
    when = NOW + timedelta(days=days)
    assert pki.needs_reissue(node.certificate, ca.certificate, pki.node_names(HOSTS), when) == reason


def test_an_expired_certificate_is_issued_by_moving_the_clock(ca: pki.Issued) -> None:
    expired = pki.issue_node(ca, "dic", HOSTS, NOW - timedelta(days=400))
    assert expired.certificate.not_valid_after_utc < NOW
    assert pki.needs_reissue(expired.certificate, ca.certificate, pki.node_names(HOSTS), NOW) == "expired"


def test_changed_host_names_reissue(ca: pki.Issued, node: pki.Issued) -> None:
    wanted = pki.node_names(["dic.example.org"])
    assert pki.needs_reissue(node.certificate, ca.certificate, wanted, NOW) == "host names changed"
    fewer = ("dic.hubnode.test", "localhost")
    assert pki.needs_reissue(node.certificate, ca.certificate, fewer, NOW) == "host names changed"


def test_a_certificate_of_another_ca_is_reissued(node: pki.Issued) -> None:
    # same federation, same subject: only the signature tells the two CAs apart
    other = pki.issue_ca("digihub", NOW)
    assert other.certificate.subject == pki.issue_ca("digihub", NOW).certificate.subject
    reason = pki.needs_reissue(node.certificate, other.certificate, pki.node_names(HOSTS), NOW)
    assert reason == "not signed by the federation CA"
    renamed = pki.issue_ca("other-federation", NOW)
    assert pki.needs_reissue(node.certificate, renamed.certificate, pki.node_names(HOSTS), NOW) == reason


def test_the_ca_expiry_reason(ca: pki.Issued) -> None:
    assert pki.expiry_reason(ca.certificate, NOW) is None
    assert pki.expiry_reason(ca.certificate, NOW + timedelta(days=3650 - 10)) == "expires within 30 days"
