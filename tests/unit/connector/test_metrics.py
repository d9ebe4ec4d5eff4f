"""The connector's `/metrics`: processes by state at both ends, automatic retries waiting, audit records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, inspect
from starlette.testclient import TestClient

from connector import task_store
from connector.db import MIGRATIONS, connect, process_state_indexes
from servicekit import db as servicekit_db
from servicekit.allowlist import NodeRole
from tests.unit.connector.conftest import headers
from tests.unit.connector.federation import CLINIC, federation, value
from tests.unit.servicekit.scrape import requests, scrape
from tests.unit.servicekit.scrape import value as sample

SITES = {"dic": NodeRole.DIC, "practice": NodeRole.PRACTICE}


def processes(client: TestClient) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["side"], s.labels["process"], s.labels["status"]): s.value
        for s in scrape(client)["hubnode_connector_processes"]
    }


def test_processes_are_counted_by_state_at_both_ends_and_waiting_retries_are_shown(
    tmp_path: Path, trustcentre_transport: httpx.ASGITransport
) -> None:
    fed = federation(tmp_path, trustcentre_transport, SITES)
    dic, practice = fed["dic"].client, fed["practice"].client
    assert processes(dic) == {}
    assert sample(scrape(dic), "hubnode_connector_retries_waiting") == 0
    assert fed["dic"].start("ping", value("target", "valueString", "practice")).status_code == 201
    fed["dic"].ingest_patient("p1", codes=("C50.4",))
    fed.consent("p1", "5")
    fed.down.add("practice")
    patient = value("patient", "valueIdentifier", {"system": CLINIC, "value": "p1"})
    failed = fed["dic"].start("careSummary", value("target", "valueString", "practice"), patient).json()
    assert failed["status"] == "failed"
    assert processes(dic) == {("started", "ping", "completed"): 1, ("started", "careSummary", "failed"): 1}
    assert processes(practice) == {("received", "ping", "completed"): 1}
    assert sample(scrape(dic), "hubnode_connector_retries_waiting") == 1
    fed.down.clear()
    retried = dic.post(f"/fhir/Task/{failed['id']}/$retry", headers=headers("starter"))
    assert retried.json()["status"] == "completed"
    samples = scrape(dic)
    assert sample(samples, "hubnode_connector_retries_waiting") == 0
    assert requests(samples)[("POST", "/fhir/Task/{id}/$retry", "2xx")] == 1
    assert failed["id"] not in dic.get("/metrics").text


def test_the_connector_counts_its_reads_by_template_and_its_audit_records(client: TestClient) -> None:
    assert client.get("/fhir/Patient/p-4711", headers=headers("reader")).status_code == 404
    assert client.get("/fhir/Patient/p-4711").status_code == 401
    samples = scrape(client)
    assert requests(samples)[("GET", "/fhir/{type}/{id}", "4xx")] == 2
    assert sample(samples, "hubnode_audit_records") == 2, "the read and the refusal"
    assert "p-4711" not in client.get("/metrics").text


def test_a_store_made_before_the_state_index_gets_it_and_processes_are_counted_on_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'connector.db'}"
    old = servicekit_db.connect(url, MIGRATIONS[:3])
    with old.begin() as connection:
        for index in process_state_indexes:
            index.drop(connection)  # as the first steps made the tables before the index existed
    old.dispose()
    engine = connect(url)
    tables = ("started_tasks", "received_tasks")
    names = {index["name"] for table in tables for index in inspect(engine).get_indexes(table)}
    assert {"ix_started_tasks_state", "ix_received_tasks_state"} <= names
    statements: list[tuple[str, Any]] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append((args[2], args[3])))
    assert task_store.counts(engine) == {}
    counted = [(sql, parameters) for sql, parameters in statements if "count(" in sql]
    assert len(counted) == 2
    with engine.connect() as connection:
        for (sql, parameters), index in zip(
            counted, ("ix_started_tasks_state", "ix_received_tasks_state"), strict=True
        ):
            plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters))
            assert f"COVERING INDEX {index}" in plan, plan
