"""The gICS contract over MII consents: add, ask, list, current states, withdraw, refuse bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from fixtures.consents import broad_consent
from tests.unit.trustcentre.conftest import headers
from trustcentre.mii_consent import POLICY_SYSTEM

GICS = "/ttp-fhir/fhir/gics"
OID = POLICY_SYSTEM.removeprefix("urn:oid:")
PERSON = {"system": "https://ukl.example/mrn", "value": "mrn-1"}


def consent(date_time: str, *codes: str, **period: Any) -> dict[str, Any]:
    return broad_consent(PERSON, date_time, *codes, **period)


def call(client: TestClient, operation: str, *parts: dict[str, Any], who: str = "admin") -> Any:
    body = {"resourceType": "Parameters", "parameter": list(parts)}
    return client.post(f"{GICS}/{operation}", content=json.dumps(body), headers=headers(who))


def person(identifier: dict[str, str] = PERSON) -> dict[str, Any]:
    return {"name": "personIdentifier", "valueIdentifier": identifier}


def policy(code: str) -> dict[str, Any]:
    return {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": f"{OID}.{code}"}}


def on(day: str, **flags: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"name": "requestDate", "valueDate": day}]
    parts += [{"name": name, "valueBoolean": value} for name, value in flags.items()]
    return {"name": "config", "part": parts}


def consented(client: TestClient, code: str, day: str, **flags: bool) -> bool:
    response = call(client, "$isConsented", person(), policy(code), on(day, **flags))
    assert response.status_code == 200, response.text
    [answer] = response.json()["parameter"]
    assert answer["name"] == "consented"
    return bool(answer["valueBoolean"])


def add(client: TestClient, resource: dict[str, Any], who: str = "admin") -> Any:
    return call(client, "$addConsent", {"name": "resource", "resource": resource}, who=who)


def test_an_added_consent_answers_is_consented_within_its_period_only(client: TestClient) -> None:
    response = add(client, consent("2024-01-01T10:00:00+01:00", "8", "7", end="2029-12-31"))
    assert response.status_code == 200, response.text
    assert consented(client, "8", "2025-06-01")
    assert not consented(client, "8", "2023-12-31")
    assert not consented(client, "8", "2030-01-01")
    assert not consented(client, "37", "2025-06-01"), "a policy never asked about is not consented"


def test_withdrawal_wins_from_its_date_on_and_history_stays(client: TestClient) -> None:
    add(client, consent("2024-01-01T10:00:00Z", "8", "7"))
    response = call(
        client, "$withdrawConsent", person(), policy("8"), {"name": "withdrawalDate", "valueDate": "2025-03-01"}
    )
    assert response.status_code == 200, response.text
    assert consented(client, "8", "2025-02-28")
    assert not consented(client, "8", "2025-03-01")
    assert consented(client, "7", "2025-06-01"), "only the withdrawn policy is denied"
    bundle = call(client, "$consentsForPerson", person()).json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["total"] == 2


def test_current_policy_states_keep_unknown_apart_unless_asked_to_decline(client: TestClient) -> None:
    add(client, consent("2024-01-01T10:00:00Z", "8"))
    add(client, consent("2024-02-01T10:00:00Z", "9", permit=False))
    states = call(client, "$policyStatesForPerson", person(), on("2025-01-01")).json()["parameter"]
    by_code = {p["part"][0]["valueCoding"]["code"]: p["part"][1]["valueCode"] for p in states}
    assert by_code[f"{OID}.8"] == "ACCEPTED"
    assert by_code[f"{OID}.9"] == "DECLINED"
    assert by_code[f"{OID}.37"] == "UNKNOWN"
    declined = call(
        client, "$policyStatesForPerson", person(), on("2025-01-01", unknownStateIsConsideredAsDecline=True)
    )
    assert {p["part"][1]["valueCode"] for p in declined.json()["parameter"]} == {"ACCEPTED", "DECLINED"}


def test_several_person_identifiers_match_at_least_one_by_default_and_all_on_request(client: TestClient) -> None:
    add(client, consent("2024-01-01T10:00:00Z", "8"))
    other = {"system": "https://practice.example/id", "value": "p-77"}
    config = {"name": "config", "part": [{"name": "requestDate", "valueDate": "2025-01-01"}]}
    either = call(client, "$isConsented", person(), person(other), policy("8"), config)
    assert either.json()["parameter"][0]["valueBoolean"] is True
    config_all = {"name": "config", "part": [*config["part"], {"name": "idMatchingType", "valueString": "ALL"}]}
    both = call(client, "$isConsented", person(), person(other), policy("8"), config_all)
    assert both.json()["parameter"][0]["valueBoolean"] is False


def test_consent_writes_and_reads_need_their_roles(client: TestClient) -> None:
    refused = add(client, consent("2024-01-01T10:00:00Z", "8"), who="connector")
    assert refused.status_code == 403
    assert call(client, "$isConsented", person(), policy("8"), who="connector").status_code == 200
    assert call(client, "$isConsented", person(), policy("8"), who="nobody").status_code == 403


def unknown_code(resource: dict[str, Any]) -> dict[str, Any]:
    resource["provision"]["provision"][0]["code"][0]["coding"][0]["code"] = f"{OID}.99"
    return resource


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda c: {**c, "meta": {"profile": ["http://example.org/other"]}}, "profile"),
        (unknown_code, "99"),
        (lambda c: {**c, "provision": {**c["provision"], "type": "permit"}}, "deny"),
        (lambda c: {**c, "dateTime": "yesterday"}, "dateTime"),
        (lambda c: {**c, "patient": {"reference": "Patient/1"}}, "Consent.patient.identifier"),
    ],
)
def test_consents_breaking_mii_rules_get_422_and_are_not_stored(client: TestClient, mutate: Any, fragment: str) -> None:
    response = add(client, mutate(consent("2024-01-01T10:00:00Z", "8")))
    assert response.status_code == 422, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert fragment in response.json()["issue"][0]["diagnostics"]
    assert call(client, "$consentsForPerson", person()).json()["total"] == 0


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([policy("8")], "parameter 'personIdentifier' is required"),
        ([person()], "parameter 'policy' (valueCoding) is required"),
        (
            [{"name": "personIdentifier", "valueString": "mrn-1"}, policy("8")],
            "Parameters.parameter[0] (personIdentifier) must carry a valueIdentifier with system and value",
        ),
        (
            [person(), policy("8"), {"name": "config", "part": [{"name": "requestDate", "valueDate": "soon"}]}],
            "Parameters.parameter[2].part[0] (requestDate): 'soon' is not a FHIR date",
        ),
    ],
)
def test_malformed_questions_get_400_with_the_parameter_named(
    client: TestClient, parts: list[dict[str, Any]], message: str
) -> None:
    response = call(client, "$isConsented", *parts)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["diagnostics"] == message
