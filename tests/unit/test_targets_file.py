"""The targets file `hubnode up` writes: endpoints, tokens, capabilities from components, certificates, controls."""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conformance.targets import Targets, load_targets
from infra import pki, pki_store
from infra.plan import plan_stack
from infra.stackfile import load_stack
from infra.state import StackState
from infra.targets_file import Controls, docker_controls, kubernetes_controls, write_targets

PROJECT_DIR = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 1, tzinfo=UTC)
SITES = {"dic": "dic", "practice": "practice", "research": "research"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder as `hubnode up --stack federation` leaves it (without containers)."""
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path)
    shutil.copy(PROJECT_DIR / "Pulumi.federation.yaml", tmp_path)
    shutil.copytree(PROJECT_DIR / "catalogue", tmp_path / "catalogue")
    state = StackState(tmp_path, "federation")
    for site in SITES:
        secrets = state.secrets_dir(site)
        secrets.mkdir(parents=True)
        for secret in ("cn-admin-token", "cn-reader-token", "tc-admin-token", "gateway-secret", "idp-portal-secret"):
            (secrets / secret).write_text(f"{site}-{secret}\n")
    pki_store.ensure(state.pki_dir, "hubnode-local", {site: [f"{site}.hubnode.test"] for site in SITES}, NOW)
    return tmp_path


def written(project: Path, controls: Controls = docker_controls) -> Targets:
    spec = load_stack(project, "federation")
    return load_targets(write_targets(StackState(project, "federation"), spec, plan_stack(spec), NOW, controls))


def test_each_node_answers_at_its_gateway_with_the_capabilities_of_its_components(project: Path) -> None:
    targets = written(project)
    dic, practice = targets.nodes["dic"], targets.nodes["practice"]
    assert dic.public_url == "https://127.0.0.1:8443"
    assert dic.fhir_url == "https://127.0.0.1:8443/fhir"
    assert dic.trustcentre_url == "https://127.0.0.1:8443/ttp-fhir/fhir"
    assert dic.peer_url == "https://127.0.0.1:9443"
    portal = {"fhir", "ingest", "read", "processes", "audit", "mtls", "control", "portal"}
    assert dic.capabilities == {*portal, "trustcentre"}
    assert practice.capabilities == portal
    assert "portal" not in targets.nodes["research"].capabilities
    assert practice.trustcentre_url is None
    assert targets.trustcentre() is dic
    assert dic.ca_file == project / ".hubnode/federation/conformance/../pki/ca.crt"
    assert targets.versions["hubnode"]


def test_tokens_map_the_stacks_secrets_to_the_credentials_scenarios_name(project: Path) -> None:
    targets = written(project)
    dic, research = targets.nodes["dic"], targets.nodes["research"]
    assert dic.token("suite") == "dic-cn-admin-token"
    assert dic.token("read-only") == "dic-cn-reader-token"
    assert dic.token("trustcentre") == "dic-tc-admin-token"
    assert sorted(research.tokens) == ["read-only", "suite"]  # no trust centre there, so no trust-centre token


def test_a_token_file_the_stack_has_not_made_is_left_out(project: Path) -> None:
    (project / ".hubnode/federation/secrets/practice/cn-reader-token").unlink()
    assert sorted(written(project).nodes["practice"].tokens) == ["suite"]


def test_client_certificates_each_provoke_their_refusal(project: Path) -> None:
    pki_folder = project / ".hubnode/federation/pki"
    ca = pki.load_certificate((pki_folder / "ca.crt").read_bytes())
    allowed = {pki.thumbprint(pki.load_certificate((pki_folder / f"{site}.crt").read_bytes())) for site in SITES}
    certificates = written(project).nodes["dic"].client_certificates

    def load(kind: str) -> pki.Issued:
        pair = certificates[kind]
        return pki.Issued(pki.load_certificate(pair.cert.read_bytes()), pki.load_key(pair.key.read_bytes()))

    assert all(pki.key_matches(load(kind)) for kind in certificates)
    assert pki.needs_reissue(load("other-ca").certificate, ca, [], NOW) == "not signed by the federation CA"
    assert pki.expiry_reason(load("expired").certificate, NOW) == "expired"
    assert pki.needs_reissue(load("expired").certificate, ca, [], NOW) == "expired"
    not_allowed = load("not-allowed").certificate
    assert pki.needs_reissue(not_allowed, ca, pki.node_names(()), NOW) is None
    assert pki.thumbprint(not_allowed) not in allowed
    assert not_allowed.subject == load("valid").certificate.subject  # an impostor of an allowed peer
    assert certificates["valid"].cert == pki_folder.parent / "conformance/../pki/practice.crt"
    assert certificates["wrong-role"].cert == pki_folder.parent / "conformance/../pki/research.crt"
    assert certificates["own"].cert == pki_folder.parent / "conformance/../pki/dic.crt"
    assert (certificates["not-allowed"].key.stat().st_mode & 0o777) == 0o600


def test_valid_is_another_node_for_every_site(project: Path) -> None:
    nodes = written(project).nodes
    assert nodes["practice"].client_certificates["valid"].cert.name == "dic.crt"
    assert nodes["research"].client_certificates["valid"].cert.name == "dic.crt"


def test_the_controls_stop_and_start_the_nodes_gateway_container(project: Path) -> None:
    controls = written(project).nodes["practice"].controls
    assert controls["stop"] == (sys.executable, "-m", "infra.door", "stop", "hubnode-federation-practice-gateway")
    assert controls["start"] == (sys.executable, "-m", "infra.door", "start", "hubnode-federation-practice-gateway")


def test_on_kubernetes_the_controls_scale_the_gateway_deployment_in_the_nodes_namespace(project: Path) -> None:
    kubectl, kubeconfig = Path("/cache/bin/kubectl"), Path("/p/.hubnode/kube/kubeconfig")
    practice = written(project, kubernetes_controls(kubectl, kubeconfig)).nodes["practice"]
    door = (sys.executable, "-m", "infra.door", f"--kubectl={kubectl}", f"--kubeconfig={kubeconfig}")
    assert practice.controls["stop"] == (*door, "stop", "hubnode-federation-practice/gateway")
    assert practice.controls["start"] == (*door, "start", "hubnode-federation-practice/gateway")
    assert "control" in practice.capabilities


def test_a_node_without_controls_does_not_offer_the_control_capability(project: Path) -> None:
    practice = written(project, lambda _plan: None).nodes["practice"]
    assert "control" not in practice.capabilities
    assert not practice.controls


def test_the_suite_signs_in_at_a_portal_as_the_stacks_demo_clinician_and_staff(project: Path) -> None:
    secrets = StackState(project, "federation").secrets_dir("dic")
    for user in ("dr.weber", "desk.dic"):
        (secrets / f"idp-user-{user}").write_text(f"password of {user}\n")
    dic = written(project).nodes["dic"]
    clinician, staff = dic.logins["portal-clinician"], dic.logins["portal-staff"]
    assert clinician.token_url == "https://127.0.0.1:8443/idp/realms/hubnode/protocol/openid-connect/token"
    assert (clinician.client_id, clinician.username, staff.username) == ("portal", "dr.weber", "desk.dic")
    assert clinician.password.read_text() == "password of dr.weber\n"
    assert dic.has_credential("portal-staff")
    assert "portal-clinician" not in written(project).nodes["practice"].logins  # its passwords were never made
