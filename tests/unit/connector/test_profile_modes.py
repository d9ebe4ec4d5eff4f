"""Validation modes: what the profile validator says refuses the input (strict) or travels with it (warn).

HAPI stands in as tests.unit.connector.fake_fhir, whose `Bundle/$validate` places issues the way HAPI
does (`Bundle.entry[i].resource/*Type/id*/.path`, with HAPI's message ids); the trust centre is real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from connector.app import create_app
from connector.hapi import HapiClient
from connector.ingest import STORED_ERROR, Ingester
from connector.profiles import MESSAGE_ID_URL, Finding, Mode, Policy, ProfileCheck, findings_of
from connector.upstream import UpstreamUnavailable
from connector.validation import InvalidInput
from tests.unit.connector.conftest import connector_settings, headers, mii_bundle
from tests.unit.connector.fake_fhir import FakeFhir


def hapi_issue(severity: str, path: str, message: str, message_id: str, code: str = "processing") -> dict[str, Any]:
    return {
        "severity": severity,
        "code": code,
        "diagnostics": message,
        "path": path,
        "extension": [{"url": MESSAGE_ID_URL, "valueString": message_id}],
    }


MISSING_CODE = hapi_issue(
    "error", "code", "Condition.code: minimum required = 1, but only found 0", "Validation_VAL_Profile_Minimum"
)
UNKNOWN_CODE = hapi_issue(
    "error", "code.coding[0]", "None of the codings provided are in the value set", "Terminology_TX_NoValid_1_CC"
)
OFFLINE = hapi_issue(
    "warning", "code.coding[0]", "ICD-10-GM cannot be checked offline", "hubnode-offline", "code-invalid"
)


BUNDLE = "pat-1"


def first_condition(bundle: dict[str, Any]) -> int:
    """The index of the bundle's first Condition, the resource the validators of these tests find fault with."""
    return next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Condition")


