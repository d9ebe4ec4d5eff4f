"""The trust centre's ASGI app: gPAS, gICS and linkage operations plus audit, under `/ttp-fhir/fhir/`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trustcentre import audit
from trustcentre.auth import Role
from trustcentre.db import connect
from trustcentre.epix_api import epix_endpoints
from trustcentre.fhir import FhirError, parse_fhir_date
from trustcentre.gics_api import gics_endpoints
from trustcentre.gpas_api import gpas_endpoints
from trustcentre.pseudonyms import PseudonymStore
from trustcentre.settings import Settings
from trustcentre.web import Endpoint, authenticate, error_response, fhir_response

BASE = "/ttp-fhir/fhir"


def create_app(settings: Settings) -> Starlette:
    """Connect (and migrate) the database, declare the stack's domains, and route the operations."""
    engine = connect(settings.database_url)
    store = PseudonymStore(engine, settings.secret)
    store.declare_domains(settings.domains)
    services = {"gpas": gpas_endpoints(store), "gics": gics_endpoints(), "epix": epix_endpoints()}

    async def health(_request: Request) -> Response:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return JSONResponse({"status": "UP"})

    async def run_operation(request: Request) -> Response:
        service, name = request.path_params["service"], request.path_params["operation"]
        endpoint = services.get(service, {}).get(name)
        if endpoint is None:
            known = ", ".join(f"{s}/{o}" for s, ops in services.items() for o in ops)
            return error_response(FhirError(404, "not-supported", f"no operation {service}/{name}; known: {known}"))
        return await endpoint(request)

    async def capability_statement(request: Request) -> Response:
        return fhir_response(_capability_statement(request.path_params["service"], services))

    async def audit_events(request: Request) -> Response:
        try:
            authenticate(request).require(Role.AUDIT_READ)
            since, until = _date_range(request.query_params.getlist("date"))
            subject = request.query_params.get("entity-name") or request.query_params.get("patient")
            return fhir_response(audit.search(engine, subject, since, until))
        except FhirError as error:
            return error_response(error)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = "not-found" if status == 404 else "not-supported"
        return error_response(FhirError(status, code, f"{request.method} {request.url.path}: {exc}"))

    app = Starlette(
        routes=[
            Route("/health", health),
            Route(f"{BASE}/AuditEvent", audit_events),
            Route(BASE + "/{service}/metadata", capability_statement),
            Route(BASE + "/{service}/{operation}", run_operation, methods=["POST"]),
        ],
        exception_handlers={HTTPException: not_found},
    )
    app.state.engine = engine
    app.state.authenticator = settings.authenticator
    app.state.max_body_bytes = settings.max_body_bytes
    app.state.max_batch = settings.max_batch
    return app


def _capability_statement(service: str, services: Mapping[str, Mapping[str, Endpoint]]) -> dict[str, object]:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "software": {"name": f"hubnode trust centre ({service})"},
        "rest": [{"mode": "server", "operation": [{"name": name.lstrip("$")} for name in services.get(service, {})]}],
    }


def _date_range(values: list[str]) -> tuple[date | None, date | None]:
    """FHIR `date=geYYYY-MM-DD&date=leYYYY-MM-DD` search values as an inclusive range."""
    since = until = None
    for value in values:
        prefix, raw = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
        try:
            day = parse_fhir_date(raw)
        except ValueError:
            raise FhirError(400, "invalid", f"date={value!r} is not a FHIR date search value", ("date",)) from None
        if prefix in ("ge", "gt", "eq"):
            since = day
        if prefix in ("le", "lt", "eq"):
            until = day
    return since, until
