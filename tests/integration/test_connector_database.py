"""The connector's store on the project's real PostgreSQL: pods starting at once, a SQLite store adopted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import docker
import psycopg
import pytest
from sqlalchemy import Engine, text

from connector import task_store
from connector.audit import exchange_record, record_alone
from connector.db import connect
from tests.integration.conftest import free_port, node_plan

pytestmark = pytest.mark.usefixtures("built")
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
PASSWORD = "integration-only"  # a throwaway database on 127.0.0.1 for this test alone
READY_WITHIN_S = 60.0


@pytest.fixture
def postgres(client: docker.DockerClient, tmp_path: Path) -> Iterator[str]:
    """An empty database in the node plan's PostgreSQL image, on a free loopback port: its URL."""
    [db] = [s for s in node_plan("itest-cndb", database="postgres").services if s.component == "db"]
    password = tmp_path / "cndb-password"
    password.write_text(PASSWORD)
    password.chmod(0o644)  # read by the image's own user
    port = free_port()
    container = client.containers.run(
        db.image.reference,
        detach=True,
        remove=True,
        environment={**db.env, "POSTGRES_USER": "connector", "POSTGRES_DB": "connector"},
        volumes={str(password): {"bind": db.secrets[0].path, "mode": "ro"}},
        tmpfs={tmpfs.path: "" for tmpfs in db.hardening.tmpfs},
        ports={"5432/tcp": ("127.0.0.1", port)},
        labels={"org.hubnode.stack": "itest-cndb"},
    )
    try:
        deadline = time.monotonic() + READY_WITHIN_S
        while True:
            try:
                psycopg.connect(f"postgresql://connector:{PASSWORD}@127.0.0.1:{port}/connector").close()
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, container.logs().decode()[-2000:]
                time.sleep(0.5)
        yield f"postgresql+psycopg://connector:{PASSWORD}@127.0.0.1:{port}/connector"
    finally:
        container.stop(timeout=5)


def test_pods_starting_at_once_on_an_empty_database_migrate_it_once_and_both_run(postgres: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        engines: list[Engine] = list(pool.map(lambda _: connect(postgres), range(4)))
    with engines[0].connect() as connection:
        versions = connection.execute(text("SELECT version FROM schema_version ORDER BY version")).scalars().all()
    assert versions == list(range(1, len(versions) + 1)), "every step recorded once"
    task_store.claim_started(engines[0], {"id": "t1", "status": "requested"}, "k1", "pod-a", NOW)
    assert not task_store.claim(engines[1], "t1", "pod-b", NOW), "the claim holds across connections"
    for engine in engines:
        engine.dispose()


def test_a_sqlite_store_is_adopted_and_the_audit_trail_numbers_on(postgres: str, tmp_path: Path) -> None:
    before = tmp_path / "connector.db"
    old = connect(f"sqlite:///{before}")
    task_store.claim_started(old, {"id": "t1", "status": "requested"}, "k1", "old-connector", NOW)
    for number in range(3):
        record_alone(old, exchange_record("ping", "practice", [f"person-{number}"], "success"))
    old.dispose()

    engine = connect(postgres, adopt_store=before)
    assert (tmp_path / "connector.db.adopted").is_file()
    assert task_store.started(engine, task_id="t1") == {"id": "t1", "status": "requested"}
    record_alone(engine, exchange_record("ping", "practice", ["person-3"], "success"))  # no clash with id 1..3
    with engine.connect() as connection:
        ids = connection.execute(text("SELECT id FROM audit_events ORDER BY id")).scalars().all()
    assert ids == [1, 2, 3, 4]
    engine.dispose()
