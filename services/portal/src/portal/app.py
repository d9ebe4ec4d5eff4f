"""The portal's ASGI app: pages under `/portal/`, its FHIR API under `/portal/fhir/`, health at `/health`.

Every page goes through `_page`: the server-side session is loaded from its cookie and saved after
the handler, a refusal becomes a clear page with its status and an audit record, and every answer
carries headers that keep it out of caches and frames and allow only the portal's own scripts.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from portal import clinician_pages, patient_pages, sign_in, staff_pages
from portal.db import audit_log, connect
from portal.fhir_api import fhir_endpoint
from portal.i18n import language
from portal.portal_state import BASE_PATH, PortalState, Transports
from portal.sessions import COOKIE
from portal.settings import Settings
from portal.upstream import UpstreamError
from portal.web import Handler, Page, RefusalError
from servicekit.metrics import RecordRequests, ServiceMetrics

LOG = logging.getLogger("portal")
LANG_COOKIE = "hubnode_lang"


def create_app(settings: Settings, transports: Transports | None = None) -> Starlette:
    """Connect (and migrate) the portal's database, make its clients, route pages and API."""
    engine = connect(settings.database_url)
    metrics = ServiceMetrics("portal")
    metrics.add_reading(audit_log.written(engine))
    sign_ins = metrics.counter("hubnode_portal_sign_ins", "Sign-ins finished at the portal, by outcome", ("outcome",))
    state = PortalState.make(settings, engine, transports or Transports(), sign_ins)
    headers = _security_headers(settings)

    def route(path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, _page_endpoint(state, headers, _guarded(handler)), methods=list(methods))

    async def health(_request: Request) -> Response:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return JSONResponse({"status": "ok"})

    pages: list[BaseRoute] = [
        route("/", sign_in.home),
        route("/login", sign_in.login),
        route("/auth/callback", sign_in.callback),
        route("/logout", sign_in.logout, ("POST",)),
        route("/me/enrol", patient_pages.enrol, ("GET", "POST")),
        route("/me/consents", patient_pages.consents),
        route("/me/consents/{code}", patient_pages.decide, ("POST",)),
        route("/me/ledger", patient_pages.ledger_page),
        route("/receipts/verify", patient_pages.verify_receipt, ("GET", "POST")),
        route("/me/record", patient_pages.record),
        route("/me/questionnaires", patient_pages.questionnaires, ("GET", "POST")),
        route("/patients", clinician_pages.find),
        route("/patients/{kind}/{value}", clinician_pages.summary),
        route("/patients/{kind}/{value}/care-summary", clinician_pages.send_summary, ("POST",)),
        route("/patients/{kind}/{value}/emergency", clinician_pages.start_emergency, ("POST",)),
        route("/staff/enrolments", staff_pages.enrolments, ("GET", "POST")),
        Route("/fhir/{type}", fhir_endpoint, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = Starlette(
        routes=[Route("/health", health), metrics.route(), Mount(BASE_PATH, routes=pages)],
        middleware=[Middleware(RecordRequests, metrics=metrics)],
        lifespan=lifespan,
    )
    app.state.portal = state
    return app


def _guarded(handler: Handler) -> Handler:
    """The handler, with a refusal or an unreachable service turned into an audited page."""

    async def run(page: Page) -> Response:
        try:
            return await handler(page)
        except RefusalError as refused:
            await page.audit(_operation(page), refused.subjects, "refused", detail=refused.detail[:500])
            return page.render(
                "refused.html", refused.status, reason=refused.reason, emergency_action=refused.emergency_action
            )
        except UpstreamError as error:
            LOG.warning("%s: %s", page.request.url.path, error)
            await page.audit(_operation(page), [], "failed", detail=str(error)[:500])
            status = error.status if error.status < 500 else 503
            return page.render("refused.html", status, reason="reason_upstream", emergency_action=None)

    return run


def _page_endpoint(
    state: PortalState, headers: dict[str, str], handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """A page with its session loaded from the cookie and saved after, language chosen, headers set."""

    async def endpoint(request: Request) -> Response:
        session = state.sessions.load(request.cookies.get(COOKIE))
        lang = language(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))
        current = Page(request, session, state, lang)
        response = await handler(current)
        if current.session.data:
            state.sessions.save(current.session)
            if current.session.new:
                _cookie(response, COOKIE, current.session.id)
        elif not current.session.new:
            response.delete_cookie(COOKIE, path=BASE_PATH, secure=True, httponly=True, samesite="lax")
        if request.query_params.get("lang") == lang:
            _cookie(response, LANG_COOKIE, lang)
        response.headers.update(headers)
        return response

    return endpoint


def _cookie(response: Response, name: str, value: str) -> None:
    """A cookie only the portal's pages get, only over TLS, never to scripts, not on cross-site subrequests."""
    response.set_cookie(name, value, path=BASE_PATH, secure=True, httponly=True, samesite="lax")


def _operation(page: Page) -> str:
    return f"{page.request.method} {page.request.url.path}"[:64]


def _security_headers(settings: Settings) -> dict[str, str]:
    """No caching (pages hold patient data), no framing, only the portal's own scripts and styles."""
    idp = urlsplit(settings.issuer)
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"frame-ancestors 'none'; base-uri 'none'; form-action 'self' {idp.scheme}://{idp.netloc}"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
