"""The gateway image with a rendered configuration, in front of an upstream that echoes what it gets.

Proves docs/federation.md, "Gateway", from the host through published loopback ports: the public
door strips identity headers, the peer door lets only valid federation certificates through and
hands every refused handshake (no certificate, other CA, expired) to the connector's
`/peer/refused` with nginx's reason.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.models.containers import Container

from infra import pki, pki_store
from infra.gateway_config import GatewayConfig, Upstream, render
from infra.imagebuild import ImageToBuild, build_image, build_images, images_to_build
from infra.local import STACK_LABEL
from infra.plan import ImageBuild, plan_stack
from infra.progress import Progress
from infra.spec import DEFAULT_BASE_IMAGE, parse_stack
from tests.integration.conftest import free_port, trickle
from tests.unit.test_gateway_config import CONFIG, TTP

STACK = "itest-gateway"
FEDERATION = "itest"
SECRET = secrets.token_urlsafe(24)
ECHO_PORT = 8082
IDENTITY = ("x-hubnode-client-verify", "x-hubnode-client-cert", "x-hubnode-client-subject")
#: The gateway's limits, small so each can be shown to hold within seconds.
LIMITS: dict[str, Any] = {
    "max_body_size": "1m",
    "header_timeout_s": 3,
    "body_timeout_s": 3,
    "keepalive_timeout_s": 3,
    "connections_per_client": 4,
}
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
FORGED = {
    "X-Hubnode-Client-Verify": "SUCCESS",
    "x-hubnode-client-subject": "CN=dic,O=itest",
    "X-Hubnode-Client-Cert": "forged",
    "X-Hubnode-Gateway-Secret": "forged",
    "X_Hubnode_Client_Verify": "SUCCESS",
}


@dataclass(frozen=True)
class Gateway:
    public: str
    peer: str
    pki: pki_store.FederationPki
    clients: Path
    container: Container

    def context(self, client: str | None = None) -> ssl.SSLContext:
        """TLS towards the gateway, trusting the federation CA, presenting `client`'s certificate."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if client is not None:
            context.load_cert_chain(self.clients / f"{client}.crt", self.clients / f"{client}.key")
        return context


def echoed(response: httpx.Response) -> dict[str, Any]:
    """What the upstream received, headers by lower-case name (a repeated header shows as a list)."""
    answer: dict[str, Any] = response.json()
    received: dict[str, list[str]] = {}
    for name, value in answer["headers"]:
        received.setdefault(name.lower(), []).append(value)
    answer["headers"] = {name: values[0] if len(values) == 1 else values for name, values in received.items()}
    return answer


def client_certificates(folder: Path, ca: pki.Issued) -> None:
    """A valid peer, one whose certificate expired, and one from another CA of the same name."""
    now = datetime.now(UTC)
    hosts = ["practice.hubnode.test"]
    issued = {
        "practice": pki.issue_node(ca, "practice", hosts, now),
        "expired": pki.issue_node(ca, "practice", hosts, now - timedelta(days=400)),
        "foreign": pki.issue_node(pki.issue_ca(FEDERATION, now), "practice", hosts, now),
    }
    for name, pair in issued.items():
        (folder / f"{name}.crt").write_bytes(pki.certificate_pem(pair.certificate))
        (folder / f"{name}.key").write_bytes(pki.key_pem(pair.key))


def mounted(folder: Path, name: str, content: bytes) -> str:
    """A file for a bind mount, readable by the container's unprivileged user."""
    path = folder / name
    path.write_bytes(content)
    path.chmod(0o444)
    return str(path)


@pytest.fixture(scope="module")
def gateway_image(client: docker.DockerClient) -> str:
    reference = f"hubnode/gateway:{version('hubnode')}"
    build_image(client, ImageToBuild(reference, ImageBuild("gateway", DEFAULT_BASE_IMAGE)), Progress())
    return reference


