"""Connectors of a small federation exchanging Tasks through stand-in gateways (docs/federation.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector import processes, task_store
from connector.retrier import retry_due, run_forever
from connector.retries import RetryPolicy
from infra.pki import issue_ca, issue_node
from servicekit.allowlist import NodeRole
from tests.unit.connector.federation import (
    CLINIC,
    ICD,
    NOW,
    PROCESS,
    Federation,
    bearer,
    federation,
    outputs,
    value,
)
from tests.unit.connector.test_profile_modes import MISSING_CODE

SITES = {"dic": NodeRole.DIC, "practice": NodeRole.PRACTICE, "research": NodeRole.RESEARCH}


@pytest.fixture
def fed(tmp_path: Path, trustcentre_transport: httpx.ASGITransport) -> Federation:
    return federation(tmp_path, trustcentre_transport, SITES)


def peer_task(process: str, requester: str, key: str = "k-1", *inputs: dict) -> dict:
    task = {
        "resourceType": "Task",
        "instantiatesCanonical": f"{PROCESS}{process}|1.0",
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": "https://hubnode.org/fhir/sid/idempotency-key", "value": key}],
        "requester": {"identifier": {"system": "http://dsf.dev/sid/organization-identifier", "value": requester}},
    }
    if inputs:
        task["input"] = list(inputs)
    return task


def test_a_ping_round_trip_echoes_the_payload_and_reports_speed(fed: Federation) -> None:
    answer = fed["dic"].start(
        "ping", value("target", "valueString", "practice"), value("payload-bytes", "valueInteger", 1000)
    )
    assert answer.status_code == 201, answer.text
    task = answer.json()
    assert task["status"] == "completed"
    assert outputs(task, "round-trip-ms")[0] > 0
    assert outputs(task, "bytes-per-second")[0] > 0
    assert any(e["subtype"][0]["code"] == "ping" and e["outcome"] == "0" for e in fed["practice"].audit())


def test_a_care_summary_with_treatment_consent_is_stored_at_the_treating_node(fed: Federation) -> None:
    fed["dic"].ingest_patient("p1", codes=("C50.4",))
    fed.consent("p1", "5")
    answer = fed["dic"].start(
        "careSummary",
        value("target", "valueString", "practice"),
        value("patient", "valueIdentifier", {"system": CLINIC, "value": "p1"}),
    )
    task = answer.json()
    assert task["status"] == "completed", task
    assert outputs(task, "resources-sent") == [2]
    stored = fed["practice"].fhir
    assert len(stored.of_type("Patient")) == 1
    assert stored.of_type("Condition")[0]["code"]["coding"][0]["code"] == "C50.4"
    person = [i["value"] for i in stored.of_type("Patient")[0]["identifier"] if i["system"] == "urn:hubnode:person"]
    assert person, "the receiving node links the patient at the trust centre"
    at_dic = [
        i["value"] for i in fed["dic"].fhir.of_type("Patient")[0]["identifier"] if i["system"] == "urn:hubnode:person"
    ]
    assert at_dic != person, "each node knows the person by its own id"
    assert at_dic[0] not in json.dumps(stored.resources), "the dic's id of the person stays at the dic"
    audit = fed["practice"].audit()
    assert any(e["subtype"][0]["code"] == "careSummary" and e["outcome"] == "0" for e in audit)


def test_a_care_summary_without_treatment_consent_fails_and_sends_nothing(fed: Federation) -> None:
    fed["dic"].ingest_patient("p2", codes=("C50.4",))
    fed.consent("p2", "8")  # research only
    task = (
        fed["dic"]
        .start(
            "careSummary",
            value("target", "valueString", "practice"),
            value("patient", "valueIdentifier", {"system": CLINIC, "value": "p2"}),
        )
        .json()
    )
    assert task["status"] == "failed"
    assert task["statusReason"]["text"] == f"no treatment consent for patient {CLINIC}|p2"
    assert fed["practice"].fhir.resources == {}
    assert any(e["subtype"][0]["code"] == "careSummary" and e["outcome"] == "8" for e in fed["dic"].audit())


def test_feasibility_obfuscates_small_counts_and_sums_the_rounded_ones(fed: Federation) -> None:
    for index in range(6):
        fed["dic"].fhir.add_patient(f"d{index}", codes=("C50.4", "C50.1"))
    fed["dic"].fhir.add_patient("d-other", codes=("C61",))
    fed["dic"].fhir.add_patient("d-man", gender="male", codes=("C50.9",))
    for index in range(2):
        fed["practice"].fhir.add_patient(f"q{index}", codes=("C50.2",))
    task = (
        fed["research"]
        .start(
            "feasibility",
            value("condition-code", "valueCoding", {"system": ICD, "code": "C50"}),
            value("gender", "valueCode", "female"),
        )
        .json()
    )
    assert task["status"] == "completed", task
    assert outputs(task, "count") == [5]  # 6 at the dic, rounded down to a multiple of 5
    assert sorted(outputs(task, "node-count")) == ["dic:5-9", "practice:<5"]
    assert outputs(task, "obfuscated") == [True]


def test_feasibility_filters_on_birth_years(fed: Federation) -> None:
    for index, year in enumerate((1950, 1960, 1970, 1980, 1990, 2000, 2005)):
        fed["dic"].fhir.add_patient(f"y{index}", birth=f"{year}-06-01", codes=("C50.4",))
    task = (
        fed["research"]
        .start(
            "feasibility",
            value("condition-code", "valueCoding", {"system": ICD, "code": "C50"}),
            value("birth-year-min", "valueInteger", 1960),
            value("birth-year-max", "valueInteger", 2000),
        )
        .json()
    )
    assert sorted(outputs(task, "node-count")) == ["dic:5-9", "practice:0"]
    assert outputs(task, "obfuscated") == [False]


DIAGNOSIS_PROFILE = "https://www.medizininformatik-initiative.de/fhir/core/modul-diagnose/StructureDefinition/Diagnose"


def data_send(fed: Federation, sender: str, target: str, patient: str) -> dict[str, Any]:
    """The Task of a dataSend of `patient` for the project `study`, started at `sender`."""
    inputs = (
        value("target", "valueString", target),
        value("project", "valueString", "study"),
        value("patient", "valueIdentifier", {"system": CLINIC, "value": patient}),
    )
    task: dict[str, Any] = fed[sender].start("dataSend", *inputs).json()
    return task


def test_a_data_send_carries_only_the_pseudonymised_extract(fed: Federation) -> None:
    fed["dic"].ingest_patient("p3", codes=("C61",))
    fed.consent("p3", "8")
    task = data_send(fed, "dic", "research", "p3")
    assert task["status"] == "completed", task
    stored = fed["research"].fhir
    text = json.dumps(stored.resources)
    for identifying in ("Familyp3", "Givenp3", "1970-04-01", CLINIC, "Notesp3", "urn:hubnode:person", "/sid/source/"):
        assert identifying not in text
    [patient] = stored.of_type("Patient")
    assert patient["birthDate"] == "1970"
    assert any(i["system"] == "https://hubnode.org/fhir/sid/pseudonym/study" for i in patient["identifier"])
    assert stored.of_type("Condition")[0]["subject"]["reference"] == f"Patient/{patient['id']}"


def test_a_care_summary_stored_despite_profile_errors_is_audited_as_warned_at_the_receiver(fed: Federation) -> None:
    """A peer's data is stored whatever its profiles say (the sender already holds it), but not silently."""
    fed["dic"].ingest_patient("p11", codes=("C50.4",))
    fed.consent("p11", "5")
    [condition] = fed["dic"].fhir.of_type("Condition")
    condition["meta"] = {"profile": [DIAGNOSIS_PROFILE]}
    condition["code"]["coding"][0]["version"] = "2024"
    fed["practice"].fhir.judge = lambda r: [dict(MISSING_CODE)] if r["resourceType"] == "Condition" else []
    task = fed["dic"].start("careSummary", *care_summary_task("p11")["input"]).json()
    assert task["status"] == "completed", task.get("statusReason")
    assert len(fed["practice"].fhir.of_type("Condition")) == 1
    [received] = [e for e in fed["practice"].audit() if e["subtype"][0]["code"] == "careSummary"]
    assert received["outcome"] == "0"
    assert received["outcomeDesc"].startswith("stored with 1 profile error(s) reported as warnings, first Bundle.")
    assert "minimum required = 1" in received["outcomeDesc"]


