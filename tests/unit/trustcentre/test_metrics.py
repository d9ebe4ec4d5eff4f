"""The trust centre's `/metrics`: its operations by route template, the audit records it has written."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from tests.unit.servicekit.scrape import requests, scrape, value
from tests.unit.trustcentre.conftest import headers

GPAS = "/ttp-fhir/fhir/gpas"


def pseudonymise(client: TestClient, *originals: str, who: str = "admin") -> int:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "target", "valueString": "study"},
            *({"name": "original", "valueString": o} for o in originals),
        ],
    }
    answer = client.post(f"{GPAS}/$pseudonymizeAllowCreate", content=json.dumps(body), headers=headers(who))
    return answer.status_code


def test_operations_are_counted_by_template_and_each_audit_record_written_is_counted(client: TestClient) -> None:
    before = value(scrape(client), "hubnode_audit_records")
    assert pseudonymise(client, "mrn-4711") == 200
    assert pseudonymise(client, "mrn-4712", who="nobody") == 403
    samples = scrape(client)
    assert value(samples, "hubnode_audit_records") == before + 2, "the refusal is audited too"
    counted = requests(samples)
    assert counted[("POST", "/ttp-fhir/fhir/{service}/{operation}", "2xx")] == 1
    assert counted[("POST", "/ttp-fhir/fhir/{service}/{operation}", "4xx")] == 1
    text = client.get("/metrics").text
    assert "mrn-4711" not in text
    assert "pseudonymizeAllowCreate" not in text, "the operation is a path parameter, not a label"