@pytest.mark.parametrize("config", [CONFIG, TTP], ids=["with-connector", "trust-centre-only"])
def test_the_images_nginx_accepts_every_rendered_configuration(
    client: docker.DockerClient, gateway_image: str, tmp_path: Path, config: GatewayConfig
) -> None:
    now = datetime.now(UTC)
    ca = pki.issue_ca("digihub", now)
    node = pki.issue_node(ca, "dic", ["dic.hubnode.test"], now)
    files = {
        "ca_file": ("ca.crt", pki.certificate_pem(ca.certificate)),
        "certificate_file": ("node.crt", pki.certificate_pem(node.certificate)),
        "key_file": ("node.key", pki.key_pem(node.key)),
        "secret_include": ("gateway-secret.conf", b'map "" $hubnode_gateway_secret {\n    default "s3cret";\n}\n'),
    }
    paths = {}
    for field, (name, content) in files.items():
        mounted(tmp_path, name, content)
        paths[field] = f"/check/{name}"
    mounted(tmp_path, "nginx.conf", render(replace(config, **paths)).encode())
    tmp_path.chmod(0o755)
    try:
        client.containers.run(
            gateway_image,
            ["-t", "-e", "stderr", "-c", "/check/nginx.conf"],
            entrypoint=["nginx"],
            volumes={str(tmp_path): {"bind": "/check", "mode": "ro"}},
            labels={STACK_LABEL: STACK},
            remove=True,
        )
    except docker.errors.ContainerError as refused:
        pytest.fail(f"nginx -t refused the rendered configuration:\n{refused.stderr!r}")


