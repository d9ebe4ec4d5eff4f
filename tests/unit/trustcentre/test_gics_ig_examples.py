"""The gICS IG's own examples, posted unchanged, and the semantics behind them.

A trust centre configured with the domains the local federation's dic declares
(`fixtures.consent_domains`) takes every vendored request example with a 2xx and answers in the
shape of the IG's response example, where the IG has one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from starlette.testclient import TestClient

from fixtures.consent_domains import CONSENT_DOMAINS
from fixtures.consents import broad_consent
from servicekit.config import ConfigError
from tests.unit.trustcentre.conftest import headers, settings
from trustcentre.app import create_app
from trustcentre.consent_templates import registry_from_config
from trustcentre.db import connect

EXAMPLES = Path(__file__).parents[3] / "fixtures" / "data" / "ttp-fhir-ig" / "gics"
GICS = "/ttp-fhir/fhir/gics"
PSEUDONYM = "https://ths-greifswald.de/fhir/gics/identifiers/Pseudonym"
OID = "2.16.840.1.113883.3.1937.777.24.5.3"
VALID, INVALID = "2.16.840.1.113883.3.1937.777.24.5.2.1", "2.16.840.1.113883.3.1937.777.24.5.2.2"
QUESTIONNAIRE = "https://ths-greifswald.de/fhir/gics/QuestionnaireComposed"


def example(name: str) -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / f"{name}.json").read_text()))


@pytest.fixture
def gics(database_url: str) -> Iterator[TestClient]:
    configured = replace(settings(database_url), consent_domains=registry_from_config(CONSENT_DOMAINS))
    with TestClient(create_app(configured), raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, operation: str, body: dict[str, Any], who: str = "admin") -> Any:
    return client.post(f"{GICS}/${operation}", content=json.dumps(body), headers=headers(who))


def ok(client: TestClient, operation: str, body: dict[str, Any]) -> dict[str, Any]:
    response = post(client, operation, body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def shape(resource: dict[str, Any]) -> Any:
    """What the IG's examples fix: resource types, bundle types and nesting, the kind of each Consent."""
    if resource["resourceType"] == "Bundle":
        return ("Bundle", resource["type"], frozenset(shape(e["resource"]) for e in resource.get("entry", [])))
    if resource["resourceType"] == "Consent":
        result = {c["coding"][0]["code"] for c in resource["category"] if "ResultType" in c["coding"][0]["system"]}
        return ("Consent", frozenset(result), "provision" in resource["provision"])
    return resource["resourceType"]


def fits(got: Any, expected: Any) -> bool:
    """Every kind of entry `got` holds is one `expected` holds too (bundles compared the same way, nested)."""
    if not (isinstance(got, tuple) and got[0] == "Bundle"):
        return bool(got == expected)
    if not (isinstance(expected, tuple) and expected[:2] == got[:2]):
        return False
    return all(any(fits(entry, candidate) for candidate in expected[2]) for entry in got[2])


def like(answer: dict[str, Any], name: str) -> None:
    """`answer` has the shape of the IG's response example `name`."""
    got = shape(answer)
    assert got[2], "an empty answer says nothing about its shape"
    assert fits(got, shape(example(name))), f"{got} does not fit {shape(example(name))}"


def signed(pseudonym: str, domain: str, template: str, day: str, **answers: bool) -> dict[str, Any]:
    """An `$addConsent` in the IG's shape: `pseudonym` answers modules (name|version -> valid) on `day`."""
    items = [
        {
            "linkId": link,
            "answer": [
                {
                    "valueCoding": {
                        "system": "urn:oid:2.16.840.1.113883.3.1937.777.24.5.2",
                        "code": VALID if yes else INVALID,
                    }
                }
            ],
        }
        for link, yes in answers.items()
    ]
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "patient",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p",
                    "identifier": [{"system": PSEUDONYM, "value": pseudonym}],
                },
            },
            {"name": "domain", "valueString": domain},
            {
                "name": "questionnaireResponse",
                "resource": {
                    "resourceType": "QuestionnaireResponse",
                    "status": "completed",
                    "questionnaire": f"{QUESTIONNAIRE}/{domain}/{template}",
                    "subject": {"reference": "Patient/p"},
                    "authored": f"{day}T10:00:00+01:00",
                    "item": items,
                },
            },
        ],
    }


