"""The connector's ASGI app: ingest, read proxy and audit (docs/federation.md, "Public API").

The process routes (`/fhir/Task...`) and the peer API (`/peer/...`) come from
`connector.process_api.routes()`; their handlers find what they need on `request.app.state`:
`settings`, `engine`, `hapi`, `trustcentre`, `ingester`, `authenticator`.

Every refusal is a 4xx with an OperationOutcome and an audit record; HAPI or the trust centre being
unreachable is a 503 with `Retry-After`; only a bug is a 500, and its body names a log reference, never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connector import audit, process_api, retrier
from connector.auth import Role
from connector.capability import capability_statement
from connector.db import audit_log, connect
from connector.handling import Done, handled
from connector.hapi import HapiClient
from connector.ingest import Ingester, IngestResult
from connector.metrics import readings
from connector.profiles import ProfileCheck
from connector.read_audit import patients_read
from connector.resource_ids import ResourceIds
from connector.sent_records import sent_to
from connector.settings import Settings
from connector.transform import bundle_from_ndjson
from connector.trustcentre_client import TrustCentreClient
from connector.upstream import UpstreamUnavailable
from connector.validation import InvalidInput, Problem, bundle_entries
from servicekit.auth import Caller
from servicekit.fhir import FHIR_JSON, FhirError, check_json_limits, parse_json_resource
from servicekit.limits import ApplyInputLimits
from servicekit.metrics import RecordRequests, ServiceMetrics
from servicekit.purpose import (
    EMERGENCY_REASON_HEADER,
    OPERATIONS,
    PURPOSE_HEADER,
    TREATMENT,
    claimed,
    emergency_reason,
)
from servicekit.web import (
    fhir_response,
    http_exception_handler,
    read_body,
)

LOG = logging.getLogger("connector")
JSON_TYPES = (FHIR_JSON, "application/json")
NDJSON_TYPES = ("application/fhir+ndjson", "application/ndjson", "application/x-ndjson")
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def create_app(
    settings: Settings,
    *,
    hapi_transport: httpx.AsyncBaseTransport | None = None,
    trustcentre_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Connect (and migrate) the database, make the HAPI and trust-centre clients, route the API."""
    engine = connect(settings.database_url, settings.adopt_store)
    hapi = HapiClient(settings.fhir_url, transport=hapi_transport)
    trustcentre = TrustCentreClient(
        settings.trustcentre_url,
        settings.site,
        token=settings.trustcentre_token,
        certificate=settings.client_certificate,
        ca_file=settings.trustcentre_ca,
        contract=settings.trustcentre_contract,
        transport=trustcentre_transport,
    )
    ingester = Ingester(
        hapi,
        trustcentre,
        settings.source_system,
        settings.site,
        lambda peer, keys: sent_to(engine, peer, keys),
        ProfileCheck(hapi, settings.validation),
        ResourceIds(engine, hapi, settings.resource_ids),
    )
    api = Api(settings, hapi, ingester)
    metrics = ServiceMetrics("connector")
    for reading in (audit_log.written(engine), *readings(engine)):
        metrics.add_reading(reading)

    async def health(_request: Request) -> Response:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return JSONResponse({"status": "ok"})

    routes: list[BaseRoute] = [
        Route("/health", health),
        metrics.route(),
        *process_api.routes(),
        Route("/fhir", handled(audit.INGEST, Role.INGEST, api.ingest_bundle, engine), methods=["POST"]),
        Route("/fhir/$import", handled(audit.IMPORT, Role.INGEST, api.import_ndjson, engine), methods=["POST"]),
        Route("/fhir/AuditEvent", audit_log.endpoint(engine, Role.AUDIT_READ)),
        Route("/fhir/AuditEvent/$inventory", audit.inventory(engine), methods=["GET", "POST"]),
        Route("/fhir/metadata", api.capability_statement),
        Route("/fhir", handled(audit.READ, Role.READ, api.read, engine)),
        Route("/fhir/{type}", handled(audit.READ, Role.READ, api.read, engine)),
        Route("/fhir/{type}/{id}", handled(audit.READ, Role.READ, api.read, engine)),
    ]

    @asynccontextmanager
    async def lifespan(started: Starlette) -> AsyncIterator[None]:
        background = asyncio.create_task(retrier.run_forever(process_api.process_node(started.state)))
        yield
        background.cancel()
        await hapi.aclose()
        await trustcentre.aclose()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_exception_handler},
        middleware=[
            Middleware(RecordRequests, metrics=metrics),
            Middleware(ApplyInputLimits, limits=settings.input_limits),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.authenticator = settings.authenticator
    app.state.hapi = hapi
    app.state.trustcentre = trustcentre
    app.state.ingester = ingester
    return app


@dataclass(frozen=True)
class Api:
    """The work behind the public routes: ingest a Bundle, import NDJSON, read from HAPI."""

    settings: Settings
    hapi: HapiClient
    ingester: Ingester

    async def ingest_bundle(self, request: Request, caller: Caller) -> Done:
        """`POST /fhir`: a transaction or batch Bundle."""
        _require_content_type(request, JSON_TYPES)
        body = await read_body(request, self.settings.max_body_bytes)
        entries = bundle_entries(parse_json_resource(body, "Bundle"), self.settings.max_entries)
        result = await self.ingester.ingest(entries, self.settings.site)
        LOG.info("%s ingested %d entries", caller.name, len(entries))
        return self._ingested(request, result, self._purpose(request, OPERATIONS))

    async def import_ndjson(self, request: Request, caller: Caller) -> Done:
        """`POST /fhir/$import`: a resource or a transaction Bundle per line; problems name the line (and entry).

        All-or-nothing per request, like a Bundle: one bad line refuses them all. A client that wants the
        good lines of a file stored whatever the bad ones do sends them again without those (`hubnode load`).
        """
        _require_content_type(request, NDJSON_TYPES)
        body = await read_body(request, self.settings.max_body_bytes)
        check_json_limits(body)
        bundle, places, bad_lines = bundle_from_ndjson(body)
        if bad_lines:
            raise InvalidInput([Problem(f"line {bad.line}", bad.message) for bad in bad_lines])
        entries = bundle_entries(bundle, self.settings.max_entries)
        result = await self.ingester.ingest(entries, self.settings.site, places.__getitem__)
        LOG.info("%s imported %d entries", caller.name, len(entries))
        return self._ingested(request, result, self._purpose(request, OPERATIONS))

    async def read(self, request: Request, _caller: Caller) -> Done:
        """`GET /fhir/<Type>[/<id>][?search]` (and result pages, `GET /fhir?_getpages=...`) from HAPI.

        Repeated search parameters pass as they came (`birthdate=ge..&birthdate=le..` is a range). The
        audit names the patients the answer holds or refers to, and the search that found them.
        """
        kind, resource_id = request.path_params.get("type"), request.path_params.get("id")
        purpose = self._purpose(request, TREATMENT)
        reason = emergency_reason(purpose, request.headers.get(EMERGENCY_REASON_HEADER))
        params = request.query_params.multi_items()
        if kind is None and "_getpages" not in request.query_params:
            raise FhirError(405, "not-supported", "GET /fhir serves result pages (_getpages) only; name a type")
        if kind is not None and not _TYPE.fullmatch(kind):
            raise FhirError(400, "invalid", f"{kind!r} is not a resource type", ("type",))
        if resource_id is not None and not _ID.fullmatch(resource_id):
            raise FhirError(400, "invalid", f"{resource_id!r} is not a FHIR id", ("id",))
        path = "/".join(p for p in (kind, resource_id) if p)
        answer = await self.hapi.get(path, params)
        try:
            resource = answer.json()
        except ValueError:
            raise UpstreamUnavailable(f"HAPI answered {answer.status_code} to GET {path} without JSON") from None
        if not isinstance(resource, dict):
            raise UpstreamUnavailable(f"HAPI answered GET {path} with JSON that is not a resource")
        subjects = patients_read(resource)
        response = fhir_response(self._public(request, resource), answer.status_code)
        return Done(response, subjects, purpose=purpose, detail=reason)

    async def capability_statement(self, _request: Request) -> Response:
        """`GET /fhir/metadata`: what this FHIR endpoint does, for any client (no caller needed)."""
        return fhir_response(capability_statement(self.settings.site))

    def _ingested(self, request: Request, result: IngestResult, purpose: str) -> Done:
        """HAPI's transaction-response with the profile warnings, and a `Server-Timing` header saying where time went.

        Each entry's warnings go in its `response.outcome`, where FHIR puts an entry's hints and warnings.
        Errors stored because the node's policy only warns make the audit record "warned", naming them;
        mere warnings (a code that cannot be checked offline) come with most real data and are not audited.
        """
        answer = with_warnings(self._public(request, result.response), result.warnings)
        response = fhir_response(answer)
        response.headers["Server-Timing"] = result.timing.header()
        if not result.errors_stored:
            return Done(response, result.person_ids, purpose=purpose)
        detail = f"{request.method} {request.url.path}: {result.errors_stored_note()}"
        return Done(response, result.person_ids, purpose=purpose, detail=detail, outcome="warned")

    def _purpose(self, request: Request, derived: str) -> str:
        """What the request serves: derived from it, or a caller's consistent claim (`X-Hubnode-Purpose`)."""
        return claimed(request.headers.get(PURPOSE_HEADER), self.settings.projects, derived)

    def _public(self, request: Request, resource: dict[str, Any]) -> dict[str, Any]:
        """HAPI's answer with its internal URLs replaced by the node's public ones, which callers can follow.

        The node's configured public base, never the request's `Host` (a forged one would be reflected).
        """
        public = self.settings.public_url or str(request.base_url).rstrip("/")
        return _rebased(resource, self.hapi.base_url, f"{public}/fhir")


def with_warnings(response: dict[str, Any], warnings: Mapping[int, Sequence[Problem]]) -> dict[str, Any]:
    """A transaction-response whose entries carry their warnings as `response.outcome` (entries match 1:1)."""
    if not warnings:
        return response
    entries = list(response.get("entry", []))
    for index, found in warnings.items():
        if index < len(entries) and isinstance(entries[index], dict):
            answer = dict(entries[index].get("response", {}))
            answer["outcome"] = warning_outcome(found)
            entries[index] = {**entries[index], "response": answer}
    return {**response, "entry": entries}


def warning_outcome(problems: Sequence[Problem]) -> dict[str, Any]:
    """The OperationOutcome of warnings: each names its place, the declared profile and what is wrong."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "warning",
                "code": "processing",
                "diagnostics": f"{p.expression}: {p.message}",
                "expression": [p.expression],
            }
            for p in problems
        ],
    }


def _require_content_type(request: Request, accepted: Sequence[str]) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in accepted:
        raise FhirError(415, "not-supported", f"Content-Type {media_type or 'none'!r}: send {' or '.join(accepted)}")


def _rebased(resource: dict[str, Any], hapi_base: str, public_base: str) -> dict[str, Any]:
    """HAPI's own URLs in a Bundle's links and full URLs, pointed at the connector instead."""
    if resource.get("resourceType") != "Bundle":
        return resource
    rebased = dict(resource)
    rebased["link"] = [
        {**link, "url": str(link.get("url", "")).replace(hapi_base, public_base, 1)}
        for link in resource.get("link", [])
    ]
    rebased["entry"] = [
        {**e, "fullUrl": str(e["fullUrl"]).replace(hapi_base, public_base, 1)} if "fullUrl" in e else e
        for e in resource.get("entry", [])
    ]
    return rebased
