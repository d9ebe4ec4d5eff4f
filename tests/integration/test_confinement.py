"""A whole federation node on PostgreSQL, confined as its plan says, still doing its work behind its gateway.

One `dic` node (HAPI and the trust centre on their own PostgreSQL, the connector, the gateway) in a
federation of its own: every container without capabilities, on a read-only root, with memory and
PID limits; then an MII bundle ingested through the public door, a pseudonym made, and the hostile
inputs of issue 18 refused there without a 5xx.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import docker
import httpx
import pytest

from connector.ingest import STORED_ERROR
from infra.federation_files import prepare_federation_files
from infra.imagebuild import build_images
from infra.local import LocalLauncher
from infra.plan import NodePlan, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack
from tests.conftest import MII_BUNDLES_BREAKING_THEIR_PROFILES, MII_KDS_DIR
from tests.integration.conftest import assert_confined_as_planned, fhir_requests, free_port, scrape_hapi, trickle

STACK = "itest-confined"
#: Short enough to watch a slow body being cut off by the service behind the gateway.
BODY_SECONDS = 4


@dataclass(frozen=True)
class Node:
    plan: NodePlan
    public: str
    ca: ssl.SSLContext
    state: Path

    def token(self, name: str) -> str:
        return (self.state / "secrets" / self.plan.site / name).read_text().strip()

    def client(self, token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(token)}", "Content-Type": "application/fhir+json"}
        return httpx.Client(base_url=self.public, verify=self.ca, headers=headers, timeout=300)


def with_body_seconds(plan: NodePlan) -> NodePlan:
    """The plan with the services' body time limit at BODY_SECONDS (60 s by default)."""
    variables = {"trustcentre": "TC_BODY_SECONDS", "connector": "CN_BODY_SECONDS"}
    services = tuple(
        replace(s, env={**s.env, variables[s.component]: str(BODY_SECONDS)}) if s.component in variables else s
        for s in plan.services
    )
    return replace(plan, services=services)


@pytest.fixture(scope="module")
def node(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    config = {
        "hubnode:federation": {"name": "itest", "domain": "hubnode.test"},
        "hubnode:nodes": [
            {
                "site": "dic",
                "role": "dic",
                "ports": {"gateway": free_port(), "peer": free_port()},
                "validation": {"profiles": "warn"},
            }
        ],
        "hubnode:database": "postgres",
        "hubnode:domains": [{"name": "study", "prefix": "S"}],
        "hubnode:projects": [{"name": "study", "domain": "study"}],
    }
    spec = parse_stack(STACK, config)
    [plan] = plan_stack(spec)
    build_images(client, [plan], Progress())
    state = tmp_path_factory.mktemp("confined")
    files = prepare_federation_files(spec, state, None)
    launcher = LocalLauncher(client, Progress(), state, files, state / "pki" / "ca.crt")
    try:
        launcher.up([with_body_seconds(plan)])
        ca = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
        yield Node(plan, plan.endpoints["gateway"], ca, state)
    finally:
        launcher.down(STACK, remove_volumes=True)


def test_every_container_of_the_node_is_confined_as_its_plan_says(node: Node, client: docker.DockerClient) -> None:
    assert [s.component for s in node.plan.services] == [
        "db",
        "fhir",
        "tcdb",
        "trustcentre",
        "cndb",
        "connector",
        "gateway",
    ]
    for service in node.plan.services:
        assert_confined_as_planned(client, service)


def test_confined_the_node_ingests_an_mii_bundle_through_its_gateway(node: Node, client: docker.DockerClient) -> None:
    bundle = (MII_KDS_DIR / "Bundle-mii-exa-test-data-bundle-pat-1.json").read_bytes()
    with node.client("cn-admin-token") as http:
        ingested = http.post("/fhir", content=bundle)
        assert ingested.status_code == 200, ingested.text[:500]
        patients = http.get("/fhir/Patient", params={"_count": "5"})
    assert patients.status_code == 200
    assert patients.json()["total"] >= 1
    fhir = client.containers.get(next(s.container_name for s in node.plan.services if s.component == "fhir"))
    used = fhir.stats(stream=False)["memory_stats"]["usage"]
    assert used < fhir.attrs["HostConfig"]["Memory"]


@pytest.mark.parametrize("name", sorted(MII_BUNDLES_BREAKING_THEIR_PROFILES))
def test_validating_in_warn_mode_the_node_stores_what_breaks_its_profiles_and_says_what(node: Node, name: str) -> None:
    bundle = (MII_KDS_DIR / f"Bundle-mii-exa-test-data-bundle-{name}.json").read_bytes()
    with node.client("cn-admin-token") as http:
        ingested = http.post("/fhir", content=bundle)
        assert ingested.status_code == 200, ingested.text[:500]
        outcomes = [e["response"]["outcome"] for e in ingested.json()["entry"] if "outcome" in e["response"]]
        errors = [i["diagnostics"] for o in outcomes for i in o["issue"] if i["diagnostics"].endswith(STORED_ERROR)]
        assert errors, outcomes
        assert all(d.startswith("Bundle.entry[") and "declared profile https://" in d for d in errors), errors
        events = http.get("/fhir/AuditEvent").json()["entry"]
    last_ingest = next(e["resource"] for e in reversed(events) if e["resource"]["subtype"][0]["code"] == "ingest")
    assert f"stored with {len(errors)} profile error(s) reported as warnings" in last_ingest["outcomeDesc"]


def test_confined_the_trust_centre_makes_pseudonyms_through_the_gateway(node: Node) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "target", "valueString": "study"}, {"name": "original", "valueString": "mrn-1"}],
    }
    with node.client("tc-admin-token") as http:
        answer = http.post("/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate", json=body)
    assert answer.status_code == 200, answer.text