def judging(*issues: dict[str, Any]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """A validator that finds `issues` in the first Condition of BUNDLE and nothing elsewhere."""
    bundle = mii_bundle(BUNDLE)
    faulty = bundle["entry"][first_condition(bundle)]["resource"]["id"]
    return lambda resource: [dict(i) for i in issues] if resource.get("id") == faulty else []


@pytest.fixture
def connect(
    tmp_path: Path, fhir: FakeFhir, trustcentre_transport: httpx.ASGITransport
) -> Iterator[Callable[[Policy], TestClient]]:
    """A connector with the validation `Policy` a test chooses."""
    clients: list[TestClient] = []

    def connected(policy: Policy) -> TestClient:
        app = create_app(
            connector_settings(tmp_path, validation=policy),
            hapi_transport=fhir.transport(),
            trustcentre_transport=trustcentre_transport,
        )
        client = TestClient(app, raise_server_exceptions=False).__enter__()
        clients.append(client)
        return client

    yield connected
    for client in clients:
        client.__exit__(None, None, None)


def post(client: TestClient, bundle: dict[str, Any]) -> httpx.Response:
    return client.post("/fhir", content=json.dumps(bundle), headers=headers("source"))


def test_strict_refuses_a_profile_error_naming_entry_path_and_profile_and_stores_nothing(
    connect: Callable[[Policy], TestClient], fhir: FakeFhir
) -> None:
    fhir.judge = judging(MISSING_CODE)
    bundle = mii_bundle(BUNDLE)
    response = post(connect(Policy()), bundle)
    assert response.status_code == 422, response.text
    [issue] = response.json()["issue"]
    place = f"Bundle.entry[{first_condition(bundle)}].resource.code"
    assert issue["expression"] == [place]
    assert issue["diagnostics"].startswith(f"{place}: Condition.code: minimum required = 1")
    [profile] = bundle["entry"][first_condition(bundle)]["resource"]["meta"]["profile"]
    assert issue["diagnostics"].endswith(f"(declared profile {profile})")
    assert fhir.transactions == []


def test_warn_stores_the_same_bundle_and_answers_the_error_in_the_entrys_outcome_and_the_audit(
    connect: Callable[[Policy], TestClient], fhir: FakeFhir
) -> None:
    fhir.judge = judging(MISSING_CODE, OFFLINE)
    bundle = mii_bundle(BUNDLE)
    client = connect(Policy(profiles=Mode.WARN))
    response = post(client, bundle)
    assert response.status_code == 200, response.text
    assert len(fhir.transactions) == 1
    entries = response.json()["entry"]
    index = first_condition(bundle)
    outcome = entries[index]["response"]["outcome"]
    assert [i["severity"] for i in outcome["issue"]] == ["warning", "warning"]
    error, offline = (i["diagnostics"] for i in outcome["issue"])
    assert "minimum required = 1" in error
    assert error.endswith(STORED_ERROR)
    assert "cannot be checked offline" in offline
    assert STORED_ERROR not in offline
    assert all("outcome" not in e["response"] for i, e in enumerate(entries) if i != index)
    events = client.get("/fhir/AuditEvent", headers=headers("auditor")).json()["entry"]
    ingest = next(e["resource"] for e in events if e["resource"]["subtype"][0]["code"] == "ingest")
    assert ingest["outcome"] == "0"
    assert "stored with 1 profile error(s) reported as warnings, first " in ingest["outcomeDesc"]


def test_mere_warnings_travel_in_the_answer_but_leave_an_ordinary_audit_record(
    connect: Callable[[Policy], TestClient], fhir: FakeFhir
) -> None:
    fhir.judge = judging(OFFLINE)
    client = connect(Policy())
    bundle = mii_bundle(BUNDLE)
    response = post(client, bundle)
    assert response.status_code == 200, response.text
    assert "outcome" in response.json()["entry"][first_condition(bundle)]["response"]
    events = client.get("/fhir/AuditEvent", headers=headers("auditor")).json()["entry"]
    ingest = next(e["resource"] for e in events if e["resource"]["subtype"][0]["code"] == "ingest")
    assert "outcomeDesc" not in ingest


def test_by_default_terminology_errors_are_warnings_and_strict_terminology_refuses_them(
    connect: Callable[[Policy], TestClient], fhir: FakeFhir
) -> None:
    fhir.judge = judging(UNKNOWN_CODE)
    bundle = mii_bundle(BUNDLE)
    assert post(connect(Policy()), bundle).status_code == 200
    refused = post(connect(Policy(terminology=Mode.STRICT)), bundle)
    assert refused.status_code == 422
    assert "None of the codings provided are in the value set" in refused.json()["issue"][0]["diagnostics"]


def test_off_asks_the_validator_nothing(connect: Callable[[Policy], TestClient], fhir: FakeFhir) -> None:
    fhir.judge = judging(MISSING_CODE)
    assert post(connect(Policy(profiles=Mode.OFF)), mii_bundle(BUNDLE)).status_code == 200
    assert fhir.validated == []


def test_a_resource_is_validated_once_however_often_it_is_sent(
    connect: Callable[[Policy], TestClient], fhir: FakeFhir
) -> None:
    client = connect(Policy())
    bundle = mii_bundle(BUNDLE)
    assert post(client, bundle).status_code == 200
    first = len(fhir.validated)
    assert first == sum(1 for e in bundle["entry"] if e["resource"].get("meta", {}).get("profile"))
    assert post(client, bundle).status_code == 200
    assert len(fhir.validated) == first


def test_a_remembered_error_still_refuses(connect: Callable[[Policy], TestClient], fhir: FakeFhir) -> None:
    fhir.judge = judging(MISSING_CODE)
    client = connect(Policy())
    bundle = mii_bundle(BUNDLE)
    assert post(client, bundle).status_code == 422
    fhir.judge = lambda _resource: []
    assert post(client, bundle).status_code == 422


def test_resources_without_a_declared_profile_are_not_sent(
    connect: Callable[[Policy], TestClient], fhir: FakeFhir
) -> None:
    bundle = mii_bundle(BUNDLE)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] != "Consent":  # the MII consent rules ask for its profile
            entry["resource"].get("meta", {}).pop("profile", None)
    response = post(connect(Policy()), bundle)
    assert response.status_code == 200, response.text
    assert [r["resourceType"] for r in fhir.validated] == ["Consent"]


def test_while_the_validator_is_down_the_input_is_not_stored_and_the_source_is_told_to_retry(
    connect: Callable[[Policy], TestClient], fhir: FakeFhir
) -> None:
    client = connect(Policy(profiles=Mode.WARN))
    fhir.down = True
    response = post(client, mii_bundle(BUNDLE))
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert fhir.transactions == []