def test_a_data_send_without_research_consent_fails(fed: Federation) -> None:
    fed["dic"].ingest_patient("p4", codes=("C61",))
    fed.consent("p4", "5")
    task = data_send(fed, "dic", "research", "p4")
    assert task["statusReason"]["text"] == f"no research consent for patient {CLINIC}|p4"
    assert fed["research"].fhir.resources == {}


def test_a_peer_that_is_down_fails_the_task_and_retry_completes_it_storing_nothing_twice(fed: Federation) -> None:
    fed["dic"].ingest_patient("p5", codes=("C50.4",))
    fed.consent("p5", "5")
    fed.down.add("practice")
    inputs = (
        value("target", "valueString", "practice"),
        value("patient", "valueIdentifier", {"system": CLINIC, "value": "p5"}),
    )
    task = fed["dic"].start("careSummary", *inputs, key="once").json()
    assert task["status"] == "failed"
    assert task["statusReason"]["text"].startswith(
        "peer 'practice' unreachable at https://practice.hubnode.test:9443/fhir/Task: connection refused"
    )
    fed.down.clear()
    retried = fed["dic"].client.post(f"/fhir/Task/{task['id']}/$retry", headers=bearer("starter")).json()
    assert retried["status"] == "completed"
    assert fed["dic"].client.get(f"/fhir/Task/{task['id']}", headers=bearer("starter")).json()["status"] == "completed"
    transactions = len(fed["practice"].fhir.transactions)
    again = fed["dic"].client.post(f"/fhir/Task/{task['id']}/$retry", headers=bearer("starter")).json()
    same_key = fed["dic"].start("careSummary", *inputs, key="once")
    assert again["status"] == "completed"
    assert same_key.status_code == 200
    assert same_key.json()["id"] == task["id"]
    assert len(fed["practice"].fhir.transactions) == transactions
    assert len(fed["practice"].fhir.of_type("Patient")) == 1


