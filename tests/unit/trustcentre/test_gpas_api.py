"""The gPAS contract: exact Parameters shapes, properties, access control and bad input."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tests.conftest import examples
from tests.unit.trustcentre.conftest import SECRET, headers
from tests.unit.trustcentre.conftest import settings as tc_settings
from trustcentre.app import create_app
from trustcentre.db import connect, pseudonyms
from trustcentre.pseudonym_scheme import looks_like_pseudonym, settings_from_mapping
from trustcentre.pseudonyms import PseudonymStore

GPAS = "/ttp-fhir/fhir/gpas"
SYSTEM = "https://ths-greifswald.de/gpas"


def request(target: str, *values: str, name: str = "original") -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "target", "valueString": target}, *({"name": name, "valueString": v} for v in values)],
    }


def call(client: TestClient, operation: str, body: object, who: str = "admin") -> Any:
    return client.post(f"{GPAS}/{operation}", content=json.dumps(body), headers=headers(who))


def pairs(response: Any) -> dict[str, str]:
    """original -> pseudonym from a gPAS answer, checking each part's shape on the way."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    found = {}
    for parameter in response.json()["parameter"]:
        if parameter["name"] == "error":
            continue
        parts = {p["name"]: p["valueIdentifier"] for p in parameter["part"]}
        assert list(parts) == ["target", "original", "pseudonym"]
        assert {p["system"] for p in parts.values()} == {SYSTEM}
        found[parts["original"]["value"]] = parts["pseudonym"]["value"]
    return found


def errors(response: Any) -> list[tuple[str, str]]:
    """(value as given, issue type) of each `error` part, checking its shape (the IG's: no target)."""
    out = []
    for parameter in response.json()["parameter"]:
        if parameter["name"] == "error":
            [given, code] = parameter["part"]
            assert given["name"] in ("original", "pseudonym")
            assert code["name"] == "error-code"
            assert code["valueCoding"]["system"] == "http://hl7.org/fhir/issue-type"
            out.append((given["valueIdentifier"]["value"], code["valueCoding"]["code"]))
    return out


def results(response: Any) -> list[tuple[str, str]]:
    """(original, result code) of each `successStatus` part, checking its shape on the way."""
    assert response.status_code == 200, response.text
    out = []
    for parameter in response.json()["parameter"]:
        assert parameter["name"] == "successStatus"
        parts = {p["name"]: p for p in parameter["part"]}
        assert list(parts) == ["target", "original", "result-code"]
        out.append((parts["original"]["valueIdentifier"]["value"], parts["result-code"]["valueCoding"]["code"]))
    return out


def outcome(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    [issue] = body["issue"]
    assert issue["severity"] == "error"
    return str(issue["diagnostics"])


def stored_pairs(database_url: str) -> int:
    engine = connect(database_url)
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(pseudonyms)).scalar_one())


def test_allow_create_answers_one_pseudonym_part_per_original_in_the_gpas_shape(client: TestClient) -> None:
    response = call(client, "$pseudonymizeAllowCreate", request("study", "patient-1", "patient-2"))
    found = pairs(response)
    assert list(found) == ["patient-1", "patient-2"]
    [first, second] = response.json()["parameter"]
    assert first["name"] == second["name"] == "pseudonym"
    assert first["part"][0]["valueIdentifier"]["value"] == "study"
    domain = settings_from_mapping({"prefix": "S", "length": 10})
    assert all(p.startswith("S") and looks_like_pseudonym(p, domain) for p in found.values())
    assert found["patient-1"] != found["patient-2"]


def test_pseudonyms_are_stable_across_calls_and_restarts(database_url: str) -> None:
    with TestClient(create_app(tc_settings(database_url))) as first:
        before = pairs(call(first, "$pseudonymizeAllowCreate", request("study", "a", "b")))
    with TestClient(create_app(tc_settings(database_url))) as second:
        again = pairs(call(second, "$pseudonymizeAllowCreate", request("study", "b", "a", "c")))
    assert again["a"] == before["a"]
    assert again["b"] == before["b"]