def test_hapis_placing_of_issues_is_read_and_the_wrapping_bundles_own_issues_are_left_out() -> None:
    wrapper_artefact = hapi_issue(
        "warning",
        "",
        "Entry 1 matches the reference Procedure/p-1 by type and id but its fullUrl"
        " https://entry-1.validation.invalid/fhir/Procedure/p-1 does not match the full target URL"
        " https://entry-0.validation.invalid/fhir/Procedure/p-1 by Bundle resolution rules",
        "BUNDLE_BUNDLE_POSSIBLE_MATCH_WRONG_FU",
    )
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {**wrapper_artefact, "expression": ["Bundle.entry[0].resource/*Observation/o-0*/.partOf[0]"]},
            {"severity": "error", "code": "invalid", "expression": ["Bundle.entry[0]"], "diagnostics": "no fullUrl"},
            {"severity": "information", "code": "informational", "expression": ["Bundle.entry[0].resource"]},
            {
                "severity": "fatal",
                "code": "structure",
                "expression": ["Bundle.entry[1].resource/*Observation/o-1*/.value.ofType(Quantity)"],
                "diagnostics": "bad quantity",
            },
            {
                "severity": "warning",
                "code": "code-invalid",
                "location": ["Bundle.entry[0].resource"],
                "diagnostics": "x",
            },
            {"severity": "error", "code": "invalid", "expression": ["Bundle.entry[7].resource.id"], "diagnostics": "?"},
        ],
    }
    assert findings_of(outcome, 2) == {
        1: [Finding("error", "value.ofType(Quantity)", "bad quantity", terminology=False)],
        0: [Finding("warning", "", "x", terminology=True)],
    }


def test_only_errors_refuse_and_each_kind_under_its_own_mode() -> None:
    shape = Finding("error", "code", "missing", terminology=False)
    code = Finding("error", "code", "unknown", terminology=True)
    hint = Finding("warning", "code", "offline", terminology=True)
    assert [Policy().refuses(f) for f in (shape, code, hint)] == [True, False, False]
    assert [Policy(Mode.WARN, Mode.STRICT).refuses(f) for f in (shape, code, hint)] == [False, True, False]


def test_what_a_peer_sends_is_stored_with_its_findings_where_a_source_would_be_refused(fhir: FakeFhir) -> None:
    """A peer sends records it already holds (some stored before its node validated): reported, never refused."""
    fhir.judge = judging(MISSING_CODE)
    entries = mii_bundle(BUNDLE)["entry"]
    hapi = HapiClient("http://hapi.test/fhir", transport=fhir.transport())
    ingester = Ingester(
        hapi,
        None,
        "https://hubnode.org/fhir/sid/source",
        "research",
        lambda *_: frozenset(),
        ProfileCheck(hapi, Policy()),
    )  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        asyncio.run(ingester.ingest(entries, "research", pseudonymised=True))
    result = asyncio.run(ingester.ingest(entries, "dic", pseudonymised=True))
    assert [p.message.endswith(STORED_ERROR) for p in result.errors_stored] == [True]
    assert len(fhir.transactions) == 1


def test_for_peers_a_strict_policy_reports_and_off_stays_off() -> None:
    assert Policy().for_peers() == Policy(Mode.WARN, Mode.WARN)
    assert Policy(Mode.OFF, Mode.STRICT).for_peers() == Policy(Mode.OFF, Mode.WARN)


class WaitsForTheStore:
    """A validator that answers only once the input has been stored (or gives up after `patience` seconds)."""

    def __init__(self, fhir: FakeFhir, answer: dict[str, Any] | Exception, patience: float = 2.0) -> None:
        self.fhir, self.answer, self.patience = fhir, answer, patience
        self.saw_stored: bool | None = None

    async def validate(self, bundle: dict[str, Any]) -> dict[str, Any]:
        waited = 0.0
        while not self.fhir.transactions and waited < self.patience:
            await asyncio.sleep(0.01)
            waited += 0.01
        self.saw_stored = bool(self.fhir.transactions)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def ingester_with(fhir: FakeFhir, validator: WaitsForTheStore, policy: Policy) -> Ingester:
    hapi = HapiClient("http://hapi.test/fhir", transport=fhir.transport())
    return Ingester(
        hapi,
        None,
        "https://hubnode.org/fhir/sid/source",
        "dic",
        lambda *_: frozenset(),
        ProfileCheck(validator, policy),
    )  # type: ignore[arg-type]