def care_summary_to_practice(fed: Federation, patient: str) -> dict[str, Any]:
    inputs = (
        value("target", "valueString", "practice"),
        value("patient", "valueIdentifier", {"system": CLINIC, "value": patient}),
    )
    return dict(fed["dic"].start("careSummary", *inputs).json())


def process_node(fed: Federation, site: str) -> processes.Node:
    node: processes.Node = fed[site].app.state.process_node
    return node


def retry_due_in(fed: Federation, site: str, hours: float) -> int:
    """The retrier's round at `site`, as it would run `hours` from now."""
    return asyncio.run(retry_due(process_node(fed, site), datetime.now(UTC) + timedelta(hours=hours)))


def test_a_process_to_a_peer_that_is_down_completes_by_itself_once_the_peer_is_back(fed: Federation) -> None:
    fed["dic"].ingest_patient("p6", codes=("C50.4",))
    fed.consent("p6", "5")
    fed.down.add("practice")
    task = care_summary_to_practice(fed, "p6")
    assert task["status"] == "failed"
    assert "; tried again by itself at " in task["statusReason"]["text"]
    assert task["statusReason"]["text"].endswith("UTC (attempt 1 of 8), or `$retry` now")
    assert retry_due_in(fed, "dic", hours=0) == 0, "the first attempt waits for the policy's first wait"
    assert retry_due_in(fed, "dic", hours=1) == 1  # still down: attempt 1 fails, attempt 2 is planned
    again = fed["dic"].client.get(f"/fhir/Task/{task['id']}", headers=bearer("starter")).json()
    assert again["statusReason"]["text"].endswith("(attempt 2 of 8), or `$retry` now")
    fed.down.clear()
    assert retry_due_in(fed, "dic", hours=2) == 1
    done = fed["dic"].client.get(f"/fhir/Task/{task['id']}", headers=bearer("starter")).json()
    assert done["status"] == "completed"
    assert len(fed["practice"].fhir.of_type("Patient")) == 1
    assert retry_due_in(fed, "dic", hours=48) == 0, "a completed process is not tried again"


