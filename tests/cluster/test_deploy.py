"""`hubnode deploy`: Pulumi.cluster.yaml by a real Pulumi engine onto the real cluster, again unchanged, destroyed.

The federation (dic with trust centre on PostgreSQL, practice) must answer at its gateways' host ports;
a second run with nothing changed must change nothing; `--destroy` must remove every workload and keep
the namespaces and the volumes with their data, as the Docker path keeps its volumes.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import cluster
from tests.conftest import PROJECT_DIR

STACK = "cluster"
GATEWAYS = {"dic": 8543, "practice": 8544}


def _hubnode(project: Path, *args: str) -> tuple[float, str]:
    """Run the real CLI; its seconds and what it printed."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"hubnode {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return time.monotonic() - started, done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch project with the cluster stack, its images in the cluster, the cluster up."""
    folder = tmp_path_factory.mktemp("deploy-project")
    for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
        shutil.copy(PROJECT_DIR / name, folder / name)
    shutil.copytree(PROJECT_DIR / "catalogue", folder / "catalogue")  # the files the stack's keys name
    assert not cluster.leftovers(cluster.layout_for(folder)), "a cluster runs already"
    try:
        _hubnode(folder, "images", "--stack", STACK)
        seconds, _ = _hubnode(folder, "cluster", "up", "--stack", STACK)
        print(f"cluster up with the stack's images: {seconds:.1f} s", file=sys.stderr)
        yield folder
    finally:
        _hubnode(folder, "cluster", "down", "--purge")


def _metadata(port: int) -> dict[str, object]:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # the federation CA's certificate, names checked by the e2e tier
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/fhir/metadata", context=insecure, timeout=30) as answer:
        return dict(json.load(answer))


def _kubectl(project: Path, *args: str) -> str:
    kubeconfig = cluster.layout_for(project).kubeconfig
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=True
    ).stdout


def test_deploy_brings_the_federation_up_changes_nothing_twice_and_destroy_keeps_the_data(project: Path) -> None:
    first, _ = _hubnode(project, "deploy", "--stack", STACK)
    for site, port in GATEWAYS.items():
        statement = _metadata(port)
        assert statement["resourceType"] == "CapabilityStatement"
        assert statement["implementation"] == {"description": f"hubnode node {site}"}
    endpoints = json.loads((project / ".hubnode" / STACK / "endpoints.json").read_text())
    assert [node["site"] for node in endpoints["nodes"]] == list(GATEWAYS)

    again, printed = _hubnode(project, "deploy", "--stack", STACK)
    assert " unchanged" in printed
    assert not any(word in printed for word in (" created", " updated", " replaced", " deleted"))
    print(f"deploy: {first:.1f} s; again, unchanged: {again:.1f} s", file=sys.stderr)

    _hubnode(project, "deploy", "--stack", STACK, "--destroy")
    for site in GATEWAYS:
        namespace = f"hubnode-{STACK}-{site}"
        assert _kubectl(project, "get", "deployments,statefulsets,pods", "-n", namespace, "-o", "name").strip() == ""
        assert _kubectl(project, "get", "namespace", namespace, "-o", "name").strip() == f"namespace/{namespace}"
    volumes = json.loads(_kubectl(project, "get", "persistentvolumes", "-o", "json"))["items"]
    assert {v["status"]["phase"] for v in volumes} == {"Bound"}
    database = project / ".hubnode" / "volumes" / f"hubnode-{STACK}-dic-db-data"
    assert any(database.iterdir()), "PostgreSQL's data stays on the node"