def test_the_same_original_gets_different_pseudonyms_in_different_domains(client: TestClient) -> None:
    study = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "x")))
    clinic = pairs(call(client, "$pseudonymizeAllowCreate", request("clinic", "x")))
    assert study["x"] != clinic["x"]


def test_pseudonymize_without_create_reports_unknown_originals_as_error_parts(client: TestClient) -> None:
    created = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "known")))
    response = call(client, "$pseudonymize", request("study", "known", "unknown"))
    assert pairs(response) == created
    assert errors(response) == [("unknown", "not-found")]
    assert [p["name"] for p in response.json()["parameter"]] == ["pseudonym", "error"]


def test_de_pseudonymize_answers_originals_and_errors_for_unknown_pseudonyms(client: TestClient) -> None:
    created = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "p-9")))
    response = call(client, "$dePseudonymize", request("study", created["p-9"], "SNOTAPSEUDO", name="pseudonym"))
    assert [p["name"] for p in response.json()["parameter"]] == ["original", "error"]
    assert pairs(response) == created
    assert errors(response) == [("SNOTAPSEUDO", "not-found")]


@pytest.mark.parametrize(
    ("alias", "operation"),
    [("$pseudonymize-allow-create", "$pseudonymizeAllowCreate"), ("$de-pseudonymize", "$dePseudonymize")],
)
def test_the_gpas_1_10_names_are_aliases(client: TestClient, alias: str, operation: str) -> None:
    created = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "v")))
    if operation == "$dePseudonymize":
        assert pairs(call(client, alias, request("study", created["v"], name="pseudonym"))) == created
    else:
        assert pairs(call(client, alias, request("study", "v"))) == created


def test_deleted_pseudonyms_are_gone(client: TestClient) -> None:
    created = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "gone")))
    deleted = call(client, "$deletePseudonyms", request("study", "gone", "never-there"))
    assert results(deleted) == [("gone", "MSG_DELETED"), ("never-there", "not-found")]
    assert errors(call(client, "$pseudonymize", request("study", "gone"))) == [("gone", "not-found")]
    assert errors(call(client, "$dePseudonymize", request("study", created["gone"], name="pseudonym"))) == [
        (created["gone"], "not-found")
    ]


def test_domains_can_be_added_by_api(client: TestClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "domain", "valueString": "project-42"},
            {"name": "prefix", "valueString": "P42"},
            {"name": "length", "valueString": "8"},
        ],
    }
    response = call(client, "$addDomain", body)
    assert response.status_code == 200, response.text
    assert response.json()["parameter"][0] == {"name": "created", "valueBoolean": True}
    assert pairs(call(client, "$pseudonymizeAllowCreate", request("project-42", "z")))["z"].startswith("P42")


