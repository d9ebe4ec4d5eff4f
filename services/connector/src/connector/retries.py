"""When a process whose peer could not be reached is tried again by itself (docs/federation.md, "Peer down").

A peer that is down, restarting or behind a gateway that refuses connections is usually back within
minutes; people should not have to notice and press `$retry`. A Task that failed for that reason alone
is tried again with its idempotency key (so the peer stores nothing twice) after `first_seconds`, then
after doubling waits up to `longest_seconds`, at most `attempts` times. It stays `failed` meanwhile, its
reason saying when the next attempt is due, so `$retry` still works at once. The plan is kept in the
connector's database, so a restart of the connector loses none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, insert, select, update

from connector.db import process_retries


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a process to an unreachable peer is tried again (`attempts` 0: never)."""

    first_seconds: int = 30
    longest_seconds: int = 900
    attempts: int = 8

    def wait(self, attempt: int) -> timedelta:
        """How long before automatic attempt number `attempt` (1, 2, ...)."""
        return timedelta(seconds=min(self.first_seconds * 2 ** (attempt - 1), self.longest_seconds))


@dataclass(frozen=True)
class Planned:
    """The next automatic attempt of a Task: its number and when it is due."""

    attempt: int
    due: datetime


def plan_next(engine: Engine, task_id: str, policy: RetryPolicy, now: datetime) -> Planned | None:
    """Plan the next automatic attempt of a Task that just failed for an unreachable peer; None when none is left."""
    with engine.begin() as connection:
        done = connection.execute(
            select(process_retries.c.attempt).where(process_retries.c.task_id == task_id)
        ).scalar_one_or_none()
        planned = Planned((done or 0) + 1, now + policy.wait((done or 0) + 1))
        if planned.attempt > policy.attempts:
            connection.execute(delete(process_retries).where(process_retries.c.task_id == task_id))
            return None
        values = {"attempt": planned.attempt, "due_at": planned.due}
        if done is None:
            connection.execute(insert(process_retries).values(task_id=task_id, **values))
        else:
            connection.execute(update(process_retries).where(process_retries.c.task_id == task_id).values(**values))
    return planned


def forget(engine: Engine, task_id: str) -> None:
    """No more automatic attempts of a Task: it completed, or failed for a reason waiting does not cure."""
    with engine.begin() as connection:
        connection.execute(delete(process_retries).where(process_retries.c.task_id == task_id))


def due(engine: Engine, now: datetime) -> list[str]:
    """The Tasks whose next automatic attempt is due, the longest waiting first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(process_retries.c.task_id).where(process_retries.c.due_at <= now).order_by(process_retries.c.due_at)
        )
        return [str(task_id) for task_id in rows.scalars()]


def waiting(engine: Engine) -> int:
    """How many Tasks wait for an automatic attempt."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(process_retries)).scalar_one())
