"""The portal's `/metrics`: sign-ins by outcome, pages by route template, none of a patient's values."""

from __future__ import annotations

from tests.unit.portal.conftest import Node
from tests.unit.servicekit.scrape import requests, scrape, value


def test_sign_ins_are_counted_by_outcome_and_pages_by_their_template(node: Node) -> None:
    before = value(scrape(node.portal), "hubnode_audit_records")
    assert node.sign_in("erika").status_code == 303
    assert node.portal.get("/portal/auth/callback?state=forged&code=x").status_code == 400
    assert node.portal.get("/portal/patients/local/mrn-4711").status_code == 403  # a patient is no clinician
    samples = scrape(node.portal)
    assert value(samples, "hubnode_portal_sign_ins", outcome="success") == 1
    assert value(samples, "hubnode_portal_sign_ins", outcome="refused") == 1
    counted = requests(samples)
    assert counted[("GET", "/portal/auth/callback", "3xx")] == 1
    assert counted[("GET", "/portal/auth/callback", "4xx")] == 1
    assert counted[("GET", "/portal/patients/{kind}/{value}", "4xx")] == 1
    assert value(samples, "hubnode_audit_records") == before + 3, "the sign-in and both refusals"
    assert node.portal.get("/portal/metrics").status_code == 404, "not under the path the gateway passes on"
    text = node.portal.get("/metrics").text
    assert "mrn-4711" not in text
    assert "erika" not in text
