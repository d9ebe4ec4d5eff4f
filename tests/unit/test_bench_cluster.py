"""The cluster benchmark's own parts: the stacks it derives from Pulumi.cluster.yaml, and its table."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks import cluster
from infra.plan import plan_stack
from infra.stackfile import load_stack
from tests.conftest import PROJECT_DIR


def _project(tmp_path: Path) -> Path:
    for name in ("Pulumi.yaml", "Pulumi.cluster.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    shutil.copytree(PROJECT_DIR / "catalogue", tmp_path / "catalogue")
    return tmp_path


def test_the_dics_hapi_pods_are_set_in_the_stack_and_nothing_else_changes(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert cluster.hapi_pods(project) == 2
    before = plan_stack(load_stack(project, "cluster"))
    cluster.set_hapi_pods(project, 1)
    after = plan_stack(load_stack(project, "cluster"))
    assert cluster.hapi_pods(project) == 1
    changed = [
        (b.site, s.component)
        for b, a in zip(before, after, strict=True)
        for s, t in zip(b.services, a.services, strict=True)
        if s != t
    ]
    assert changed == [("dic", "fhir")]


def test_the_docker_twin_declares_the_same_nodes_on_docker(tmp_path: Path) -> None:
    project = _project(tmp_path)
    cluster.write_docker_twin(project)
    twin, original = load_stack(project, cluster.DOCKER_STACK), load_stack(project, "cluster")
    assert (twin.platform, original.platform) == ("docker", "kubernetes")
    assert [(n.site, n.components, n.database, dict(n.ports)) for n in twin.nodes] == [
        (n.site, n.components, n.database, dict(n.ports)) for n in original.nodes
    ]


def test_the_table_shows_the_ratios_of_one_run() -> None:
    results = {
        "cluster": {
            "seconds": {"cluster_up_warm": 9.0, "deploy": 130.0, "hubnode_up_docker": 100.0},
            "deploy_vs_hubnode_up": 1.3,
            "loads": [
                {"hapi_pods": 2, "resources": 3600, "resources_per_s": 40.0},
                {"hapi_pods": 1, "resources": 3600, "resources_per_s": 38.0},
            ],
            "two_pods_over_one": 40.0 / 38.0,
        }
    }
    rows = {name: value for name, value, _ in cluster.table_rows(results)}
    assert rows["cluster: deploy / hubnode up"] == "1.30"
    assert rows["cluster: load, HAPI in 1 pod(s)"] == "38.0"
    assert rows["cluster: load 2 pods / 1 pod"] == "1.05"
    assert cluster.table_rows({}) == []