def test_only_an_unreachable_peer_is_waited_for_and_attempts_run_out(
    tmp_path: Path, trustcentre_transport: httpx.ASGITransport
) -> None:
    fed = federation(tmp_path, trustcentre_transport, SITES, retry_policy=RetryPolicy(first_seconds=1, attempts=1))
    fed["dic"].ingest_patient("p7", codes=("C50.4",))
    refused = care_summary_to_practice(fed, "p7")  # no treatment consent: waiting does not cure it
    assert refused["status"] == "failed"
    assert "tried again" not in refused["statusReason"]["text"]
    assert retry_due_in(fed, "dic", hours=1) == 0
    fed.consent("p7", "5")
    fed.down.add("practice")
    task = care_summary_to_practice(fed, "p7")
    assert task["statusReason"]["text"].endswith("(attempt 1 of 1), or `$retry` now")
    assert retry_due_in(fed, "dic", hours=1) == 1
    given_up = fed["dic"].client.get(f"/fhir/Task/{task['id']}", headers=bearer("starter")).json()
    assert given_up["statusReason"]["text"].endswith(
        "no automatic attempt left after 1: `$retry` when the peer is back"
    )
    assert retry_due_in(fed, "dic", hours=48) == 0


def test_a_retry_while_another_runs_waits_for_it_instead_of_running_the_process_twice(fed: Federation) -> None:
    fed["dic"].ingest_patient("p8", codes=("C50.4",))
    fed.consent("p8", "5")
    fed.down.add("practice")
    task = care_summary_to_practice(fed, "p8")
    fed.down.clear()
    node = process_node(fed, "dic")

    async def two_at_once() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(processes.retry(node, task["id"], caller) for caller in ("a", "b"))))

    first, second = asyncio.run(two_at_once())
    assert first == second
    assert first["status"] == "completed"
    sent = [e for e in fed["dic"].audit() if e["subtype"][0]["code"] == "careSummary" and e["outcome"] == "0"]
    assert len(sent) == 1, "one run of the process, one successful exchange recorded"


async def started_async(fed: Federation, site: str, task: dict[str, Any]) -> httpx.Response:
    """`POST /fhir/Task` with `Prefer: respond-async`, inside the running event loop (the process runs on in it)."""
    transport = httpx.ASGITransport(app=fed[site].app)
    async with httpx.AsyncClient(transport=transport, base_url="http://connector") as client:
        headers = {**bearer("starter"), "Prefer": "respond-async"}
        return await client.post("/fhir/Task", json=task, headers=headers)


async def ended(node: processes.Node, answer: httpx.Response) -> dict[str, Any]:
    """The Task an accepted start ended with: a process that failed at once may be over before its answer is read."""
    task_id = answer.json()["id"]
    running = node.running.get(task_id)
    return await running if running is not None else await processes.read(node, task_id)


def care_summary_task(patient: str) -> dict[str, Any]:
    inputs = [
        value("target", "valueString", "practice"),
        value("patient", "valueIdentifier", {"system": CLINIC, "value": patient}),
    ]
    return {"resourceType": "Task", "instantiatesCanonical": f"{PROCESS}careSummary|1.0", "status": "requested"} | {
        "intent": "order",
        "input": inputs,
    }


