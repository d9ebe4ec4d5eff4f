from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from infra import pki, pki_store
from infra.errors import HubnodeError
from infra.pki_store import ca_key_file, ensure

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NODES = {"dic": ["dic.hubnode.test"], "practice": ["practice.hubnode.test"]}


def done(result: pki_store.FederationPki) -> dict[str, str]:
    return {a.item: f"{a.done} {a.reason}".strip() for a in result.actions}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_first_run_issues_everything_with_owner_only_keys(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    result = ensure(folder, "digihub", NODES, NOW)
    assert done(result) == {"ca": "issued new", "dic": "issued new", "practice": "issued new"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.crt",
        "dic.crt",
        "dic.key",
        "federation.crl",
        "practice.crt",
        "practice.key",
        "revoked.json",
    ]
    assert mode(folder) == 0o700
    assert {p.name: mode(p) for p in folder.glob("*.key")} == {"dic.key": 0o600, "practice.key": 0o600}
    assert ca_key_file(folder) == tmp_path / "ca" / "ca.key", "the CA key lies apart from what nodes are given"
    assert (mode(ca_key_file(folder)), mode(ca_key_file(folder).parent)) == (0o600, 0o700)
    assert mode(result.certificate_file("dic")) == 0o644
    assert result.ca_file == folder / "ca.crt"
    assert result.key_file("practice") == folder / "practice.key"
    on_disk = pki.load_certificate(result.certificate_file("dic").read_bytes())
    assert result.thumbprint("dic") == pki.thumbprint(on_disk)
    on_disk.verify_directly_issued_by(pki.load_certificate(result.ca_file.read_bytes()))


def test_a_second_run_reuses_everything_byte_for_byte(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    before = snapshot(folder)
    result = ensure(folder, "digihub", NODES, NOW + timedelta(days=100))
    assert done(result) == {"ca": "reused", "dic": "reused", "practice": "reused"}
    assert snapshot(folder) == before
    assert str(result.actions[0]) == "ca: reused"


def test_a_loosened_folder_is_made_owner_only_again(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    ensure(folder, "digihub", NODES, NOW)
    assert mode(folder) == 0o700


def test_certificates_near_their_end_are_reissued_and_the_rest_kept(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", {"dic": NODES["dic"]}, NOW)
    ensure(folder, "digihub", NODES, NOW + timedelta(days=100))  # practice is 100 days younger
    before = snapshot(folder)
    result = ensure(folder, "digihub", NODES, NOW + timedelta(days=340))
    assert done(result) == {"ca": "reused", "dic": "issued expires within 30 days", "practice": "reused"}
    after = snapshot(folder)
    assert after["practice.crt"] == before["practice.crt"]
    assert after["dic.crt"] != before["dic.crt"]
    assert after["dic.key"] != before["dic.key"]
    assert str(result.actions[1]) == "dic: issued (expires within 30 days)"


def test_an_expired_certificate_is_reissued(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    result = ensure(folder, "digihub", NODES, NOW + timedelta(days=400))
    assert done(result) == {"ca": "reused", "dic": "issued expired", "practice": "issued expired"}


def test_changed_host_names_reissue_only_that_node(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    result = ensure(folder, "digihub", {**NODES, "dic": ["dic.example.org"]}, NOW)
    assert done(result) == {"ca": "reused", "dic": "issued host names changed", "practice": "reused"}
    assert pki.subject_alternative_names(result.nodes["dic"].certificate) == {
        "dic.example.org",
        "localhost",
        "127.0.0.1",
    }


def test_a_new_ca_reissues_every_node(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    (folder / "ca.crt").unlink()
    result = ensure(folder, "digihub", NODES, NOW)
    assert done(result) == {"ca": "issued new", "dic": "issued new CA", "practice": "issued new CA"}
    for site in NODES:
        result.nodes[site].certificate.verify_directly_issued_by(result.ca.certificate)


def test_a_ca_near_its_end_or_of_another_federation_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    later = NOW + timedelta(days=3650 - 5)
    assert done(ensure(folder, "digihub", NODES, later))["ca"] == "issued expires within 30 days"
    result = ensure(folder, "mihubx", NODES, later)
    assert done(result) == {"ca": "issued federation renamed", "dic": "issued new CA", "practice": "issued new CA"}
    assert result.nodes["dic"].certificate.subject.rfc4514_string() == "CN=dic,O=mihubx"


def test_a_ca_replaced_behind_its_back_reissues_the_nodes_it_did_not_sign(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    other = tmp_path / "other" / "pki"
    ensure(other, "digihub", {}, NOW)
    (folder / "ca.crt").write_bytes((other / "ca.crt").read_bytes())
    ca_key_file(folder).write_bytes(ca_key_file(other).read_bytes())
    result = ensure(folder, "digihub", NODES, NOW)
    assert done(result) == {
        "ca": "reused",
        "dic": "issued not signed by the federation CA",
        "practice": "issued not signed by the federation CA",
    }


@pytest.mark.parametrize("broken", ["dic.key", "dic.crt"])
def test_unreadable_or_mismatched_files_are_issued_anew(tmp_path: Path, broken: str) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    (folder / broken).write_text("garbage")
    assert done(ensure(folder, "digihub", NODES, NOW))["dic"] == "issued new"
    (folder / "dic.key").write_bytes((folder / "practice.key").read_bytes())
    assert done(ensure(folder, "digihub", NODES, NOW))["dic"] == "issued key does not match the certificate"
    ca_key_file(folder).write_bytes((folder / "practice.key").read_bytes())
    assert done(ensure(folder, "digihub", NODES, NOW))["ca"] == "issued key does not match the certificate"


def revoked_serials(folder: Path) -> set[int]:
    crl = x509.load_pem_x509_crl((folder / "federation.crl").read_bytes())
    assert crl.is_signature_valid(pki.load_certificate((folder / "ca.crt").read_bytes()).public_key())
    return {entry.serial_number for entry in crl}


def test_a_certificate_replaced_while_still_valid_is_revoked_and_the_revocation_list_is_signed(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    first = ensure(folder, "digihub", NODES, NOW)
    assert revoked_serials(folder) == set()
    renamed = ensure(folder, "digihub", {**NODES, "dic": ["dic.example.org"]}, NOW + timedelta(days=1))
    old = first.nodes["dic"].certificate.serial_number
    assert revoked_serials(folder) == {old}
    assert renamed.nodes["dic"].certificate.serial_number != old
    later = ensure(folder, "digihub", NODES, NOW + timedelta(days=400))  # both expired: nothing more to revoke
    assert revoked_serials(folder) == {old}
    assert later.crl_file == folder / "federation.crl"


def test_a_new_ca_starts_a_new_revocation_list(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW)
    ensure(folder, "digihub", {**NODES, "dic": ["dic.example.org"]}, NOW)
    ensure(folder, "mihubx", NODES, NOW)
    assert revoked_serials(folder) == set()


def test_a_local_stack_keeps_a_revoked_certificate_to_show_it_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    ensure(folder, "digihub", NODES, NOW, revoked_probe=True)
    probe = pki.load_certificate((folder / "revoked-probe.crt").read_bytes())
    probe.verify_directly_issued_by(pki.load_certificate((folder / "ca.crt").read_bytes()))
    assert revoked_serials(folder) == {probe.serial_number}
    before = (folder / "federation.crl").read_bytes()
    ensure(folder, "digihub", NODES, NOW + timedelta(days=1), revoked_probe=True)
    assert (folder / "federation.crl").read_bytes() == before, "an unchanged list is not signed again"


def test_a_ca_key_kept_in_the_pki_folder_by_an_older_version_is_moved_apart(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    first = ensure(folder, "digihub", NODES, NOW)
    ca_key_file(folder).replace(folder / "ca.key")
    again = ensure(folder, "digihub", NODES, NOW)
    assert done(again)["ca"] == "reused"
    assert not (folder / "ca.key").exists()
    assert again.ca.certificate == first.ca.certificate


def test_a_site_may_not_take_the_cas_file_names(tmp_path: Path) -> None:
    with pytest.raises(HubnodeError, match="may not be called 'ca'"):
        ensure(tmp_path / "pki", "digihub", {"ca": ["ca.hubnode.test"]}, NOW)


def test_status_shows_how_long_each_certificate_holds_and_when_up_renews_it(tmp_path: Path) -> None:
    issued = pki_store.ensure(tmp_path, "fed", {"dic": ["dic.test"]}, NOW)
    until = issued.nodes["dic"].certificate.not_valid_after_utc
    [ca, dic] = pki_store.validity(tmp_path, ["ca", "dic", "nowhere"], NOW)
    assert (ca.item, dic.item, dic.valid_until, dic.renew) == ("ca", "dic", until, None)
    assert dic.days_left == (until - NOW).days
    [soon] = pki_store.validity(tmp_path, ["dic"], until - timedelta(days=10))
    assert (soon.days_left, soon.renew) == (10, "expires within 30 days")
