"""The trust centre container: reachable on its port, authenticated, persistent, on SQLite or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import docker
import httpx
import pytest

from infra.local import LocalLauncher
from tests.integration.conftest import assert_confined_as_planned, node_plan

pytestmark = pytest.mark.usefixtures("built")
DOMAINS = [{"name": "research", "prefix": "R", "length": 10}]


def pseudonymize(base: str, token: str, *originals: str) -> dict[str, str]:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "target", "valueString": "research"},
            *({"name": "original", "valueString": o} for o in originals),
        ],
    }
    response = httpx.post(
        f"{base}/gpas/$pseudonymizeAllowCreate",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()["parameter"]
    pairs = [{part["name"]: part["valueIdentifier"]["value"] for part in p["part"]} for p in answer]
    return {pair["original"]: pair["pseudonym"] for pair in pairs}


@pytest.mark.parametrize("database", ["embedded", "postgres"])
def test_the_trust_centre_pseudonymizes_with_the_site_token_and_keeps_its_pseudonyms(
    database: str, launcher: LocalLauncher, client: docker.DockerClient, tmp_path: Path
) -> None:
    plan = node_plan(f"itest-tc-{database}", database=database, components=["trustcentre"], domains=DOMAINS)
    launcher.up([plan])
    base = plan.endpoints["trustcentre"]
    token = (tmp_path / "state" / "secrets" / plan.site / "tc-admin-token").read_text()

    first = pseudonymize(base, token, "mrn-1", "mrn-2")
    assert all(p.startswith("R") for p in first.values())
    assert httpx.post(f"{base}/gpas/$pseudonymize", json={}).status_code == 401
    [node] = launcher.status([plan])
    assert node["health"] == "up"
    for service in plan.services:
        container = client.containers.get(service.container_name)
        assert all(row[1] != "root" for row in container.top(ps_args="-o pid,user")["Processes"])
        assert_confined_as_planned(client, service)

    launcher.down(plan.stack)
    launcher.up([plan])
    assert pseudonymize(base, token, "mrn-2", "mrn-1") == first