def test_requests_without_credentials_are_refused_with_401(client: TestClient) -> None:
    response = client.post(f"{GPAS}/$pseudonymize", content=json.dumps(request("study", "a")))
    assert "Bearer" in outcome(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = client.post(f"{GPAS}/$pseudonymize", content="{}", headers={"Authorization": "Bearer nope"})
    assert outcome(wrong, 401) == "the bearer token is not valid"


def test_de_pseudonymisation_needs_its_own_role(client: TestClient) -> None:
    created = pairs(call(client, "$pseudonymizeAllowCreate", request("study", "r"), who="pseudonymizer"))
    response = call(client, "$dePseudonymize", request("study", created["r"], name="pseudonym"), who="pseudonymizer")
    assert outcome(response, 403) == "caller 'pseudonymizer' lacks the role 'depseudonymize' for this operation"
    assert outcome(call(client, "$pseudonymize", request("study", "r"), who="nobody"), 403).startswith(
        "caller 'nobody'"
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("not json", 400, "the request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        ([1, 2], 400, "expected a Parameters resource, got a JSON list"),
        ({"resourceType": "Patient"}, 400, "expected resourceType Parameters, got 'Patient'"),
        ({"resourceType": "Parameters", "parameter": {}}, 400, "Parameters.parameter must be a list"),
        (
            {"resourceType": "Parameters", "parameter": [{"valueString": "x"}]},
            400,
            "Parameters.parameter[0] must be an object with a string name",
        ),
        (request("study"), 400, "parameter 'original' is required"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "original", "valueString": "a"}]},
            400,
            "parameter 'target' is required",
        ),
        (request("nowhere", "original", "a"), 400, "unknown domain 'nowhere'; known domains: clinic, study"),
        (
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "target", "valueString": "study"}, {"name": "original", "valueInteger": 7}],
            },
            400,
            "Parameters.parameter[1] (original) must carry a non-empty valueString",
        ),
        (request("study", "x" * 256), 400, "Parameters.parameter[1] (original) is longer than 255 characters"),
        (request("study", "a\x00b"), 400, "Parameters.parameter[1] (original) must not contain NUL characters"),
        (
            request("study", *[str(i) for i in range(1001)]),
            413,
            "1001 original values in one request; at most 1000 are allowed",
        ),
    ],
)
def test_bad_input_gets_an_operation_outcome_and_stores_nothing(
    client: TestClient, database_url: str, body: object, status: int, message: str
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = client.post(f"{GPAS}/$pseudonymizeAllowCreate", content=content, headers=headers("admin"))
    assert outcome(response, status) == message
    assert stored_pairs(database_url) == 0


def test_an_oversized_body_is_refused_before_it_is_read_whole(client: TestClient, database_url: str) -> None:
    huge = json.dumps(request("study", "a" * 200)) + " " * (600 * 1024)
    assert "larger than" in outcome(
        client.post(f"{GPAS}/$pseudonymizeAllowCreate", content=huge, headers=headers("admin")), 413
    )
    assert stored_pairs(database_url) == 0


def test_every_operation_is_audited_with_caller_subject_and_purpose(client: TestClient) -> None:
    created = pairs(
        client.post(
            f"{GPAS}/$pseudonymizeAllowCreate",
            content=json.dumps(request("study", "audited")),
            headers={**headers("pseudonymizer"), "X-Hubnode-Purpose": "research/study"},
        )
    )
    call(
        client, "$dePseudonymize", request("study", created["audited"], name="pseudonym"), who="pseudonymizer"
    )  # refused
    events = client.get(
        "/ttp-fhir/fhir/AuditEvent", params={"entity-name": created["audited"]}, headers=headers("admin")
    )
    assert events.status_code == 200
    [event] = [e["resource"] for e in events.json()["entry"]]
    assert event["resourceType"] == "AuditEvent"
    assert event["subtype"][0]["code"] == "$pseudonymizeAllowCreate"
    assert event["agent"][0]["who"]["display"] == "pseudonymizer"
    assert event["outcome"] == "0"
    assert event["purposeOfEvent"][0]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"},
        {"system": "urn:hubnode:project", "code": "study"},
    ]
    assert {e["what"]["identifier"]["value"] for e in event["entity"]} == {"audited", created["audited"]}
    refused = client.get("/ttp-fhir/fhir/AuditEvent", params={"date": "ge2000-01-01"}, headers=headers("admin")).json()
    assert [e["resource"]["outcome"] for e in refused["entry"]] == ["0", "4"]
    assert outcome(client.get("/ttp-fhir/fhir/AuditEvent", headers=headers("pseudonymizer")), 403).startswith(
        "caller 'pseudonymizer'"
    )