def test_a_start_preferring_respond_async_is_accepted_at_once_and_completes_in_the_background(fed: Federation) -> None:
    fed["dic"].ingest_patient("p9", codes=("C50.4",))
    fed.consent("p9", "5")
    node = process_node(fed, "dic")

    async def accepted_then_finished() -> tuple[httpx.Response, dict[str, Any]]:
        answer = await started_async(fed, "dic", care_summary_task("p9"))
        return answer, await ended(node, answer)

    answer, finished = asyncio.run(accepted_then_finished())
    assert answer.status_code == 202, answer.text
    task = answer.json()
    assert task["status"] == "requested"
    assert answer.headers["content-location"] == f"Task/{task['id']}"
    assert finished["status"] == "completed"
    stored = fed["dic"].client.get(f"/fhir/Task/{task['id']}", headers=bearer("starter")).json()
    assert stored["status"] == "completed"
    assert len(fed["practice"].fhir.of_type("Patient")) == 1
    assert not node.running, "a finished process is forgotten by the connector"


def test_a_process_a_stopped_connector_left_open_is_resumed_once_its_claim_lapses(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_store, "CLAIM_SECONDS", 1)
    fed["dic"].ingest_patient("p10", codes=("C50.4",))
    fed.consent("p10", "5")
    node = process_node(fed, "dic")

    async def accepted_then_stopped() -> str:
        answer = await started_async(fed, "dic", care_summary_task("p10"))
        task_id = str(answer.json()["id"])
        node.running[task_id].cancel()  # the connector stops before the process ends
        await asyncio.sleep(0)
        return task_id

    task_id = asyncio.run(accepted_then_stopped())
    assert fed["dic"].client.get(f"/fhir/Task/{task_id}", headers=bearer("starter")).json()["status"] == "requested"
    assert not fed["practice"].fhir.of_type("Patient")
    successor = replace(node, claimant="dic-connector-after-restart", running={})
    assert asyncio.run(processes.resume_orphans(successor, "resumed")) == [], "not while the stopped one's claim holds"
    time.sleep(1.1)  # the stopped connector renews nothing: its claim lapses

    async def restarted_connector() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run_forever(successor, poll_seconds=0.05), timeout=1.0)

    asyncio.run(restarted_connector())
    done = fed["dic"].client.get(f"/fhir/Task/{task_id}", headers=bearer("starter")).json()
    assert done["status"] == "completed"
    assert len(fed["practice"].fhir.of_type("Patient")) == 1
    assert asyncio.run(processes.resume_orphans(successor, "resumed")) == [], "a finished one stays finished"


def test_a_process_one_connector_runs_is_not_run_by_another_on_the_same_database(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_store, "CLAIM_SECONDS", 1)
    runs: list[str] = []

    async def both_connectors() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        gate = asyncio.Event()

        async def slow_ping(_node: processes.Node, request: Any) -> processes.Outcome:
            runs.append(_node.claimant)
            await gate.wait()
            return processes.Outcome([], [str(request.inputs.string("target"))])

        monkeypatch.setitem(processes.STARTERS, processes.Process.PING, slow_ping)
        first = process_node(fed, "dic")
        second = replace(first, claimant="dic-connector-2", running={})
        answer = await started_async(fed, "dic", ping_task())
        task_id = str(answer.json()["id"])
        retrier = asyncio.ensure_future(run_forever(first, poll_seconds=0.1))  # renews the first's claims
        for _ in range(3):  # for longer than a claim holds unrenewed
            await asyncio.sleep(0.5)
            resumed = await asyncio.wait_for(processes.resume_orphans(second, "resumed"), timeout=5)
            assert resumed == [], "the claim holds while the first runs it"
        at_second = processes.retry(second, task_id, "a person at the second connector")
        while_running = await asyncio.wait_for(at_second, timeout=5)  # a second run would wait for the gate
        gate.set()
        finished = await first.running[task_id]
        retrier.cancel()
        after = await processes.retry(second, task_id, "a person at the second connector")
        return while_running, finished, after

    while_running, finished, after = asyncio.run(both_connectors())
    assert runs == [process_node(fed, "dic").claimant], "run once, by the connector holding the claim"
    assert while_running["status"] == "requested", "the second answers the Task as it stands"
    assert finished["status"] == after["status"] == "completed"


