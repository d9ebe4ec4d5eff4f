"""End-to-end tier: a whole local federation (three nodes), brought up once with `hubnode up`.

It runs under its own stack name and free ports, from a scratch project folder, so a developer's
`federation` stack is never touched; `hubnode down --volumes` removes it at the end.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import yaml

from connector.tasks import IDEMPOTENCY_SYSTEM, Process, parameter, request_task
from infra.stackfile import read_named_files
from tests.conftest import PROJECT_DIR
from tests.integration.conftest import free_port

STACK = "e2e-fed"
SITES = ("dic", "practice", "research")
KVNR_SYSTEM = "http://fhir.de/sid/gkv/kvid-10"
TIMEOUT = 300.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here needs Docker and minutes: mark it so."""
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)


def stored_from_now() -> dict[str, str]:
    """Search parameters for what a node stores from now on. A test that looks for leaks judges what it
    caused: the mutation run earlier in this tier leaves names on the research node on purpose."""
    return {"_lastUpdated": f"ge{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"}


def hubnode(project: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """The `hubnode` command on `project`, as a developer runs it."""
    command = [sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_DIR, timeout=timeout)


@dataclass(frozen=True)
class Federation:
    """The running federation as a test reaches it: published doors, tokens, the CA, the PKI folder."""

    project: Path
    gateway_ports: Mapping[str, int]
    peer_ports: Mapping[str, int]
    stack: str = STACK

    @property
    def state(self) -> Path:
        return self.project / ".hubnode" / self.stack

    @property
    def ca_file(self) -> Path:
        return self.state / "pki" / "ca.crt"

    def secret(self, site: str, name: str) -> str:
        return (self.state / "secrets" / site / name).read_text(encoding="utf-8").strip()

    def client(self, site: str, credential: str = "cn-admin-token") -> httpx.Client:
        """The node's public door with the bearer token in its secret file `credential`."""
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.gateway_ports[site]}",
            verify=ssl.create_default_context(cafile=self.ca_file),
            headers={"Authorization": f"Bearer {self.secret(site, credential)}", "Accept": "application/fhir+json"},
            timeout=TIMEOUT,
        )

    def peer_client(self, site: str, certificate: tuple[Path, Path] | None) -> httpx.Client:
        """The node's peer door, presenting `certificate` (cert file, key file) or none."""
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.peer_ports[site]}",
            verify=self.peer_context(certificate),
            timeout=TIMEOUT,
        )

    def peer_context(self, certificate: tuple[Path, Path] | None) -> ssl.SSLContext:
        """TLS that trusts the federation CA and presents `certificate` (cert file, key file), if any."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if certificate is not None:
            context.load_cert_chain(certificate[0], certificate[1])
        return context

    def start(self, site: str, process: Process, inputs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
        """Start a process at `site` through its public door; the finished Task."""
        with self.client(site) as client:
            answer = client.post("/fhir/Task", json=request_task(process, inputs, idempotency_key=key))
        assert answer.status_code in (200, 201), answer.text  # 200: the stored answer to a replayed key
        task: dict[str, Any] = answer.json()
        return task

    def ingest(self, site: str, bundle: Mapping[str, Any]) -> httpx.Response:
        with self.client(site) as client:
            return client.post("/fhir", json=bundle, headers={"Content-Type": "application/fhir+json"})

    def grant(self, person: Mapping[str, str], *policies: str) -> None:
        """Record an MII broad consent for `person` (an Identifier) at the federation's trust centre (dic)."""
        from fixtures.consents import broad_consent  # noqa: PLC0415 -- only the tests that consent need it

        consent = broad_consent(dict(person), "2024-01-02T10:00:00+01:00", *policies)
        parameters = [{"name": "domain", "valueString": "MII"}, {"name": "resource", "resource": consent}]
        self.trustcentre("gics/$addConsent", {"resourceType": "Parameters", "parameter": parameters})

    def trustcentre(self, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to the federation's trust centre (dic) as its administrator; the answer must be 200."""
        with self.client("dic", "tc-admin-token") as client:
            answer = client.post(
                f"/ttp-fhir/fhir/{operation}", json=body, headers={"Content-Type": "application/fhir+json"}
            )
        assert answer.status_code == 200, f"{operation}: {answer.status_code} {answer.text[:500]}"
        return dict(answer.json())

    def search(self, site: str, query: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every resource a search at `site` finds (all pages)."""
        found: list[dict[str, Any]] = []
        path, _, search = query.partition("?")
        arguments = [*parse_qsl(search), ("_count", "500"), *(params or {}).items()]
        with self.client(site) as client:
            bundle = client.get(f"/fhir/{path}", params=arguments).json()
            while True:
                found += [e["resource"] for e in bundle.get("entry", [])]
                following = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
                if following is None:
                    return found
                bundle = client.get(following).json()


def task_output(task: Mapping[str, Any], code: str) -> list[Any]:
    """The values of a Task's outputs with `code`."""
    return [
        next(value for key, value in entry.items() if key.startswith("value"))
        for entry in task.get("output", [])
        if entry["type"]["coding"][0]["code"] == code
    ]


def patient_input(system: str, value: str) -> dict[str, Any]:
    return parameter("patient", "valueIdentifier", {"system": system, "value": value})


def target_input(site: str) -> dict[str, Any]:
    return parameter("target", "valueString", site)


__all__ = ["IDEMPOTENCY_SYSTEM", "KVNR_SYSTEM", "Federation", "patient_input", "target_input", "task_output"]


def federation_project(project: Path, stack: str, source: Path, on: Federation | None = None) -> Federation:
    """`project` made a project of the federation `source` declares (its `Pulumi.yaml` and
    `Pulumi.federation.yaml`) as stack `stack`, each node on free ports of this host (or those of `on`)."""
    (project / "Pulumi.yaml").write_text((source / "Pulumi.yaml").read_text())
    config = yaml.safe_load((source / "Pulumi.federation.yaml").read_text())
    config["config"] = read_named_files(config["config"], source)  # the catalogues it names, written in place
    gateway_ports = dict(on.gateway_ports) if on else {site: free_port() for site in SITES}
    peer_ports = dict(on.peer_ports) if on else {site: free_port() for site in SITES}
    for node in config["config"]["hubnode:nodes"]:
        node["ports"] = {"gateway": gateway_ports[node["site"]], "peer": peer_ports[node["site"]]}
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(config))
    return Federation(project, gateway_ports, peer_ports, stack)


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """`hubnode up` of a three-node federation like `Pulumi.federation.yaml`, on free ports; down at the end."""
    project = tmp_path_factory.mktemp("federation")
    federation = federation_project(project, STACK, PROJECT_DIR)
    up = hubnode(project, "up", "--stack", STACK)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        yield federation
    finally:
        down = hubnode(project, "down", "--stack", STACK, "--volumes", timeout=600)
        assert down.returncode == 0, down.stderr
