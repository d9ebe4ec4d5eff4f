from __future__ import annotations

import json
import posixpath
import re
from dataclasses import replace
from typing import Any

import pytest

from infra.gateway_config import NOT_FOUND, GatewayConfig, Upstream, render

IDENTITY_HEADERS = ("X-Hubnode-Client-Verify", "X-Hubnode-Client-Cert", "X-Hubnode-Client-Subject")
CONFIG = GatewayConfig(
    connector=Upstream("connector", 8082),
    trustcentre=Upstream("trustcentre", 8081),
    certificate_file="/run/secrets/node.crt",
    key_file="/run/secrets/node.key",
    ca_file="/run/hubnode/ca.crt",
    secret_include="/run/secrets/gateway-secret.conf",
    secret_variable="hubnode_gateway_secret",
    public_port=8443,
    peer_port=9443,
    health_port=8088,
)
TTP = replace(CONFIG, connector=None)
#: Where nginx's own refusals past a limit are answered, on both doors.
REFUSALS = {f"= /.hubnode/refused/{status}" for status in (413, 414, 494, 429, 502, 504)}


def server(text: str, port: int) -> str:
    """The `server { ... }` block listening on `port`."""
    [block] = [b for b in text.split("\n    server {")[1:] if re.search(rf"listen {port}\b", b)]
    return block.split("\n    }\n")[0]


def locations(block: str) -> dict[str, str]:
    """Each `location` of a server block by its match, with its body."""
    return dict(re.findall(r"location ([^{]+?) \{(.*?)\n        \}", block, re.DOTALL))


def headers(location: str) -> dict[str, str]:
    return dict(re.findall(r"proxy_set_header (\S+) (.*);", location))


def test_both_doors_speak_tls_1_2_and_1_3_only_and_hide_the_version() -> None:
    text = render(CONFIG)
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert "server_tokens off;" in text
    assert "ssl_certificate /run/secrets/node.crt;" in text
    assert "ssl_certificate_key /run/secrets/node.key;" in text
    assert "listen 8443 ssl;" in text
    assert "listen 9443 ssl;" in text
    assert "client_max_body_size 64m;" in text
    assert "error_log stderr" in text
    assert "access_log /dev/stdout" in text
    assert "include /run/secrets/gateway-secret.conf;" in text
    assert "pid /tmp/nginx.pid;" in text


def test_the_public_door_routes_the_contracts_paths_and_removes_identity_headers() -> None:
    public = server(render(CONFIG), 8443)
    assert "ssl_verify_client" not in public
    routes = locations(public)
    assert set(routes) == {"~ ^/fhir(/|$)", "= /health", "/ttp-fhir/", "/", *REFUSALS}
    assert "http://connector:8082;" in routes["~ ^/fhir(/|$)"]
    assert "http://connector:8082;" in routes["= /health"]
    assert "http://trustcentre:8081;" in routes["/ttp-fhir/"]
    assert "return 404 '" + json.dumps(NOT_FOUND, separators=(",", ":")) + "';" in routes["/"]
    for match, body in routes.items():
        if "proxy_pass" in body:
            assert "rewrite ^ $uri break;" in body, match
            assert [headers(body)[h] for h in IDENTITY_HEADERS] == ['""'] * 3, match
            assert headers(body)["X-Hubnode-Gateway-Secret"] == "$hubnode_gateway_secret"


def test_the_peer_door_requires_a_federation_certificate_and_passes_what_nginx_verified() -> None:
    peer = server(render(CONFIG), 9443)
    assert "ssl_verify_client on;" in peer
    assert "ssl_client_certificate /run/hubnode/ca.crt;" in peer
    assert "ssl_verify_depth 1;" in peer
    assert "error_page 495 496 = @refused;" in peer
    routes = locations(peer)
    assert set(routes) == {"~ ^/fhir(/|$)", "/ttp-fhir/", "/", "@refused", *REFUSALS}
    assert "rewrite ^ /peer$uri break;" in routes["~ ^/fhir(/|$)"]
    assert "rewrite ^ /peer/refused break;" in routes["@refused"]
    assert "proxy_pass_request_body off;" in routes["@refused"]
    for match, body in routes.items():
        if "proxy_pass" in body:
            assert headers(body)["X-Hubnode-Client-Verify"] == "$ssl_client_verify", match
            assert headers(body)["X-Hubnode-Client-Cert"] == "$ssl_client_escaped_cert", match
            assert headers(body)["X-Hubnode-Client-Subject"] == "$ssl_client_s_dn", match
            assert headers(body)["X-Hubnode-Gateway-Secret"] == "$hubnode_gateway_secret", match


def test_the_health_door_is_answered_by_nginx_itself() -> None:
    health = locations(server(render(CONFIG), 8088))
    assert 'return 200 "ok\\n";' in health["= /health"]