def opt_out(pseudonym: str) -> dict[str, Any]:
    body = example("Parameters-Parameters-AddConsentOptOut-request-example-1")
    body["parameter"][0]["resource"]["identifier"][0]["value"] = pseudonym
    return body


PATDAT = "PATDAT_erheben_speichern_nutzen|1.8"
MII_D = "Patienteneinwilligung+MII|1.6.d"


def seed(client: TestClient) -> None:
    """The persons the query examples ask about: dic_1H51T consented in 2019, dic_GCC83 refused PATDAT."""
    ok(client, "addConsent", signed("dic_1H51T", "MII", MII_D, "2019-01-01", **{PATDAT: True}))
    ok(
        client,
        "addConsent",
        signed("dic_1H51T", "num", "NUM+Einwilligung|1.0", "2019-01-01", **{"MDAT_erheben|1.0": True}),
    )
    ok(client, "addConsent", signed("dic_GCC83", "MII", MII_D, "2019-01-01", **{PATDAT: False}))
    ok(client, "addConsentOptOut", opt_out("dic_1H51T"))


def test_every_ig_request_example_is_answered_in_the_ig_shape(gics: TestClient) -> None:
    added = ok(gics, "addConsent", example("Parameters-Parameters-AddConsent-request-example-1"))
    like(added, "Bundle-AddConsent-response-example-1")
    [consent] = [e["resource"] for e in added["entry"] if e["resource"]["resourceType"] == "Consent"]
    permitted = {
        c["coding"][0]["code"] for p in consent["provision"]["provision"] if p["type"] == "permit" for c in p["code"]
    }
    [expected] = [
        e["resource"]
        for e in example("Bundle-AddConsent-response-example-1")["entry"]
        if e["resource"]["resourceType"] == "Consent"
    ]
    wanted = {c["coding"][0]["code"] for p in expected["provision"]["provision"] for c in p["code"]}
    assert {code for code in permitted if code.startswith(OID)} == {code for code in wanted if code.startswith(OID)}
    like(
        ok(gics, "addConsentOptOut", example("Parameters-Parameters-AddConsentOptOut-request-example-1")),
        "Bundle-AddConsentOptOut-response-example-1",
    )
    seed(gics)

    for name in ("IsConsented-request-example-1", "IsConsented-request-example-2"):
        assert ok(gics, "isConsented", example(f"Parameters-{name}")) == {
            "resourceType": "Parameters",
            "parameter": example("Parameters-IsConsented-response-example-1")["parameter"],
        }
    ids = ok(gics, "getAllConsentedIdsFor", example("Parameters-GetAllConsentedIdsFor-request-example-1"))
    assert ids["parameter"] == example("Parameters-GetAllConsentedIdsFor-response-example-1")["parameter"]
    for operation in (
        "CurrentPolicyStatesForPerson",
        "AllPolicyStatesForPerson",
        "AllConsentsForPerson",
        "AllConsentsForDomain",
        "AllConsentsForTemplate",
    ):
        answer = ok(gics, operation[0].lower() + operation[1:], example(f"Parameters-{operation}-request-example-1"))
        like(answer, f"Bundle-{operation}-response-example-1")
    current = ok(
        gics,
        "currentConsentForPersonAndTemplate",
        example("Parameters-CurrentConsentForPersonAndTemplate-request-example-1"),
    )
    [document] = current["entry"]
    assert document["resource"]["type"] == "collection"
    [consent] = [e["resource"] for e in document["resource"]["entry"] if e["resource"]["resourceType"] == "Consent"]
    assert consent["provision"]["type"] == "permit"  # the 1.6.f opt-out


