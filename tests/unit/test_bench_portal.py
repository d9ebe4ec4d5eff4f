"""The portal benchmarks' parts that need no containers: the sign-in, the load summary, the readiness stacks."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest

from benchmarks.portal import (
    READY_STACK,
    READY_VARIANTS,
    Answer,
    SignInError,
    login_form,
    ready_config,
    sign_in,
    summarise,
    table_rows,
)
from infra.plan import plan_stack
from infra.spec import parse_stack

PORTAL = "https://127.0.0.1:18443/portal"
IDP = "https://127.0.0.1:18443/idp/realms/hubnode"
ACTION = f"{IDP}/login-actions/authenticate?session_code=Qm9vaw&execution=5e1f-77a0&client_id=portal&tab_id=x-Tb9"

# Written for these tests in the shape of Keycloak's login page: a language menu that is a form too,
# the login form with entity-escaped query in its action and a hidden field, and a link away from it.
KEYCLOAK_PAGE = f"""<!DOCTYPE html>
<html class="login-pf" lang="de">
<head><meta charset="utf-8"><title>Anmeldung bei hubnode</title></head>
<body>
  <div class="login-pf-page">
    <form id="kc-locale-form" action="{IDP}/login-actions/switch-locale" method="get">
      <input type="hidden" name="kc_locale" value="en">
    </form>
    <h1 id="kc-page-title">Melden Sie sich bei Ihrem Konto an</h1>
    <form id="kc-form-login" onsubmit="login.disabled = true; return true;"
          action="{ACTION.replace("&", "&amp;")}" method="post" novalidate="novalidate">
      <label for="username">Benutzername oder E-Mail</label>
      <input tabindex="1" id="username" name="username" value="" type="text" autofocus autocomplete="username">
      <label for="password">Passwort</label>
      <input tabindex="2" id="password" name="password" type="password" autocomplete="current-password">
      <input type="hidden" id="id-hidden-input" name="credentialId" value="">
      <input tabindex="4" name="login" id="kc-login" type="submit" value="Anmelden">
    </form>
    <a href="{IDP}/login-actions/reset-credentials?client_id=portal">Passwort vergessen?</a>
  </div>
</body>
</html>
"""


def test_the_login_form_is_found_by_its_id_with_its_action_unescaped_and_its_hidden_fields() -> None:
    form = login_form(KEYCLOAK_PAGE)
    assert form.action == ACTION
    assert form.hidden == {"credentialId": ""}


def test_a_page_without_keycloaks_login_form_is_a_sign_in_error() -> None:
    page = KEYCLOAK_PAGE.replace('id="kc-form-login"', 'id="kc-register-form"')
    with pytest.raises(SignInError, match="no login form"):
        login_form(page)


class FakeNode:
    """The portal's three hops and Keycloak's form, as far as a browser sees them."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.posted: dict[str, list[str]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url == f"{PORTAL}/login":
            return httpx.Response(303, headers={"location": f"{IDP}/protocol/openid-connect/auth?client_id=portal"})
        if url.startswith(f"{IDP}/protocol/openid-connect/auth"):
            cookie = "AUTH_SESSION_ID=a1; Path=/idp/realms/hubnode/; Secure; HttpOnly"
            return httpx.Response(200, text=KEYCLOAK_PAGE, headers={"set-cookie": cookie})
        if url == ACTION and request.method == "POST":
            assert request.headers["cookie"] == "AUTH_SESSION_ID=a1"
            self.posted = parse_qs(request.content.decode(), keep_blank_values=True)
            if self.posted["password"] != [self.password]:
                return httpx.Response(200, text=KEYCLOAK_PAGE)
            return httpx.Response(302, headers={"location": f"{PORTAL}/auth/callback?state=s&code=c"})
        if url.startswith(f"{PORTAL}/auth/callback?"):
            cookie = "hubnode_portal=n3w; Path=/portal; Secure; HttpOnly; SameSite=lax"
            return httpx.Response(303, headers={"location": f"{PORTAL}/", "set-cookie": cookie})
        return httpx.Response(404)


