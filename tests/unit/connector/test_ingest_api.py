"""POST /fhir and /fhir/$import end to end: fake HAPI, the real trust centre in-process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from connector.ingest import PERSON_WRITE_ATTEMPTS
from connector.transform import PERSON_SYSTEM, SourceKey
from servicekit.kvnr import KVNR_SYSTEM, make_kvnr
from servicekit.timing import parse_server_timing
from tests.conftest import examples
from tests.unit.connector.conftest import headers, mii_bundle
from tests.unit.connector.fake_fhir import FakeFhir

SOURCE = "https://hubnode.org/fhir/sid/source/dic"


def post(client: TestClient, bundle: Any, who: str = "source") -> Any:
    return client.post("/fhir", content=json.dumps(bundle), headers=headers(who))


def test_a_real_mii_bundle_is_stored_with_the_nodes_id_of_the_person(client: TestClient, fhir: FakeFhir) -> None:
    bundle = mii_bundle("pat-1")
    response = post(client, bundle)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(bundle["entry"])
    [patient] = fhir.of_type("Patient")
    systems = [i["system"] for i in patient["identifier"]]
    assert PERSON_SYSTEM in systems
    assert {"system": SOURCE, "value": "Patient/mii-exa-test-data-patient-1"} in patient["identifier"]
    consent = fhir.of_type("Consent")[0]
    assert consent["patient"]["reference"] == f"Patient/{patient['id']}"


def test_an_ingest_says_where_its_time_went(client: TestClient) -> None:
    response = post(client, mii_bundle("pat-1"))
    assert response.status_code == 200, response.text
    phases = parse_server_timing(response.headers["Server-Timing"])
    assert list(phases) == ["validate", "profiles", "link", "prepare", "store"]
    assert all(milliseconds >= 0 for milliseconds in phases.values())


def test_a_record_of_the_same_person_keeps_identifiers_whose_assigner_refers_to_a_stored_resource(
    client: TestClient, fhir: FakeFhir
) -> None:
    kvnr = {"system": KVNR_SYSTEM, "value": make_kvnr("K", "31415926")}
    mrn = {"system": "https://clinic.example/mrn", "value": "m1", "assigner": {"reference": "Organization/o1"}}
    clinic = {
        "resourceType": "Organization",
        "id": "o1",
        "identifier": [{"system": "https://clinic.example", "value": "c"}],
    }
    first = {"resourceType": "Patient", "id": "p1", "identifier": [kvnr, mrn], "gender": "male"}
    second = {"resourceType": "Patient", "id": "p2", "identifier": [kvnr], "gender": "female"}
    for patient, others in ((first, [clinic]), (second, [])):
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": r} for r in (patient, *others)],
        }
        response = post(client, bundle)
        assert response.status_code == 200, response.text
    [stored] = fhir.of_type("Patient")
    [organisation] = fhir.of_type("Organization")
    [kept] = [i for i in stored["identifier"] if i["system"] == mrn["system"]]
    assert kept["assigner"]["reference"] == f"Organization/{organisation['id']}"
    assert stored["gender"] == "female", "the record sent last is the one stored"


def person_bundle(patient_id: str, gender: str) -> dict[str, Any]:
    """One Patient, whom the trust centre links by KVNR to the same person whatever the source's id."""
    kvnr = {"system": KVNR_SYSTEM, "value": make_kvnr("K", "27182818")}
    patient = {"resourceType": "Patient", "id": patient_id, "identifier": [kvnr], "gender": gender}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient}]}


def another_source_adds_an_identifier(fhir: FakeFhir, _transaction: dict[str, Any]) -> None:
    """What a concurrent ingest of the same person from another source does to the node's record."""
    [record] = fhir.of_type("Patient")
    version = str(int(record["meta"]["versionId"]) + 1)
    record["identifier"].append({"system": "https://other.example/mrn", "value": f"m{version}"})
    record["meta"]["versionId"] = version


