"""Identity linkage: exact links on shared identifiers, similar people only ever proposed for review."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from servicekit.kvnr import KVNR_SYSTEM, make_kvnr
from tests.unit.trustcentre.conftest import headers
from trustcentre.db import person_demographics

EPIX = "/ttp-fhir/fhir/epix"
MRN = "https://ukl.example/mrn"
PRACTICE = "https://gp-leipzig.example/patient-id"


def call(client: TestClient, operation: str, *parts: dict[str, Any], who: str = "admin") -> Any:
    body = {"resourceType": "Parameters", "parameter": list(parts)}
    return client.post(f"{EPIX}/{operation}", content=json.dumps(body), headers=headers(who))


def ident(system: str, value: str) -> dict[str, Any]:
    return {"name": "identifier", "valueIdentifier": {"system": system, "value": value}}


def person(family: str, given: str, birth_date: str, gender: str = "female") -> list[dict[str, Any]]:
    return [
        {"name": "family", "valueString": family},
        {"name": "given", "valueString": given},
        {"name": "birthDate", "valueDate": birth_date},
        {"name": "gender", "valueString": gender},
    ]


def request_mpi(client: TestClient, *parts: dict[str, Any], source: str = "ukl") -> dict[str, Any]:
    response = call(client, "$requestMPI", *parts, {"name": "source", "valueString": source})
    assert response.status_code == 200, response.text
    out: dict[str, Any] = {"matches": []}
    for parameter in response.json()["parameter"]:
        if parameter["name"] == "mpi":
            out["mpi"] = parameter["valueIdentifier"]["value"]
        elif parameter["name"] == "created":
            out["created"] = parameter["valueBoolean"]
        else:
            out["matches"].append(
                {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}
            )
    return out


def test_a_shared_identifier_links_sources_to_one_person(client: TestClient) -> None:
    kvnr = make_kvnr("A", "12345678")
    hospital = request_mpi(client, ident(MRN, "4711"), ident(KVNR_SYSTEM, kvnr))
    practice = request_mpi(client, ident(PRACTICE, "p-1"), ident(KVNR_SYSTEM, kvnr), source="practice")
    assert hospital["created"] is True
    assert practice == {"mpi": hospital["mpi"], "created": False, "matches": []}
    again = request_mpi(client, ident(PRACTICE, "p-1"))
    assert again["mpi"] == hospital["mpi"]


def test_similar_demographics_become_a_possible_match_never_a_merge(client: TestClient) -> None:
    first = request_mpi(client, ident(MRN, "1"), *person("Müller", "Anna", "1970-03-04"))
    second = request_mpi(client, ident(PRACTICE, "x"), *person("Mueller", "Anna", "1970-03-04"), source="practice")
    assert second["created"] is True
    assert second["mpi"] != first["mpi"], "demographics alone must never link"
    [match] = second["matches"]
    assert match["candidate"]["value"] == first["mpi"]
    assert match["score"] >= 0.92
    unrelated = request_mpi(client, ident(MRN, "2"), *person("Schmidt", "Bernd", "1955-11-30", "male"))
    assert unrelated["matches"] == []


def test_a_replay_stores_what_a_source_says_of_a_person_once(client: TestClient) -> None:
    for _ in range(3):
        request_mpi(client, ident(MRN, "1"), *person("Müller", "Anna", "1970-03-04"))
    request_mpi(
        client, ident(MRN, "1"), {"name": "family", "valueString": "Müller"}, {"name": "given", "valueString": "Anna"}
    )
    request_mpi(client, ident(MRN, "1"), *person("Müller-Lang", "Anna", "1970-03-04"))
    with client.app.state.engine.connect() as connection:
        said = connection.execute(select(person_demographics.c.family, person_demographics.c.birth_date)).all()
    assert sorted(said, key=str) == sorted(
        [("Müller", date(1970, 3, 4)), ("Müller", None), ("Müller-Lang", date(1970, 3, 4))], key=str
    )


def test_a_reviewer_links_a_possible_match_and_the_identifiers_follow(client: TestClient) -> None:
    first = request_mpi(client, ident(MRN, "1"), *person("Weber", "Jana", "1980-01-02"))
    second = request_mpi(client, ident(PRACTICE, "w"), *person("Weber", "Jana", "1980-01-02"), source="practice")
    listed = call(client, "$possibleMatches").json()["parameter"]
    assert len(listed) == 1
    match_id = second["matches"][0]["id"]
    linked = call(
        client,
        "$resolvePossibleMatch",
        {"name": "id", "valueString": match_id},
        {"name": "resolution", "valueString": "link"},
    )
    assert linked.status_code == 200, linked.text
    assert (
        request_mpi(client, ident(MRN, "1"))["mpi"] == request_mpi(client, ident(PRACTICE, "w"))["mpi"] == second["mpi"]
    )
    assert first["mpi"] != second["mpi"]
    assert call(client, "$possibleMatches").json()["parameter"] == []
    again = call(
        client,
        "$resolvePossibleMatch",
        {"name": "id", "valueString": match_id},
        {"name": "resolution", "valueString": "separate"},
    )
    assert again.status_code == 409


def test_identifiers_of_two_persons_are_not_moved_but_flagged(client: TestClient) -> None:
    one = request_mpi(client, ident(MRN, "a"))
    two = request_mpi(client, ident(PRACTICE, "b"))
    both = request_mpi(client, ident(MRN, "a"), ident(PRACTICE, "b"))
    assert both["mpi"] == min(one["mpi"], two["mpi"])
    assert [m["candidate"]["value"] for m in both["matches"]] == [max(one["mpi"], two["mpi"])]
    assert request_mpi(client, ident(PRACTICE, "b"))["mpi"] == two["mpi"]


def test_review_needs_its_role(client: TestClient) -> None:
    assert call(client, "$possibleMatches", who="connector").status_code == 403
    assert call(client, "$requestMPI", ident(MRN, "1"), who="connector").status_code == 200


def node_link(client: TestClient, who: str, *parts: dict[str, Any]) -> dict[str, Any]:
    """`$requestMPI` as a node's connector: its answer's parameters by name."""
    response = call(client, "$requestMPI", *parts, who=who)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = {}
    for parameter in response.json()["parameter"]:
        found.setdefault(parameter["name"], []).append(parameter.get("valueIdentifier", parameter.get("part")))
    return found


def test_a_node_speaks_for_its_own_site_only(client: TestClient) -> None:
    response = call(
        client, "$requestMPI", ident(MRN, "1"), {"name": "source", "valueString": "practice"}, who="dic-connector"
    )
    assert response.status_code == 403
    assert "speaks for 'dic', not 'practice'" in response.json()["issue"][0]["diagnostics"]


def test_a_node_gets_its_own_id_of_a_person_never_the_mpi_and_each_node_another(client: TestClient) -> None:
    kvnr = make_kvnr("B", "22334455")
    at_dic = node_link(client, "dic-connector", ident(MRN, "b-1"), ident(KVNR_SYSTEM, kvnr))
    at_gp = node_link(client, "gp-connector", ident(KVNR_SYSTEM, kvnr))
    mpi = request_mpi(client, ident(KVNR_SYSTEM, kvnr))["mpi"]
    assert "mpi" not in at_dic
    [dic_id], [gp_id] = at_dic["person"], at_gp["person"]
    assert dic_id["system"] == gp_id["system"] == "urn:hubnode:person"
    assert len({dic_id["value"], gp_id["value"], mpi}) == 3
    assert node_link(client, "dic-connector", ident(MRN, "b-1"))["person"] == [dic_id], "stable on every replay"


def test_a_node_cannot_attach_another_sites_patient_number_to_a_person(client: TestClient) -> None:
    # The attack of the security review (H1): a practice links a victim's KVNR to a number of the dic's system,
    # so that the dic's next patient with that number would be merged into the victim.
    victim = make_kvnr("V", "12121212")
    request_mpi(client, ident(MRN, "victim-1"), ident(KVNR_SYSTEM, victim), source="dic")
    answer = node_link(client, "practice-connector", ident(KVNR_SYSTEM, victim), ident(MRN, "AUDIT-4242"))
    assert answer["ignoredIdentifier"] == [{"system": MRN, "value": "AUDIT-4242"}]
    stranger = node_link(client, "dic-connector", ident(MRN, "AUDIT-4242"))
    assert stranger["created"] is not None
    victims_person = node_link(client, "dic-connector", ident(MRN, "victim-1"))["person"]
    assert stranger["person"] != victims_person, "the dic's patient AUDIT-4242 is a person of their own"


def test_a_foreign_identifier_naming_another_person_becomes_a_possible_match_for_review(client: TestClient) -> None:
    first, second = make_kvnr("C", "10000001"), make_kvnr("C", "10000002")
    request_mpi(client, ident(MRN, "c-1"), ident(KVNR_SYSTEM, first), source="dic")
    request_mpi(client, ident(KVNR_SYSTEM, second), source="gp")
    answer = node_link(client, "practice-connector", ident(KVNR_SYSTEM, second), ident(MRN, "c-1"))
    assert len(answer["possibleMatch"]) == 1
    assert [p["name"] for p in answer["possibleMatch"][0]] == ["id", "score"], "no MPI in a node's answer"
    assert len(call(client, "$possibleMatches").json()["parameter"]) == 1


def test_a_node_asserting_nothing_of_its_own_is_refused(client: TestClient) -> None:
    response = call(client, "$requestMPI", ident(MRN, "only-theirs"), who="practice-connector")
    assert response.status_code == 403
    assert "may assert none of these identifiers" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([ident(KVNR_SYSTEM, "A123456789")], "KVNR 'A123456789': the check digit should be 0, got 9"),
        ([ident(KVNR_SYSTEM, "1234567890")], "KVNR '1234567890': the first character must be a letter A-Z, got '1'"),
        (
            [{"name": "identifier", "valueString": "4711"}],
            "Parameters.parameter[0] (identifier) must carry a valueIdentifier with system and value",
        ),
        ([], "parameter 'identifier' is required"),
        (
            [ident(MRN, "1"), {"name": "family", "valueString": "X"}, {"name": "gender", "valueString": "f"}],
            "gender 'f': one of female, male, other, unknown",
        ),
    ],
)
def test_bad_identifiers_are_refused_and_nothing_is_stored(
    client: TestClient, parts: list[dict[str, Any]], message: str
) -> None:
    response = call(client, "$requestMPI", *parts, {"name": "source", "valueString": "ukl"})
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["diagnostics"] == message
    assert request_mpi(client, ident(MRN, "probe"))["created"] is True
