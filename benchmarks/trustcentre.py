"""Trust-centre benchmarks: pseudonym throughput against raw PostgreSQL, consent checks, linkage at scale.

The service runs in-process (the same app the image runs, without the HTTP socket), against a
fresh SQLite file and against PostgreSQL in the project's own image on a loopback port. The raw
baseline is the same rows written with one `INSERT ... ON CONFLICT DO NOTHING` by psycopg.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import docker
import psycopg
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from fixtures import linkage as people
from fixtures.consents import POLICY_OID, POLICY_SYSTEM, broad_consent
from infra.plan import POSTGRES_PORT, plan_stack
from infra.spec import parse_stack
from servicekit.auth import Authenticator, Caller, token_hash
from servicekit.db import bulk_insert
from trustcentre.app import create_app
from trustcentre.auth import Role
from trustcentre.blocking import keys_of
from trustcentre.db import connect, person_demographics, persons, possible_matches
from trustcentre.epix_resources import SAVE_ACTION_SYSTEM
from trustcentre.matching import MATCH_THRESHOLD, Demographics
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


LINKAGE_PERSONS = 1_000_000
LINKAGE_DUPLICATES = 600  # 200 of each variant
LINKAGE_NEW = 200  # persons not in the MPI: every link proposed for them is a false one
_INSERT_CHUNK = 20_000


def bench_linkage(
    url: str,
    persons_known: int | None = None,
    copies: int = LINKAGE_DUPLICATES,
    strangers: int = LINKAGE_NEW,
    seed: int = 20_251_204,
) -> dict[str, Any]:
    """`$addPatient` against an MPI of generated persons: p50/p95 per call, recall and precision of matching.

    `persons_known` (default `HUBNODE_BENCH_PERSONS`, else 1,000,000) are bulk-inserted into the
    database at `url` first. Then `copies` misspelt copies of some of them (typos, transliterations,
    swapped names, a third each) and `strangers` never seen are added one call each. Recall: copies
    whose original is proposed (possible match or better); precision: of the proposals scored as a
    match (those E-PIX would link automatically), how many name the original (or an earlier copy).
    """
    count = persons_known or int(os.environ.get("HUBNODE_BENCH_PERSONS", LINKAGE_PERSONS))
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data, not secrets
    generated = [people.person(rng) for _ in range(count)]
    _load_mpi(url, generated)
    with_umlaut = [i for i, p in enumerate(generated) if people.has_umlaut(p)]
    per_kind = copies // len(people.VARIANTS)
    queries: list[tuple[people.Person, str | None, people.Variant | None]] = [
        (people.variant(rng, generated[index], kind), _bench_mpi(index), kind)
        for kind in people.VARIANTS
        for index in rng.sample(with_umlaut if kind == "transliteration" else range(count), per_kind)
    ]
    queries += [(people.person(rng), None, None) for _ in range(strangers)]
    rng.shuffle(queries)
    seconds: list[float] = []
    found = dict.fromkeys(people.VARIANTS, 0)
    automatic = wrong_automatic = 0
    origin: dict[str, str] = {}  # MPI of an added copy -> MPI of its original
    with TestClient(create_app(_settings(url))) as http:
        engine = http.app.state.engine  # type: ignore[attr-defined]
        for number, (who, original, variant) in enumerate(queries):
            started = time.perf_counter()
            response = http.post(
                "/ttp-fhir/fhir/epix/$addPatient", content=_add_patient_body(who, number), headers=HEADERS
            )
            seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"$addPatient answered {response.status_code}: {response.text[:300]}")
            added = _mpi_in(response.json())
            proposed = {origin.get(mpi, mpi): score for mpi, score in _proposals(engine, added).items()}
            origin[added] = original or added  # an earlier copy of the same person is that person too
            if variant is not None and original in proposed:
                found[variant] += 1
            automatic += sum(score >= MATCH_THRESHOLD for score in proposed.values())
            wrong_automatic += sum(score >= MATCH_THRESHOLD for mpi, score in proposed.items() if mpi != original)
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    recall = sum(found.values()) / (per_kind * len(people.VARIANTS))
    precision = (automatic - wrong_automatic) / automatic if automatic else 1.0
    return {
        "database": url.split(":", 1)[0],
        "persons": count,
        "calls": len(seconds),
        "p50_ms": cuts[49] * 1000,
        "p95_ms": cuts[94] * 1000,
        "recall": recall,
        "recall_by_variant": {kind: hits / per_kind for kind, hits in found.items()},
        "automatic_precision": precision,
        "automatic_links": automatic,
        "targets": {"recall_min": 0.95, "automatic_precision_min": 0.99},
    }


def _bench_mpi(index: int) -> str:
    return f"MPI-BENCH{index:010d}"


def _load_mpi(url: str, generated: list[people.Person]) -> None:
    """The generated persons, one identity each, in chunks of bulk inserts (with a progress line)."""
    engine = connect(url)
    for start in range(0, len(generated), _INSERT_CHUNK):
        chunk = generated[start : start + _INSERT_CHUNK]
        rows = []
        for offset, who in enumerate(chunk):
            keys = keys_of(Demographics(who.family, who.given, who.birth_date, who.sex))
            rows.append(
                {
                    "mpi": _bench_mpi(start + offset),
                    "family": who.family,
                    "given": who.given,
                    "birth_date": who.birth_date,
                    "sex": who.sex,
                    "source": "bench",
                    "family_key": keys.family_key,
                    "given_key": keys.given_key,
                }
            )
        with engine.begin() as connection:
            bulk_insert(connection, persons, [{"mpi": row["mpi"]} for row in rows])
            bulk_insert(connection, person_demographics, rows)
        print(f"\rlinkage: {start + len(chunk):,}/{len(generated):,} persons stored", end="", file=sys.stderr)
    print(file=sys.stderr)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE person_demographics")
    engine.dispose()


def _add_patient_body(who: people.Person, number: int) -> str:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:bench:mrn", "value": f"q-{number}"}],
        "name": [{"family": who.family, "given": [who.given]}],
        "gender": who.sex,
        "birthDate": who.birth_date.isoformat(),
    }
    parameters = [
        {"name": "domain", "valueString": "bench"},
        {"name": "source", "valueString": "bench-site"},
        {"name": "identity", "resource": patient},
        {"name": "saveAction", "valueCoding": {"system": SAVE_ACTION_SYSTEM, "code": "SAVE_ALL"}},
        {"name": "forceReferenceUpdate", "valueBoolean": False},
    ]
    return json.dumps({"resourceType": "Parameters", "parameter": parameters})


def _mpi_in(answer: dict[str, Any]) -> str:
    [result] = answer["parameter"]
    [person] = [part["resource"] for part in result["part"] if part["name"] == "mpiPerson"]
    return str(person["identifier"][0]["value"])


def _proposals(engine: Engine, mpi: str) -> dict[str, float]:
    """Candidate MPI -> score of the possible matches recorded for a new person."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(possible_matches.c.candidate_mpi, possible_matches.c.score).where(possible_matches.c.mpi == mpi)
        )
        return {row.candidate_mpi: row.score for row in rows}


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
    if "linkage" in results:
        linkage = results["linkage"]
        rows.append(
            (
                f"$addPatient p50 / p95 ({linkage['persons']:,} persons, {linkage['database']})",
                f"{linkage['p50_ms']:.1f} / {linkage['p95_ms']:.1f} ms",
                "",
            )
        )
        rows.append(("linkage recall (typos, transliterations, swaps)", f"{linkage['recall']:.3f}", "target >= 0.95"))
        rows.append(
            ("linkage precision of automatic-grade matches", f"{linkage['automatic_precision']:.3f}", "target >= 0.99")
        )
    if "consent" in results:
        consent = results["consent"]
        rows.append(
            ("$isConsented p50 / p95 (10 consents)", f"{consent['p50_ms']:.1f} / {consent['p95_ms']:.1f} ms", "")
        )
    return rows
