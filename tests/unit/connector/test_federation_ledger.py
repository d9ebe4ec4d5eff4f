"""A patient's ledger gathered from the other nodes with the trust centre's tickets (connector.federation_ledger)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from fixtures.kvnr import make_kvnr
from servicekit.allowlist import NodeRole
from tests.unit.connector.federation import CLINIC, Federation, bearer, federation, value

SITES = {"dic": NodeRole.DIC, "practice": NodeRole.PRACTICE, "research": NodeRole.RESEARCH}
PERSON = "urn:hubnode:person"


@pytest.fixture
def fed(tmp_path: Path, trustcentre_transport: httpx.ASGITransport) -> Federation:
    return federation(tmp_path, trustcentre_transport, SITES)


def person_at(fed: Federation, site: str) -> str:
    [patient] = fed[site].fhir.of_type("Patient")
    return str(next(i["value"] for i in patient["identifier"] if i["system"] == PERSON))


def shared(fed: Federation, pid: str) -> str:
    """Patient `pid` of the dic (with a KVNR, so the practice links them too), sent to the practice
    (careSummary) and to the research node (dataSend)."""
    fed["dic"].ingest_patient(pid, codes=("C50.4",), kvnr=make_kvnr("K", "1234567" + pid[-1]))
    fed.consent(pid, "5", "8")
    patient = value("patient", "valueIdentifier", {"system": CLINIC, "value": pid})
    for process, target, *more in (("careSummary", "practice"), ("dataSend", "research", "study")):
        inputs = [value("target", "valueString", target), patient]
        inputs += [value("project", "valueString", project) for project in more]
        assert fed["dic"].start(process, *inputs).json()["status"] == "completed"
    return person_at(fed, "dic")


def tickets_for(fed: Federation, person: str) -> list[dict[str, Any]]:
    """What the dic's portal gets from the trust centre for its patient `person`."""
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "person", "valueIdentifier": {"system": PERSON, "value": person}}],
    }
    with TestClient(fed.trustcentre.app) as client:
        answer = client.post("/ttp-fhir/fhir/epix/$ledgerTickets", json=body, headers=bearer("portal"))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["parameter"])


def ledger(fed: Federation, tickets: list[dict[str, Any]], who: str = "auditor") -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": tickets}
    return fed["dic"].client.post("/fhir/$federationLedger", json=body, headers=bearer(who))


def by_site(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        where = resource["source"]["site"] if resource["resourceType"] == "AuditEvent" else f"missing:{resource['id']}"
        found.setdefault(where, []).append(resource)
    return found


def test_the_practice_and_the_research_node_tell_what_they_did_and_nothing_that_names_the_patient(
    fed: Federation,
) -> None:
    person = shared(fed, "p1")
    answer = ledger(fed, tickets_for(fed, person))

    assert answer.status_code == 200, answer.text
    found = by_site(answer.json())
    assert {e["subtype"][0]["code"] for e in found["practice"]} >= {"careSummary"}
    assert {e["subtype"][0]["code"] for e in found["research"]} >= {"dataSend"}
    text = json.dumps(answer.json())
    for secret in (person_at(fed, "practice"), person, "p1", CLINIC):
        assert secret not in text, f"{secret} left its node"
    assert all("entity" not in e and "id" not in e for site in ("practice", "research") for e in found[site])


def test_each_node_records_that_it_answered_and_for_whom(fed: Federation) -> None:
    person = shared(fed, "p2")
    ledger(fed, tickets_for(fed, person))

    answered = [e for e in fed["practice"].audit() if e["subtype"][0]["code"] == "ledger"]
    assert [e["agent"][0]["who"]["display"] for e in answered] == ["peer:dic"]
    assert answered[0]["entity"][0]["what"]["identifier"]["value"] == person_at(fed, "practice")


def test_a_node_that_is_down_is_named_and_the_others_still_answer(fed: Federation) -> None:
    person = shared(fed, "p3")
    fed.down.add("research")
    answer = ledger(fed, tickets_for(fed, person))

    found = by_site(answer.json())
    assert "practice" in found
    [missing] = found["missing:research"]
    assert "could not be read" in missing["issue"][0]["diagnostics"]


def test_a_ticket_works_only_for_the_node_it_was_issued_to(fed: Federation) -> None:
    person = shared(fed, "p4")
    research_ticket = next(
        part["valueString"]
        for ticket in tickets_for(fed, person)
        for part in ticket["part"]
        if part["name"] == "ticket" and ticket["part"][0]["valueString"] == "research"
    )
    # the ticket presented at the practice (as if the dic had sent it there): the trust centre refuses it
    answer = ledger(
        fed,
        [
            {
                "name": "ticket",
                "part": [
                    {"name": "site", "valueString": "practice"},
                    {"name": "ticket", "valueString": research_ticket},
                ],
            }
        ],
    )
    [missing] = by_site(answer.json())["missing:practice"]
    assert "HTTP 403" in missing["issue"][0]["diagnostics"]
    refused = [e for e in fed["practice"].audit() if e["subtype"][0]["code"] == "ledger"]
    assert [e["outcome"] for e in refused] == ["4"]


@pytest.mark.parametrize(
    "tickets",
    [
        [{"name": "patient", "valueString": "x"}],
        [{"name": "ticket", "part": [{"name": "site", "valueString": "practice"}]}],
        [{"name": "ticket", "part": [{"name": "site", "valueInteger": 1}, {"name": "ticket", "valueString": "t"}]}],
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong(fed: Federation, tickets: list[dict[str, Any]]) -> None:
    answer = ledger(fed, tickets)
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"


def test_only_a_caller_allowed_to_read_audit_may_ask(fed: Federation) -> None:
    assert ledger(fed, [], who="starter").status_code == 403