def is_consented(client: TestClient, pseudonym: str, policy: str, day: str, domain: str = "MII") -> bool:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "personIdentifier", "valueIdentifier": {"system": PSEUDONYM, "value": pseudonym}},
            {"name": "domain", "valueString": domain},
            {
                "name": "policy",
                "valueCoding": {"system": "https://ths-greifswald.de/fhir/CodeSystem/gics/Policy", "code": policy},
            },
            {
                "name": "config",
                "resource": {"resourceType": "Parameters", "parameter": [{"name": "requestDate", "valueDate": day}]},
            },
        ],
    }
    return bool(ok(client, "isConsented", body)["parameter"][0]["valueBoolean"])


def test_a_later_refusal_of_a_module_withdraws_its_policies_from_its_date_on(gics: TestClient) -> None:
    ok(gics, "addConsent", signed("p1", "MII", MII_D, "2020-01-01", **{PATDAT: True}))
    assert is_consented(gics, "p1", "MDAT_erheben", "2021-01-01")
    assert not is_consented(gics, "p1", "BIOMAT_erheben", "2021-01-01")  # never asked
    ok(gics, "addConsent", signed("p1", "MII", MII_D, "2022-01-01", **{PATDAT: False}))
    assert is_consented(gics, "p1", "MDAT_erheben", "2021-01-01")
    assert not is_consented(gics, "p1", "MDAT_erheben", "2022-06-01")


def test_an_opt_out_holds_every_policy_of_its_template_until_the_person_objects(gics: TestClient) -> None:
    ok(gics, "addConsentOptOut", opt_out("p2"))
    today = "2030-01-01"
    assert is_consented(gics, "p2", "IDAT_erheben", today)
    states = ok(
        gics,
        "currentPolicyStatesForPerson",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "personIdentifier", "valueIdentifier": {"system": PSEUDONYM, "value": "p2"}},
                {"name": "domain", "valueString": "MII"},
            ],
        },
    )
    assert {e["resource"]["provision"]["type"] for e in states["entry"]} == {"permit"}
    assert len(states["entry"]) == 9  # PATDAT's policies
    withdrawal = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "personIdentifier", "valueIdentifier": {"system": PSEUDONYM, "value": "p2"}},
            {"name": "domain", "valueString": "MII"},
            {"name": "policy", "valueCoding": {"system": f"urn:oid:{OID}", "code": f"{OID}.2"}},
            {"name": "withdrawalDate", "valueDate": "2029-01-01"},
        ],
    }
    ok(gics, "withdrawConsent", withdrawal)
    assert not is_consented(gics, "p2", "IDAT_erheben", today)
    assert is_consented(gics, "p2", "IDAT_speichern_verarbeiten", today)


@hypothesis_settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.booleans()), min_size=1, max_size=6))
def test_get_all_consented_ids_lists_exactly_the_persons_whose_last_answer_was_yes(
    tmp_path_factory: pytest.TempPathFactory, answers: list[tuple[str, bool]]
) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('tc') / 'tc.db'}"
    configured = replace(settings(url), consent_domains=registry_from_config(CONSENT_DOMAINS))
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        last: dict[str, bool] = {}
        for year, (person, yes) in enumerate(answers, start=2000):
            ok(client, "addConsent", signed(person, "MII", MII_D, f"{year}-01-01", **{PATDAT: yes}))
            last[person] = yes
        body = example("Parameters-GetAllConsentedIdsFor-request-example-1")
        body["parameter"][4]["resource"]["parameter"][3]["valueDate"] = "2020-01-01"
        found = [p["valueIdentifier"]["value"] for p in ok(client, "getAllConsentedIdsFor", body).get("parameter", [])]
        assert found == sorted(p for p, yes in last.items() if yes)


def refused(
    client: TestClient, operation: str, body: dict[str, Any], expected: tuple[int, str], who: str = "admin"
) -> None:
    """`body` gets the status and an OperationOutcome naming what is at fault, and nothing is stored."""
    status, named = expected
    response = post(client, operation, body, who)
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert named in json.dumps(outcome)
    counted = ok(
        client,
        "allConsentsForDomain",
        {"resourceType": "Parameters", "parameter": [{"name": "domain", "valueString": "MII"}]},
    )
    assert counted.get("entry", []) == []  # nothing half-written