def test_a_sign_in_posts_the_credentials_with_the_hidden_fields_and_keeps_the_portals_cookie() -> None:
    node = FakeNode("s3cret")
    with httpx.Client(transport=httpx.MockTransport(node)) as browser:
        sign_in(browser, PORTAL, "dr.weber", "s3cret")
        assert browser.cookies.get("hubnode_portal", path="/portal") == "n3w"
    assert node.posted == {"credentialId": [""], "username": ["dr.weber"], "password": ["s3cret"]}


def test_a_wrong_password_shows_the_form_again_and_stops_the_sign_in() -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(FakeNode("s3cret"))) as browser,
        pytest.raises(SignInError, match=r"login form for dr\.weber answered 200"),
    ):
        sign_in(browser, PORTAL, "dr.weber", "wrong")


def test_the_summary_counts_every_non_200_and_transport_error_and_times_only_the_pages() -> None:
    answers = [Answer(200, seconds / 100) for seconds in range(1, 21)]
    answers += [Answer(503, 0.9, "upstream"), Answer(0, 30.0, "ReadTimeout: timed out"), Answer(303, 0.01)]
    summary = summarise(answers, wall_s=2.3)
    assert (summary["requests"], summary["errors"]) == (23, 3)
    assert summary["error_rate"] == pytest.approx(3 / 23)
    assert summary["statuses"] == {"0": 1, "200": 20, "303": 1, "503": 1}
    assert summary["error_excerpts"] == ["503: upstream", "no answer: ReadTimeout: timed out", "303: "]
    assert summary["requests_per_s"] == pytest.approx(10.0)
    assert summary["p50_s"] == pytest.approx(0.105)
    assert summary["p95_s"] == pytest.approx(0.1905)
    assert summary["max_s"] == pytest.approx(0.20)
    assert summary["met"] is False


def test_the_goal_is_met_only_by_a_run_without_errors_that_sent_requests() -> None:
    clean = summarise([Answer(200, 0.1), Answer(200, 0.3)], wall_s=1.0)
    assert (clean["error_rate"], clean["met"]) == (0.0, True)
    idle = summarise([], wall_s=120.0)
    assert [idle[key] for key in ("error_rate", "p50_s", "p95_s", "max_s")] == [None] * 4
    assert idle["met"] is False
    single = summarise([Answer(200, 0.4)], wall_s=1.0)
    assert single["p95_s"] == single["max_s"] == 0.4


def test_the_table_shows_the_users_figures_and_a_run_without_any_page() -> None:
    figures = {"sessions": 20, "user": "dr.weber", "duration_s": 120.0}
    [latency, load] = table_rows({"portal-users": {**figures, **summarise([Answer(200, 0.25)], 1.0)}})
    assert latency[1] == "250, 250, 250 ms"
    assert load[1:] == ("1, 0", "1.0 pages/s; target error rate 0: met")
    [latency, load] = table_rows({"portal-users": {**figures, **summarise([Answer(0, 30.0)], 30.0)}})
    assert latency[1] == "-, -, - ms"
    assert load[2].endswith("NOT met")


def test_both_readiness_stacks_are_valid_single_dic_nodes_that_differ_by_idp_and_portal_alone() -> None:
    configs = {variant: ready_config(components, 18443, 19443) for variant, components in READY_VARIANTS.items()}
    specs = {variant: parse_stack(READY_STACK, config) for variant, config in configs.items()}
    [without], [with_idp] = specs["without"].nodes, specs["with"].nodes
    assert (without.role, without.database) == (with_idp.role, with_idp.database) == ("dic", "embedded")
    assert set(with_idp.components) - set(without.components) == {"idp", "portal"}
    assert set(without.components) <= set(with_idp.components)
    assert {key for key in configs["with"] if configs["with"][key] != configs["without"][key]} == {"hubnode:components"}
    services = {variant: {s.component for s in plan_stack(spec)[0].services} for variant, spec in specs.items()}
    assert services["with"] - services["without"] == {"idp", "portal"}
    assert services["without"] <= services["with"]