@pytest.fixture(scope="module")
def gateway(
    client: docker.DockerClient, gateway_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway")
    reference = gateway_image
    # the trust centre's image brings Debian's python3, which runs the echo upstream
    echo_plan = plan_stack(parse_stack(STACK, {"hubnode:site": "echo", "hubnode:components": ["trustcentre"]}))
    build_images(client, echo_plan, Progress())
    [echo_image] = images_to_build(echo_plan)

    store = pki_store.ensure(folder / "pki", FEDERATION, {"dic": ["dic.hubnode.test"]}, datetime.now(UTC))
    (folder / "clients").mkdir()
    client_certificates(folder / "clients", store.ca)
    files = folder / "mounts"
    files.mkdir()
    suffix = secrets.token_hex(4)
    echo_name = f"hubnode-{STACK}-echo-{suffix}"
    # the image's ports and the contract's file paths, with the echo behind both routes
    echo = Upstream(echo_name, ECHO_PORT)
    config = replace(CONFIG, connector=echo, trustcentre=echo, **LIMITS)
    volumes = {
        mounted(files, "nginx.conf", render(config).encode()): "/etc/hubnode/nginx.conf",
        mounted(files, "node.crt", store.certificate_file("dic").read_bytes()): config.certificate_file,
        # the store keeps keys owner-only; the mount is readable, as the launcher's secret files are
        mounted(files, "node.key", store.key_file("dic").read_bytes()): config.key_file,
        mounted(files, "ca.crt", store.ca_file.read_bytes()): config.ca_file,
        mounted(
            files, "gateway-secret.conf", f'map "" $hubnode_gateway_secret {{\n    default "{SECRET}";\n}}\n'.encode()
        ): config.secret_include,
    }
    echo_script = mounted(files, "echo.py", (Path(__file__).parent / "gateway_echo.py").read_bytes())
    labels = {STACK_LABEL: STACK}
    network = client.networks.create(f"hubnode-{STACK}-{suffix}", labels=labels)
    started: list[Container] = []
    try:
        started.append(
            client.containers.run(
                echo_image.reference,
                ["/echo.py", str(ECHO_PORT)],
                entrypoint=["python3"],
                name=echo_name,
                network=network.name,
                volumes={echo_script: {"bind": "/echo.py", "mode": "ro"}},
                labels=labels,
                detach=True,
            )
        )
        public, peer = free_port(), free_port()
        container = client.containers.run(
            reference,
            name=f"hubnode-{STACK}-gateway-{suffix}",
            network=network.name,
            ports={"8443/tcp": ("127.0.0.1", public), "9443/tcp": ("127.0.0.1", peer)},
            volumes={host: {"bind": path, "mode": "ro"} for host, path in volumes.items()},
            labels=labels,
            detach=True,
            # confined as the plan confines it: the state folder is its only writable place
            read_only=True,
            tmpfs={config.state_dir: "size=16m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
        )
        started.append(container)
        running = Gateway(
            f"https://127.0.0.1:{public}", f"https://127.0.0.1:{peer}", store, folder / "clients", container
        )
        wait_until_answering(running)
        yield running
    finally:
        for container in started:
            container.remove(force=True, v=True)  # the echo image declares a VOLUME
        network.remove()


def wait_until_answering(gateway: Gateway) -> None:
    """Until the public door reaches the upstream (nginx up, echo up, names resolved)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{gateway.public}/health", verify=gateway.context(), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        gateway.container.reload()
        if gateway.container.status != "running" or time.monotonic() > deadline:
            logs = gateway.container.logs().decode(errors="replace")
            pytest.fail(f"gateway not answering ({gateway.container.status}):\n{logs}")
        time.sleep(0.5)


def test_the_public_door_routes_the_contract_paths_and_strips_forged_identity(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.public, verify=gateway.context()) as http:
        fhir = http.get("/fhir/Patient", params={"identifier": "urn:mrn|4711"}, headers=FORGED)
        ttp = http.get("/ttp-fhir/fhir/gpas/metadata", headers={**FORGED, "X-Hubnode-Purpose": "study-1"})
        health = http.get("/health")
        elsewhere = http.get("/peer/fhir/Task", headers=FORGED)
    assert (fhir.status_code, ttp.status_code, health.status_code) == (200, 200, 200)
    assert echoed(fhir)["path"] == "/fhir/Patient?identifier=urn%3Amrn%7C4711"
    assert echoed(ttp)["path"] == "/ttp-fhir/fhir/gpas/metadata"
    assert echoed(health)["path"] == "/health"
    for response in (fhir, ttp):
        received = echoed(response)["headers"]
        assert not set(IDENTITY) & set(received), received
        assert "x_hubnode_client_verify" not in received
        assert received["x-hubnode-gateway-secret"] == SECRET
    assert echoed(ttp)["headers"]["x-hubnode-purpose"] == "study-1"  # not an identity header: passed on
    assert elsewhere.status_code == 404  # the peer API is not reachable through the public door
    assert fhir.headers["server"] == "nginx"  # no version


@contextmanager
def raw_tls(gateway: Gateway) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to the public door, to send bytes exactly as written."""
    host, port = urllib.parse.urlsplit(gateway.public).netloc.split(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as plain,
        gateway.context().wrap_socket(plain, server_hostname=host) as tls,
    ):
        yield tls


def read_all(tls: ssl.SSLSocket) -> bytes:
    """Everything until the gateway closes the connection."""
    answer = b""
    while chunk := tls.recv(65536):
        answer += chunk
    return answer


def test_the_upstream_sees_the_normalised_path_never_the_raw_one(gateway: Gateway) -> None:
    # nginx routes `/peer/fhir/../../fhir/Task` as /fhir/Task; passing the raw path would let the
    # connector route it to its peer API
    raw = b"GET /peer/fhir/../../fhir/Task HTTP/1.1\r\nHost: dic.hubnode.test\r\nConnection: close\r\n\r\n"
    with raw_tls(gateway) as tls:
        tls.sendall(raw)
        answer = read_all(tls)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["path"] == "/fhir/Task"


def test_a_peer_without_a_certificate_is_answered_by_the_connectors_refusal(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.peer}/fhir/Task", content=b"{}" * 1000, headers=FORGED, verify=gateway.context(), timeout=10
    )
    assert response.status_code == 401  # the connector's status, not nginx's 496
    answer = echoed(response)
    assert (answer["method"], answer["path"], answer["body"]) == ("POST", "/peer/refused", 0)
    assert answer["headers"]["x-hubnode-client-verify"] == "NONE"
    assert "x-hubnode-client-subject" not in answer["headers"]
    assert "x-hubnode-client-cert" not in answer["headers"]
    assert answer["headers"]["x-hubnode-gateway-secret"] == SECRET


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [("expired", "FAILED:certificate has expired"), ("foreign", "FAILED:unable to verify the first certificate")],
)
def test_a_peer_with_an_invalid_certificate_is_refused_with_nginxs_reason(
    gateway: Gateway, certificate: str, reason: str
) -> None:
    with httpx.Client(base_url=gateway.peer, verify=gateway.context(certificate)) as http:
        response = http.get("/fhir/Task", headers=FORGED)
    assert response.status_code == 401
    answer = echoed(response)
    assert answer["path"] == "/peer/refused"
    received = answer["headers"]
    assert received["x-hubnode-client-verify"] == reason
    # the presented (unverified) certificate is passed on for the audit record
    presented = (gateway.clients / f"{certificate}.crt").read_text()
    assert urllib.parse.unquote(received["x-hubnode-client-cert"]) == presented
    assert received["x-hubnode-gateway-secret"] == SECRET


