"""How every FHIR operation is served: size limits, authentication, role check, audit, errors.

An operation is a plain function `(Context, Parameters) -> dict` that does its work in one
database transaction and records its own audit entry there. This wrapper does the rest, so a
malformed, oversized, unauthenticated or forbidden request is refused the same way everywhere:
a 4xx with an OperationOutcome, an audit record, and nothing stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from servicekit.audit import AuditRecord
from servicekit.auth import Caller
from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS, PURPOSE_HEADER, claimed, research
from servicekit.web import authenticate, error_response, fhir_response, internal_error_response, read_body
from trustcentre.auth import Role
from trustcentre.db import audit_log
from trustcentre.fhir import Parameters

LOG = logging.getLogger("trustcentre")


@dataclass(frozen=True)
class Context:
    """What an operation knows about its request: the caller, what it claims as purpose, the node's projects."""

    caller: Caller
    engine: Engine
    #: The purpose a local caller named in `X-Hubnode-Purpose` (peers name none: theirs is derived).
    claimed_purpose: str | None
    max_batch: int
    #: Research project -> pseudonym domain.
    projects: Mapping[str, str] = field(default_factory=dict)

    def purpose(self, derived: str) -> str:
        """The purpose to record: what the operation implies, or a local caller's consistent narrower claim."""
        return claimed(self.claimed_purpose, self.projects, derived)

    def domain_purpose(self, domain: str) -> str:
        """What using a pseudonym domain is for: its project's research, else running the node."""
        project = next((name for name, used in sorted(self.projects.items()) if used == domain), None)
        return research(project) if project else OPERATIONS

    def success(self, operation: str, subjects: Sequence[str], purpose: str, detail: str = "") -> AuditRecord:
        """The audit record of this caller's successful `operation`, for `purpose` (see `Context.purpose`)."""
        return AuditRecord(self.caller.name, operation, subjects, "success", self.purpose(purpose), detail)


Operation = Callable[[Context, Parameters], dict[str, Any]]
Endpoint = Callable[[Request], Awaitable[Response]]


def operation(name: str, role: Role, work: Operation) -> Endpoint:
    """Serve `work` as the FHIR operation `name`, requiring `role`."""

    async def endpoint(request: Request) -> Response:
        state = request.app.state
        caller_name = "anonymous"
        try:
            caller = authenticate(request)
            caller_name = caller.name
            caller.require(role)
            parameters = Parameters.from_body(await read_body(request, state.max_body_bytes))
            purpose = None if caller.peer else request.headers.get(PURPOSE_HEADER)
            context = Context(caller, state.engine, purpose, state.max_batch, state.projects)
            return fhir_response(await run_in_threadpool(work, context, parameters))
        except FhirError as error:
            await run_in_threadpool(
                audit_log.record_alone, state.engine, AuditRecord(caller_name, name, (), "refused", detail=str(error))
            )
            return error_response(error)
        except Exception as unexpected:  # noqa: BLE001 -- any failure becomes a 500 naming a log reference
            response, reference = internal_error_response(LOG, f"operation {name}", unexpected)
            await run_in_threadpool(
                audit_log.record_alone,
                state.engine,
                AuditRecord(caller_name, name, (), "failed", detail=f"reference {reference}"),
            )
            return response

    return endpoint


def check_batch(context: Context, count: int, what: str) -> None:
    """Refuse batches larger than the configured maximum before any work is done."""
    if count > context.max_batch:
        raise FhirError(413, "too-costly", f"{count} {what} in one request; at most {context.max_batch} are allowed")