def test_hapis_metrics_answer_inside_the_node_and_through_no_door(node: Node, client: docker.DockerClient) -> None:
    gateway = client.containers.get(next(s.container_name for s in node.plan.services if s.component == "gateway"))
    labels = {"operation": "search-type", "resource_type": "Patient", "outcome": "2xx"}
    before = fhir_requests(scrape_hapi(gateway), **labels)
    with node.client("cn-admin-token") as http:
        assert http.get("/fhir/Patient", params={"_count": "1"}).status_code == 200
        refused = {path: http.get(path) for path in ("/metrics", "/fhir/metrics")}
    assert fhir_requests(scrape_hapi(gateway), **labels) >= before + 1
    assert refused["/metrics"].status_code == 404  # the gateway's own answer: no door routes there
    for path, answer in refused.items():
        assert 400 <= answer.status_code < 500, (path, answer.text[:200])
        assert "hubnode_fhir_requests" not in answer.text, path


@pytest.mark.parametrize(
    ("path", "token"),
    [("/fhir", "cn-admin-token"), ("/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate", "tc-admin-token")],
    ids=["connector", "trust-centre"],
)
def test_50000_nested_arrays_are_refused_with_413_naming_the_limit(node: Node, path: str, token: str) -> None:
    with node.client(token) as http:
        answer = http.post(path, content=b"[" * 50_000 + b"]" * 50_000)
    assert answer.status_code == 413
    [issue] = answer.json()["issue"]
    assert issue["diagnostics"] == "the request body nests JSON 50000 levels deep; the limit JSON_MAX_DEPTH is 64"


@pytest.mark.parametrize(
    ("path", "token"),
    [("/fhir", "cn-admin-token"), ("/ttp-fhir/fhir/gpas/$pseudonymize", "tc-admin-token")],
    ids=["connector", "trust-centre"],
)
def test_a_body_sent_a_byte_a_second_is_cut_off_by_the_service_behind_the_gateway(
    node: Node, path: str, token: str
) -> None:
    host, port = node.public.removeprefix("https://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n"
        f"Authorization: Bearer {node.token(token)}\r\nContent-Type: application/fhir+json\r\n\r\n"
    ).encode()
    with (
        socket.create_connection((host, int(port)), timeout=10) as plain,
        node.ca.wrap_socket(plain, server_hostname=host) as tls,
    ):
        took, answer = trickle(tls, b" " * 100, BODY_SECONDS + 10, head=head)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"code":"timeout"' in answer, answer
    # cut off in seconds rather than after the 100 s the body takes at this pace
    assert took <= BODY_SECONDS + 3, answer


def test_a_service_the_kernel_kills_comes_back_by_itself_and_answers_again(
    node: Node, client: docker.DockerClient
) -> None:
    """SIGKILL from outside the container, as the OOM killer sends it: Docker starts it again, no `hubnode up`."""
    connector = client.containers.get(next(s.container_name for s in node.plan.services if s.component == "connector"))
    restarts = connector.attrs["RestartCount"]
    os.kill(connector.attrs["State"]["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 180
    while True:
        connector.reload()
        state = connector.attrs["State"]
        if connector.attrs["RestartCount"] > restarts and state.get("Health", {}).get("Status") == "healthy":
            break
        assert time.monotonic() < deadline, f"the killed connector did not come back healthy: {state}"
        time.sleep(1)
    with node.client("cn-admin-token") as http:
        answer = http.get("/fhir/Patient", params={"_count": "1"})
    assert answer.status_code == 200, answer.text
