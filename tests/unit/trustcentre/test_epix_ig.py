"""The E-PIX IG operations' semantics: identities, match status, review of possible matches, refusals."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from servicekit.auth import Authenticator, token_hash
from servicekit.kvnr import KVNR_SYSTEM, make_kvnr
from tests.unit.trustcentre.conftest import SITE_SYSTEMS, connector, headers, settings
from trustcentre.app import create_app
from trustcentre.db import audit_log, person_demographics, person_identifiers, persons, possible_matches
from trustcentre.epix_resources import IDENTITY_SYSTEM, MPI_SYSTEM, SAVE_ACTION_SYSTEM
from trustcentre.persons import PERSON_SYSTEM

EPIX = "/ttp-fhir/fhir/epix"
MRN = SITE_SYSTEMS["dic"][1]
DOMAIN = {"name": "domain", "valueString": "MIRACUM"}
#: The dic's connector, allowed the matching domain.
MIRACUM_CONNECTOR = connector("dic", frozenset({"MIRACUM"}))


@pytest.fixture
def epix(database_url: str) -> Iterator[TestClient]:
    base = settings(database_url)
    callers = {**base.authenticator.by_token_hash, token_hash("token-of-miracum-connector"): MIRACUM_CONNECTOR}
    configured = dataclasses.replace(
        base, authenticator=Authenticator(callers, {}), domains={"MIRACUM": {}, "study": {}}, max_batch=5
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        yield client


def engine_of(client: TestClient) -> Engine:
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def patient(family: str, given: str, born: str, *identifiers: tuple[str, str], **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": s, "value": v} for s, v in identifiers],
        "name": [{"family": family, "given": given.split()}],
        "birthDate": born,
        **more,
    }


def post(client: TestClient, operation: str, *parts: dict[str, Any], who: str = "admin") -> Any:
    return client.post(
        f"{EPIX}/{operation}", json={"resourceType": "Parameters", "parameter": list(parts)}, headers=headers(who)
    )


def add(
    client: TestClient, *patients: dict[str, Any], save: str = "SAVE_ALL", source: str = "dic", who: str = "admin"
) -> list[dict[str, Any]]:
    """`$addPatient`; each matchResult as {status, mpi, identities}."""
    response = post(
        client,
        "$addPatient",
        DOMAIN,
        {"name": "source", "valueString": source},
        *({"name": "identity", "resource": p} for p in patients),
        {"name": "saveAction", "valueCoding": {"system": SAVE_ACTION_SYSTEM, "code": save}},
        {"name": "forceReferenceUpdate", "valueBoolean": False},
        who=who,
    )
    assert response.status_code == 200, response.text
    return [results(r["part"]) for r in response.json()["parameter"]]


def results(parts: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {"identities": []}
    for part in parts:
        if part["name"] == "matchStatus":
            found["status"] = part["valueCoding"]["code"]
        elif part["name"] == "mpiPerson":
            found["person"] = part["resource"]["identifier"][0]
            found["mpi"] = found["person"]["value"]
        elif part["name"] == "identity":
            found["identities"].append(part["resource"])
    return found


def mpi_id(value: str, name: str = "mpiId") -> dict[str, Any]:
    return {"name": name, "valueIdentifier": {"system": MPI_SYSTEM, "value": value}}


def matches_of(client: TestClient, mpi: str | None = None) -> list[dict[str, Any]]:
    response = post(client, "$queryPossibleMatches", DOMAIN, *([mpi_id(mpi)] if mpi else []))
    assert response.status_code == 200, response.text
    return [
        {
            "items": [p["resource"] for p in match["part"] if p["name"] == "matchItem"],
            **{
                p["name"]: p.get("valueInteger", p.get("valueDecimal"))
                for p in match["part"]
                if p["name"] != "matchItem"
            },
        }
        for match in response.json().get("parameter", [])
    ]


def count(client: TestClient, table: Any) -> int:
    with engine_of(client).connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_typo_makes_a_possible_match_that_a_reviewer_resolves_by_assigning_the_identity(epix: TestClient) -> None:
    [first] = add(epix, patient("Müller", "Anna", "1970-03-04", (MRN, "1")))
    [second] = add(epix, patient("Mueler", "Anna", "1970-03-04", (MRN, "2")))
    assert (first["status"], second["status"]) == ("NO_MATCH", "POSSIBLE_MATCH")
    assert second["mpi"] != first["mpi"], "demographics alone never link"
    [match] = matches_of(epix, second["mpi"])
    assert 0.92 <= match["matchScore"] < 1
    assert {item["name"][0]["family"] for item in match["items"]} == {"Müller", "Mueler"}
    kept = next(item for item in match["items"] if item["name"][0]["family"] == "Müller")
    response = post(
        epix,
        "$assignIdentity",
        DOMAIN,
        {"name": "linkId", "valueInteger": match["linkId"]},
        {"name": "identityReference", "valueReference": {"reference": f"Patient/{kept['id']}"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["issue"][0]["severity"] == "information"
    assert matches_of(epix) == []
    with engine_of(epix).connect() as connection:
        owners = set(connection.execute(select(person_identifiers.c.mpi)).scalars())
        identities = set(connection.execute(select(person_demographics.c.mpi)).scalars())
    assert owners == identities == {first["mpi"]}
    [again] = add(epix, patient("Mueler", "Anna", "1970-03-04", (MRN, "2")))
    assert (again["status"], again["mpi"]) == ("PERFECT_MATCH", first["mpi"])
    assert len(again["identities"]) == 2


def test_swapped_names_and_transliterations_are_found_through_the_blocking_keys(epix: TestClient) -> None:
    [stored] = add(epix, patient("Weißbäcker", "Jürgen", "1948-11-02", (MRN, "1")))
    [swapped] = add(epix, patient("Juergen", "Weissbaecker", "1948-11-02", (MRN, "2")))
    [other_year] = add(epix, patient("Weißbäcker", "Jürgen", "1958-11-02", (MRN, "3")))
    assert swapped["status"] == "POSSIBLE_MATCH"
    [match] = matches_of(epix, stored["mpi"])
    assert {item["id"] for item in match["items"]} == {stored["identities"][0]["id"], swapped["identities"][0]["id"]}
    assert other_year["status"] == "NO_MATCH"


def test_removed_matches_are_no_longer_listed_and_cannot_be_removed_twice(epix: TestClient) -> None:
    add(epix, patient("Schmidt", "Karl", "1960-01-02", (MRN, "1")))
    add(epix, patient("Schmitt", "Karl", "1960-01-02", (MRN, "2")))
    [match] = matches_of(epix)
    removal = (DOMAIN, {"name": "linkId", "valueInteger": match["linkId"]}, {"name": "comment", "valueString": "twins"})
    response = post(epix, "$removePossibleMatches", *removal)
    assert response.status_code == 200, response.text
    assert response.json()["issue"][0]["diagnostics"] == "removed 1 possible match(es)."
    assert matches_of(epix) == []
    assert post(epix, "$removePossibleMatches", *removal).status_code == 409


def test_a_reviewer_adds_a_possible_match_scored_by_the_persons_identities(epix: TestClient) -> None:
    [a] = add(epix, patient("Meier", "Jonas", "1990-05-06", (MRN, "1")))
    [b] = add(epix, patient("Becker", "Lea", "1985-07-08", (MRN, "2")))
    response = post(epix, "$addPossibleMatch", DOMAIN, mpi_id(a["mpi"]), mpi_id(b["mpi"], "aliasMpiId"))
    assert response.status_code == 200, response.text
    [match] = matches_of(epix, a["mpi"])
    assert match["matchScore"] < 0.8
    assert post(epix, "$addPossibleMatch", DOMAIN, mpi_id(a["mpi"]), mpi_id(a["mpi"], "aliasMpiId")).status_code == 422


def test_a_replay_is_a_perfect_match_and_a_new_address_updates_the_identity(epix: TestClient) -> None:
    anna = patient("Müller", "Anna", "1970-03-04", (MRN, "1"))
    [first] = add(epix, anna)
    [replay] = add(epix, anna)
    [moved] = add(epix, {**anna, "address": [{"city": "Leipzig"}]})
    [renamed] = add(epix, {**anna, "name": [{"family": "Schulz", "given": ["Anna"]}]})
    assert [r["status"] for r in (first, replay, moved, renamed)] == [
        "NO_MATCH",
        "PERFECT_MATCH",
        "PERFECT_MATCH_WITH_UPDATE",
        "MATCH",
    ]
    assert {r["mpi"] for r in (first, replay, moved, renamed)} == {first["mpi"]}
    assert [i.get("address") for i in renamed["identities"]] == [[{"city": "Leipzig"}], None]


def test_dont_save_matches_without_storing_anything(epix: TestClient) -> None:
    add(epix, patient("Müller", "Anna", "1970-03-04", (MRN, "1")))
    before = [count(epix, t) for t in (persons, person_demographics, person_identifiers, possible_matches)]
    [new, known] = add(
        epix,
        patient("Müler", "Anna", "1970-03-04"),
        patient("Müller", "Anna", "1970-03-04", (MRN, "1")),
        save="DONT_SAVE",
    )
    assert (new["status"], "mpi" in new) == ("POSSIBLE_MATCH", False)
    assert known["status"] == "PERFECT_MATCH"
    assert [count(epix, t) for t in (persons, person_demographics, person_identifiers, possible_matches)] == before


def test_a_forced_reference_update_and_set_reference_identity_choose_the_persons_reference(epix: TestClient) -> None:
    [first] = add(epix, patient("Müller", "Anna", "1970-03-04", (MRN, "1")))
    [second] = add(epix, patient("Müller", "Anna Maria", "1970-03-04", (MRN, "1")))
    second_id = second["identities"][1]["id"]
    response = post(
        epix, "$setReferenceIdentity", mpi_id(first["mpi"]), {"name": "identityReference", "valueId": second_id}
    )
    assert response.status_code == 200, response.text
    [person] = [p["resource"] for p in response.json()["parameter"] if p["name"] == "mpiPerson"]
    assert next(link for link in person["link"] if "assurance" in link)["target"]["reference"] == f"Patient/{second_id}"
    [other] = add(epix, patient("Schulz", "Otto", "1950-01-01", (MRN, "9")))
    refused = post(
        epix, "$setReferenceIdentity", mpi_id(other["mpi"]), {"name": "identityReference", "valueId": second_id}
    )
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["expression"] == ["identityReference"]


def test_update_patient_adds_an_identity_only_if_it_resembles_the_person_or_is_forced(epix: TestClient) -> None:
    [anna] = add(epix, patient("Müller", "Anna", "1970-03-04", (MRN, "1")))

    def update(who: dict[str, Any], *, force: bool) -> Any:
        return post(
            epix,
            "$updatePatient",
            DOMAIN,
            {"name": "source", "valueString": "dic"},
            mpi_id(anna["mpi"], "mpiIdentifier"),
            {"name": "identity", "resource": who},
            {"name": "force", "valueBoolean": force},
        )

    stranger = patient("Schulz", "Otto", "1950-01-01", (MRN, "7"))
    assert update(stranger, force=False).status_code == 409
    assert count(epix, person_identifiers) == 1
    assert (
        update(patient("Müller", "Anna", "1970-03-04", (MRN, "1")), force=False).json()["parameter"][0]["valueCoding"][
            "code"
        ]
        == "PERFECT_MATCH"
    )
    forced = update(stranger, force=True)
    assert forced.json()["parameter"][0]["valueCoding"]["code"] == "PERFECT_MATCH_WITH_UPDATE"
    [other] = add(epix, patient("Becker", "Lea", "1985-07-08", (MRN, "8")))
    taken = update(patient("Müller", "Anna", "1970-03-04", (MRN, "8")), force=True)
    assert (taken.status_code, taken.json()["issue"][0]["expression"]) == (409, ["identifier"])
    assert other["mpi"] != anna["mpi"]


def test_assign_identity_by_identifier_moves_the_identity_and_its_identifier(epix: TestClient) -> None:
    [anna] = add(epix, patient("Müller", "Anna", "1970-03-04", (MRN, "1")))
    [lea] = add(epix, patient("Becker", "Lea", "1985-07-08", (MRN, "2")))
    response = post(
        epix,
        "$assignIdentityByIdentifier",
        {"name": "identityIdentifier", "valueIdentifier": {"system": MRN, "value": "2"}},
        mpi_id(anna["mpi"], "mpiIdentifier"),
    )
    assert response.status_code == 200, response.text
    [again] = add(epix, patient("Becker", "Lea", "1985-07-08", (MRN, "2")))
    assert (again["mpi"], again["status"], len(again["identities"])) == (anna["mpi"], "PERFECT_MATCH", 2)
    back = post(
        epix,
        "$assignIdentityByIdentifier",
        {
            "name": "identityIdentifier",
            "valueIdentifier": {"system": IDENTITY_SYSTEM, "value": again["identities"][1]["id"]},
        },
        mpi_id(lea["mpi"], "mpiIdentifier"),
    )
    assert back.status_code == 200, back.text
    with engine_of(epix).connect() as connection:
        assert (
            connection.execute(
                select(person_demographics.c.mpi).where(person_demographics.c.family == "Becker")
            ).scalar()
            == lea["mpi"]
        )


def test_a_node_speaks_for_its_own_site_sees_its_own_identities_and_never_an_mpi(epix: TestClient) -> None:
    add(epix, patient("Müller", "Anna", "1970-03-04", (KVNR_SYSTEM, make_kvnr("A", "12345678"))), source="practice")
    [seen] = add(
        epix,
        patient("Müller", "Anna", "1970-03-04", (MRN, "1"), (KVNR_SYSTEM, make_kvnr("A", "12345678"))),
        who="miracum-connector",
    )
    assert seen["status"] == "MATCH"
    assert seen["person"]["system"] == PERSON_SYSTEM
    assert [i["meta"]["source"] for i in seen["identities"]] == ["dic"]
    refused = post(
        epix,
        "$addPatient",
        DOMAIN,
        {"name": "source", "valueString": "practice"},
        {"name": "identity", "resource": patient("X", "Y", "2000-01-01")},
        {"name": "saveAction", "valueCoding": {"system": SAVE_ACTION_SYSTEM, "code": "SAVE_ALL"}},
        {"name": "forceReferenceUpdate", "valueBoolean": False},
        who="miracum-connector",
    )
    assert (refused.status_code, refused.json()["issue"][0]["expression"]) == (403, ["source"])
    for review in ("$queryPossibleMatches", "$removePossibleMatches", "$addPossibleMatch", "$assignIdentity"):
        assert post(epix, review, DOMAIN, who="miracum-connector").status_code == 403
    not_its_domain = post(epix, "$updatePatient", DOMAIN, who="dic-connector")
    assert (not_its_domain.status_code, not_its_domain.json()["issue"][0]["expression"]) == (403, ["domain"])

    def update(person: dict[str, str]) -> Any:
        return post(
            epix,
            "$updatePatient",
            DOMAIN,
            {"name": "mpiIdentifier", "valueIdentifier": person},
            {"name": "identity", "resource": patient("Müller", "Anna Maria", "1970-03-04")},
            {"name": "force", "valueBoolean": False},
            who="miracum-connector",
        )

    updated = update(seen["person"])
    assert updated.status_code == 200, updated.text
    assert updated.json()["parameter"][0]["valueCoding"]["code"] == "PERFECT_MATCH_WITH_UPDATE"
    with engine_of(epix).connect() as connection:
        mpi = connection.execute(select(persons.c.mpi)).scalars().first()
    by_mpi = update({"system": MPI_SYSTEM, "value": str(mpi)})
    assert (by_mpi.status_code, by_mpi.json()["issue"][0]["expression"]) == (403, ["mpiIdentifier"])


@pytest.mark.parametrize(
    ("change", "status", "where"),
    [
        (lambda p: [x for x in p if x["name"] != "domain"], 400, "Parameters.parameter.where(name='domain')"),
        (lambda p: [{"name": "domain", "valueString": "ELSEWHERE"}, *p[1:]], 404, "domain"),
        (
            lambda p: [
                *p[:4],
                {"name": "saveAction", "valueCoding": {"system": SAVE_ACTION_SYSTEM, "code": "KEEP"}},
                *p[5:],
            ],
            400,
            "saveAction",
        ),
        (lambda p: [x for x in p if x["name"] != "forceReferenceUpdate"], 400, "forceReferenceUpdate"),
        (lambda p: [x for x in p if x["name"] != "identity"], 400, "Parameters.parameter.where(name='identity')"),
        (
            lambda p: [*p[:2], {"name": "identity", "resource": {**p[2]["resource"], "birthDate": 1970}}, *p[3:]],
            400,
            "Parameters.parameter[2].resource.birthDate",
        ),
        (
            lambda p: [*p[:2], {"name": "identity", "resource": {**p[2]["resource"], "gender": "m"}}, *p[3:]],
            400,
            "Parameters.parameter[2].resource.gender",
        ),
        (lambda p: [*p[:2], {"name": "identity", "valueString": "Anna"}, *p[3:]], 400, "Parameters.parameter[2]"),
        (lambda p: [*p[:3], *[p[2]] * 5, *p[3:]], 413, None),
    ],
)
def test_bad_add_patient_requests_are_refused_naming_the_parameter_and_store_nothing(
    epix: TestClient,
    change: Any,
    status: int,
    where: str | None,
) -> None:
    parts = [
        DOMAIN,
        {"name": "source", "valueString": "dic"},
        {"name": "identity", "resource": patient("Müller", "Anna", "1970-03-04", (MRN, "1"))},
        {"name": "identity", "resource": patient("Becker", "Lea", "1985-07-08", (MRN, "2"))},
        {"name": "saveAction", "valueCoding": {"system": SAVE_ACTION_SYSTEM, "code": "SAVE_ALL"}},
        {"name": "forceReferenceUpdate", "valueBoolean": False},
    ]
    response = post(epix, "$addPatient", *change(parts))
    assert response.status_code == status, response.text
    if where:
        assert response.json()["issue"][0]["expression"] == [where]
    assert count(epix, persons) == 0


def test_a_batch_with_one_bad_identity_stores_none_of_it(epix: TestClient) -> None:
    response = post(
        epix,
        "$addPatient",
        DOMAIN,
        {"name": "source", "valueString": "dic"},
        {"name": "identity", "resource": patient("Müller", "Anna", "1970-03-04", (MRN, "1"))},
        {"name": "identity", "resource": patient("Becker", "Lea", "1985-07-08", (KVNR_SYSTEM, "A123456789"))},
        {"name": "saveAction", "valueCoding": {"system": SAVE_ACTION_SYSTEM, "code": "SAVE_ALL"}},
        {"name": "forceReferenceUpdate", "valueBoolean": False},
    )
    assert response.status_code == 400, response.text
    assert [count(epix, t) for t in (persons, person_demographics, person_identifiers)] == [0, 0, 0]


def test_review_operations_refuse_unknown_matches_identities_and_persons(epix: TestClient) -> None:
    [anna] = add(epix, patient("Müller", "Anna", "1970-03-04", (MRN, "1")))
    cases = [
        ("$removePossibleMatches", [DOMAIN, {"name": "linkId", "valueInteger": 99}], 404, ["linkId"]),
        ("$removePossibleMatches", [DOMAIN, {"name": "linkId", "valueString": "x"}], 400, ["Parameters.parameter[1]"]),
        (
            "$assignIdentity",
            [{"name": "linkId", "valueInteger": 1}, {"name": "identityReference", "valueId": "999"}],
            404,
            ["identityReference"],
        ),
        (
            "$assignIdentity",
            [
                {"name": "linkId", "valueInteger": 1},
                {"name": "identityReference", "valueReference": {"reference": "Person/1"}},
            ],
            400,
            ["Parameters.parameter[1]"],
        ),
        ("$setReferenceIdentity", [mpi_id("nobody"), {"name": "identityReference", "valueId": "1"}], 404, ["mpiId"]),
        (
            "$queryPossibleMatches",
            [DOMAIN, {"name": "mpiId", "valueIdentifier": {"system": "urn:other", "value": anna["mpi"]}}],
            400,
            ["mpiId"],
        ),
        (
            "$addPossibleMatch",
            [{"name": "domain", "valueString": "study"}, mpi_id(anna["mpi"])],
            400,
            ["Parameters.parameter.where(name='aliasMpiId')"],
        ),
    ]
    for operation, parts, status, where in cases:
        response = post(epix, operation, *parts)
        assert (response.status_code, response.json()["issue"][0].get("expression")) == (status, where), operation


def test_every_ig_operation_is_audited(epix: TestClient) -> None:
    [a] = add(epix, patient("Müller", "Anna", "1970-03-04", (MRN, "1")))
    [b] = add(epix, patient("Müler", "Anna", "1970-03-04", (MRN, "2")))
    [match] = matches_of(epix)
    post(epix, "$addPossibleMatch", DOMAIN, mpi_id(a["mpi"]), mpi_id(b["mpi"], "aliasMpiId"))
    post(
        epix,
        "$setReferenceIdentity",
        mpi_id(a["mpi"]),
        {"name": "identityReference", "valueId": a["identities"][0]["id"]},
    )
    post(epix, "$removePossibleMatches", DOMAIN, {"name": "linkId", "valueInteger": match["linkId"]})
    post(epix, "$queryPossibleMatches", {"name": "domain", "valueString": "nowhere"})
    with engine_of(epix).connect() as connection:
        rows = connection.execute(select(audit_log.events.c.operation, audit_log.events.c.outcome)).all()
    recorded = {(operation, outcome) for operation, outcome in rows}
    assert {
        ("$addPatient", "success"),
        ("$queryPossibleMatches", "success"),
        ("$addPossibleMatch", "success"),
        ("$setReferenceIdentity", "success"),
        ("$removePossibleMatches", "success"),
        ("$queryPossibleMatches", "refused"),
    } <= recorded