def ping_task() -> dict[str, Any]:
    return {"resourceType": "Task", "instantiatesCanonical": f"{PROCESS}ping|1.0", "status": "requested"} | {
        "intent": "order",
        "input": [value("target", "valueString", "practice")],
    }


def test_an_accepted_process_that_breaks_inside_the_node_fails_naming_a_log_reference(
    fed: Federation, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_node: processes.Node, _request: Any) -> processes.Outcome:
        raise RuntimeError("the trust centre's client is broken")

    monkeypatch.setitem(processes.STARTERS, processes.Process.PING, broken)
    node = process_node(fed, "dic")
    ping = ping_task()

    async def accepted_then_finished() -> dict[str, Any]:
        answer = await started_async(fed, "dic", ping)
        assert answer.status_code == 202, answer.text
        return await ended(node, answer)

    finished = asyncio.run(accepted_then_finished())
    assert finished["status"] == "failed"
    reason = finished["statusReason"]["text"]
    assert reason.startswith("internal error at dic; the connector's log has reference ")
    assert reason.rsplit(" ", 1)[1] in caplog.text
    assert "broken" not in reason, "what went wrong inside stays in the log"
    assert fed["dic"].client.get(f"/fhir/Task/{finished['id']}", headers=bearer("starter")).json() == finished


