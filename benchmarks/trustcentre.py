"""Trust-centre benchmarks: pseudonym throughput against raw PostgreSQL, and consent checks.

The service runs in-process (the same app the image runs, without the HTTP socket), against a
fresh SQLite file and against PostgreSQL in the project's own image on a loopback port. The raw
baseline is the same rows written with one `INSERT ... ON CONFLICT DO NOTHING` by psycopg.
"""

from __future__ import annotations

import json
import secrets
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import docker
import psycopg
from starlette.testclient import TestClient

from fixtures.consents import POLICY_OID, POLICY_SYSTEM, broad_consent
from infra.plan import POSTGRES_PORT, plan_stack
from infra.spec import parse_stack
from servicekit.auth import Authenticator, Caller, token_hash
from trustcentre.app import create_app
from trustcentre.auth import Role
from trustcentre.settings import Settings

BATCHES = (1, 100, 1000)
ROUNDS = 5
TOKEN = secrets.token_urlsafe(24)
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
PG_READY_BUDGET_S = 60.0


def _settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        secret=secrets.token_bytes(32),
        authenticator=Authenticator({token_hash(TOKEN): Caller("bench", frozenset(Role))}, {}),
        domains={"bench": {}},
        max_batch=10_000,
    )


@contextmanager
def postgres(client: docker.DockerClient) -> Iterator[str]:
    """A throw-away PostgreSQL from the project's image on a loopback port; yields its URL."""
    [plan] = plan_stack(parse_stack("bench", {"hubnode:site": "bench", "hubnode:database": "postgres"}))
    image = plan.services[0].image.reference
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as folder:
        password_file = Path(folder) / "password"
        password_file.write_text(password)
        password_file.chmod(0o444)
        port = _free_port()
        container = client.containers.run(
            image,
            detach=True,
            user="postgres",
            environment={"POSTGRES_USER": "bench", "POSTGRES_DB": "bench", "POSTGRES_PASSWORD_FILE": "/run/secrets/pw"},
            volumes={str(password_file): {"bind": "/run/secrets/pw", "mode": "ro"}},
            ports={f"{POSTGRES_PORT}/tcp": ("127.0.0.1", port)},
        )
        try:
            url = f"postgresql+psycopg://bench:{password}@127.0.0.1:{port}/bench"
            _wait_for_postgres(url)
            yield url
        finally:
            container.remove(force=True, v=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _wait_for_postgres(url: str) -> None:
    deadline = time.monotonic() + PG_READY_BUDGET_S
    while True:
        try:
            with psycopg.connect(_plain(url), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _pseudonymize_body(originals: list[str]) -> str:
    parts = [{"name": "target", "valueString": "bench"}, *({"name": "original", "valueString": o} for o in originals)]
    return json.dumps({"resourceType": "Parameters", "parameter": parts})


def _timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_pseudonyms(client: docker.DockerClient) -> dict[str, Any]:
    """Pseudonyms/s per batch size, new and existing originals, SQLite and PostgreSQL, vs raw SQL."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = _pseudonym_rates(f"sqlite:///{folder}/bench.db")
    with postgres(client) as url:
        results["postgres"] = _pseudonym_rates(url)
        results["raw_postgres_insert_on_conflict"] = _raw_rates(url)
    largest = str(BATCHES[-1])
    results["postgres_batched_per_s"] = results["postgres"]["new"][largest]
    results["ratio_to_raw"] = results["postgres"]["new"][largest] / results["raw_postgres_insert_on_conflict"][largest]
    results["targets"] = {"postgres_batched_per_s_min": 5000, "ratio_to_raw_min": 0.3}
    return results


def _pseudonym_rates(url: str) -> dict[str, dict[str, float]]:
    rates: dict[str, dict[str, float]] = {"new": {}, "existing": {}}
    with TestClient(create_app(_settings(url))) as http:
        for batch in BATCHES:
            for kind in ("new", "existing"):
                samples = []
                for round_number in range(ROUNDS):
                    originals = [f"{batch}-{round_number}-{i}" for i in range(batch)]
                    if kind == "existing":
                        http.post(
                            "/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate",
                            content=_pseudonymize_body(originals),
                            headers=HEADERS,
                        )
                    else:
                        originals = [f"new-{o}" for o in originals]
                    body = _pseudonymize_body(originals)
                    samples.append(
                        _timed(partial(_post_ok, http, "/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate", body))
                    )
                rates[kind][str(batch)] = batch / statistics.median(samples)
    return rates


def _post_ok(http: TestClient, path: str, body: str) -> None:
    response = http.post(path, content=body, headers=HEADERS)
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")


def _raw_rates(url: str) -> dict[str, float]:
    rates: dict[str, float] = {}
    with psycopg.connect(_plain(url), autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE raw_pseudonyms (id serial PRIMARY KEY, domain varchar(64), original varchar(255),"
            " pseudonym varchar(128), UNIQUE (domain, original), UNIQUE (domain, pseudonym))"
        )
        for batch in BATCHES:
            samples = []
            for round_number in range(ROUNDS):
                rows = [("bench", f"raw-{batch}-{round_number}-{i}", secrets.token_hex(6)) for i in range(batch)]
                placeholders = ", ".join(["(%s, %s, %s)"] * batch)
                values = [v for row in rows for v in row]
                sql = (
                    "INSERT INTO raw_pseudonyms (domain, original, pseudonym) "  # noqa: S608 -- placeholders only
                    f"VALUES {placeholders} ON CONFLICT DO NOTHING"
                )
                samples.append(_timed(partial(_in_transaction, connection, sql, values)))
            rates[str(batch)] = batch / statistics.median(samples)
    return rates


def _in_transaction(connection: psycopg.Connection[Any], sql: str, values: list[str]) -> None:
    with connection.transaction():
        connection.execute(sql, values)


def bench_consent() -> dict[str, Any]:
    """`$isConsented` p50/p95 for a person with 10 consents (SQLite, in-process)."""
    person = {"system": "urn:bench:mrn", "value": "bench-1"}
    with tempfile.TemporaryDirectory() as folder, TestClient(create_app(_settings(f"sqlite:///{folder}/b.db"))) as http:
        for year in range(2015, 2025):
            body = {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": broad_consent(person, f"{year}-01-01T10:00:00Z", "8", "7")}
                ],
            }
            _post_ok(http, "/ttp-fhir/fhir/gics/$addConsent", json.dumps(body))
        question = json.dumps(
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "personIdentifier", "valueIdentifier": person},
                    {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": f"{POLICY_OID}.8"}},
                    {"name": "config", "part": [{"name": "requestDate", "valueDate": "2025-06-01"}]},
                ],
            }
        )
        samples = [_timed(partial(_post_ok, http, "/ttp-fhir/fhir/gics/$isConsented", question)) for _ in range(200)]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"consents": 10, "requests": len(samples), "p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000}


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table."""
    rows: list[tuple[str, str, str]] = []
    if "pseudonyms" in results:
        figures = results["pseudonyms"]
        for database in ("sqlite", "postgres"):
            for kind in ("new", "existing"):
                rates = ", ".join(f"{b}: {figures[database][kind][str(b)]:.0f}" for b in BATCHES)
                rows.append((f"pseudonyms/s {database} {kind} (batch {'/'.join(map(str, BATCHES))})", rates, ""))
        raw = ", ".join(f"{b}: {figures['raw_postgres_insert_on_conflict'][str(b)]:.0f}" for b in BATCHES)
        rows.append(("raw PG INSERT ON CONFLICT rows/s", raw, ""))
        rows.append(("pseudonyms/s postgres batched", f"{figures['postgres_batched_per_s']:.0f}", "target >= 5000"))
        rows.append(("pseudonyms: ratio to raw PG", f"{figures['ratio_to_raw']:.2f}", "target >= 0.3"))
    if "consent" in results:
        consent = results["consent"]
        rows.append(
            ("$isConsented p50 / p95 (10 consents)", f"{consent['p50_ms']:.1f} / {consent['p95_ms']:.1f} ms", "")
        )
    return rows
