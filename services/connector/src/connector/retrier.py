"""The connector's background work: every few seconds, the processes whose automatic attempt is due.

At start it also resumes the processes a stopped connector left open (`processes.resume_unfinished`).

Runs inside the connector's one process for as long as the app runs (`app.py` starts and stops it),
so a Task is never tried by two retriers at once; a person's `$retry` meanwhile waits for a running
attempt (`processes.retry`). What is due lives in the database (`connector.retries`), so nothing is
lost when the connector restarts.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool

from connector import processes, retries
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
    """Look for due attempts until cancelled; a failure of one round is logged and the next round comes.

    The first round that reaches the database also resumes the Tasks a stopped connector left open.
    """
    started = datetime.now(UTC)
    resumed = False
    while True:
        try:
            if not resumed:
                await processes.resume_unfinished(node, started, RESUMED_CALLER)
                resumed = True
            await retry_due(node, datetime.now(UTC))
        except Exception:  # the retrier must outlive a bad round (the database restarting, ...)
            LOG.exception("automatic retries: this round failed; trying again in %.0f s", poll_seconds)
        await asyncio.sleep(poll_seconds)
