"""The trust centre's ASGI app: gPAS, gICS and linkage operations plus audit, under `/ttp-fhir/fhir/`."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from servicekit.fhir import FhirError
from servicekit.limits import ApplyInputLimits
from servicekit.metrics import RecordRequests, ServiceMetrics
from servicekit.web import error_response, fhir_response, http_exception_handler
from trustcentre.db import audit_log, connect
from trustcentre.enrolment import enrolment_endpoints
from trustcentre.epix_api import epix_endpoints
from trustcentre.epix_ig import epix_ig_endpoints
from trustcentre.gics_api import gics_endpoints
from trustcentre.gpas_api import gpas_endpoints
from trustcentre.inventory import trustcentre_inventory
from trustcentre.ledger import audit_endpoint
from trustcentre.ledger_tickets import ledger_ticket_endpoints
from trustcentre.persons import PersonIds
from trustcentre.pseudonyms import PseudonymStore
from trustcentre.settings import Settings
from trustcentre.web import Endpoint

BASE = "/ttp-fhir/fhir"


def create_app(settings: Settings) -> Starlette:
    """Connect (and migrate) the database, declare the stack's domains, and route the operations."""
    engine = connect(settings.database_url)
    metrics = ServiceMetrics("trustcentre")
    metrics.add_reading(audit_log.written(engine))
    store = PseudonymStore(engine, settings.secret)
    store.declare_domains(settings.domains)
    persons = PersonIds(store)
    services = {
        "gpas": gpas_endpoints(store, persons),
        "gics": gics_endpoints(settings.consent_domains),
        "epix": {
            **epix_endpoints(persons),
            **epix_ig_endpoints(persons, frozenset(settings.domains)),
            **enrolment_endpoints(persons),
            **ledger_ticket_endpoints(settings.research_sites),
        },
    }

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

    app = Starlette(
        routes=[
            Route("/health", health),
            metrics.route(),
            Route(f"{BASE}/AuditEvent", audit_endpoint(engine)),
            Route(
                f"{BASE}/$inventory", trustcentre_inventory(engine, settings.consent_domains), methods=["GET", "POST"]
            ),
            Route(BASE + "/{service}/metadata", capability_statement),
            Route(BASE + "/{service}/{operation}", run_operation, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_exception_handler},
        middleware=[
            Middleware(RecordRequests, metrics=metrics),
            Middleware(ApplyInputLimits, limits=settings.input_limits),
        ],
    )
    app.state.engine = engine
    app.state.authenticator = settings.authenticator
    app.state.max_body_bytes = settings.max_body_bytes
    app.state.max_batch = settings.max_batch
    app.state.projects = settings.projects
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