def test_a_peer_with_a_federation_certificate_reaches_the_peer_api_as_itself(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.peer, verify=gateway.context("practice")) as http:
        task = http.post("/fhir/Task", json={"resourceType": "Task"}, headers=FORGED)
        ttp = http.get("/ttp-fhir/fhir/gpas/metadata", headers=FORGED)
    assert (task.status_code, ttp.status_code) == (200, 200)
    assert echoed(task)["path"] == "/peer/fhir/Task"
    assert echoed(task)["body"] == len(b'{"resourceType":"Task"}')
    assert echoed(ttp)["path"] == "/ttp-fhir/fhir/gpas/metadata"
    for response in (task, ttp):
        received = echoed(response)["headers"]
        assert received["x-hubnode-client-verify"] == "SUCCESS"
        assert received["x-hubnode-client-subject"] == "CN=practice,O=itest"
        assert urllib.parse.unquote(received["x-hubnode-client-cert"]) == (gateway.clients / "practice.crt").read_text()
        assert received["x-hubnode-gateway-secret"] == SECRET


def test_tls_1_2_clients_are_served(gateway: Gateway) -> None:
    context = gateway.context("practice")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with httpx.Client(base_url=gateway.peer, verify=context) as http:
        response = http.get("/fhir/metadata")
    assert echoed(response)["headers"]["x-hubnode-client-verify"] == "SUCCESS"


def outcome_of(response: httpx.Response) -> str:
    """The diagnostics of the gateway's OperationOutcome answer."""
    assert response.headers["content-type"] == "application/fhir+json"
    [issue] = response.json()["issue"]
    diagnostics: str = issue["diagnostics"]
    return diagnostics


def test_oversized_bodies_are_refused_before_the_upstream(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.public}/fhir", content=b"x" * (1024 * 1024 + 1), verify=gateway.context())
    assert response.status_code == 413
    assert outcome_of(response) == "the request body is larger than the gateway allows (1m)"


def test_an_oversized_header_is_refused_with_an_operation_outcome(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.public, verify=gateway.context()) as http:
        header = http.get("/fhir/Patient", headers={"X-Large": "x" * 9000})
        line = http.get("/fhir/Patient", params={"name": "x" * 9000})
        fits = http.get("/fhir/Patient", headers={"X-Large": "x" * 7000})
    assert header.status_code == 400
    assert outcome_of(header) == "a request header is longer than the gateway allows (8k)"
    assert line.status_code == 414
    assert outcome_of(line) == "the request line is longer than the gateway allows (8k)"
    assert fits.status_code == 200


def test_a_client_sending_its_header_a_byte_a_second_is_cut_off(gateway: Gateway) -> None:
    with raw_tls(gateway) as tls:
        took, answer = trickle(tls, b"GET /health HTTP/1.1\r\nHost: dic.hubnode.test\r\nX-Slow: " + b"x" * 60, 30)
    assert answer == b"", "hung up without an answer"
    assert took <= LIMITS["header_timeout_s"] + 2


