"""Signing in: code flow with PKCE, the session cookie, CSRF on forms, refusals for forged input."""

from __future__ import annotations

from tests.unit.portal.conftest import Node, query_of


def test_the_start_page_is_german_by_default_and_english_on_request(node: Node) -> None:
    german = node.portal.get("/portal/")
    assert german.status_code == 200
    assert '<html lang="de">' in german.text
    assert "Anmelden" in german.text
    english = node.portal.get("/portal/?lang=en")
    assert '<html lang="en">' in english.text
    assert "Sign in" in english.text
    assert '<html lang="en">' in node.portal.get("/portal/").text  # remembered


def test_login_sends_the_browser_to_the_public_issuer_with_pkce_state_and_nonce(node: Node) -> None:
    answer = node.portal.get("/portal/login", follow_redirects=False)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith("https://idp.test/idp/realms/hubnode/protocol/openid-connect/auth?")
    params = query_of(location)
    assert params["code_challenge_method"] == "S256"
    assert params["redirect_uri"] == "https://node.test/portal/auth/callback"
    assert {"state", "nonce", "code_challenge"} <= set(params)


def test_a_signed_in_session_cookie_is_secure_httponly_samesite_and_new(node: Node) -> None:
    before = node.portal.get("/portal/").cookies.get("hubnode_portal")
    answer = node.sign_in("erika")
    assert answer.status_code == 303
    header = answer.headers["set-cookie"]
    assert "Secure" in header
    assert "HttpOnly" in header
    assert "SameSite=lax" in header
    assert "Path=/portal" in header
    assert node.portal.cookies.get("hubnode_portal") != before
    assert "Erika" in node.portal.get("/portal/").text


def test_a_callback_with_a_forged_state_is_refused_and_signs_no_one_in(node: Node) -> None:
    started = node.portal.get("/portal/login", follow_redirects=False)
    authorize = node.idp_client.get(f"{started.headers['location']}&username=erika", follow_redirects=False)
    params = query_of(authorize.headers["location"])
    answer = node.portal.get(f"/portal/auth/callback?code={params['code']}&state=forged")
    assert answer.status_code == 400
    assert "Anmeldung konnte nicht abgeschlossen werden" in answer.text
    assert "Abmelden" not in node.portal.get("/portal/").text


def test_a_callback_replayed_after_sign_in_is_refused(node: Node) -> None:
    started = node.portal.get("/portal/login", follow_redirects=False)
    authorize = node.idp_client.get(f"{started.headers['location']}&username=erika", follow_redirects=False)
    callback = authorize.headers["location"].removeprefix("https://node.test")
    assert node.portal.get(callback, follow_redirects=False).status_code == 303
    assert node.portal.get(callback, follow_redirects=False).status_code == 400


def test_an_open_redirect_in_next_is_refused(node: Node) -> None:
    for target in ("https://evil.example/", "//evil.example/portal/", "/portal/../../x//y", "/elsewhere"):
        answer = node.portal.get("/portal/login", params={"next": target}, follow_redirects=False)
        assert answer.status_code == 400, target
    assert node.portal.get("/portal/login?next=/portal/me/ledger", follow_redirects=False).status_code == 303


def test_a_form_without_the_csrf_token_is_refused_and_changes_nothing(node: Node) -> None:
    node.sign_in("erika")
    answer = node.portal.post("/portal/logout", data={})
    assert answer.status_code == 403
    assert "Abmelden" in node.portal.get("/portal/").text  # still signed in


def test_logout_ends_the_session_and_sends_the_browser_to_keycloaks_end_session(node: Node) -> None:
    node.sign_in("erika")
    answer = node.portal.post("/portal/logout", data={"csrf": node.csrf()}, follow_redirects=False)
    assert answer.status_code == 303
    params = query_of(answer.headers["location"])
    assert answer.headers["location"].startswith("https://idp.test/idp/realms/hubnode/protocol/openid-connect/logout")
    assert params["post_logout_redirect_uri"] == "https://node.test/portal/"
    assert "id_token_hint" in params
    assert node.portal.get("/portal/me/consents").status_code == 401


def test_pages_carry_headers_that_keep_them_out_of_caches_and_frames(node: Node) -> None:
    headers = node.portal.get("/portal/").headers
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]


def test_a_page_for_another_role_is_refused(node: Node) -> None:
    node.sign_in("erika")
    assert node.portal.get("/portal/staff/enrolments").status_code == 403
    assert node.portal.get("/portal/patients").status_code == 403
