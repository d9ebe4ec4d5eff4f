"""Tickets for a patient's ledger at other nodes: issued to the patient's portal, redeemed only where addressed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, select, update
from starlette.testclient import TestClient

from tests.unit.trustcentre.conftest import call, headers, identifier
from trustcentre.db import audit_log, ledger_tickets

KVNR = "http://fhir.de/sid/gkv/kvid-10"
MRN = "https://ukl.example/mrn"
PERSON = "urn:hubnode:person"


def person_at(client: TestClient, who: str, *identifiers: tuple[str, str]) -> str:
    """The id `who`'s node knows the person by, after linking them by `identifiers`."""
    answer = call(client, who, "epix/$requestMPI", *(identifier("identifier", s, v) for s, v in identifiers))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["parameter"][0]["valueIdentifier"]["value"])


def pseudonym(client: TestClient, person: str) -> str:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "target", "valueString": "study"}, {"name": "original", "valueString": person}],
    }
    answer = client.post("/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate", json=body, headers=headers("dic-connector"))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["parameter"][0]["part"][2]["valueIdentifier"]["value"])


def tickets(client: TestClient, person: str, who: str = "portal") -> Any:
    return call(client, who, "epix/$ledgerTickets", identifier("person", PERSON, person))


def by_site(answer: Any) -> dict[str, list[str]]:
    assert answer.status_code == 200, answer.text
    found: dict[str, list[str]] = {}
    for ticket in answer.json()["parameter"]:
        parts = {part["name"]: part for part in ticket["part"]}
        found.setdefault(parts["site"]["valueString"], []).append(parts["ticket"]["valueString"])
    return found


def redeem(client: TestClient, who: str, ticket: str) -> Any:
    return call(client, who, "epix/$redeemLedgerTicket", {"name": "ticket", "valueString": ticket})


def test_each_node_knowing_the_person_gets_a_ticket_that_gives_it_only_its_own_name(client: TestClient) -> None:
    at_dic = person_at(client, "dic-connector", (MRN, "m-1"), (KVNR, "A123456780"))
    at_practice = person_at(client, "practice-connector", (KVNR, "A123456780"))
    in_study = pseudonym(client, at_dic)

    issued = by_site(tickets(client, at_dic))

    assert set(issued) == {"practice", "research"}, "the portal's own node gets none"
    practice = redeem(client, "practice-connector", issued["practice"][0])
    assert practice.status_code == 200, practice.text
    assert practice.json()["parameter"] == [
        {"name": "requester", "valueString": "dic"},
        {"name": "name", "valueIdentifier": {"system": PERSON, "value": at_practice}},
    ]
    research = redeem(client, "research-connector", issued["research"][0])
    assert research.status_code == 200, research.text
    assert research.json()["parameter"][1]["valueIdentifier"] == {
        "system": "urn:hubnode:pseudonym:study",
        "value": in_study,
    }


def test_a_ticket_counts_only_at_its_node_and_until_it_expires(client: TestClient, database_url: str) -> None:
    at_dic = person_at(client, "dic-connector", (MRN, "m-1"), (KVNR, "A123456780"))
    person_at(client, "practice-connector", (KVNR, "A123456780"))
    pseudonym(client, at_dic)
    issued = by_site(tickets(client, at_dic))

    assert redeem(client, "research-connector", issued["practice"][0]).status_code == 404
    assert redeem(client, "practice-connector", issued["research"][0]).status_code == 404
    assert redeem(client, "practice-connector", "not-a-ticket").status_code == 404
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(update(ledger_tickets).values(expires=datetime.now(UTC) - timedelta(seconds=1)))
    expired = redeem(client, "practice-connector", issued["practice"][0])
    assert expired.status_code == 404
    assert expired.json()["resourceType"] == "OperationOutcome"
    with engine.connect() as connection:
        stored = {row.ticket_sha256 for row in connection.execute(select(ledger_tickets))}
    assert issued["practice"][0] not in stored, "only a ticket's hash is kept"


def test_only_a_nodes_portal_asks_and_only_for_persons_its_node_knows(client: TestClient) -> None:
    at_dic = person_at(client, "dic-connector", (MRN, "m-1"), (KVNR, "A123456780"))
    at_practice = person_at(client, "practice-connector", (KVNR, "A123456780"))

    assert tickets(client, at_practice).status_code == 403, "the practice's id of them is not the dic's"
    assert tickets(client, at_dic, who="admin").status_code == 403, "tickets are for a node's portal"
    assert tickets(client, at_dic, who="practice-portal").status_code == 403, "without audit-read"
    assert call(client, "portal", "epix/$ledgerTickets", identifier("person", MRN, "m-1")).status_code == 400
    assert call(client, "portal", "epix/$ledgerTickets").status_code == 400
    issued = by_site(tickets(client, at_dic))
    assert redeem(client, "practice-portal", issued["practice"][0]).status_code == 403, "without the ledger role"


def test_issuing_and_redeeming_are_audited_under_the_person(client: TestClient, database_url: str) -> None:
    at_dic = person_at(client, "dic-connector", (MRN, "m-1"), (KVNR, "A123456780"))
    at_practice = person_at(client, "practice-connector", (KVNR, "A123456780"))
    issued = by_site(tickets(client, at_dic))
    redeem(client, "practice-connector", issued["practice"][0])

    rows, named = audit_log.rows(create_engine(database_url), [at_dic, at_practice], None, None)
    operations = {row["operation"]: named[row["id"]] for row in rows}
    assert at_dic in operations["$ledgerTickets"]
    assert at_practice in operations["$redeemLedgerTicket"]