def test_a_client_pausing_in_its_body_is_cut_off(gateway: Gateway) -> None:
    head = b"POST /fhir HTTP/1.1\r\nHost: dic.hubnode.test\r\nContent-Length: 100\r\n\r\n"
    with raw_tls(gateway) as tls:
        took, _ = trickle(tls, b"", 30, head=head + b"{" * 10)
    assert LIMITS["body_timeout_s"] - 1 <= took <= LIMITS["body_timeout_s"] + 2


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(gateway: Gateway) -> None:
    with raw_tls(gateway) as tls:
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: dic.hubnode.test\r\n\r\n")
        assert tls.recv(65536).startswith(b"HTTP/1.1 200")
        took, answer = trickle(tls, b"", 30)  # counted from the answer: no longer than nginx waited
    assert answer == b""
    assert took <= LIMITS["keepalive_timeout_s"] + 2


def test_a_client_address_may_have_only_so_many_requests_in_progress(gateway: Gateway) -> None:
    head = b"POST /fhir HTTP/1.1\r\nHost: dic.hubnode.test\r\nContent-Length: 10\r\n\r\n"
    with ExitStack() as stack:
        for _ in range(LIMITS["connections_per_client"]):
            stack.enter_context(raw_tls(gateway)).sendall(head)  # in progress: the body is still to come
        time.sleep(0.5)
        refused = httpx.get(f"{gateway.public}/health", verify=gateway.context())
    assert refused.status_code == 429
    assert outcome_of(refused) == f"more than {LIMITS['connections_per_client']} requests in progress from this address"
    time.sleep(0.5)
    assert httpx.get(f"{gateway.public}/health", verify=gateway.context()).status_code == 200


def test_every_answer_of_the_public_door_carries_the_security_headers(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.public, verify=gateway.context()) as http:
        answers = [
            http.get("/health"),
            http.get("/fhir/Patient"),
            http.get("/elsewhere"),
            http.post("/fhir", content=b"x" * (1024 * 1024 + 1)),
        ]
    assert [a.status_code for a in answers] == [200, 200, 404, 413]
    for answer in answers:
        assert {name: answer.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    peer = httpx.get(f"{gateway.peer}/fhir/metadata", verify=gateway.context("practice"))
    assert "strict-transport-security" not in peer.headers


def test_while_the_service_behind_is_down_clients_are_told_to_send_again_later(
    gateway: Gateway, client: docker.DockerClient
) -> None:
    [echo] = client.containers.list(filters={"name": f"hubnode-{STACK}-echo-"})
    echo.stop(timeout=1)
    # nginx still holds the stopped container's address (resolver valid=10s), so its connect can wait
    # for the kernel to give up on the address or for proxy_connect_timeout (10 s): longer than httpx's 5 s.
    patience = httpx.Timeout(30.0)
    try:
        public = httpx.get(f"{gateway.public}/fhir/Patient", verify=gateway.context(), timeout=patience)
        peer = httpx.post(f"{gateway.peer}/fhir/Task", json={}, verify=gateway.context("practice"), timeout=patience)
    finally:
        echo.start()
    for answer in (public, peer):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "10"
        assert outcome_of(answer) == "the service behind the gateway is not answering; send again in 10 s"
    assert {name: public.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    wait_until_answering(gateway)
    assert httpx.get(f"{gateway.public}/fhir/Patient", verify=gateway.context()).status_code == 200


def test_the_container_health_check_and_logs(gateway: Gateway) -> None:
    code, output = gateway.container.exec_run(["curl", "-fsS", "http://127.0.0.1:8088/health"])
    assert (code, output) == (0, b"ok\n")
    assert b'"GET /health HTTP/1.1" 200' in gateway.container.logs(stdout=True, stderr=False)
    top = gateway.container.top(ps_args="-o pid,uid,args")
    user = top["Titles"].index("UID")
    assert {row[user] for row in top["Processes"]} == {"10001"}  # master and workers alike: the image's hubnode user
