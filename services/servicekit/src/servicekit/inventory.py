"""A service's stores as counts and digests, so two copies of one node can be compared without their data.

`GET|POST .../$inventory` answers a FHIR Parameters with one `store` part per store: its `name`, the
`count` of its rows and a SHA-256 `digest` over their content in a fixed order. Nothing else leaves:
no row, no secret, so the site's administrator can compare a node with its restored copy (or two
replicas) by numbers alone. Columns a write stamps with the clock (`created`, `recorded`) are left out,
as FHIR's `meta.lastUpdated` is for resources: the inventory is of what the node holds, not of when.
Rows are read in order in batches and hashed as they come, so a store of millions needs no memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from servicekit.auth import Caller
from servicekit.fhir import FhirError
from servicekit.web import authenticate, error_response, fhir_response, internal_error_response

OPERATION = "$inventory"
#: Rows fetched from the database at a time.
BATCH_ROWS = 1000
LOG = logging.getLogger("servicekit.inventory")
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Store:
    """One store's count and digest."""

    name: str
    count: int
    digest: str

    def part(self) -> dict[str, Any]:
        """The store as a `store` parameter."""
        return {
            "name": "store",
            "part": [
                {"name": "name", "valueString": self.name},
                {"name": "count", "valueInteger": self.count},
                {"name": "digest", "valueString": self.digest},
            ],
        }


def canonical(value: object) -> bytes:
    """One row (or resource) as canonical JSON: sorted keys, no spaces, dates as ISO text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain).encode()


def _plain(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no canonical form")


def digest_rows(name: str, rows: Iterable[object]) -> Store:
    """The store `name` of `rows` (already in their order): each row's canonical JSON, one per line, hashed."""
    hashed, count = hashlib.sha256(), 0
    for row in rows:
        hashed.update(canonical(row) + b"\n")
        count += 1
    return Store(name, count, hashed.hexdigest())


def digest_query(connection: Connection, name: str, query: Select[Any]) -> Store:
    """The store `name` of what `query` selects (ordered by it), streamed in batches."""
    result = connection.execute(query.execution_options(yield_per=BATCH_ROWS))
    return digest_rows(name, (list(row) for row in result))


def answer(stores: Iterable[Store]) -> dict[str, Any]:
    """The Parameters an inventory answers."""
    return {"resourceType": "Parameters", "parameter": [store.part() for store in stores]}


def inventory_endpoint(
    engine: Engine, role: str, stores: Callable[[Connection], list[Store]], audit: Callable[[str, str, str], None]
) -> Endpoint:
    """`$inventory` for the site's administrator: a caller holding `role` and speaking for no node's site.

    Every call, answered or refused, goes through `audit(caller, outcome, detail)`, after the stores
    are read (an inventory's own record is not in what it counts).
    """

    async def endpoint(request: Request) -> Response:
        caller_name = "anonymous"
        try:
            caller = authenticate(request)
            caller_name = caller.name
            _administrator(caller, role)
            found = await run_in_threadpool(_read, engine, stores)
        except FhirError as error:
            await run_in_threadpool(audit, caller_name, "refused", str(error))
            return error_response(error)
        except Exception as unexpected:  # noqa: BLE001 -- any failure becomes a 500 naming a log reference
            response, reference = internal_error_response(LOG, OPERATION, unexpected)
            await run_in_threadpool(audit, caller_name, "failed", f"reference {reference}")
            return response
        await run_in_threadpool(audit, caller_name, "success", "")
        return fhir_response(answer(found))

    return endpoint


def _administrator(caller: Caller, role: str) -> None:
    """Refuse (403) a caller without `role`, or one speaking for a node: the whole store is the site's own."""
    caller.require(role)
    if caller.site is not None:
        raise FhirError(
            403,
            "forbidden",
            f"caller {caller.name!r} speaks for node {caller.site!r}; an inventory is for the site's administrator",
        )


def _read(engine: Engine, stores: Callable[[Connection], list[Store]]) -> list[Store]:
    """All stores from one transaction that sees one moment (PostgreSQL: repeatable read; SQLite always does)."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")  # in place, before the transaction
        with connection.begin():
            return stores(connection)
