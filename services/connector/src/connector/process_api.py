"""HTTP routes of the processes: the local API that starts them and the peer API that answers them.

Beside them, the federation ledger (`connector.federation_ledger`): the portal's `$federationLedger`
(role `audit-read`) and the peers' `$ledger`, framed the same way.

Local (`/fhir/Task...`, bearer token with role `process`) goes through the app's `handled` wrapper like
every other local endpoint. The peer API (`/peer/...`) is reached only through the gateway's mutual-TLS
listener; who is calling is decided in `connector.identity` from the gateway's headers. `app.py`
mounts `routes()`; the handlers find the node's clients on `request.app.state`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import httpx
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector import federation_ledger, processes
from connector.auth import Role
from connector.handling import RETRY_AFTER_S, Done, handled
from connector.ingest import Ingester, IngestResult
from connector.peers import TIMEOUT, PeerClient
from connector.processes import Ingest, Node
from connector.settings import Settings
from connector.upstream import UpstreamUnavailable
from connector.validation import bundle_entries
from servicekit.auth import Caller
from servicekit.fhir import FhirError, operation_outcome, parse_json_resource
from servicekit.web import error_response, fhir_response, internal_error_response, read_body

LOG = logging.getLogger("connector.processes")


def routes() -> list[Route]:
    """The process routes, for the connector app to mount."""
    return [
        Route("/fhir/Task", _local("start process", _start), methods=["POST"]),
        Route("/fhir/Task/{id}", _local("read process", _read), methods=["GET"]),
        Route("/fhir/Task/{id}/$retry", _local("retry process", _retry), methods=["POST"]),
        Route("/fhir/$federationLedger", _federation_ledger, methods=["POST"]),
        Route("/peer/fhir/Task", _peer_task, methods=["POST"]),
        Route("/peer/fhir/$ledger", _peer_ledger, methods=["POST"]),
        Route("/peer/refused", _peer_refused, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/peer/refused/{rest:path}", _peer_refused, methods=["GET", "POST", "PUT", "DELETE"]),
    ]


def node_for(state: State, peers: PeerClient | None = None) -> Node:
    """The processes' view of a connector app (`state`); `peers` defaults to mutual TLS with the node certificate."""
    settings: Settings = state.settings
    if peers is None:
        certificate = settings.client_certificate
        plain = PeerClient(httpx.AsyncClient(timeout=TIMEOUT))
        peers = PeerClient.mutual_tls(certificate) if certificate is not None else plain
    return Node(
        role=settings.role,
        federation=settings.federation,
        engine=state.engine,
        hapi=state.hapi,
        trustcentre=state.trustcentre,
        peers=peers,
        ingest=ingest_for(settings, state.ingester),
        source_system_base=settings.source_system,
        projects=settings.projects,
        feasibility=settings.feasibility,
        retry_policy=settings.retry_policy,
    )


def ingest_for(settings: Settings, ingester: Ingester) -> Ingest:
    """Ingest as the processes need it: linked at the trust centre (careSummary) or not (pseudonymised dataSend)."""

    async def ingest(bundle: dict[str, Any], source: str, *, link_patients: bool) -> IngestResult:
        entries = bundle_entries(bundle, settings.max_entries)
        return await ingester.ingest(entries, source, pseudonymised=not link_patients)

    return ingest


def process_node(state: State) -> Node:
    """The app's one processes' view (made at first use): its retries in flight are known to every request."""
    node: Node | None = getattr(state, "process_node", None)
    if node is None:
        node = state.process_node = node_for(state)
    return node


def _node(request: Request) -> Node:
    return process_node(request.app.state)


def _local(
    operation: str, work: Callable[[Request, Caller], Awaitable[Done]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handled(operation, Role.PROCESS, work, request.app.state.engine)(request)

    return endpoint


async def _start(request: Request, caller: Caller) -> Done:
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    respond_async = "respond-async" in request.headers.get("prefer", "")
    status, task = await processes.start(
        _node(request), parse_json_resource(body, "Task"), caller.name, respond_async=respond_async
    )
    response = fhir_response(task, status)
    if status == HTTPStatus.ACCEPTED:  # FHIR's asynchronous pattern: where to ask how it stands
        response.headers["Content-Location"] = f"Task/{task['id']}"
    return Done(response)


async def _read(request: Request, _caller: Caller) -> Done:
    return Done(fhir_response(await processes.read(_node(request), request.path_params["id"])))


async def _retry(request: Request, caller: Caller) -> Done:
    return Done(fhir_response(await processes.retry(_node(request), request.path_params["id"], caller.name)))


async def _peer_task(request: Request) -> Response:
    try:
        body = await read_body(request, request.app.state.settings.max_body_bytes)
        return fhir_response(await processes.receive(_node(request), request.headers, body))
    except FhirError as error:
        return error_response(error)
    except Exception as unexpected:  # noqa: BLE001 -- any failure becomes a 500 naming a log reference
        return internal_error_response(LOG, "peer Task", unexpected)[0]


async def _federation_ledger(request: Request) -> Response:
    async def work(request: Request, _caller: Caller) -> Done:
        body = await read_body(request, request.app.state.settings.max_body_bytes)
        tickets = federation_ledger.tickets_of(parse_json_resource(body, "Parameters"))
        answer = await federation_ledger.gather(_node(request), tickets)
        sites = sorted({site for site, _ in tickets})
        return Done(fhir_response(answer), query=f"ledger at {', '.join(sites) or 'no node'}")

    return await handled("federation ledger", Role.AUDIT_READ, work, request.app.state.engine)(request)


async def _peer_ledger(request: Request) -> Response:
    try:
        body = await read_body(request, request.app.state.settings.max_body_bytes)
        return fhir_response(await federation_ledger.answer(_node(request), request.headers, body))
    except FhirError as error:
        return error_response(error)
    except UpstreamUnavailable as unavailable:
        response = fhir_response(operation_outcome("transient", str(unavailable)), 503)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    except Exception as unexpected:  # noqa: BLE001 -- any failure becomes a 500 naming a log reference
        return internal_error_response(LOG, "peer ledger", unexpected)[0]


async def _peer_refused(request: Request) -> Response:
    return error_response(await processes.refuse_handshake(_node(request), request.headers))
