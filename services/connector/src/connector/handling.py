"""Every public endpoint's frame: authenticate, check the role, do the work, audit, answer every failure.

Refusals are 4xx with an OperationOutcome; HAPI or the trust centre being unreachable (down, restarting)
is a 503 with `Retry-After`, or a 504 when a request went out to them and no answer came (it may have
been carried out; a replay is safe, ingest being idempotent); only a bug is a 500, and its body names a
log reference, never a stack trace. Each call leaves one audit record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from connector import audit
from connector.auth import Role
from connector.upstream import UpstreamRefused, UpstreamUnanswered, UpstreamUnavailable
from connector.validation import InvalidInput
from servicekit.audit import AuditRecord
from servicekit.auth import Caller
from servicekit.fhir import FhirError, operation_outcome
from servicekit.web import authenticate, error_response, fhir_response, internal_error_response

LOG = logging.getLogger("connector")
#: What a client is told to wait before trying again while HAPI or the trust centre is down or restarting.
RETRY_AFTER_S = 10


@dataclass(frozen=True)
class Done:
    """What an endpoint's work produced: the answer, and for the audit whom it was about, what was asked, why.

    `subjects` are this node's person ids of the patients, and `Patient/<id>` of those only referenced.
    """

    response: Response
    subjects: Sequence[str] = ()
    query: str = ""
    purpose: str | None = None
    #: What the record keeps besides (an emergency access: its stated reason; warnings stored with the input).
    detail: str = ""
    #: "success", or "warned": done, with warnings the record's detail counts.
    outcome: str = "success"


Work = Callable[[Request, Caller], Awaitable[Done]]
Endpoint = Callable[[Request], Awaitable[Response]]


def handled(operation: str, role: Role, work: Work, engine: Engine) -> Endpoint:
    """Serve `work` for callers holding `role`: authenticate, audit, and turn every failure into an answer."""

    async def endpoint(request: Request) -> Response:
        caller_name = "anonymous"
        outcome, detail = "success", f"{request.method} {request.url.path}"
        subjects: tuple[str, ...] = ()
        query, purpose = request.url.query, None
        try:
            caller = authenticate(request)
            caller_name = caller.name
            caller.require(role)
            done = await work(request, caller)
            response, subjects, purpose, outcome = done.response, tuple(done.subjects), done.purpose, done.outcome
            query, detail = done.query or query, done.detail or detail
        except FhirError as error:
            outcome, detail, response = "refused", str(error), error_response(error)
        except InvalidInput as invalid:
            outcome, detail, response = "refused", str(invalid), fhir_response(invalid.outcome(), 422)
        except UpstreamRefused as refused:
            status = HTTPStatus.CONFLICT if refused.status == HTTPStatus.CONFLICT else HTTPStatus.UNPROCESSABLE_ENTITY
            outcome, detail, response = "refused", str(refused), fhir_response(refused.outcome, status)
        except UpstreamUnavailable as unavailable:
            outcome, detail = "failed", str(unavailable)
            status = (
                HTTPStatus.GATEWAY_TIMEOUT
                if isinstance(unavailable, UpstreamUnanswered)
                else HTTPStatus.SERVICE_UNAVAILABLE
            )
            response = fhir_response(operation_outcome("transient", str(unavailable)), status)
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        except Exception as unexpected:  # noqa: BLE001 -- any failure becomes a 500 naming a log reference
            response, reference = internal_error_response(LOG, operation, unexpected)
            outcome, detail = "failed", f"reference {reference}"
        entry = AuditRecord(caller_name, operation, subjects, outcome, purpose, detail, query)
        await run_in_threadpool(audit.record_alone, engine, entry)
        return response

    return endpoint