def test_a_node_without_a_connector_has_the_trust_centre_answer_health_and_the_gateway_refuse() -> None:
    text = render(TTP)
    public, peer = locations(server(text, 8443)), locations(server(text, 9443))
    assert "~ ^/fhir(/|$)" not in public
    assert "~ ^/fhir(/|$)" not in peer
    assert "http://trustcentre:8081;" in public["= /health"]
    assert "connector" not in text
    [outcome] = re.findall(r"return 401 '(.*)';", peer["@refused"])
    assert json.loads(outcome)["resourceType"] == "OperationOutcome"


def test_a_node_without_a_trust_centre_has_no_ttp_routes() -> None:
    text = render(replace(CONFIG, trustcentre=None))
    assert "/ttp-fhir/" not in text
    assert "trustcentre" not in text


def directive(text: str, name: str) -> str:
    """The value of the one directive `name` in the rendered text."""
    [value] = re.findall(rf"^\s*{name} (.*);$", text, re.MULTILINE)
    return value


def test_slow_clients_are_cut_off_and_idle_ones_let_go() -> None:
    text = render(replace(CONFIG, header_timeout_s=7, body_timeout_s=8, send_timeout_s=9, keepalive_timeout_s=11))
    assert directive(text, "client_header_timeout") == "7s"
    assert directive(text, "client_body_timeout") == "8s"
    assert directive(text, "send_timeout") == "9s"
    assert directive(text, "keepalive_timeout") == "11s"


def test_headers_and_connections_per_client_are_bounded() -> None:
    text = render(CONFIG)
    assert directive(text, "client_header_buffer_size") == "1k"
    assert directive(text, "large_client_header_buffers") == "4 8k"
    assert directive(text, "limit_conn_zone") == "$binary_remote_addr zone=per_client:10m"
    assert directive(text, "limit_conn") == "per_client 32"
    assert directive(text, "limit_conn_status") == "429"


def test_nothing_of_a_request_or_an_answer_is_buffered_on_disk() -> None:
    text = render(CONFIG)
    assert directive(text, "proxy_request_buffering") == "off"
    assert directive(text, "proxy_max_temp_file_size") == "0"


def test_every_answer_of_the_public_door_carries_the_security_headers_and_no_location_drops_them() -> None:
    public = server(render(CONFIG), 8443)
    added = dict(re.findall(r"^        add_header (\S+) (.*) always;$", public, re.MULTILINE))
    assert added == {
        "Strict-Transport-Security": '"max-age=31536000"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "\"default-src 'none'; frame-ancestors 'none'\"",
    }
    # nginx inherits no header from the server into a location that adds one of its own: such a one repeats them
    for name, body in locations(public).items():
        if "add_header" in body:
            assert set(added) <= set(re.findall(r"add_header (\S+) ", body)), name
    peer_headers = re.findall(r"add_header (\S+) ", server(render(CONFIG), 9443))
    # the wait of a 502 and of a 504 that never reached the service
    assert peer_headers == ["Retry-After"] * 2, "the peer door adds nothing but a wait when the service is down"


@pytest.mark.parametrize("port", [8443, 9443])
def test_past_a_limit_nginx_answers_with_an_operation_outcome_naming_it(port: int) -> None:
    block = server(render(replace(CONFIG, max_body_size="2m", connections_per_client=5)), port)
    answers = {}
    for status in (413, 414, 494, 429, 502):
        refusal = locations(block)[f"= /.hubnode/refused/{status}"]
        assert "internal;" in refusal, "a client cannot ask for a refusal"
        [(answered, outcome)] = re.findall(r"return (\d+) '(.*)';", refusal)
        # the status answered is the refusal's own: nginx keeps its error's status unless told otherwise
        changed = "" if int(answered) == status else f" ={answered}"
        assert f"error_page {status}{changed} /.hubnode/refused/{status};" in block
        answers[status] = (int(answered), json.loads(outcome)["issue"][0]["diagnostics"])
    assert answers == {
        413: (413, "the request body is larger than the gateway allows (2m)"),
        414: (414, "the request line is longer than the gateway allows (8k)"),
        494: (400, "a request header is longer than the gateway allows (8k)"),
        429: (429, "more than 5 requests in progress from this address"),
        502: (503, "the service behind the gateway is not answering; send again in 10 s"),
    }
    told_to_wait = {
        status
        for status in answers
        if "add_header Retry-After 10 always;" in locations(block)[f"= /.hubnode/refused/{status}"]
    }
    assert told_to_wait == {502}, "a client is told when to send again when the service behind is restarting"


