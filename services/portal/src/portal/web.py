"""How the portal answers a browser: pages in the user's language, refusals that say why and are audited.

Every page handler gets a `Page` (the request, its session, the signed-in user, the language) and
either returns a response or raises `RefusalError`, which becomes a clear page with the right 4xx status
and an audit record, so hostile input changes nothing and leaves a trace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from portal import display
from portal.db import audit_log
from portal.i18n import LANGUAGES, text
from portal.identity import User
from portal.portal_state import PortalState
from portal.sessions import CSRF_FIELD, CSRF_HEADER, Session
from servicekit.audit import AuditRecord

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every value a page shows is escaped: names and free text may hold HTML or script
    undefined=jinja2.StrictUndefined,
)
TEMPLATES.filters.update(describe=display.describe, when=display.when, patient_name=display.patient_name)


class RefusalError(Exception):
    """A request the portal will not serve: the status, the reason shown (an i18n key), what the audit keeps."""

    def __init__(self, status: int, reason: str, detail: str = "", subjects: Sequence[str] = ()) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.subjects = tuple(subjects)
        #: Where a clinician may open the record anyway in an emergency, stating why (`portal.emergency`).
        self.emergency_action: str | None = None


@dataclass
class Page:
    """One request to a page: what every handler needs to answer it."""

    request: Request
    session: Session
    state: PortalState
    lang: str

    @property
    def user(self) -> User | None:
        """The signed-in user, if any."""
        return User.from_data(self.session.data.get("user"))

    def require(self, *roles: str) -> User:
        """The signed-in user holding one of `roles`; refused otherwise (401 signed out, 403 another role)."""
        user = self.user
        if user is None:
            raise RefusalError(401, "reason_expired", f"{self.request.url.path} without a session")
        if not any(user.has(role) for role in roles):
            raise RefusalError(
                403, "reason_role", f"{user.audit_name} lacks {'/'.join(roles)} for {self.request.url.path}"
            )
        return user

    async def form(self) -> dict[str, str]:
        """A POSTed form, refused (403) unless it carries this session's CSRF token."""
        form = await self.request.form()
        presented = form.get(CSRF_FIELD) or self.request.headers.get(CSRF_HEADER)
        if not self.session.csrf_valid(presented if isinstance(presented, str) else None):
            raise RefusalError(403, "reason_csrf", f"POST {self.request.url.path} without this session's CSRF token")
        return {key: value for key, value in form.items() if isinstance(value, str)}

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:  # noqa: ANN401 -- page values
        """A page in the user's language."""
        html = TEMPLATES.get_template(template).render(
            t=lambda key, **kw: text(self.lang, key, **kw),
            lang=self.lang,
            other_lang=next(language for language in LANGUAGES if language != self.lang),
            user=self.user,
            csrf=self.session.csrf_token,
            csrf_field=CSRF_FIELD,
            base=self.state.base_path,
            path=self.request.url.path,
            site=self.state.settings.site,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    async def audit(
        self,
        operation: str,
        subjects: Sequence[str],
        outcome: str = "success",
        purpose: str | None = None,
        detail: str = "",
    ) -> None:
        """Record what the portal did (or refused) for this user."""
        user = self.user
        caller = user.audit_name if user else "portal:anonymous"
        record = AuditRecord(caller, operation, subjects, outcome, purpose, detail, self.request.url.path)
        await run_in_threadpool(audit_log.record_alone, self.state.engine, record)


Handler = Callable[[Page], Awaitable[Response]]


def safe_next(value: str | None, base_path: str) -> str | None:
    """A `next=` target only if it is a path inside the portal: never another host, scheme or `//` trick."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(f"{base_path}/") or "//" in value or "\\" in value:
        return None
    return value


def redirect(url: str) -> RedirectResponse:
    """A redirect after a POST or to the identity provider (303: the browser follows with GET)."""
    return RedirectResponse(url, status_code=303)
