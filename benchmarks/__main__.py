"""`./dev bench`: node readiness and ingest, each compared side by side in one run.

Machines here are shared and noisy, so every figure that matters is a ratio of two things measured
in the same run, interleaved: `hubnode up` against the same image started bare with `docker run`;
PostgreSQL against embedded H2. Results go to `.hubnode/bench/<timestamp>.json` (and
`latest.json`), and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx

from benchmarks import bulk, cluster, federation, portal, resource_ids, restore, trustcentre
from benchmarks.federation import free_port, percentile
from infra.bootstrap import docker_client
from infra.imagebuild import build_images
from infra.local import LocalLauncher
from infra.plan import HAPI_PORT, NodePlan, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack

PROJECT_DIR = Path(__file__).resolve().parent.parent
MII_KDS_DIR = PROJECT_DIR.parent / "shared" / "testdata" / "mii-kds"
RESULTS_DIR = PROJECT_DIR / ".hubnode" / "bench"
FHIR_JSON = "application/fhir+json"
READY_BUDGET_S = 300.0
BENCHMARKS = (
    *("ready", "ingest", "pseudonyms", "consent", "linkage"),
    *federation.BENCHMARKS,
    *bulk.BENCHMARKS,
    "resource-ids",
    *restore.BENCHMARKS,
    *portal.BENCHMARKS,
    *cluster.BENCHMARKS,
)


def main() -> int:
    """Run the benchmarks named on the command line (default: all)."""
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds for readiness: ready, portal-ready (default 3)"
    )
    known = (*BENCHMARKS, *cluster.EXPLICIT_ONLY)
    parser.add_argument(
        "benchmarks", nargs="*", metavar="NAME", help=f"any of {', '.join(known)} (default: all but toolchain-cold)"
    )
    args = parser.parse_args()
    unknown = set(args.benchmarks) - set(known)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
    chosen = args.benchmarks or list(BENCHMARKS)
    client = docker_client()
    build_images(client, [_plan("bench-images", "postgres")], Progress())
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "host": _host()}
    standalone: dict[str, Callable[[], Any]] = {
        "ready": lambda: bench_ready(client, args.rounds),
        "ingest": lambda: bench_ingest(client),
        "pseudonyms": lambda: trustcentre.bench_pseudonyms(client),
        "consent": trustcentre.bench_consent,
        "linkage": lambda: _bench_linkage(client),
        "resource-ids": lambda: resource_ids.bench_resource_ids(client, _plan("bench-resource-ids", "postgres")),
        "restore": restore.bench_restore,
        "portal-ready": lambda: portal.bench_ready(client, args.rounds),
        "toolchain-cold": cluster.bench_toolchain_cold,
        "cluster": cluster.bench_cluster,
    }
    for name, bench in standalone.items():
        if name in chosen:
            results[name] = bench()
    later = {**bulk.FEDERATED, **portal.FEDERATED}
    federated = [name for name in chosen if name in (*federation.BENCHMARKS, *later)]
    if federated:  # one bench federation, brought up once for all of them; the portal's last (it adds audit)
        results.update(federation.run(federated, later))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{results['started'].replace(':', '-')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS_DIR / "latest.json").write_text(path.read_text())
    _print_table(results)
    print(f"\nresults: {path}")
    return 0


def _bench_linkage(client: docker.DockerClient) -> dict[str, Any]:
    with trustcentre.postgres(client) as url:
        return trustcentre.bench_linkage(url)


def _host() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "docker": docker_client().version()["Version"]}


def _plan(stack: str, database: str, port: int | None = None) -> NodePlan:
    config = {"hubnode:site": "bench", "hubnode:database": database, "hubnode:ports": {"fhir": port or free_port()}}
    [plan] = plan_stack(parse_stack(stack, config))
    return plan


def bench_ready(client: docker.DockerClient, rounds: int) -> dict[str, Any]:
    """`hubnode up` of a fresh dev-like node until /fhir/metadata answers, vs bare `docker run`."""
    hubnode_up: list[float] = []
    bare: list[float] = []
    for round_number in range(1, rounds + 1):
        print(f"ready round {round_number}/{rounds}: hubnode up", file=sys.stderr)
        hubnode_up.append(_time_hubnode_up())
        print(f"ready round {round_number}/{rounds}: docker run", file=sys.stderr)
        bare.append(_time_bare_run(client))
    median_up, median_bare = statistics.median(hubnode_up), statistics.median(bare)
    return {
        "hubnode_up_s": hubnode_up,
        "docker_run_s": bare,
        "median_hubnode_up_s": median_up,
        "median_docker_run_s": median_bare,
        "ratio": median_up / median_bare,
        "target_ratio_max": 1.2,
    }


def _time_hubnode_up() -> float:
    """The whole `hubnode up` command, as a user runs it, on a new volume (first start)."""
    with tempfile.TemporaryDirectory(prefix="hubnode-bench-") as folder:
        project = Path(folder)
        (project / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
        port = free_port()
        (project / "Pulumi.bench.yaml").write_text(
            f"config:\n  hubnode:site: bench\n  hubnode:ports:\n    fhir: {port}\n"
        )
        command = [sys.executable, "-m", "infra.cli", "--project-dir", folder]
        started = time.perf_counter()
        subprocess.run([*command, "up", "--stack", "bench"], check=True, capture_output=True, cwd=PROJECT_DIR)
        elapsed = time.perf_counter() - started
        _wait_for(f"http://127.0.0.1:{port}/fhir/metadata")  # `up` returns only once it answers
        subprocess.run([*command, "down", "--stack", "bench", "--volumes"], check=True, capture_output=True)
        return elapsed


def _time_bare_run(client: docker.DockerClient) -> float:
    """The same image, started with nothing but `docker run`, polled until metadata answers."""
    image = _plan("bench-bare", "embedded").services[0].image.reference
    port = free_port()
    started = time.perf_counter()
    container = client.containers.run(image, detach=True, ports={f"{HAPI_PORT}/tcp": ("127.0.0.1", port)})
    try:
        _wait_for(f"http://127.0.0.1:{port}/fhir/metadata")
        return time.perf_counter() - started
    finally:
        container.remove(force=True, v=True)


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + READY_BUDGET_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=30.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {READY_BUDGET_S} s")


def bench_ingest(client: docker.DockerClient) -> dict[str, Any]:
    """All MII KDS bundles as transactions: resources/s and p95 per bundle, H2 vs PostgreSQL."""
    bundles = sorted(MII_KDS_DIR.glob("*.json"))
    if not bundles:
        raise SystemExit(f"no bundles in {MII_KDS_DIR}: the MII test data sits beside the clone in shared/")
    results: dict[str, Any] = {"bundles": len(bundles)}
    for database in ("embedded", "postgres"):
        plan = _plan(f"bench-ingest-{database}", database)
        launcher = LocalLauncher(client, Progress(), Path(tempfile.mkdtemp(prefix="hubnode-bench-")))
        print(f"ingest: {database}", file=sys.stderr)
        try:
            launcher.up([plan])
            results[database] = _ingest(plan.endpoints["fhir"], bundles)
        finally:
            launcher.down(plan.stack, remove_volumes=True)
    results["postgres_over_embedded_throughput"] = (
        results["postgres"]["resources_per_s"] / results["embedded"]["resources_per_s"]
    )
    return results


def _ingest(base: str, bundles: list[Path]) -> dict[str, Any]:
    seconds: list[float] = []
    resources = 0
    with httpx.Client(timeout=300.0, headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}) as http:
        for path in bundles:
            body = path.read_bytes()
            started = time.perf_counter()
            response = http.post(base, content=body)
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
            resources += len(response.json().get("entry", []))
    return {
        "resources": resources,
        "total_s": sum(seconds),
        "resources_per_s": resources / sum(seconds),
        "p50_bundle_s": statistics.median(seconds),
        "p95_bundle_s": percentile(seconds, 95),
        "per_bundle_s": dict(zip((p.name for p in bundles), seconds, strict=True)),
    }


def _print_table(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    fmt: Callable[[float], str] = lambda v: f"{v:.2f}"  # noqa: E731
    if "ready" in results:
        ready = results["ready"]
        rows += [
            ("ready: hubnode up (median)", fmt(ready["median_hubnode_up_s"]) + " s", ""),
            ("ready: docker run (median)", fmt(ready["median_docker_run_s"]) + " s", ""),
            ("ready: ratio up / run", fmt(ready["ratio"]), f"target <= {ready['target_ratio_max']}"),
        ]
    if "ingest" in results:
        ingest = results["ingest"]
        for database in ("embedded", "postgres"):
            figures = ingest[database]
            rows += [
                (
                    f"ingest {database}: resources/s",
                    fmt(figures["resources_per_s"]),
                    f"{figures['resources']} resources",
                ),
                (
                    f"ingest {database}: p95 per bundle",
                    fmt(figures["p95_bundle_s"]) + " s",
                    f"{ingest['bundles']} bundles",
                ),
            ]
        rows.append(("ingest: postgres / embedded throughput", fmt(ingest["postgres_over_embedded_throughput"]), ""))
    rows += trustcentre.table_rows(results)
    rows += federation.table_rows(results)
    rows += bulk.table_rows(results)
    rows += resource_ids.table_rows(results)
    rows += restore.table_rows(results)
    rows += portal.table_rows(results)
    rows += cluster.table_rows(results)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'benchmark':<{width}}  {'value':>10}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


if __name__ == "__main__":
    sys.exit(main())