@pytest.mark.parametrize(
    "change",
    [
        {"connector": Upstream("connector;evil", 8082)},
        {"ca_file": "/run/hubnode/ca.crt; include /etc/passwd"},
        {"max_body_size": "1m }"},
        {"secret_variable": "x y"},
        {"large_header_buffer_size": "8k; proxy_pass x"},
        {"content_security_policy": "default-src 'none'\" always; include /etc/passwd; #"},
        {"content_security_policy": "script-src $http_x"},
        {"connector": None, "trustcentre": None},
    ],
)
def test_values_that_could_break_out_of_a_directive_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="gateway"):
        replace(CONFIG, **change)


def test_the_public_door_hands_idp_to_keycloak_with_the_host_the_client_used() -> None:
    text = render(replace(CONFIG, idp=Upstream("idp", 8180)))
    route = locations(server(text, 8443))["/idp/"]
    assert "http://idp:8180;" in route
    assert "rewrite ^ $uri break;" in route
    assert headers(route)["X-Forwarded-Host"] == "$http_host"
    assert headers(route)["X-Forwarded-Proto"] == "https"
    assert [headers(route)[h] for h in IDENTITY_HEADERS] == ['""'] * 3
    assert "/idp/" not in server(text, 9443)  # peers have no business with users' logins
    assert "/idp/" not in render(CONFIG)


def test_the_identity_provider_keeps_its_own_content_security_policy_and_the_transport_headers() -> None:
    public = server(render(replace(CONFIG, idp=Upstream("idp", 8180))), 8443)
    idp = locations(public)["/idp/"]
    added = dict(re.findall(r"add_header (\S+) (.*) always;", idp))
    assert added == {"Strict-Transport-Security": '"max-age=31536000"', "X-Content-Type-Options": "nosniff"}


def test_the_public_door_hands_portal_to_the_portal_which_keeps_its_own_content_security_policy() -> None:
    text = render(replace(CONFIG, portal=Upstream("portal", 8083)))
    route = locations(server(text, 8443))["/portal/"]
    assert "http://portal:8083;" in route
    assert [headers(route)[h] for h in IDENTITY_HEADERS] == ['""'] * 3
    added = dict(re.findall(r"add_header (\S+) (.*) always;", route))
    assert added == {"Strict-Transport-Security": '"max-age=31536000"', "X-Content-Type-Options": "nosniff"}
    assert "client_max_body_size 1m;" in route
    assert "/portal/" not in server(text, 9443)  # peers have no business with the portal
    assert "/portal/" not in render(CONFIG)


def chosen(block: str, uri: str) -> str:
    """The location nginx picks for `uri`: an exact match, else the first matching regex, else the longest prefix."""
    found = locations(block)
    if f"= {uri}" in found:
        return f"= {uri}"
    regexes = [match for match in found if match.startswith("~ ") and re.search(match[2:], uri)]
    prefixes = [match for match in found if not match.startswith(("=", "~", "@")) and uri.startswith(match)]
    return regexes[0] if regexes else max(prefixes, key=len)


@pytest.mark.parametrize(
    "config",
    [replace(CONFIG, idp=Upstream("idp", 8180), portal=Upstream("portal", 8083)), TTP],
    ids=["full", "ttp"],
)
def test_no_door_passes_metrics_to_a_service(config: GatewayConfig) -> None:
    text = render(config)
    for port in (8443, 9443, 8088):
        block = server(text, port)
        for uri in ("/metrics", "/metrics/", "/health/../metrics"):
            location = chosen(block, posixpath.normpath(uri))  # nginx routes the normalised path
            assert location == "/", (port, uri, location)
            assert "proxy_pass" not in locations(block)[location]
            assert "return 404" in locations(block)[location]


@pytest.mark.parametrize("port", [8443, 9443])
def test_a_timeout_is_told_apart_by_whether_the_service_was_ever_reached(port: int) -> None:
    block = server(render(CONFIG), port)
    refusal = locations(block)["= /.hubnode/refused/504"]
    assert "error_page 504 = /.hubnode/refused/504;" in block, "the location's own status stands"
    never_connected, answered_late = refusal.split('if ($upstream_connect_time = "-") {')[1].split("\n            }")
    [(status, outcome)] = re.findall(r"return (\d+) '(.*)';", never_connected)
    assert (int(status), json.loads(outcome)) == (503, json.loads(CONFIG.refusals[502][1]))
    assert "add_header Retry-After 10 always;" in never_connected
    assert ("Strict-Transport-Security" in never_connected) == (port == 8443), "the public door's headers"
    [(status, outcome)] = re.findall(r"return (\d+) '(.*)';", answered_late)
    assert int(status) == 504
    assert json.loads(outcome)["issue"][0] == {
        "severity": "error",
        "code": "timeout",
        "diagnostics": "the service behind the gateway did not answer within 300 s; "
        "whether the request was carried out is unknown",
    }
