"""Remembering process Tasks: the ones this node started and the answers it gave to peers.

A started Task is kept so `$retry` can finish it with the same idempotency key, and a repeated start
with a known key returns it instead of starting again; a received Task's completed answer is kept
under (requester, key) so a peer's retry gets the same answer and nothing is done twice.

Several connectors may share one database (the connector in two pods). Whoever runs a started Task
holds a claim on it, renewed while it runs and given up when the Task is saved finished, so no two run it
at once; a claim left by a connector that stopped lapses after `CLAIM_SECONDS`, and its Task is an orphan
that any of them resumes (`processes.resume_orphans`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from connector.db import received_tasks, started_tasks
from connector.tasks import PROCESS_BASE, Process, Status


def started(engine: Engine, *, task_id: str | None = None, key: str | None = None) -> dict[str, Any] | None:
    """The started Task with this id (or idempotency key), or None."""
    column, value = (started_tasks.c.id, task_id) if task_id is not None else (started_tasks.c.idempotency_key, key)
    with engine.connect() as connection:
        found = connection.execute(select(started_tasks.c.task_json).where(column == value)).scalar_one_or_none()
    return dict(found) if found is not None else None


#: How long a claim holds unless renewed; the retrier renews its connector's claims far more often.
CLAIM_SECONDS = 60


def claim_until(now: datetime) -> datetime:
    """When a claim taken or renewed at `now` lapses."""
    return now + timedelta(seconds=CLAIM_SECONDS)


def claim_started(engine: Engine, task: dict[str, Any], key: str, holder: str, now: datetime) -> dict[str, Any] | None:
    """Store a new started Task, claimed by `holder`; if another holds `key` already, that one (nothing is stored)."""
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(started_tasks).values(
                    id=task["id"],
                    idempotency_key=key,
                    process=_process(task),
                    status=task["status"],
                    task_json=task,
                    claimed_by=holder,
                    claimed_until=claim_until(now),
                )
            )
    except IntegrityError:
        return started(engine, key=key)
    return None


def claim(engine: Engine, task_id: str, holder: str, now: datetime) -> bool:
    """Claim a started Task for `holder` (to run it): False while another connector's claim holds."""
    with engine.begin() as connection:
        claimed = connection.execute(
            update(started_tasks)
            .where(started_tasks.c.id == task_id, or_(_unclaimed(now), started_tasks.c.claimed_by == holder))
            .values(claimed_by=holder, claimed_until=claim_until(now))
        )
    return claimed.rowcount == 1


def renew(engine: Engine, holder: str, task_ids: list[str], now: datetime) -> None:
    """Keep `holder`'s claims on the Tasks it is running from lapsing."""
    if not task_ids:
        return
    with engine.begin() as connection:
        connection.execute(
            update(started_tasks)
            .where(started_tasks.c.id.in_(task_ids), started_tasks.c.claimed_by == holder)
            .values(claimed_until=claim_until(now))
        )


def save_started(engine: Engine, task: dict[str, Any], holder: str) -> None:
    """Record how a run of a started Task ended, and give up `holder`'s claim on it."""
    released = case((started_tasks.c.claimed_by == holder, None), else_=started_tasks.c.claimed_by)
    with engine.begin() as connection:
        connection.execute(
            update(started_tasks)
            .where(started_tasks.c.id == task["id"])
            .values(status=task["status"], task_json=task, updated=func.now(), claimed_by=released)
        )


def orphans(engine: Engine, now: datetime) -> list[str]:
    """The started Tasks still `requested` that no connector's claim holds: left so by one that stopped."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(started_tasks.c.id)
            .where(started_tasks.c.status == Status.REQUESTED.value, _unclaimed(now))
            .order_by(started_tasks.c.created)
        )
        return [str(task_id) for task_id in rows.scalars()]


def _unclaimed(now: datetime) -> ColumnElement[bool]:
    return or_(started_tasks.c.claimed_by.is_(None), started_tasks.c.claimed_until < now)


def answered(engine: Engine, requester: str, key: str) -> dict[str, Any] | None:
    """The answer this node gave `requester` for `key`, or None."""
    with engine.connect() as connection:
        found = connection.execute(
            select(received_tasks.c.task_json).where(
                received_tasks.c.requester == requester, received_tasks.c.idempotency_key == key
            )
        ).scalar_one_or_none()
    return dict(found) if found is not None else None


def save_answer(engine: Engine, requester: str, key: str, task: dict[str, Any]) -> None:
    """Keep a completed answer; a concurrent twin that got there first wins (same work, same answer)."""
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(received_tasks).values(
                    id=task["id"],
                    requester=requester,
                    idempotency_key=key,
                    process=_process(task),
                    status=task["status"],
                    task_json=task,
                )
            )
    except IntegrityError:
        return


def counts(engine: Engine) -> dict[tuple[str, str, str], int]:
    """(side `started` or `received`, process, status) -> how many Tasks: grouped in the database, on its index.

    Only the processes this connector knows are counted, so what a table holds never widens the label set.
    """
    found: dict[tuple[str, str, str], int] = {}
    with engine.connect() as connection:
        for side, table in (("started", started_tasks), ("received", received_tasks)):
            rows = connection.execute(
                select(table.c.process, table.c.status, func.count())
                .where(table.c.process.in_([process.value for process in Process]))
                .group_by(table.c.process, table.c.status)
            )
            for process, status, count in rows:
                found[side, process, status] = count
    return found


def _process(task: dict[str, Any]) -> str:
    return str(task.get("instantiatesCanonical", "")).removeprefix(PROCESS_BASE).split("|")[0][:64]
