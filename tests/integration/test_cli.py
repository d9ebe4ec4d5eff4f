"""The `hubnode` command as a developer runs it: up, status --json, smoke, down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.conftest import PROJECT_DIR
from tests.integration.conftest import free_port, stack_resources

pytestmark = pytest.mark.usefixtures("built")


def hubnode(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_DIR, timeout=600)


def test_up_status_smoke_down(tmp_path: Path, client: docker.DockerClient) -> None:
    port = free_port()
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.itest-cli.yaml").write_text(
        f"config:\n  hubnode:site: cli\n  hubnode:ports:\n    fhir: {port}\n"
    )
    try:
        up = hubnode(tmp_path, "up", "--stack", "itest-cli")
        assert up.returncode == 0, up.stderr
        assert "==> start nodes and wait until healthy" in up.stderr
        assert f"cli              fhir         http://127.0.0.1:{port}/fhir" in up.stdout
        endpoints = json.loads((tmp_path / ".hubnode" / "itest-cli" / "endpoints.json").read_text())
        assert endpoints == {
            "stack": "itest-cli",
            "nodes": [{"site": "cli", "role": "dic", "endpoints": {"fhir": f"http://127.0.0.1:{port}/fhir"}}],
        }

        status = hubnode(tmp_path, "status", "--stack", "itest-cli", "--json")
        assert status.returncode == 0, status.stderr
        [node] = json.loads(status.stdout)["nodes"]
        assert (node["site"], node["health"], node["endpoints"]) == (
            "cli",
            "up",
            {"fhir": f"http://127.0.0.1:{port}/fhir"},
        )

        smoke = hubnode(tmp_path, "smoke", "--stack", "itest-cli")
        assert smoke.returncode == 0, smoke.stderr
        assert "read back Patient/hubnode-smoke-patient (family name 'Smoke')" in smoke.stdout
    finally:
        down = hubnode(tmp_path, "down", "--stack", "itest-cli", "--volumes")
    assert down.returncode == 0, down.stderr
    assert "removed 1 container(s), 1 network(s), 1 volume(s) of stack itest-cli" in down.stdout
    assert stack_resources(client, "itest-cli") == {"containers": [], "networks": []}

    after = hubnode(tmp_path, "status", "--stack", "itest-cli", "--json")
    assert after.returncode == 1
    assert json.loads(after.stdout)["nodes"][0]["health"] == "down"
