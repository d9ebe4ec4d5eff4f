"""Start page, sign-in, the identity provider's callback and sign-out."""

from __future__ import annotations

from starlette.responses import Response

from portal.identity import User
from portal.oidc import TokenRejectedError
from portal.web import Page, RefusalError, redirect, safe_next


async def home(page: Page) -> Response:
    """The start page: a sign-in button, or what the signed-in user can do."""
    return page.render("home.html")


async def login(page: Page) -> Response:
    """Send the browser to Keycloak; remember state, nonce, PKCE verifier and where to go afterwards."""
    requested = page.request.query_params.get("next")
    target = safe_next(requested, page.state.base_path)
    if requested and target is None:
        raise RefusalError(400, "reason_next", f"login with next={requested[:200]!r}")
    try:
        url, pending = await page.state.oidc.login()
    except TokenRejectedError as exc:
        raise RefusalError(503, "reason_upstream", str(exc)) from None
    page.session.data["login"] = {**pending, "next": target or f"{page.state.base_path}/"}
    return redirect(url)


async def callback(page: Page) -> Response:
    """Finish the sign-in, counted by its outcome for the metrics."""
    try:
        response = await _finish_sign_in(page)
    except RefusalError:
        page.state.sign_ins.labels("refused").inc()
        raise
    page.state.sign_ins.labels("success").inc()
    return response


async def _finish_sign_in(page: Page) -> Response:
    """State, code and ID token checked; the session gets a new id and the user."""
    params = page.request.query_params
    pending = page.session.data.pop("login", None)
    if params.get("error"):
        raise RefusalError(400, "reason_signin", f"the identity provider answered {params.get('error', '')[:100]!r}")
    try:
        signed_in = await page.state.oidc.finish(pending, params.get("state"), params.get("code"))
    except TokenRejectedError as exc:
        raise RefusalError(400, "reason_signin", str(exc)) from None
    user = User(signed_in.subject, signed_in.username, signed_in.name, signed_in.roles, signed_in.patient)
    page.session = page.state.sessions.renew(page.session)
    page.session.data = {"user": user.as_data(), "id_token": signed_in.id_token}
    await page.audit("sign-in", [user.patient] if user.patient else [], detail=f"roles {', '.join(user.roles)}")
    target = pending.get("next") if isinstance(pending, dict) else None
    return redirect(str(target or f"{page.state.base_path}/"))


async def logout(page: Page) -> Response:
    """End the portal's session and Keycloak's single sign-on session (a POST with the CSRF token)."""
    await page.form()
    user = page.user
    id_token = page.session.data.get("id_token")
    if user is not None:
        await page.audit("sign-out", [user.patient] if user.patient else [])
    page.state.sessions.end(page.session)
    page.session.data = {}
    return redirect(await page.state.oidc.logout_url(id_token if isinstance(id_token, str) else None))