@pytest.mark.parametrize(
    ("operation", "mutate", "status", "named"),
    [
        ("addConsent", lambda b: [p for p in b if p["name"] != "questionnaireResponse"], 400, "questionnaireResponse"),
        (
            "addConsent",
            lambda b: [{**p, "valueString": "nope"} if p["name"] == "domain" else p for p in b],
            404,
            "domain",
        ),
        (
            "addConsent",
            lambda b: [
                {**p, "resource": {**p["resource"], "questionnaire": f"{QUESTIONNAIRE}/MII/Other|1"}}
                if p["name"] == "questionnaireResponse"
                else p
                for p in b
            ],
            404,
            "questionnaire",
        ),
        (
            "addConsent",
            lambda b: [
                {**p, "resource": {**p["resource"], "item": [{"linkId": "Unknown|1.0", "answer": []}]}}
                if p["name"] == "questionnaireResponse"
                else p
                for p in b
            ],
            422,
            "Unknown|1.0",
        ),
        (
            "addConsent",
            lambda b: [
                {**p, "resource": {**p["resource"], "identifier": [{"system": "http://other", "value": "x"}]}}
                if p["name"] == "patient"
                else p
                for p in b
            ],
            422,
            "patient",
        ),
        (
            "addConsent",
            lambda b: [{**p, "resource": {"resourceType": "Basic"}} if p["name"] == "patient" else p for p in b],
            400,
            "patient",
        ),
        ("addConsentOptOut", lambda b: [p for p in b if p["name"] != "questionnaire"], 400, "questionnaire"),
    ],
)
def test_bad_writes_are_refused_naming_the_parameter_and_store_nothing(
    gics: TestClient, operation: str, mutate: Any, status: int, named: str
) -> None:
    name = (
        "Parameters-Parameters-AddConsent-request-example-1"
        if operation == "addConsent"
        else "Parameters-Parameters-AddConsentOptOut-request-example-1"
    )
    body = example(name)
    refused(gics, operation, {**body, "parameter": mutate(body["parameter"])}, (status, named))


def test_an_addconsent_with_a_non_opt_out_template_is_no_opt_out(gics: TestClient) -> None:
    body = example("Parameters-Parameters-AddConsentOptOut-request-example-1")
    body["parameter"][2]["valueCanonical"] = f"{QUESTIONNAIRE}/MII/{MII_D}"
    refused(gics, "addConsentOptOut", body, (422, "questionnaire"))


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        (
            {
                "name": "policy",
                "valueCoding": {"system": "https://ths-greifswald.de/fhir/CodeSystem/gics/Policy", "code": "Nope"},
            },
            404,
            "policy",
        ),
        ({"name": "policy", "valueString": "MDAT_erheben"}, 400, "policy"),
        ({"name": "version", "valueString": "9.9"}, 404, "version"),
        ({"name": "domain", "valueString": "elsewhere"}, 404, "domain"),
        (
            {
                "name": "config",
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "idMatchingType", "valueCoding": {"code": "SOME"}}],
                },
            },
            400,
            "idMatchingType",
        ),
    ],
)
def test_bad_questions_are_refused_naming_the_parameter(
    gics: TestClient, change: dict[str, Any], status: int, named: str
) -> None:
    body = example("Parameters-IsConsented-request-example-1")
    body["parameter"] = [change if p["name"] == change["name"] else p for p in body["parameter"]]
    refused(gics, "isConsented", body, (status, named))


def test_a_node_lists_no_domain_and_reads_no_other_sites_patient(gics: TestClient) -> None:
    refused(
        gics,
        "allConsentsForDomain",
        example("Parameters-AllConsentsForDomain-request-example-1"),
        (403, "forbidden"),
        "portal",
    )
    refused(
        gics,
        "getAllConsentedIdsFor",
        example("Parameters-GetAllConsentedIdsFor-request-example-1"),
        (403, "forbidden"),
        "portal",
    )
    refused(
        gics,
        "allConsentsForPerson",
        example("Parameters-AllConsentsForPerson-request-example-1"),
        (403, "personIdentifier"),
        "portal",
    )
    other = example("Parameters-AllConsentsForPerson-request-example-1")
    other["parameter"][0]["valueIdentifier"] = {"system": "urn:hubnode:person", "value": "P-of-someone-else"}
    refused(gics, "allConsentsForPerson", other, (403, "not a person id"), "portal")


