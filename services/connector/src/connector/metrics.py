"""What the connector's `/metrics` reads of its own state: processes by state, automatic retries waiting.

Read from the database at each scrape, so the figures are the stored truth however often the connector
restarted; each is one small query on an index.
"""

from __future__ import annotations

from sqlalchemy import Engine

from connector import retries, task_store
from servicekit.metrics import Reading


def readings(engine: Engine) -> tuple[Reading, ...]:
    """The connector's readings of `engine`."""
    return (
        Reading(
            "hubnode_connector_processes",
            "Process Tasks by side (started here or received from a peer), process and status",
            "gauge",
            ("side", "process", "status"),
            lambda: {key: float(count) for key, count in task_store.counts(engine).items()},
        ),
        Reading(
            "hubnode_connector_retries_waiting",
            "Processes whose peer was unreachable, waiting for an automatic attempt",
            "gauge",
            (),
            lambda: {(): float(retries.waiting(engine))},
        ),
    )
