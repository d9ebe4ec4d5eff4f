"""How every FHIR operation is served: size limits, authentication, role check, audit, errors.

An operation is a plain function `(Context, Parameters) -> dict` that does its work in one
database transaction and records its own audit entry there. This wrapper does the rest, so a
malformed, oversized, unauthenticated or forbidden request is refused the same way everywhere:
a 4xx with an OperationOutcome, an audit record, and nothing stored.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trustcentre.audit import AuditRecord, record_alone
from trustcentre.auth import Authenticator, Caller, Role
from trustcentre.fhir import FHIR_JSON, FhirError, Parameters, operation_outcome

LOG = logging.getLogger("trustcentre")
PURPOSE_HEADER = "x-hubnode-purpose"


@dataclass(frozen=True)
class Context:
    """What an operation knows about its request."""

    caller: Caller
    engine: Engine
    purpose: str | None
    max_batch: int

    def success(
        self, operation: str, subjects: Sequence[str], detail: str = "", purpose: str | None = None
    ) -> AuditRecord:
        """The audit record of this caller's successful `operation` (purpose: the request's, unless given)."""
        return AuditRecord(self.caller.name, operation, subjects, "success", purpose or self.purpose, detail)


Operation = Callable[[Context, Parameters], dict[str, Any]]
Endpoint = Callable[[Request], Awaitable[Response]]


def fhir_response(resource: dict[str, Any], status: int = 200) -> Response:
    """A FHIR JSON response."""
    return JSONResponse(resource, status_code=status, media_type=FHIR_JSON)


def error_response(error: FhirError) -> Response:
    """The OperationOutcome answer to a refused request."""
    response = fhir_response(operation_outcome(error.code, error.diagnostics, error.expression), error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="hubnode trust centre"'
    return response


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes `limit` bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FhirError(413, "too-costly", f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FhirError(413, "too-costly", f"the request body is larger than {limit} bytes")
    return bytes(body)


def authenticate(request: Request) -> Caller:
    """The caller of a request, per the app's authenticator."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(request.headers)


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
            context = Context(caller, state.engine, request.headers.get(PURPOSE_HEADER), state.max_batch)
            return fhir_response(await run_in_threadpool(work, context, parameters))
        except FhirError as error:
            await run_in_threadpool(
                record_alone, state.engine, AuditRecord(caller_name, name, (), "refused", detail=str(error))
            )
            return error_response(error)
        except Exception:
            reference = uuid.uuid4().hex[:12]
            LOG.exception("operation %s failed (reference %s)", name, reference)
            await run_in_threadpool(
                record_alone,
                state.engine,
                AuditRecord(caller_name, name, (), "failed", detail=f"reference {reference}"),
            )
            return fhir_response(
                operation_outcome("exception", f"internal error; the trust centre's log has reference {reference}"), 500
            )

    return endpoint


def check_batch(context: Context, count: int, what: str) -> None:
    """Refuse batches larger than the configured maximum before any work is done."""
    if count > context.max_batch:
        raise FhirError(413, "too-costly", f"{count} {what} in one request; at most {context.max_batch} are allowed")