def test_a_start_beyond_the_processes_running_at_once_is_answered_503_and_stores_nothing(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = asyncio.Event()

    async def waiting(_node: processes.Node, _request: Any) -> processes.Outcome:
        await released.wait()
        return processes.Outcome([], ["practice"])

    monkeypatch.setitem(processes.STARTERS, processes.Process.PING, waiting)
    node = fed["dic"].app.state.process_node = replace(process_node(fed, "dic"), max_running=1)
    ping = {"resourceType": "Task", "instantiatesCanonical": f"{PROCESS}ping|1.0", "status": "requested"} | {
        "intent": "order",
        "input": [value("target", "valueString", "practice")],
    }

    async def one_running_then_another() -> list[httpx.Response]:
        first = await started_async(fed, "dic", ping)
        second = await started_async(fed, "dic", ping)
        released.set()
        await ended(node, first)
        third = await started_async(fed, "dic", ping)
        await ended(node, third)
        return [first, second, third]

    first, second, third = asyncio.run(one_running_then_another())
    assert (first.status_code, second.status_code, third.status_code) == (202, 503, 202)
    assert second.headers["retry-after"] == "10"
    assert second.json()["issue"][0]["diagnostics"] == "1 processes are running at 'dic', as many as it runs at once"
    assert task_store.counts(node.engine) == {("started", "ping", "completed"): 2}, "the refused one left nothing"


def test_a_repeated_peer_task_gets_the_stored_answer_without_the_work_being_redone(fed: Federation) -> None:
    fed["dic"].fhir.add_patient("p6", codes=("C50.4",))
    fed.consent("p6", "5")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": fed["dic"].fhir.resources["Patient/p6"], "request": {"method": "PUT", "url": "Patient/p6"}}
        ],
    }
    data = base64.b64encode(json.dumps(bundle).encode()).decode()
    attachment = value("bundle", "valueAttachment", {"contentType": "application/fhir+json", "data": data})
    task = peer_task("careSummary", "dic", "same", attachment)
    headers = fed.gateway_headers(fed["practice"], fed["dic"].issued)
    first = fed["practice"].client.post("/peer/fhir/Task", json=task, headers=headers)
    second = fed["practice"].client.post("/peer/fhir/Task", json=task, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert len(fed["practice"].fhir.transactions) == 1


def refused(fed: Federation, response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    assert reason in issue["diagnostics"]
    assert any(e["outcome"] == "4" and reason in e.get("outcomeDesc", "") for e in fed["practice"].audit())


def test_a_request_without_the_gateway_secret_is_refused_even_with_forged_identity_headers(fed: Federation) -> None:
    headers = {**fed.gateway_headers(fed["practice"], fed["dic"].issued), "X-Hubnode-Gateway-Secret": "guess"}
    response = fed["practice"].client.post("/peer/fhir/Task", json=peer_task("ping", "dic"), headers=headers)
    refused(fed, response, 401, "only through this node's gateway")


def test_a_request_whose_certificate_failed_verification_is_refused(fed: Federation) -> None:
    headers = fed.gateway_headers(fed["practice"], fed["dic"].issued, verify="FAILED:unable to get issuer certificate")
    response = fed["practice"].client.post("/peer/fhir/Task", json=peer_task("ping", "dic"), headers=headers)
    refused(fed, response, 401, "FAILED:unable to get issuer certificate")


def test_a_request_without_a_client_certificate_is_refused(fed: Federation) -> None:
    headers = {**fed.gateway_headers(fed["practice"], fed["dic"].issued), "X-Hubnode-Client-Cert": ""}
    response = fed["practice"].client.post("/peer/fhir/Task", json=peer_task("ping", "dic"), headers=headers)
    refused(fed, response, 401, "no client certificate")


def test_an_expired_certificate_is_refused(fed: Federation) -> None:
    expired = issue_node(fed.ca, "dic", ["dic.hubnode.test"], NOW - timedelta(days=400))
    response = fed["practice"].client.post(
        "/peer/fhir/Task", json=peer_task("ping", "dic"), headers=fed.gateway_headers(fed["practice"], expired)
    )
    refused(fed, response, 401, "expired")


def test_a_certificate_of_another_ca_is_not_on_the_allow_list(fed: Federation) -> None:
    stranger = issue_node(
        issue_ca("elsewhere", NOW - timedelta(days=1)), "dic", ["dic.hubnode.test"], NOW - timedelta(days=1)
    )
    response = fed["practice"].client.post(
        "/peer/fhir/Task", json=peer_task("ping", "dic"), headers=fed.gateway_headers(fed["practice"], stranger)
    )
    refused(fed, response, 403, "is not on the allow list")


def test_a_node_may_not_start_a_process_its_role_does_not_allow(fed: Federation) -> None:
    headers = fed.gateway_headers(fed["practice"], fed["research"].issued)
    response = fed["practice"].client.post(
        "/peer/fhir/Task", json=peer_task("careSummary", "research"), headers=headers
    )
    refused(fed, response, 403, "a research node may not start careSummary at a practice node")


def test_a_requester_other_than_the_certificates_organisation_is_refused(fed: Federation) -> None:
    headers = fed.gateway_headers(fed["practice"], fed["research"].issued)
    response = fed["practice"].client.post("/peer/fhir/Task", json=peer_task("ping", "dic"), headers=headers)
    refused(fed, response, 403, "does not match the certificate's organisation 'research'")


def test_a_failed_handshake_is_answered_401_and_audited_with_the_gateways_reason(fed: Federation) -> None:
    headers = fed.gateway_headers(fed["practice"], fed["dic"].issued, verify="FAILED:certificate has expired")
    response = fed["practice"].client.post("/peer/refused", headers=headers)
    refused(fed, response, 401, "FAILED:certificate has expired")


def test_starting_a_process_needs_the_process_role(fed: Federation) -> None:
    response = fed["dic"].client.post("/fhir/Task", json=peer_task("ping", "dic"), headers=bearer("auditor"))
    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_start_at_a_role_that_does_not_answer_fails_with_the_reason(fed: Federation) -> None:
    task = fed["research"].start("ping", value("target", "valueString", "nowhere")).json()
    assert task["statusReason"]["text"] == "target 'nowhere' is not on the allow list"
    data = data_send(fed, "dic", "practice", "x")
    assert data["statusReason"]["text"] == "a dic node may not start dataSend at 'practice' (practice)"