@settings(max_examples=examples(25))
@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
            str.strip
        ),
        min_size=1,
        max_size=20,
    )
)
def test_de_pseudonymize_inverts_pseudonymize(tmp_path_factory: pytest.TempPathFactory, originals: list[str]) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('tc') / 'tc.db'}"
    with TestClient(create_app(tc_settings(url))) as client:
        created = pairs(call(client, "$pseudonymizeAllowCreate", request("study", *originals)))
        assert set(created) == set(originals)
        assert len(set(created.values())) == len(created), "pseudonyms must be unique in a domain"
        revealed = pairs(call(client, "$dePseudonymize", request("study", *created.values(), name="pseudonym")))
        assert revealed == created
        elsewhere = pairs(call(client, "$pseudonymizeAllowCreate", request("clinic", *originals)))
        assert not set(elsewhere.values()) & set(created.values()), "domains must not share pseudonyms"


def test_concurrent_allow_create_of_one_original_yields_one_pseudonym(database_url: str) -> None:
    engine = connect(database_url)
    store = PseudonymStore(engine, SECRET)
    store.declare_domains({"study": {}})

    def create(_: int) -> str:
        with engine.begin() as connection:
            return store.pseudonymize(connection, "study", ["same-person"], create=True)["same-person"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = set(pool.map(create, range(32)))
    assert len(results) == 1
    assert stored_pairs(database_url) == 1


def person_id(client: TestClient, who: str, kvnr: str) -> str:
    """The id the node of `who` knows the person with this KVNR by."""
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "identifier", "valueIdentifier": {"system": KVNR, "value": kvnr}}],
    }
    response = client.post("/ttp-fhir/fhir/epix/$requestMPI", content=json.dumps(body), headers=headers(who))
    assert response.status_code == 200, response.text
    [person] = [p["valueIdentifier"]["value"] for p in response.json()["parameter"] if p["name"] == "person"]
    return str(person)


KVNR = "http://fhir.de/sid/gkv/kvid-10"
SOMEONE = "A123456780"


def test_a_node_pseudonymises_the_persons_it_was_given_and_every_node_gets_the_same_pseudonym(
    client: TestClient,
) -> None:
    at_dic, at_gp = person_id(client, "dic-connector", SOMEONE), person_id(client, "gp-connector", SOMEONE)
    from_dic = pairs(call(client, "$pseudonymizeAllowCreate", request("study", at_dic), who="dic-connector"))
    from_gp = pairs(call(client, "$pseudonymizeAllowCreate", request("study", at_gp), who="gp-connector"))
    assert from_dic[at_dic] == from_gp[at_gp], "one person, one pseudonym in the domain, whichever node sends"


def test_a_node_cannot_pseudonymise_an_original_it_was_not_given(client: TestClient) -> None:
    at_gp = person_id(client, "gp-connector", SOMEONE)
    response = call(client, "$pseudonymizeAllowCreate", request("study", at_gp, "MPI-GUESSED"), who="dic-connector")
    assert errors(response) == [(at_gp, "not-found"), ("MPI-GUESSED", "not-found")]


def test_a_practice_cannot_reach_a_research_projects_domain(client: TestClient) -> None:
    # The re-identification chain of the security review (H3): KVNR -> linkage -> pseudonym in a project domain.
    at_practice = person_id(client, "practice-connector", SOMEONE)
    response = call(client, "$pseudonymize", request("study", at_practice), who="practice-connector")
    assert outcome(response, 403) == "caller 'practice-connector' may not use domain 'study'; its domains: none"
    assert outcome(call(client, "$dePseudonymize", request("study", "x"), who="dic-connector"), 403).startswith(
        "caller 'dic-connector' lacks the role 'depseudonymize'"
    )


def test_a_purpose_must_be_one_the_node_knows_and_fit_what_is_done(client: TestClient) -> None:
    body = json.dumps(request("study", "r"))
    for claim, status in (("research/study", 200), ("research/other-study", 400), ("treatment", 400), ("x" * 300, 400)):
        answer = client.post(
            f"{GPAS}/$pseudonymizeAllowCreate",
            content=body,
            headers={**headers("pseudonymizer"), "X-Hubnode-Purpose": claim},
        )
        assert answer.status_code == status, (claim, answer.text)
