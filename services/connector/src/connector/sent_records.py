"""Which records this node sent to which peer: what may come back under this node's own origin.

A peer may update a record of this node (one keyed under this node's origin identifier) only when the
record is one this node sent it before, in a careSummary: the journey comes back with what the peer
added and updates the originals. A peer naming any other record of this node gets its copy keyed under
its own name instead (docs/federation.md, "Records belong to their origin").
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, select, tuple_

from connector.db import sent_records
from servicekit.db import insert_ignoring_conflicts


def remember_sent(engine: Engine, peer: str, keys: Iterable[tuple[str, str]]) -> None:
    """Note that the records of these origin keys (system, value) went to `peer`."""
    rows = [{"peer": peer, "system": system, "value": value} for system, value in sorted(set(keys))]
    with engine.begin() as connection:
        insert_ignoring_conflicts(connection, sent_records, rows)


def sent_to(engine: Engine, peer: str, keys: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """Those of `keys` whose records this node sent to `peer`."""
    wanted = sorted(set(keys))
    if not wanted:
        return frozenset()
    found: set[tuple[str, str]] = set()
    with engine.connect() as connection:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = connection.execute(
                select(sent_records.c.system, sent_records.c.value).where(
                    sent_records.c.peer == peer, tuple_(sent_records.c.system, sent_records.c.value).in_(chunk)
                )
            )
            found.update((str(system), str(value)) for system, value in rows)
    return frozenset(found)
