"""Claims on started Tasks: several connectors on one database run each Task once (`connector.task_store`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text

from connector import task_store
from connector.audit import exchange_record, record_alone
from connector.db import MIGRATIONS, connect
from servicekit import db as servicekit_db

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
LAPSED = NOW + timedelta(seconds=task_store.CLAIM_SECONDS + 1)


def requested(task_id: str) -> dict[str, Any]:
    return {"resourceType": "Task", "id": task_id, "status": "requested", "authoredOn": "2026-12-06T09:00:00Z"}


def test_a_claim_holds_against_others_until_it_lapses_and_is_renewed_only_by_its_holder(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'connector.db'}")
    assert task_store.claim_started(engine, requested("t1"), "k1", "pod-a", NOW) is None
    assert not task_store.claim(engine, "t1", "pod-b", NOW + timedelta(seconds=30))
    assert task_store.claim(engine, "t1", "pod-a", NOW + timedelta(seconds=30)), "its holder may take it again"
    task_store.renew(engine, "pod-b", ["t1"], NOW + timedelta(seconds=80))
    assert task_store.orphans(engine, NOW + timedelta(seconds=80)) == [], "renewed by pod-a at +30 s, not by pod-b"
    assert task_store.orphans(engine, LAPSED + timedelta(seconds=30)) == ["t1"]
    assert task_store.claim(engine, "t1", "pod-b", LAPSED + timedelta(seconds=30)), "a lapsed claim is anybody's"
    assert not task_store.claim(engine, "t1", "pod-a", LAPSED + timedelta(seconds=31))


def test_a_finished_run_gives_up_its_claim_but_not_one_taken_over_by_another(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'connector.db'}")
    task_store.claim_started(engine, requested("t1"), "k1", "pod-a", NOW)
    task_store.save_started(engine, {**requested("t1"), "status": "failed"}, "pod-a")
    assert task_store.claim(engine, "t1", "pod-b", NOW), "the failed Task may be retried anywhere at once"
    task_store.save_started(engine, {**requested("t1"), "status": "failed"}, "pod-a")  # a late end of pod-a's run
    assert not task_store.claim(engine, "t1", "pod-c", NOW), "pod-b's claim stands"
    assert task_store.orphans(engine, LAPSED) == [], "a failed Task is no orphan: it waits for a retry"


def test_a_store_made_before_claims_gets_them_and_its_open_tasks_are_orphans(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'connector.db'}"
    old = servicekit_db.connect(url, MIGRATIONS[:4])
    with old.begin() as connection:
        for column in ("claimed_by", "claimed_until"):  # as the first steps made the table before claims existed
            connection.execute(text(f"ALTER TABLE started_tasks DROP COLUMN {column}"))
        connection.execute(
            text(
                "INSERT INTO started_tasks (id, idempotency_key, process, status, task_json)"
                " VALUES ('old', 'k0', 'ping', 'requested', :task)"
            ),
            {"task": '{"resourceType": "Task", "id": "old", "status": "requested"}'},
        )
    old.dispose()
    engine: Engine = connect(url)
    columns = {column["name"] for column in inspect(engine).get_columns("started_tasks")}
    assert {"claimed_by", "claimed_until"} <= columns
    assert task_store.orphans(engine, NOW) == ["old"], "left open by the connector before the upgrade"


def test_a_store_kept_on_sqlite_before_is_adopted_once_with_its_audit_trail_and_numbering(tmp_path: Path) -> None:
    before = tmp_path / "connector.db"
    old = connect(f"sqlite:///{before}")
    task_store.claim_started(old, requested("t1"), "k1", "old-connector", NOW)
    for number in range(3):
        record_alone(old, exchange_record("ping", "practice", [f"person-{number}"], "success"))
    old.dispose()

    engine = connect(f"sqlite:///{tmp_path / 'moved.db'}", adopt_store=before)
    assert not before.exists()
    assert (tmp_path / "connector.db.adopted").is_file(), "kept beside, never read again"
    assert task_store.started(engine, task_id="t1") == requested("t1")
    record_alone(engine, exchange_record("ping", "practice", ["person-3"], "success"))
    with engine.connect() as connection:
        ids = connection.execute(text("SELECT id FROM audit_events ORDER BY id")).scalars().all()
        subjects = connection.execute(text("SELECT count(*) FROM audit_subjects")).scalar_one()
    assert ids == [1, 2, 3, 4], "the trail goes on after the adopted records"
    assert subjects == 4
    engine.dispose()
    assert connect(f"sqlite:///{tmp_path / 'moved.db'}", adopt_store=before) is not None, "nothing left to adopt"


def test_a_store_is_not_adopted_into_a_database_that_holds_data(tmp_path: Path) -> None:
    before = tmp_path / "connector.db"
    old = connect(f"sqlite:///{before}")
    task_store.claim_started(old, requested("old"), "k-old", "old-connector", NOW)
    old.dispose()
    used = connect(f"sqlite:///{tmp_path / 'used.db'}")
    task_store.claim_started(used, requested("new"), "k-new", "pod-a", NOW)
    engine = connect(f"sqlite:///{tmp_path / 'used.db'}", adopt_store=before)
    assert before.is_file(), "left for site IT to look at"
    assert task_store.started(engine, task_id="old") is None
