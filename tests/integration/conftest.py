"""Integration tier: real containers from the project's own images on this host's Docker engine."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.containers import Container

from infra.bootstrap import ensure_base_image, ensure_docker_engine
from infra.imagebuild import build_images
from infra.local import STACK_LABEL, LocalLauncher
from infra.plan import HAPI_METRICS_PORT, RESTART_POLICY, NodePlan, PortBinding, ServicePlan, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder needs Docker: mark it so, rather than trusting each file to."""
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def client() -> docker.DockerClient:
    engine = ensure_docker_engine(Progress())
    ensure_base_image(engine, Progress())
    return engine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def node_plan(stack: str, **config: Any) -> NodePlan:
    """A one-node plan on a free port, under a stack name no developer's stack uses."""
    components = config.get("components", ["fhir"])
    values = {"hubnode:site": "itest", "hubnode:ports": {component: free_port() for component in components}}
    values.update({f"hubnode:{key}": value for key, value in config.items()})
    [plan] = plan_stack(parse_stack(stack, values))
    return plan


@pytest.fixture(scope="session")
def built(client: docker.DockerClient) -> None:
    """Build (or reuse) every image the integration tests start."""
    build_images(
        client, [node_plan("itest-images", database="postgres", components=["fhir", "trustcentre"])], Progress()
    )


@pytest.fixture
def launcher(client: docker.DockerClient, tmp_path: Path) -> Iterator[LocalLauncher]:
    """A launcher whose stacks are removed after the test, volumes included (state in `tmp_path/state`)."""
    stacks: list[str] = []

    class Tracking(LocalLauncher):
        def up(self, plans: Any) -> None:
            plans = tuple(plans)
            stacks.extend(p.stack for p in plans)
            super().up(plans)

    yield Tracking(client, Progress(), tmp_path / "state")
    for stack in stacks:
        LocalLauncher(client, Progress(quiet=True), tmp_path / "state").down(stack, remove_volumes=True)


def stack_resources(client: docker.DockerClient, stack: str) -> dict[str, list[str]]:
    selector = {"label": f"{STACK_LABEL}={stack}"}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=selector)],
        "networks": [n.name for n in client.networks.list(filters=selector)],
    }


def with_port(plan: NodePlan, port: int) -> NodePlan:
    """The same plan with FHIR published on another host port."""
    services = tuple(
        replace(s, ports=tuple(PortBinding(p.container_port, port, p.host_ip) for p in s.ports)) for s in plan.services
    )
    return replace(plan, services=services, endpoints={"fhir": f"http://127.0.0.1:{port}/fhir"})


def assert_confined_as_planned(client: docker.DockerClient, service: ServicePlan) -> None:
    """The running container is confined as its plan says (security review L2), and the kernel agrees."""
    container = client.containers.get(service.container_name)
    host, confined = container.attrs["HostConfig"], service.hardening
    where = service.container_name
    assert host["CapDrop"] == ["ALL"], where
    assert not host["CapAdd"], where
    assert host["SecurityOpt"] == ["no-new-privileges:true"], where
    assert host["ReadonlyRootfs"] is True, where
    assert host["Memory"] == host["MemorySwap"] == confined.memory_mib * 1024 * 1024, where
    assert host["PidsLimit"] == confined.pids, where
    assert host["RestartPolicy"]["Name"] == RESTART_POLICY, where
    tmpfs = [(m["Target"], m["TmpfsOptions"]) for m in host["Mounts"] or () if m["Type"] == "tmpfs"]
    assert tmpfs == [(t.path, {"SizeBytes": t.size_mib * 1024 * 1024}) for t in confined.tmpfs], where
    status = process_status(container)
    assert (status.get("NoNewPrivs"), status.get("CapEff"), status.get("CapBnd")) == ("1", "0" * 16, "0" * 16), (
        where,
        status,
    )
    code, output = container.exec_run(["touch", "/hubnode-write-probe"])
    assert code != 0, f"{where}: the root filesystem took a write"
    assert b"Read-only file system" in output, output


def process_status(container: Container, attempts: int = 5) -> dict[str, str]:
    """The fields of `/proc/1/status` in `container`, read again while the read comes back cut short.

    Once in a CI run the trust centre's read lacked `NoNewPrivs` (a line every kernel since 4.10 writes);
    a short read says nothing about confinement, so it is retried, and the fields are then checked as read.
    """
    status: dict[str, str] = {}
    for _ in range(attempts):
        code, output = container.exec_run(["cat", "/proc/1/status"])
        assert code == 0, output
        status = dict(line.split(":\t", 1) for line in output.decode().splitlines() if ":\t" in line)
        if "NoNewPrivs" in status:
            break
        time.sleep(1)
    return status


def scrape_hapi(container: Container) -> str:
    """HAPI's `/metrics` fetched from inside `container`, by HAPI's name on the node's network."""
    url = f"http://fhir:{HAPI_METRICS_PORT}/metrics"
    code, output = container.exec_run(["curl", "-fsS", "-D", "/dev/stderr", url], demux=True)
    out, err = output
    assert code == 0, err
    assert b"content-type: text/plain; version=0.0.4" in (err or b"").lower(), err
    text: str = out.decode()
    return text


def fhir_requests(metrics: str, **labels: str) -> float:
    """The sum of `hubnode_fhir_requests_seconds_count` over the series carrying all of `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        name, _, rest = line.partition("{")
        if name != "hubnode_fhir_requests_seconds_count":
            continue
        series, _, value = rest.rpartition("} ")
        if all(f'{key}="{wanted}"' in series.split(",") for key, wanted in labels.items()):
            total += float(value)
    return total


def trickle(tls: ssl.SSLSocket, data: bytes, budget_s: float, head: bytes = b"") -> tuple[float, bytes]:
    """Send `head` at once, then `data` a byte a second, then nothing, until the other side answers or hangs up.

    The seconds that took from before `head` was sent, and the first bytes of the answer (empty: hung up
    without one). Reading with a timeout, not `select`: TLS records that carry no data wake `select` too.
    """
    tls.settimeout(1.0)
    started = time.monotonic()
    tls.sendall(head)
    remaining = iter(data)
    while time.monotonic() - started < budget_s:
        try:
            return time.monotonic() - started, tls.recv(65536)
        except TimeoutError:
            byte = next(remaining, None)
            if byte is not None:
                tls.sendall(bytes([byte]))
        except OSError:  # reset rather than closed
            return time.monotonic() - started, b""
    pytest.fail(f"still neither answered nor hung up after {budget_s} s")