def test_an_ingest_that_loses_the_race_for_a_persons_record_reads_it_again_and_drops_nothing(
    client: TestClient, fhir: FakeFhir
) -> None:
    assert post(client, person_bundle("p1", "male")).status_code == 200
    fhir.meanwhile.append(another_source_adds_an_identifier)
    response = post(client, person_bundle("p2", "female"))
    assert response.status_code == 200, response.text
    [stored] = fhir.of_type("Patient")
    values = {(i["system"], i["value"]) for i in stored["identifier"]}
    assert {(SOURCE, "Patient/p1"), (SOURCE, "Patient/p2"), ("https://other.example/mrn", "m2")} <= values
    assert stored["gender"] == "female"
    refused, written = fhir.transactions[-2:]
    assert refused["entry"][0]["request"]["ifMatch"] == 'W/"1"'
    assert written["entry"][0]["request"]["ifMatch"] == 'W/"2"'


def test_a_persons_record_as_the_connector_last_wrote_it_is_not_read_again(client: TestClient, fhir: FakeFhir) -> None:
    assert post(client, person_bundle("p1", "male")).status_code == 200
    [first_read] = fhir.reads
    assert post(client, person_bundle("p2", "female")).status_code == 200
    assert fhir.reads == [first_read], "the second ingest used what the first one wrote"
    assert fhir.transactions[-1]["entry"][0]["request"]["ifMatch"] == 'W/"1"'
    [stored] = fhir.of_type("Patient")
    assert {(SOURCE, "Patient/p1"), (SOURCE, "Patient/p2")} <= {(i["system"], i["value"]) for i in stored["identifier"]}


def test_an_ingest_that_keeps_losing_the_race_answers_409_and_writes_nothing(
    client: TestClient, fhir: FakeFhir
) -> None:
    assert post(client, person_bundle("p1", "male")).status_code == 200
    fhir.meanwhile.extend([another_source_adds_an_identifier] * PERSON_WRITE_ATTEMPTS)
    response = post(client, person_bundle("p2", "female"))
    assert response.status_code == 409, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    [stored] = fhir.of_type("Patient")
    assert stored["gender"] == "male"
    assert (SOURCE, "Patient/p2") not in {(i["system"], i["value"]) for i in stored["identifier"]}


def test_the_first_record_of_a_person_is_written_only_if_nobody_wrote_one_meanwhile(
    client: TestClient, fhir: FakeFhir
) -> None:
    other = {"system": "https://other.example/mrn", "value": "o1"}

    def another_source_creates_it(store: FakeFhir, transaction: dict[str, Any]) -> None:
        target = transaction["entry"][0]["request"]["url"]
        kind, rid = target.split("/")
        store.resources[target] = {"resourceType": kind, "id": rid, "identifier": [other], "meta": {"versionId": "1"}}

    fhir.meanwhile.append(another_source_creates_it)
    response = post(client, person_bundle("p1", "male"))
    assert response.status_code == 200, response.text
    [stored] = fhir.of_type("Patient")
    assert other in stored["identifier"]
    assert {"system": SOURCE, "value": "Patient/p1"} in stored["identifier"]
    assert [t["entry"][0]["request"]["ifMatch"] for t in fhir.transactions] == ['W/"0"', 'W/"1"']


def test_a_person_whose_record_the_node_deleted_gets_a_new_one_from_the_next_ingest(
    client: TestClient, fhir: FakeFhir
) -> None:
    assert post(client, person_bundle("p1", "male")).status_code == 200
    [record] = fhir.of_type("Patient")
    target = f"Patient/{record['id']}"
    del fhir.resources[target]
    fhir.deleted.add(target)
    response = post(client, person_bundle("p1", "female"))
    assert response.status_code == 200, response.text
    [stored] = fhir.of_type("Patient")
    assert stored["gender"] == "female"
    assert "ifMatch" not in fhir.transactions[-1]["entry"][0]["request"]


def test_replaying_a_bundle_creates_nothing_new_and_links_the_same_person(client: TestClient, fhir: FakeFhir) -> None:
    bundle = mii_bundle("pat-2")
    first = post(client, bundle)
    stored = dict(fhir.resources)
    second = post(client, bundle)
    assert first.status_code == second.status_code == 200
    assert set(fhir.resources) == set(stored)
    assert {e["response"]["status"] for e in second.json()["entry"]} == {"200 OK"}
    first_sent, replay_sent = (without_version_guards(t) for t in fhir.transactions)
    assert first_sent == replay_sent, "a replay sends the same transaction, only guarded by the version stored"


