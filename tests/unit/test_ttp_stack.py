"""`trustCentre` on a node: its connector speaks the MOSAIC IGs, to the federation's trust centre or the site's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.errors import HubnodeError
from infra.local import secret_file
from infra.plan import TRUSTCENTRE_CA_PATH, plan_stack
from infra.spec import TtpSpec
from tests.unit.test_federation_plan import FEDERATION, callers_of, federation, node_entry, problems_of, service

CA = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
SITE_TTP = {"url": "https://ttp.ukl.example/ttp-fhir/fhir", "epixDomain": "MII", "caCertificate": CA}


def dic(**extra: Any) -> dict[str, Any]:
    return node_entry("dic", "dic", 8443, 9443, **extra)


def practice(**extra: Any) -> dict[str, Any]:
    return node_entry("practice", "practice", 8444, 9444, **extra)


DOMAINS = [{"name": "dic-patients", "prefix": "DIC"}]


def test_the_local_federations_dic_links_through_the_e_pix_ig_in_a_declared_domain() -> None:
    [dic_node] = [n for n in FEDERATION.nodes if n.site == "dic"]
    assert dic_node.ttp == TtpSpec(epix_domain="dic-patients")
    plans = {plan.site: plan for plan in plan_stack(FEDERATION)}
    connector = service(plans["dic"], "connector")
    assert connector.env["CN_EPIX_DOMAIN"] == "dic-patients"
    assert connector.env["CN_TRUSTCENTRE_URL"] == "http://trustcentre:8081/ttp-fhir/fhir"
    grant = next(g for g, _ in callers_of(plans["dic"]).tokens if g.name == "connector")
    assert "dic-patients" in grant.domains
    assert "CN_EPIX_DOMAIN" not in service(plans["practice"], "connector").env, "the practice keeps $requestMPI"


def test_a_node_on_its_sites_own_gateway_gets_its_url_token_and_ca_and_no_local_trust_centre() -> None:
    spec = federation(dic(), practice(trustCentre={**SITE_TTP, "epixSource": "Praxisnetz"}), domains=DOMAINS)
    plans = {plan.site: plan for plan in plan_stack(spec)}
    connector = service(plans["practice"], "connector")
    assert connector.env["CN_TRUSTCENTRE_URL"] == "https://ttp.ukl.example/ttp-fhir/fhir"
    assert connector.env["CN_EPIX_SOURCE"] == "Praxisnetz"
    assert connector.env["CN_TRUSTCENTRE_CA_FILE"] == TRUSTCENTRE_CA_PATH
    assert {f.path: f.content for f in connector.files}[TRUSTCENTRE_CA_PATH] == CA
    [token] = [s for s in connector.secrets if s.name == "cn-tc-token"]
    assert token.provided, "the site gives its gateway's token; it is never generated"
    grants = [g.name for g in callers_of(plans["dic"]).nodes]
    assert "practice-connector" in grants  # its portal and ledger still use the federation's trust centre


@pytest.mark.parametrize(
    ("ttp", "named"),
    [
        ({"url": "https://ttp.ukl.example/ttp-fhir/fhir", "caCertificate": CA}, "trustCentre.epixDomain"),
        ({**SITE_TTP, "password": "x"}, "trustCentre.password"),
        ({"epixDomain": " MII"}, "trustCentre.epixDomain"),
        ({"epixDomain": "MII", "url": "ftp://ttp"}, "trustCentre.url"),
        ({"epixDomain": "MII", "url": "https://ttp.ukl.example/ttp-fhir/fhir"}, "trustCentre.caCertificate"),
        ({"epixDomain": "MII", "url": "http://ttp:8080/ttp-fhir/fhir", "caCertificate": CA}, "caCertificate"),
        ({**SITE_TTP, "caCertificate": "not a certificate"}, "trustCentre.caCertificate"),
        ({"epixDomain": "nowhere"}, "trustCentre.epixDomain"),
        ("MII", "trustCentre"),
    ],
)
def test_a_wrong_trust_centre_entry_is_named(ttp: object, named: str) -> None:
    problems = problems_of(dic(), practice(trustCentre=ttp), domains=DOMAINS)
    assert any(f"nodes[1].{named}" in p or named in p for p in problems), problems


def test_a_node_with_its_own_trust_centre_component_cannot_point_its_connector_elsewhere() -> None:
    problems = problems_of(dic(trustCentre=SITE_TTP), practice(), domains=DOMAINS)
    assert any("nodes[0].trustCentre.url" in p for p in problems), problems


def test_a_provided_secret_is_never_generated_and_its_absence_says_where_it_goes(tmp_path: Path) -> None:
    spec = federation(dic(), practice(trustCentre=SITE_TTP), domains=DOMAINS)
    [token] = [
        s
        for plan in plan_stack(spec)
        if plan.site == "practice"
        for s in service(plan, "connector").secrets
        if s.name == "cn-tc-token"
    ]
    with pytest.raises(HubnodeError, match=r"secrets/practice/cn-tc-token is missing") as caught:
        secret_file(tmp_path, "practice", token)
    assert "write the token" in str(caught.value)
    given = tmp_path / "secrets" / "practice" / "cn-tc-token"
    given.write_text("site-token")
    assert secret_file(tmp_path, "practice", token).read_text() == "site-token"
