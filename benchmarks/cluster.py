"""The cluster path (issue 17): `hubnode deploy` on Kubernetes against `hubnode up` on Docker, and HAPI in 1 or 2 pods.

`Pulumi.cluster.yaml` (dic on PostgreSQL with the trust centre, practice) in a scratch project:
- the toolchain check and a warm `hubnode cluster up` (its images imported);
- `hubnode deploy` from nothing until every node is ready and answering, against `hubnode up` of the same
  nodes on Docker (the stack file with `hubnode:platform: docker`), run one after the other on the same
  ports: the ratio is the figure, since the machine is noisy;
- `hubnode load` of generated patients into the dic with its HAPI in 1 pod, then in 2 (the stack changed
  and deployed again), then in 1 again, each after a warm-up load: resources/s each time, and 2 pods
  against the mean of the 1-pod runs. On 2 cores little is to be gained; the figure says how much.

The cold toolchain build (about 16 minutes with empty Go caches) is `toolchain-cold`, run only when named.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from benchmarks.federation import PROJECT_DIR, run_hubnode, timed_hubnode
from fixtures.volume import write_volume

BENCHMARKS = ("cluster",)
#: Named only: it empties Go's caches into a scratch folder and builds everything again.
EXPLICIT_ONLY = ("toolchain-cold",)
STACK = "cluster"
DOCKER_STACK = "cluster-on-docker"
PATIENTS = 60
#: Loaded before each measured load: HAPI pods a deploy started run cold (JIT) for their first minutes.
WARM_UP_PATIENTS = 20
_timed = partial(timed_hubnode, "cluster")


def bench_cluster() -> dict[str, Any]:
    """Cluster up, deploy vs `hubnode up`, load with 1, 2 and 1 HAPI pods; seconds and ratios."""
    with tempfile.TemporaryDirectory(prefix="hubnode-bench-cluster-") as folder:
        project = Path(folder)
        for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
            shutil.copy(PROJECT_DIR / name, project / name)
        shutil.copytree(PROJECT_DIR / "catalogue", project / "catalogue")
        seconds: dict[str, float] = {"toolchain_warm": _timed(project, "cluster", "toolchain")}
        run_hubnode(project, "images", "--stack", STACK)
        loads: list[dict[str, Any]] = []
        try:
            seconds["cluster_up_warm"] = _timed(project, "cluster", "up", "--stack", STACK)
            set_hapi_pods(project, 1)  # first as the Docker twin runs it: one HAPI at the dic
            seconds["deploy"] = _timed(project, "deploy", "--stack", STACK)
            for round_number, pods in enumerate((1, 2, 1), start=1):
                if hapi_pods(project) != pods:
                    set_hapi_pods(project, pods)
                    seconds[f"redeploy_to_{pods}_pods_round_{round_number}"] = _timed(
                        project, "deploy", "--stack", STACK
                    )
                _load(project, pods, seed=17_100 + round_number, patients=WARM_UP_PATIENTS)  # a new pod's JIT
                loads.append(_load(project, pods, seed=17_000 + round_number))
            seconds["destroy"] = _timed(project, "deploy", "--stack", STACK, "--destroy")
        finally:
            run_hubnode(project, "cluster", "down", "--purge")
        write_docker_twin(project)
        try:
            seconds["hubnode_up_docker"] = _timed(project, "up", "--stack", DOCKER_STACK)
        finally:
            run_hubnode(project, "down", "--stack", DOCKER_STACK, "--volumes")
    [two] = [load["resources_per_s"] for load in loads if load["hapi_pods"] == 2]
    one = [load["resources_per_s"] for load in loads if load["hapi_pods"] == 1]
    return {
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "deploy_vs_hubnode_up": seconds["deploy"] / seconds["hubnode_up_docker"],
        "loads": loads,
        "two_pods_over_one": two / (sum(one) / len(one)),
    }


def bench_toolchain_cold() -> dict[str, Any]:
    """`hubnode cluster toolchain` with Go's build cache and the toolchain cache empty (module downloads kept)."""
    with tempfile.TemporaryDirectory(prefix="hubnode-bench-toolchain-") as folder:
        cold = {"GOCACHE": str(Path(folder) / "gocache"), "XDG_CACHE_HOME": str(Path(folder) / "xdg")}
        took = _timed(PROJECT_DIR, "cluster", "toolchain", env={**os.environ, **cold})
        return {"seconds": round(took, 1)}


def _stack(project: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((project / f"Pulumi.{STACK}.yaml").read_text())
    return document


def _dic(document: Mapping[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = next(n for n in document["config"]["hubnode:nodes"] if n["site"] == "dic")
    return node


def hapi_pods(project: Path) -> int:
    """How many pods the scratch project's stack gives the dic's HAPI."""
    return int(_dic(_stack(project)).get("replicas", {}).get("fhir", 1))


def set_hapi_pods(project: Path, pods: int) -> None:
    """Give the dic's HAPI `pods` pods in the scratch project's stack file (the next deploy rolls it)."""
    document = _stack(project)
    _dic(document).setdefault("replicas", {})["fhir"] = pods
    (project / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def write_docker_twin(project: Path) -> None:
    """The same nodes on Docker: one pod of each service (Docker runs one container per service)."""
    document = _stack(project)
    document["config"]["hubnode:platform"] = "docker"
    del document["config"]["hubnode:kubernetes"]
    _dic(document).pop("replicas", None)
    (project / f"Pulumi.{DOCKER_STACK}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def _load(project: Path, pods: int, seed: int, patients: int = PATIENTS) -> dict[str, Any]:
    """`hubnode load` of new generated patients into the dic; resources/s over the whole command."""
    volume = project / f"volume-{seed}.ndjson.gz"
    generated = write_volume(volume, patients, seed, site="dic")
    took = _timed(project, "load", "--stack", STACK, "--site", "dic", str(volume))
    return {
        "hapi_pods": pods,
        "resources": generated.resources,
        "seconds": round(took, 1),
        "resources_per_s": generated.resources / took,
    }


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table, for whichever of the cluster benchmarks ran."""
    rows: list[tuple[str, str, str]] = []
    if "toolchain-cold" in results:
        rows.append(("cluster: cold toolchain build", f"{results['toolchain-cold']['seconds']} s", "empty Go caches"))
    if "cluster" not in results:
        return rows
    cluster = results["cluster"]
    took = cluster["seconds"]
    rows += [
        ("cluster: up (warm, images imported)", f"{took['cluster_up_warm']} s", ""),
        ("cluster: deploy to ready", f"{took['deploy']} s", f"hubnode up on Docker: {took['hubnode_up_docker']} s"),
        ("cluster: deploy / hubnode up", f"{cluster['deploy_vs_hubnode_up']:.2f}", "same nodes, same machine"),
    ]
    rows += [
        (
            f"cluster: load, HAPI in {load['hapi_pods']} pod(s)",
            f"{load['resources_per_s']:.1f}",
            f"resources/s, {load['resources']} resources",
        )
        for load in cluster["loads"]
    ]
    rows.append(("cluster: load 2 pods / 1 pod", f"{cluster['two_pods_over_one']:.2f}", "2 cores"))
    return rows
