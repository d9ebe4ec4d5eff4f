"""How a service answers over HTTP: FHIR JSON responses, refusals as OperationOutcome, bounded bodies.

Shared so that an oversized, unauthenticated or unroutable request is refused the same way by every
service: a 4xx with an OperationOutcome, never a stack trace; an unexpected failure becomes a 500
whose body names only a log reference.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from servicekit.auth import Authenticator, Caller
from servicekit.fhir import FHIR_JSON, FhirError, operation_outcome
from servicekit.limits import current_input_limits


def fhir_response(resource: dict[str, Any], status: int = 200) -> Response:
    """A FHIR JSON response; never stored by a cache on the way, since most answers carry patient data."""
    return JSONResponse(resource, status_code=status, media_type=FHIR_JSON, headers={"Cache-Control": "no-store"})


def error_response(error: FhirError) -> Response:
    """The OperationOutcome answer to a refused request."""
    response = fhir_response(operation_outcome(error.code, error.diagnostics, error.expression), error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="hubnode"'
    return response


def logged_under_reference(log: logging.Logger, what: str, error: BaseException) -> str:
    """Log `error` with its traceback under a fresh reference, the only thing a caller is told of it."""
    reference = uuid.uuid4().hex[:12]
    log.error("%s failed (reference %s)", what, reference, exc_info=error)
    return reference


def internal_error_response(log: logging.Logger, what: str, error: BaseException) -> tuple[Response, str]:
    """Log `error` under a fresh reference; the 500 answer names only that reference."""
    reference = logged_under_reference(log, what, error)
    outcome = operation_outcome("exception", f"internal error; the service's log has reference {reference}")
    return fhir_response(outcome, 500), reference


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes `limit` bytes (whatever Content-Length says).

    A client that takes longer than the request's `body_seconds` to send it is refused with 408: a
    body trickling in a byte at a time would otherwise hold the request open for as long as it likes.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FhirError(413, "too-costly", f"the request body is larger than {limit} bytes")
    seconds = current_input_limits().body_seconds
    body = bytearray()
    try:
        with anyio.fail_after(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise FhirError(413, "too-costly", f"the request body is larger than {limit} bytes")
    except TimeoutError:
        late = f"the request body did not arrive within {seconds:g} s; the limit BODY_SECONDS is {seconds:g}"
        raise FhirError(408, "timeout", late) from None
    return bytes(body)


def authenticate(request: Request) -> Caller:
    """The caller of a request, per the app's authenticator (`app.state.authenticator`)."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(request.headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed) as OperationOutcomes."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = "not-found" if status == 404 else "not-supported"
    return error_response(FhirError(status, code, f"{request.method} {request.url.path}: {exc}"))
