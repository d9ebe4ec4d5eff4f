"""One identity check for every service: a peer is the allow list's thumbprint, through the gateway, not revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from infra import pki
from infra.allow_list import AllowedNode, allow_list
from servicekit.allowlist import parse_allow_list
from servicekit.auth import Authenticator, Caller, authenticator_from_entries, token_hash
from servicekit.config import ConfigError
from servicekit.fhir import FhirError
from servicekit.identity import Federation, revoked_serials

NOW = datetime.now(UTC)
CA = pki.issue_ca("fed", NOW - timedelta(days=1))
NODES = {site: pki.issue_node(CA, site, [f"{site}.fed.test"], NOW - timedelta(days=1)) for site in ("dic", "practice")}
ALLOWED = parse_allow_list(
    allow_list(
        AllowedNode(site, role, f"{site}.fed.test", 9443, pki.thumbprint(NODES[site].certificate))
        for site, role in (("dic", "dic"), ("practice", "practice"))
    )
)
SECRET = "gateway-secret-of-dic"
DIC = Federation("dic", SECRET, ALLOWED)


def door(certificate: pki.Issued, secret: str = SECRET, verify: str = "SUCCESS") -> dict[str, str]:
    """The headers the dic's gateway sets for a caller presenting `certificate` at its peer door."""
    pem = certificate.certificate.public_bytes(Encoding.PEM).decode()
    return {
        "x-hubnode-gateway-secret": secret,
        "x-hubnode-client-verify": verify,
        "x-hubnode-client-cert": quote(pem),
        "x-hubnode-client-subject": certificate.certificate.subject.rfc4514_string(),
    }


def test_a_peer_is_known_by_its_certificates_thumbprint_on_the_allow_list() -> None:
    assert DIC.identify(door(NODES["practice"])).site == "practice"


def test_a_new_key_with_the_same_name_from_the_federation_ca_is_not_the_node() -> None:
    # The security review's M1: accepted by the trust centre (subject only), refused by the connector.
    impostor = pki.issue_node(CA, "practice", ["practice.fed.test"], NOW)
    with pytest.raises(FhirError) as refused:
        DIC.identify(door(impostor))
    assert (refused.value.status, "is not on the allow list" in refused.value.diagnostics) == (403, True)


def test_a_node_may_not_call_its_own_door() -> None:
    with pytest.raises(FhirError, match="a node does not call its own peer door") as refused:
        DIC.identify(door(NODES["dic"]))
    assert refused.value.status == 403


def test_a_revoked_certificate_is_refused_even_on_the_allow_list() -> None:
    revoked = Federation("dic", SECRET, ALLOWED, frozenset({NODES["practice"].certificate.serial_number}))
    with pytest.raises(FhirError, match="has been revoked") as refused:
        revoked.identify(door(NODES["practice"]))
    assert refused.value.status == 401


def test_identity_headers_without_the_gateway_secret_prove_nothing() -> None:
    # The security review's M2: a forged subject header from inside the node's network was accepted.
    grants = {"practice": Caller("practice-connector", frozenset({"linkage"}), "practice", peer=True)}
    authenticator = Authenticator({token_hash("t"): Caller("admin", frozenset({"linkage"}))}, grants, DIC)
    assert authenticator.authenticate(door(NODES["practice"])).name == "practice-connector"
    with pytest.raises(FhirError, match="authenticate with 'Authorization: Bearer") as refused:
        authenticator.authenticate(door(NODES["practice"], secret="guess"))
    assert refused.value.status == 401
    forged = {**door(NODES["practice"], secret="guess"), "authorization": "Bearer t"}
    assert authenticator.authenticate(forged).name == "admin", "the token speaks, the forged headers do not"


def test_a_node_the_callers_file_grants_nothing_may_call_nothing() -> None:
    authenticator = Authenticator({}, {}, DIC)
    with pytest.raises(FhirError, match="node 'practice' may call nothing here") as refused:
        authenticator.authenticate(door(NODES["practice"]))
    assert refused.value.status == 403


def test_a_node_caller_is_scoped_to_its_site_systems_and_domains() -> None:
    entries = [
        {
            "name": "practice-connector",
            "certificate": True,
            "site": "practice",
            "roles": ["linkage"],
            "identifier_systems": ["https://gp.example/pid"],
            "domains": [],
        },
        {"name": "admin", "token_sha256": token_hash("t"), "roles": ["linkage"]},
    ]
    authenticator = authenticator_from_entries(entries, "CALLERS", ["linkage"], DIC)
    node = authenticator.authenticate(door(NODES["practice"]))
    assert (node.site, node.identifier_systems, node.domains, node.peer) == (
        "practice",
        frozenset({"https://gp.example/pid"}),
        frozenset(),
        True,
    )
    with pytest.raises(FhirError, match="may not use domain 'study'; its domains: none"):
        node.require_domain("study")
    admin = authenticator.authenticate({"authorization": "Bearer t"})
    admin.require_domain("study")  # the site's administrator is not scoped
    assert admin.site is None


def test_the_revocation_list_must_be_the_federations(tmp_path: Path) -> None:
    crl = pki.issue_crl(CA, {NODES["practice"].certificate.serial_number: NOW}, NOW)
    (tmp_path / "fed.crl").write_bytes(pki.crl_pem(crl))
    (tmp_path / "ca.crt").write_bytes(pki.certificate_pem(CA.certificate))
    assert revoked_serials(tmp_path / "fed.crl", tmp_path / "ca.crt", "X_CRL_FILE") == {
        NODES["practice"].certificate.serial_number
    }
    other = pki.issue_ca("elsewhere", NOW)
    (tmp_path / "other.crt").write_bytes(pki.certificate_pem(other.certificate))
    with pytest.raises(ConfigError, match="not signed by the federation CA"):
        revoked_serials(tmp_path / "fed.crl", tmp_path / "other.crt", "X_CRL_FILE")