def test_under_warn_the_profiles_are_judged_while_the_input_is_stored(fhir: FakeFhir) -> None:
    validator = WaitsForTheStore(fhir, {"resourceType": "OperationOutcome", "issue": []})
    entries = mii_bundle(BUNDLE)["entry"]
    asyncio.run(ingester_with(fhir, validator, Policy(Mode.WARN, Mode.WARN)).ingest(entries, "dic", pseudonymised=True))
    assert validator.saw_stored is True


def test_under_strict_nothing_is_stored_before_the_validator_has_answered(fhir: FakeFhir) -> None:
    validator = WaitsForTheStore(fhir, {"resourceType": "OperationOutcome", "issue": []}, patience=0.2)
    entries = mii_bundle(BUNDLE)["entry"]
    for policy in (Policy(), Policy(Mode.WARN, Mode.STRICT)):
        fhir.transactions.clear()
        asyncio.run(ingester_with(fhir, validator, policy).ingest(entries, "dic", pseudonymised=True))
        assert validator.saw_stored is False
        assert len(fhir.transactions) == 1


def test_a_validator_failing_after_the_store_is_reported_as_a_stored_error_not_a_refusal(fhir: FakeFhir) -> None:
    validator = WaitsForTheStore(fhir, UpstreamUnavailable("HAPI answered 503 to Bundle/$validate"))
    entries = mii_bundle(BUNDLE)["entry"]
    result = asyncio.run(ingester_with(fhir, validator, Policy(Mode.WARN)).ingest(entries, "dic", pseudonymised=True))
    [problem] = result.errors_stored
    assert problem.message.startswith("not checked against its profiles (HAPI answered 503 to Bundle/$validate)")
    assert problem.message.endswith(STORED_ERROR)
    assert len(fhir.transactions) == 1


def test_a_store_that_fails_under_warn_stops_the_check_and_is_answered_as_such(fhir: FakeFhir) -> None:
    validator = WaitsForTheStore(fhir, {"resourceType": "OperationOutcome", "issue": []}, patience=5.0)
    fhir.down = True
    entries = mii_bundle(BUNDLE)["entry"]
    with pytest.raises(UpstreamUnavailable):
        asyncio.run(ingester_with(fhir, validator, Policy(Mode.WARN)).ingest(entries, "dic", pseudonymised=True))
    assert validator.saw_stored is None  # cancelled while it waited, not left running


def test_only_a_strict_mode_with_the_profiles_asked_may_refuse() -> None:
    refusing = [Policy(), Policy(Mode.WARN, Mode.STRICT), Policy(Mode.STRICT, Mode.STRICT)]
    reporting = [Policy(Mode.WARN, Mode.WARN), Policy(Mode.OFF, Mode.STRICT), Policy(Mode.OFF, Mode.WARN)]
    assert [p.may_refuse for p in refusing] == [True, True, True]
    assert [p.may_refuse for p in reporting] == [False, False, False]


class CountingValidator:
    """Finds an error in every resource whose id ends in 7; records each call's size and how many ran at once."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.running = self.most_at_once = 0

    async def validate(self, bundle: dict[str, Any]) -> dict[str, Any]:
        self.sizes.append(len(bundle["entry"]))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        issues = [
            {**MISSING_CODE, "expression": [f"Bundle.entry[{position}].resource.code"]}
            for position, entry in enumerate(bundle["entry"])
            if entry["resource"]["id"].endswith("7")
        ]
        return {"resourceType": "OperationOutcome", "issue": issues}


def test_a_large_request_is_judged_in_bounded_batches_and_each_finding_stays_with_its_entry() -> None:
    """HAPI's validator slows with the square of a bundle's size: 250 resources go as 100 + 100 + 50, two at once."""
    validator = CountingValidator()
    entries = [
        {"resource": {"resourceType": "Condition", "id": f"c{n}", "meta": {"profile": ["https://example.org/p"]}}}
        for n in range(250)
    ]
    found = asyncio.run(ProfileCheck(validator, Policy()).findings(entries))
    assert sorted(validator.sizes) == [50, 100, 100]
    assert validator.most_at_once == 2
    assert sorted(found) == [n for n in range(250) if str(n).endswith("7")]
    assert {finding.path for judged in found.values() for finding in judged} == {"code"}