def test_a_missing_person_or_template_consent_is_not_found(gics: TestClient) -> None:
    refused(
        gics,
        "currentConsentForPersonAndTemplate",
        example("Parameters-CurrentConsentForPersonAndTemplate-request-example-1"),
        (404, "personIdentifier"),
    )


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"domains": []}, "at least one domain"),
        ({"domains": [{"name": "X", "policies": []}]}, "domains[0].policies"),
        (
            {
                "domains": [
                    {
                        "name": "X",
                        "policies": [{"name": "a"}],
                        "templates": [
                            {"name": "t", "version": "1", "modules": [{"name": "m", "version": "1", "policies": ["b"]}]}
                        ],
                    }
                ]
            },
            "domains[0].templates[0].modules[0].policies",
        ),
        (
            {
                "domains": [
                    {
                        "name": "X",
                        "policies": [{"name": "a"}],
                        "templates": [{"name": "t", "version": "1", "type": "maybe", "modules": []}],
                    }
                ]
            },
            "domains[0].templates[0].type",
        ),
        (
            {"domains": [{"name": "X", "policies": [{"name": "a"}]}, {"name": "X", "policies": [{"name": "a"}]}]},
            "domains[1].name",
        ),
    ],
)
def test_a_bad_consent_domains_file_names_the_key_at_fault(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(
        ConfigError, match=r"TC_CONSENT_DOMAINS_FILE: .*" + fragment.replace("[", r"\[").replace("]", r"\]")
    ):
        registry_from_config(config)


def test_with_declared_domains_hubnodes_own_mii_callers_get_their_answers_unchanged(gics: TestClient) -> None:
    person = {"system": "https://ukl.example/mrn", "value": "mrn-9"}
    resource = broad_consent(person, "2024-01-01T10:00:00+01:00", "5", "8")
    ok(gics, "addConsent", {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]})
    asked = {"name": "personIdentifier", "valueIdentifier": person}
    states = ok(gics, "policyStatesForPerson", {"resourceType": "Parameters", "parameter": [asked]})
    shown = {
        part["part"][0]["valueCoding"]["code"]: part["part"][1]["valueCode"]
        for part in states["parameter"]
        if part["part"][0]["valueCoding"]["system"] == f"urn:oid:{OID}"
    }
    assert shown[f"{OID}.8"] == "ACCEPTED"
    assert shown[f"{OID}.6"] == "UNKNOWN"
    policy = {"name": "policy", "valueCoding": {"system": f"urn:oid:{OID}", "code": f"{OID}.8"}}
    config = {"name": "config", "part": [{"name": "requestDate", "valueDate": "2025-01-01"}]}
    answer = ok(gics, "isConsented", {"resourceType": "Parameters", "parameter": [asked, policy, config]})
    assert answer["parameter"] == [{"name": "consented", "valueBoolean": True}]


def test_a_store_made_before_templates_gains_their_columns_and_keeps_its_consents(database_url: str) -> None:
    engine = connect(database_url)
    with engine.begin() as connection:  # as version 5 left it
        connection.execute(text("ALTER TABLE consents DROP COLUMN template"))
        connection.execute(text("ALTER TABLE consents DROP COLUMN related"))
        connection.execute(text("DELETE FROM schema_version WHERE version >= 6"))
    engine.dispose()
    with TestClient(create_app(settings(database_url)), raise_server_exceptions=False) as client:
        person = {"system": "https://ukl.example/mrn", "value": "mrn-1"}
        resource = broad_consent(person, "2024-01-01T10:00:00+01:00", "8")
        ok(
            client,
            "addConsent",
            {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]},
        )
        columns = {c["name"] for c in inspect(client.app.state.engine).get_columns("consents")}
    assert {"template", "related"} <= columns
