"""Site staff's page: issue an enrolment code for a patient of the site (the PIN letter)."""

from __future__ import annotations

import re

from starlette.responses import Response

from portal.clinician_pages import system_of
from portal.identity import SITE_ADMIN
from portal.upstream import UpstreamError
from portal.web import Page, RefusalError

_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def enrolments(page: Page) -> Response:
    """The form, or a new code for the person the site knows by its number or their KVNR."""
    user = page.require(SITE_ADMIN)
    if page.request.method == "GET":
        return page.render("enrolments.html", issued=None)
    form = await page.form()
    system = system_of(page, form.get("kind", ""))
    value = form.get("value", "").strip()
    if not _VALUE.match(value):
        raise RefusalError(400, "reason_input", f"patient number {value[:70]!r}")
    try:
        code, expires = await page.state.trustcentre.issue_enrolment(system, value, user.username or user.subject)
    except UpstreamError as exc:
        raise RefusalError(exc.status if exc.status < 500 else 503, "reason_no_patient", exc.message) from None
    await page.audit("issue-enrolment", [], purpose="operations", detail=f"for {system}|{value}")
    return page.render("enrolments.html", issued={"code": code, "expires": expires[:10], "value": value})
