"""Federation stacks: what the spec accepts, what the plan makes of it, and the files a node is given."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra import pki
from infra.federation_files import prepare_federation_files
from infra.plan import (
    CallersFile,
    Grant,
    NginxSecretInclude,
    NodePlan,
    ServicePlan,
    plan_stack,
)
from infra.spec import SpecError, StackSpec, parse_stack
from infra.stackfile import load_stack
from tests.conftest import PROJECT_DIR

FEDERATION = load_stack(PROJECT_DIR, "federation")
THUMBPRINT = "ab" * 64


def node_entry(site: str, role: str, gateway: int, peer: int, **extra: Any) -> dict[str, Any]:
    return {"site": site, "role": role, "ports": {"gateway": gateway, "peer": peer}, **extra}


def federation(*nodes: dict[str, Any], **config: Any) -> StackSpec:
    return parse_stack("fed", {"hubnode:nodes": list(nodes), **{f"hubnode:{k}": v for k, v in config.items()}})


def problems_of(*nodes: dict[str, Any], **config: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        federation(*nodes, **config)
    return [str(p) for p in caught.value.problems]


def service(plan: NodePlan, component: str) -> ServicePlan:
    return next(s for s in plan.services if s.component == component)


def plans_by_site() -> dict[str, NodePlan]:
    return {plan.site: plan for plan in plan_stack(FEDERATION)}


def test_the_example_federation_has_a_dic_a_practice_and_a_research_node_with_their_role_components() -> None:
    assert [(n.site, n.role, n.components) for n in FEDERATION.nodes] == [
        ("dic", "dic", ("fhir", "trustcentre", "connector", "gateway", "idp", "portal")),
        ("practice", "practice", ("fhir", "connector", "gateway", "idp", "portal")),
        ("research", "research", ("fhir", "connector", "gateway")),
    ]
    assert [n.host for n in FEDERATION.nodes] == ["dic.hubnode.test", "practice.hubnode.test", "research.hubnode.test"]
    assert FEDERATION.trust_centre is not None
    assert FEDERATION.trust_centre.site == "dic"
    assert FEDERATION.trust_centre.domains, "pseudonym domains live with the federation's trust centre"


def test_nodes_sharing_a_host_port_are_all_named() -> None:
    [problem] = problems_of(node_entry("dic", "dic", 8443, 9443), node_entry("gp", "practice", 8443, 9444))
    assert "dic.gateway=8443" in problem
    assert "gp.gateway=8443" in problem


def test_a_federation_of_connectors_without_a_trust_centre_is_refused() -> None:
    problems = problems_of(node_entry("gp", "practice", 8443, 9443), node_entry("lab", "research", 8444, 9444))
    assert any("connectors need a trust centre" in p for p in problems)


def test_a_connector_needs_fhir_and_a_gateway_on_its_node() -> None:
    problems = problems_of(node_entry("dic", "dic", 8443, 9443, components=["trustcentre", "connector", "gateway"]))
    expected = "a connector needs fhir and gateway on its node"
    assert problems == [f"hubnode:nodes[0].components = ['trustcentre', 'connector', 'gateway']: {expected}"]


def test_top_level_node_keys_are_refused_in_a_federation_stack() -> None:
    problems = problems_of(node_entry("dic", "dic", 8443, 9443), site="dic")
    assert problems == ["hubnode:site = 'dic': in a federation stack, set this per node under hubnode:nodes"]


def test_a_peer_needs_an_https_address_and_a_sha512_thumbprint() -> None:
    peers = [{"site": "remote", "role": "dic", "address": "http://remote.example/fhir", "thumbprint": "abc"}]
    problems = problems_of(node_entry("dic", "dic", 8443, 9443), peers=peers)
    assert [p.split(" = ")[0] for p in problems] == ["hubnode:peers[0].address", "hubnode:peers[0].thumbprint"]


def test_a_project_must_name_a_declared_pseudonym_domain() -> None:
    problems = problems_of(node_entry("dic", "dic", 8443, 9443), projects=[{"name": "study", "domain": "nowhere"}])
    assert problems == ["hubnode:projects[0].domain = 'nowhere': one of hubnode:domains: []"]


def test_a_projects_description_reaches_the_portals_ledger_and_a_wrong_one_is_named() -> None:
    described = {
        "name": "cohort",
        "domain": "cohort",
        "title": "Verläufe nach Darmkrebs",
        "summary": "Was hilft nach der Operation?",
        "recipient": "Register",
        "categories": ["Diagnosen", "Laborwerte"],
    }
    spec = federation(
        node_entry(
            "dic", "dic", 8443, 9443, components=["fhir", "trustcentre", "connector", "gateway", "idp", "portal"]
        ),
        domains=[{"name": "cohort"}],
        projects=[described],
    )
    portal = service(plan_stack(spec)[0], "portal")
    [projects] = [f for f in portal.files if f.path == portal.env["PT_PROJECTS_FILE"]]
    assert json.loads(projects.content) == {
        "cohort": {k: v for k, v in described.items() if k not in ("name", "domain")}
    }
    wrong = {"name": "cohort", "domain": "cohort", "title": 7, "categories": "Diagnosen"}
    problems = problems_of(node_entry("dic", "dic", 8443, 9443), domains=[{"name": "cohort"}], projects=[wrong])
    assert problems == [
        "hubnode:projects[0].title = 7: a text",
        "hubnode:projects[0].categories = 'Diagnosen': a list of texts",
    ]


def test_a_site_with_a_remote_trust_centre_reaches_it_behind_the_peers_gateway() -> None:
    peer = {"site": "ttp", "role": "ttp", "address": "https://ttp.hub.example:9443/fhir", "thumbprint": THUMBPRINT}
    spec = federation(node_entry("gp", "practice", 8443, 9443), peers=[peer])
    [plan] = plan_stack(spec)
    assert service(plan, "connector").env["CN_TRUSTCENTRE_URL"] == "https://ttp.hub.example:9443/ttp-fhir/fhir"


def test_behind_a_gateway_only_the_gateway_publishes_ports() -> None:
    for plan in plan_stack(FEDERATION):
        published = {s.component for s in plan.services if s.ports}
        assert published == {"gateway"}, plan.site
        assert all(p.host_ip == "127.0.0.1" for p in service(plan, "gateway").ports)


def test_connectors_find_the_trust_centre_beside_them_or_behind_the_dic_gateway() -> None:
    plans = plans_by_site()
    assert service(plans["dic"], "connector").env["CN_TRUSTCENTRE_URL"] == "http://trustcentre:8081/ttp-fhir/fhir"
    assert "CN_TRUSTCENTRE_TOKEN_FILE" in service(plans["dic"], "connector").env
    practice = service(plans["practice"], "connector").env
    assert practice["CN_TRUSTCENTRE_URL"] == "https://dic.hubnode.test:9443/ttp-fhir/fhir"
    assert "CN_TRUSTCENTRE_TOKEN_FILE" not in practice


def test_gateways_answer_to_their_host_name_on_the_shared_peers_network() -> None:
    for plan in plan_stack(FEDERATION):
        gateway = service(plan, "gateway")
        [attachment] = gateway.networks
        assert attachment.network == plan.peers_network == "hubnode-federation-peers"
        assert attachment.aliases == (f"{plan.site}.hubnode.test",)
        assert gateway.depends_on == tuple(
            c for c in ("connector", "trustcentre") if c in [s.component for s in plan.services]
        )


def callers_of(plan: NodePlan) -> CallersFile:
    trustcentre = service(plan, "trustcentre")
    [callers] = [s for s in trustcentre.secrets if s.name == "tc-callers"]
    assert isinstance(callers.derived, CallersFile)
    return callers.derived


def test_the_trust_centre_knows_other_nodes_connectors_by_certificate_the_research_node_only_for_ledgers() -> None:
    callers = callers_of(plans_by_site()["dic"])
    assert [grant.name for grant in callers.nodes] == ["practice-connector", "research-connector"]
    assert callers.nodes[0].site == "practice"
    research = callers.nodes[1]
    assert (research.site, research.roles, research.identifier_systems, research.domains) == (
        "research",
        ("ledger",),
        (),
        (),
    )
    env = service(plans_by_site()["dic"], "trustcentre").env
    assert env["TC_ALLOW_LIST_FILE"] == "/run/hubnode/allow-list.json"
    assert env["TC_CRL_FILE"] == "/run/hubnode/federation.crl"
    assert env["TC_GATEWAY_SECRET_FILE"] == "/run/secrets/gateway-secret"


def test_a_connector_may_link_only_its_own_identifier_systems_and_use_only_its_projects_and_e_pix_domains() -> None:
    callers = callers_of(plans_by_site()["dic"])
    [(dic_connector, token)] = [(grant, secret) for grant, secret in callers.tokens if grant.name == "connector"]
    [practice, _research] = callers.nodes
    assert token == "cn-tc-token"
    assert dic_connector.site == "dic"
    assert dic_connector.identifier_systems[:2] == (
        "https://hubnode.org/fhir/sid/source/dic",
        "https://hubnode.org/fhir/sid/mrn/dic",
    )
    assert dic_connector.domains == ("breast-cancer-outcomes", "colorectal-outcomes", "dic-patients", "research-demo")
    assert practice.identifier_systems == (
        "https://hubnode.org/fhir/sid/source/practice",
        "https://hubnode.org/fhir/sid/mrn/practice",
    )
    assert practice.domains == (), "a practice sends no research data, so it pseudonymises in no project's domain"
    assert set(practice.roles) == {"linkage", "consent-check", "pseudonymize", "ledger"}


def test_a_project_naming_its_senders_opens_its_domain_to_them_alone() -> None:
    spec = federation(
        node_entry("dic", "dic", 8443, 9443),
        node_entry("gp", "practice", 8444, 9444),
        domains=[{"name": "cohort"}],
        projects=[{"name": "cohort", "domain": "cohort", "senders": ["gp"]}],
    )
    callers = callers_of(plan_stack(spec)[0])
    assert callers.nodes[0].domains == ("cohort",)
    assert next(grant for grant, _ in callers.tokens if grant.name == "connector").domains == ()


def test_a_callers_file_holds_token_hashes_never_tokens() -> None:
    admin = Grant("admin", ("read",))
    peer = Grant("peer", ("linkage",), "gp", ("https://gp.example/pid",), ())
    rendered = CallersFile(((admin, "admin-token"),), (peer,)).render({"admin-token": "s3cret"})
    assert "s3cret" not in rendered
    assert json.loads(rendered)["callers"] == [
        {"name": "admin", "roles": ["read"], "token_sha256": hashlib.sha256(b"s3cret").hexdigest()},
        {
            "name": "peer",
            "roles": ["linkage"],
            "site": "gp",
            "identifier_systems": ["https://gp.example/pid"],
            "domains": [],
            "certificate": True,
        },
    ]


def test_the_gateway_secret_reaches_nginx_as_a_variable_definition() -> None:
    include = NginxSecretInclude("gateway-secret", "hubnode_gateway_secret")
    assert (
        include.render({"gateway-secret": "abc-123\n"})
        == 'map "" $hubnode_gateway_secret {\n    default "abc-123";\n}\n'
    )


def test_nginx_reports_a_node_certificate_as_its_site_and_federation() -> None:
    now = datetime.now(UTC)
    node = pki.issue_node(pki.issue_ca("hubnode-local", now), "practice", ["practice.hubnode.test"], now)
    assert node.certificate.subject.rfc4514_string() == "CN=practice,O=hubnode-local"


def test_federation_files_carry_every_nodes_thumbprint_and_are_reused_on_the_next_run(tmp_path: Path) -> None:
    files = prepare_federation_files(FEDERATION, tmp_path, progress=None)
    bundle = json.loads(files("practice", "allow-list").read_text())
    organisations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Organization"]
    certificate = pki.load_certificate(files("practice", "node-certificate").read_bytes())
    thumbprints = {o["identifier"][0]["value"]: o["extension"][0]["valueString"] for o in organisations}
    assert sorted(thumbprints) == ["dic", "practice", "research"]
    assert thumbprints["practice"] == pki.thumbprint(certificate)
    again = prepare_federation_files(FEDERATION, tmp_path, progress=None)
    assert again("practice", "node-certificate").read_bytes() == files("practice", "node-certificate").read_bytes()
    key_copy = files("dic", "node-key")
    assert stat.S_IMODE(key_copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_copy.parent.stat().st_mode) == 0o700
    crl = pki.x509.load_pem_x509_crl(files("dic", "revocation-list").read_bytes())
    assert crl.is_signature_valid(pki.load_certificate(files("dic", "federation-ca").read_bytes()).public_key())
    probe = pki.load_certificate((tmp_path / "pki" / "revoked-probe.crt").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(probe.serial_number) is not None, "a local stack keeps one"
    assert not (tmp_path / "pki" / "ca.key").exists(), "the CA key lies apart from what nodes are given"


def test_each_connector_is_told_its_nodes_validation_modes() -> None:
    env = service(plans_by_site()["dic"], "connector").env
    assert (env["CN_VALIDATION"], env["CN_VALIDATION_TERMINOLOGY"]) == ("strict", "warn")
