"""The connector's background work: every few seconds, the processes whose automatic attempt is due.

Each round also resumes the Tasks a stopped connector left open (`processes.resume_orphans`), and beside
the rounds the connector renews its claims on the Tasks it runs. Runs for as long as the app runs
(`app.py` starts and stops it). Several connectors may share one database: a Task runs only where it is
claimed (`connector.task_store`), so two retriers never try it at once, and a person's `$retry` meanwhile
waits for a running attempt (`processes.retry`). What is due lives in the database (`connector.retries`),
so nothing is lost when a connector restarts.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool

from connector import processes, retries, task_store
from connector.processes import Node
from servicekit.fhir import FhirError

LOG = logging.getLogger("connector.retrier")
#: How often the retrier looks for due attempts; a wait is never shorter than the policy's first one anyway.
POLL_SECONDS = 5.0
CALLER = "automatic retry"
RESUMED_CALLER = "resumed after a restart"


async def retry_due(node: Node, now: datetime) -> int:
    """Try every process whose automatic attempt is due at `now` once; how many were tried."""
    due = await run_in_threadpool(retries.due, node.engine, now)
    for task_id in due:
        try:
            task = await processes.retry(node, task_id, CALLER)
        except FhirError as error:  # the Task is gone: nothing left to try
            LOG.warning("automatic retry of Task %s: %s", task_id, error)
            await run_in_threadpool(retries.forget, node.engine, task_id)
            continue
        LOG.info("automatic retry of Task %s: %s", task_id, task["status"])
    return len(due)


async def run_forever(node: Node, poll_seconds: float = POLL_SECONDS) -> None:
    """Work rounds until cancelled; a failure of one round is logged and the next round comes.

    The claims are renewed apart from the rounds: a round waits for the processes it runs, which may
    take longer than a claim holds.
    """
    renewing = asyncio.create_task(_renew_claims(node, poll_seconds))
    try:
        while True:
            try:
                await processes.resume_orphans(node, RESUMED_CALLER)
                await retry_due(node, datetime.now(UTC))
            except Exception:  # the retrier must outlive a bad round (the database restarting, ...)
                LOG.exception("automatic retries: this round failed; trying again in %.0f s", poll_seconds)
            await asyncio.sleep(poll_seconds)
    finally:
        renewing.cancel()


async def _renew_claims(node: Node, poll_seconds: float) -> None:
    """Keep the claims on the Tasks this connector runs from lapsing, every `poll_seconds`, until cancelled."""
    while True:
        try:
            await run_in_threadpool(task_store.renew, node.engine, node.claimant, list(node.running), datetime.now(UTC))
        except Exception:  # the database restarting: the next renewal comes well before a claim lapses
            LOG.exception("renewing the claims on running processes failed; trying again in %.0f s", poll_seconds)
        await asyncio.sleep(poll_seconds)