def without_version_guards(transaction: dict[str, Any]) -> dict[str, Any]:
    """`transaction` without its `ifMatch`es, which name the version of the person's record read just before."""
    entries = [
        {**e, "request": {k: v for k, v in e["request"].items() if k != "ifMatch"}} for e in transaction["entry"]
    ]
    return {**transaction, "entry": entries}


def test_a_type_hapi_cannot_search_by_identifier_is_stored_at_an_id_of_its_key_and_replays_too(
    client: TestClient, fhir: FakeFhir
) -> None:
    bundle = mii_bundle("onkologie-1")  # two AdverseEvents: R4 has no identifier search for them
    first = post(client, bundle)
    assert first.status_code == 200, first.text
    events = fhir.of_type("AdverseEvent")
    assert len(events) == 2
    assert all(event["id"].startswith("hn-") for event in events)
    stored = len(fhir.resources)
    assert post(client, bundle).status_code == 200
    assert len(fhir.resources) == stored
    assert sorted(e["id"] for e in fhir.of_type("AdverseEvent")) == sorted(e["id"] for e in events)


def test_a_resource_may_refer_to_one_stored_by_an_earlier_bundle(client: TestClient, fhir: FakeFhir) -> None:
    post(client, mii_bundle("pat-11"))
    observation = {
        "resourceType": "Observation",
        "id": "later-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": "Patient/mii-exa-test-data-patient-11"},
    }
    response = post(client, {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": observation}]})
    assert response.status_code == 200, response.text
    [patient] = fhir.of_type("Patient")
    assert fhir.of_type("Observation")[0]["subject"]["reference"] == f"Patient/{patient['id']}"


def test_a_reference_to_nothing_the_source_sent_is_refused_by_hapi_and_nothing_is_written(
    client: TestClient, fhir: FakeFhir
) -> None:
    observation = {
        "resourceType": "Observation",
        "id": "orphan",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/never-sent"},
    }
    response = post(client, {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": observation}]})
    assert response.status_code == 422
    assert "HAPI-1094" in response.text
    assert fhir.resources == {}


def test_invalid_entries_are_all_named_and_nothing_reaches_hapi(client: TestClient, fhir: FakeFhir) -> None:
    bundle = mii_bundle("pat-1")
    bundle["entry"][2]["resource"]["unknownElement"] = 1
    del bundle["entry"][5]["resource"]["subject"]
    bundle["entry"][0]["resource"].pop("gender")
    response = post(client, bundle)
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = {e for issue in outcome["issue"] for e in issue["expression"]}
    assert "Bundle.entry[0].resource.gender" in expressions
    assert "Bundle.entry[5].resource.subject" in expressions
    assert "Bundle.entry[2].resource.unknownElement" in expressions
    assert fhir.transactions == []


def test_ndjson_is_imported_like_a_bundle(client: TestClient, fhir: FakeFhir) -> None:
    lines = [json.dumps(e["resource"]) for e in mii_bundle("pat-3")["entry"]]
    response = client.post(
        "/fhir/$import", content="\n".join(lines) + "\n", headers=headers("source", "application/fhir+ndjson")
    )
    assert response.status_code == 200, response.text
    assert len(fhir.resources) == len(lines)


def test_ndjson_problems_name_their_lines_and_nothing_is_written(client: TestClient, fhir: FakeFhir) -> None:
    good = json.dumps(mii_bundle("pat-11")["entry"][0]["resource"])
    body = "\n".join([good, "{not json", '["a list"]', "", json.dumps({"resourceType": "Observation", "id": "o"})])
    response = client.post("/fhir/$import", content=body, headers=headers("source", "application/fhir+ndjson"))
    assert response.status_code == 422
    diagnostics = [issue["diagnostics"] for issue in response.json()["issue"]]
    assert diagnostics[0].startswith("line 2: is not valid JSON")
    assert diagnostics[1].startswith("line 3: is not a FHIR resource")
    assert fhir.transactions == []
    response = client.post(
        "/fhir/$import",
        content=f"{good}\n\n{json.dumps({'resourceType': 'Observation', 'id': 'o'})}",
        headers=headers("source", "application/fhir+ndjson"),
    )
    assert response.status_code == 422
    assert "line 3.code" in {i["expression"][0] for i in response.json()["issue"]}


def test_a_transaction_bundle_per_line_is_imported_with_the_resource_lines(client: TestClient, fhir: FakeFhir) -> None:
    first, second = mii_bundle("pat-1"), mii_bundle("pat-3")
    patient = next(e["resource"] for e in mii_bundle("pat-11")["entry"] if e["resource"]["resourceType"] == "Patient")
    body = "\n".join(json.dumps(line) for line in (first, patient, second))
    shared = {e["fullUrl"] for e in first["entry"]} & {e["fullUrl"] for e in second["entry"]}
    assert shared, "the two bundles repeat the organisations and devices they share"
    distinct = len(first["entry"]) + 1 + len(second["entry"]) - len(shared)
    response = client.post("/fhir/$import", content=body, headers=headers("source", "application/fhir+ndjson"))
    assert response.status_code == 200, response.text
    assert len(response.json()["entry"]) == distinct
    assert len(fhir.of_type("Patient")) == 3
    assert len(fhir.resources) == distinct
    again = client.post("/fhir/$import", content=body, headers=headers("source", "application/fhir+ndjson"))
    assert again.status_code == 200, again.text
    assert len(fhir.resources) == distinct, "a replay stores nothing twice"


def test_a_twin_that_differs_from_the_first_is_refused_naming_both_lines(client: TestClient, fhir: FakeFhir) -> None:
    first, second = mii_bundle("pat-1"), mii_bundle("pat-3")
    urls = {e["fullUrl"] for e in first["entry"]}
    twin = next(e for e in second["entry"] if e["fullUrl"] in urls)
    twin["resource"]["name"] = "renamed"
    body = f"{json.dumps(first)}\n{json.dumps(second)}\n"
    response = client.post("/fhir/$import", content=body, headers=headers("source", "application/fhir+ndjson"))
    assert response.status_code == 422
    [issue] = response.json()["issue"]
    assert issue["expression"][0].startswith("line 2 Bundle.entry[")
    assert "appears twice (also line 1 Bundle.entry[" in issue["diagnostics"]
    assert fhir.transactions == []


def test_a_problem_inside_a_bundle_line_names_the_line_and_the_entry(client: TestClient, fhir: FakeFhir) -> None:
    good, bad = mii_bundle("pat-1"), mii_bundle("pat-3")
    del bad["entry"][5]["resource"]["subject"]
    body = f"{json.dumps(good)}\n\n{json.dumps(bad)}\n"
    response = client.post("/fhir/$import", content=body, headers=headers("source", "application/fhir+ndjson"))
    assert response.status_code == 422
    assert {i["expression"][0] for i in response.json()["issue"]} == {"line 3 Bundle.entry[5].resource.subject"}
    assert fhir.transactions == [], "all-or-nothing per request: the good line is not stored either"


@pytest.mark.parametrize(
    ("who", "token", "status"),
    [("nobody", "token-of-nobody", 403), ("reader", "token-of-reader", 403), ("?", "forged", 401), ("?", "", 401)],
)
def test_ingest_needs_the_ingest_role(client: TestClient, fhir: FakeFhir, who: str, token: str, status: int) -> None:
    response = client.post(
        "/fhir",
        content=json.dumps(mii_bundle("pat-11")),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert fhir.transactions == []


def test_a_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post("/fhir", content=json.dumps(mii_bundle("pat-11")), headers=headers("source", "text/plain"))
    assert response.status_code == 415
    response = client.post("/fhir/$import", content="{}", headers=headers("source"))
    assert response.status_code == 415


def test_an_oversized_body_is_413_before_anything_is_parsed(client: TestClient) -> None:
    response = client.post("/fhir", content=b" " * (4 * 1024 * 1024 + 1), headers=headers("source"))
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (b"\xff\xfe", None),
        (b"[]", None),
        (json.dumps({"resourceType": "Patient"}).encode(), "resourceType"),
        (json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}).encode(), "Bundle.type"),
        (json.dumps({"resourceType": "Bundle", "type": "batch"}).encode(), "Bundle.entry"),
    ],
)
def test_what_is_not_a_transaction_or_batch_bundle_is_400(client: TestClient, body: bytes, expression: str) -> None:
    response = client.post("/fhir", content=body, headers=headers("source"))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue.get("expression", [None]) == [expression]


def test_hapi_unreachable_is_503_naming_it_with_when_to_try_again(client: TestClient, fhir: FakeFhir) -> None:
    fhir.down = True
    response = post(client, mii_bundle("pat-11"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "10"
    assert "HAPI at http://hapi.test/fhir unreachable" in response.json()["issue"][0]["diagnostics"]


def test_a_transaction_hapi_never_answered_is_504_not_a_refusal_and_its_replay_stores_nothing_twice(
    client: TestClient, fhir: FakeFhir
) -> None:
    fhir.dies_after_commit = True
    response = post(client, mii_bundle("pat-11"))
    assert response.status_code == 504, "it may have been stored: a 503 would say it was not"
    assert "whether it carried the request out is unknown" in response.json()["issue"][0]["diagnostics"]
    assert response.headers["Retry-After"] == "10"
    stored = dict(fhir.resources)
    assert post(client, mii_bundle("pat-11")).status_code == 200
    assert set(fhir.resources) == set(stored)


def test_reads_go_to_hapi_with_the_read_role_and_are_audited(client: TestClient, fhir: FakeFhir) -> None:
    post(client, mii_bundle("pat-11"))
    [patient] = fhir.of_type("Patient")
    found = client.get(f"/fhir/Patient/{patient['id']}", headers=headers("reader"))
    assert found.status_code == 200
    assert found.json()["id"] == patient["id"]
    key = SourceKey("Patient", SOURCE, "Patient/mii-exa-test-data-patient-11")
    search = client.get(f"/fhir/Patient?identifier={SOURCE}|{key.value}", headers=headers("reader"))
    assert search.json()["total"] == 1
    assert search.json()["entry"][0]["fullUrl"].startswith("http://testserver/fhir/Patient/")
    assert client.get("/fhir/Patient/unknown", headers=headers("reader")).status_code == 404
    assert client.get(f"/fhir/Patient/{patient['id']}", headers=headers("source")).status_code == 403
    assert client.get("/fhir/Patient/bad$id", headers=headers("reader")).status_code == 400
    events = client.get("/fhir/AuditEvent", headers=headers("auditor")).json()
    operations = [(e["subtype"][0]["code"], e["outcome"]) for e in (x["resource"] for x in events["entry"])]
    assert operations.count(("read", "0")) == 3
    assert ("read", "4") in operations
    assert ("ingest", "0") in operations
    assert client.get("/fhir/AuditEvent", headers=headers("reader")).status_code == 403


def test_an_ingest_is_audited_with_the_nodes_id_of_the_person(client: TestClient, fhir: FakeFhir) -> None:
    post(client, mii_bundle("pat-11"))
    [patient] = fhir.of_type("Patient")
    person = next(i["value"] for i in patient["identifier"] if i["system"] == PERSON_SYSTEM)
    events = client.get(f"/fhir/AuditEvent?entity={person}", headers=headers("auditor")).json()
    assert [e["resource"]["subtype"][0]["code"] for e in events["entry"]] == ["ingest"]


def test_health_answers_ok(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
RESOURCE_TYPES = st.sampled_from(["Patient", "Observation", "Condition", "Consent", "Encounter", "Nope", 7])


@st.composite
def bundle_like(draw: st.DrawFn) -> Any:
    entry = st.fixed_dictionaries(
        {
            "resource": st.fixed_dictionaries(
                {"resourceType": RESOURCE_TYPES},
                optional={"id": JSON, "subject": JSON, "code": JSON, "identifier": JSON},
            )
        },
        optional={"fullUrl": JSON, "request": JSON},
    )
    return draw(
        JSON
        | st.fixed_dictionaries(
            {"resourceType": st.just("Bundle"), "type": st.sampled_from(["transaction", "batch", "x"])},
            optional={"entry": st.lists(entry | JSON, max_size=4)},
        )
    )


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=examples(150)
)  # no input may cause a 5xx, whatever is stored
@given(body=bundle_like())
def test_arbitrary_json_bodies_never_produce_a_server_error(client: TestClient, body: Any) -> None:
    response = client.post("/fhir", content=json.dumps(body), headers=headers("source"))
    assert response.status_code < 500, response.text
    assert response.json()["resourceType"] in ("OperationOutcome", "Bundle")
