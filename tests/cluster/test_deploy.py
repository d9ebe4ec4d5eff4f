"""`hubnode deploy`: Pulumi.cluster.yaml by a real Pulumi engine onto the real cluster, certified, changed, destroyed.

The federation (dic with trust centre on PostgreSQL, practice) must answer at its gateways' host ports,
report itself up in `hubnode status`, and pass the conformance suite (`hubnode check`) as the Docker
federation does; the dic's two connector pods must make one record of one person's records sent to both
at once, and its two HAPI pods must roll under a load losing nothing; a second run with nothing changed
must change nothing; a changed catalogue must roll only the workload that reads it, and take effect;
`--destroy` must remove every workload and keep the namespaces and the volumes with their data, as the
Docker path keeps its volumes; `hubnode cluster down --purge` must then leave nothing on the host.
"""

from __future__ import annotations

import gzip
import json
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import docker
import httpx
import pytest

from fixtures.volume import write_volume
from infra import cluster
from infra.cluster_files import layout_for
from infra.kube_manifests import COMPONENT_LABEL, IMAGE_ID_ANNOTATION
from servicekit.kvnr import make_kvnr
from tests.conftest import PROJECT_DIR

STACK = "cluster"
GATEWAYS = {"dic": 8543, "practice": 8544}
DIC = f"hubnode-{STACK}-dic"
#: Patients of each volume loaded while HAPI is rolled (loads follow one another until the rollout ends).
LOAD_PATIENTS = 20
ROLLOUT_BUDGET_S = 900.0
#: Seconds a replaced HAPI pod may take to shut down after the rollout (Kubernetes' default grace period is 30).
TERMINATION_BUDGET_S = 120.0
#: Records of one person sent at the same moment through the dic's gateway, spread over its connector pods.
CONCURRENT_RECORDS = 8
#: Rounds (a new person each) until one has reached both connector pods: the Service picks a pod at random.
CONCURRENT_ROUNDS = 5
KVNR = "http://fhir.de/sid/gkv/kvid-10"
SOURCE = "https://hubnode.org/fhir/sid/source/dic"
INGESTS = 'hubnode_http_requests_total{method="POST",route="/fhir",status_class="2xx"}'


def _hubnode(project: Path, *args: str) -> tuple[float, str]:
    """Run the real CLI; its seconds and what it printed."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"hubnode {' '.join(args)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
    return time.monotonic() - started, done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch project with the cluster stack, its images in the cluster, the cluster up."""
    folder = tmp_path_factory.mktemp("deploy-project")
    for name in ("Pulumi.yaml", f"Pulumi.{STACK}.yaml"):
        shutil.copy(PROJECT_DIR / name, folder / name)
    shutil.copytree(PROJECT_DIR / "catalogue", folder / "catalogue")  # the files the stack's keys name
    assert not cluster.leftovers(layout_for(folder)), "a cluster runs already"
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
    """The toolchain's kubectl as the cluster's admin (none is assumed on the host)."""
    return cluster.existing(project).kubectl(*args, timeout=900).stdout


def _dic(project: Path, token: str) -> httpx.Client:
    """The dic's gateway as a caller holding `token` (a secret file `deploy` kept), trusting the federation CA."""
    trusted = ssl.create_default_context(cafile=str(project / ".hubnode" / STACK / "pki" / "ca.crt"))
    trusted.check_hostname = False  # the node's certificate names its federation host, reached here as 127.0.0.1
    secret = (project / ".hubnode" / STACK / "secrets" / "dic" / token).read_text()
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/fhir+json"}
    return httpx.Client(base_url=f"https://127.0.0.1:{GATEWAYS['dic']}", headers=headers, verify=trusted, timeout=60)


def _pseudonym(project: Path, domain: str) -> int:
    """The dic's trust centre asked for a pseudonym in `domain` (gPAS IG shape), as its site admin: the status."""
    original = f"cluster-tier-{time.time_ns()}"
    body = {"resourceType": "Parameters", "parameter": [{"name": "target", "valueString": domain}]}
    body["parameter"].append({"name": "original", "valueString": original})
    with _dic(project, "tc-admin-token") as door:
        return door.post("/ttp-fhir/fhir/gpas/$pseudonymizeAllowCreate", json=body).status_code


def _get(project: Path, path: str) -> dict[str, object]:
    """A read through the dic's gateway (its connector), as the node's reader."""
    with _dic(project, "cn-reader-token") as door:
        answer = door.get(f"/fhir/{path}")
    answer.raise_for_status()
    return dict(answer.json())


def _counts(project: Path, types: set[str]) -> Counter[str]:
    """How many resources of each type the dic's HAPI holds."""
    return Counter({kind: int(str(_get(project, f"{kind}?_summary=count")["total"])) for kind in sorted(types)})


def _pods(project: Path, component: str) -> list[str]:
    listed = _kubectl(project, "get", "pods", "-n", DIC, f"-l={COMPONENT_LABEL}={component}", "-o", "name")
    return sorted(name.removeprefix("pod/") for name in listed.split())


def _ingests_served(project: Path, pod: str) -> float:
    """How many ingests `pod` (a connector) answered 2xx, from its own metrics through the API server's proxy."""
    exposition = _kubectl(project, "get", "--raw", f"/api/v1/namespaces/{DIC}/pods/{pod}:8082/proxy/metrics")
    lines = [line for line in exposition.splitlines() if line.startswith(INGESTS)]
    return float(lines[0].split()[-1]) if lines else 0.0


def _records_of_one_person(round_number: int) -> tuple[str, list[dict[str, object]]]:
    """A new person's KVNR, and `CONCURRENT_RECORDS` source records of them (one Patient each)."""
    kvnr = make_kvnr("K", f"{26120600 + round_number}")
    patient = {"identifier": [{"system": KVNR, "value": kvnr}], "birthDate": "1958-03-21", "gender": "female"}
    bundles: list[dict[str, object]] = [
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": {"resourceType": "Patient", "id": f"pods-{round_number}-{number}", **patient}},
            ],
        }
        for number in range(CONCURRENT_RECORDS)
    ]
    return kvnr, bundles


def _concurrent_ingests_of_one_person_through_both_connector_pods_make_one_record(project: Path) -> None:
    """Records of one person at once through both connector pods: one Patient, every source identifier kept."""
    pods = _pods(project, "connector")
    assert len(pods) == 2, pods
    with _dic(project, "cn-admin-token") as door:
        for round_number in range(1, CONCURRENT_ROUNDS + 1):
            before = {pod: _ingests_served(project, pod) for pod in pods}
            kvnr, bundles = _records_of_one_person(round_number)
            with ThreadPoolExecutor(CONCURRENT_RECORDS) as pool:
                answers = list(pool.map(lambda bundle: door.post("/fhir", json=bundle), bundles))
            assert [a.status_code for a in answers] == [200] * CONCURRENT_RECORDS, [a.text[:300] for a in answers]
            served = {pod: _ingests_served(project, pod) - before[pod] for pod in pods}
            assert sum(served.values()) == CONCURRENT_RECORDS, served
            found = cast("list[dict[str, Any]]", _get(project, f"Patient?identifier={KVNR}|{kvnr}").get("entry", []))
            [patient] = [entry["resource"] for entry in found]
            sources = {i["value"] for i in patient["identifier"] if i["system"] == SOURCE}
            assert sources == {f"Patient/pods-{round_number}-{n}" for n in range(CONCURRENT_RECORDS)}
            if all(served.values()):
                print(f"one person's {CONCURRENT_RECORDS} records at once, by pod: {served}", file=sys.stderr)
                return
    pytest.fail(f"in {CONCURRENT_ROUNDS} rounds the Service never sent one person's records to both pods")


def _volume(path: Path, patients: int, seed: int) -> Counter[str]:
    """A generated volume of `patients` written to `path`: its resources per type."""
    write_volume(path, patients, seed)
    return Counter(json.loads(line)["resourceType"] for line in gzip.decompress(path.read_bytes()).splitlines())


def _rolled_out(project: Path) -> bool:
    said = _kubectl(project, "rollout", "status", "deployment/fhir", "-n", DIC, "--watch=false")
    return "successfully rolled out" in said


def _rolling_update_of_hapi_under_a_load_loses_and_duplicates_nothing(project: Path) -> None:
    """`hubnode load` of generated volumes into the dic, one after another, for as long as HAPI is rolled."""
    kinds = set(_volume(project / "kinds.ndjson.gz", 100, seed=2600))  # every type the generator writes
    before = _counts(project, kinds)
    replaced = _pods(project, "fhir")
    started = time.monotonic()
    _kubectl(project, "rollout", "restart", "deployment/fhir", "-n", DIC)
    sent: Counter[str] = Counter()
    loads = 0
    while loads == 0 or not _rolled_out(project):
        assert time.monotonic() - started < ROLLOUT_BUDGET_S, "HAPI's rollout did not end"
        loads += 1
        volume = project / f"volume-{loads}.ndjson.gz"
        sent += _volume(volume, LOAD_PATIENTS, seed=2626 + loads)
        _hubnode(project, "load", "--stack", STACK, "--site", "dic", str(volume))  # exit 0: no line refused
    rolled = time.monotonic() - started
    # The rollout counts as done once the new pods are ready; the old ones may still be shutting down.
    ending = time.monotonic() + TERMINATION_BUDGET_S
    while set(_pods(project, "fhir")) & set(replaced) and time.monotonic() < ending:
        time.sleep(2)
    assert not set(_pods(project, "fhir")) & set(replaced), "a replaced HAPI pod did not end"
    assert set(sent) <= kinds
    after = _counts(project, kinds)
    assert {kind: after[kind] - before[kind] for kind in kinds} == {kind: sent[kind] for kind in kinds}
    print(
        f"HAPI's 2 pods rolled in {rolled:.0f} s under {loads} loads, {sum(sent.values())} resources", file=sys.stderr
    )


def _evict(project: Path, pod: str) -> subprocess.CompletedProcess[str]:
    """Ask the API to evict `pod`, as `kubectl drain` does (it honours PodDisruptionBudgets)."""
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": DIC}}
    found = cluster.existing(project)
    command = [str(found.kube_bin / "kubectl"), f"--kubeconfig={found.layout.kubeconfig}", "create", "-f", "-"]
    raw = f"/api/v1/namespaces/{DIC}/pods/{pod}/eviction"
    return subprocess.run(
        [*command, "--raw", raw], input=json.dumps(eviction), capture_output=True, text=True, check=False
    )


def _a_drain_takes_one_hapi_pod_at_a_time(project: Path) -> None:
    first, second = _pods(project, "fhir")
    assert _evict(project, first).returncode == 0
    refused = _evict(project, second)
    assert refused.returncode != 0, "the budget lets one HAPI pod go at a time"
    assert "disruption budget" in refused.stderr, refused.stderr
    _kubectl(project, "rollout", "status", "deployment/fhir", "-n", DIC, "--timeout=600s")
    assert _evict(project, second).returncode == 0, "once the first is back, the second may go"
    _kubectl(project, "rollout", "status", "deployment/fhir", "-n", DIC, "--timeout=600s")


def _the_pod_template_names_the_image_docker_built(project: Path) -> None:
    """The connector's template carries the id of its image, so a rebuild under the same tag rolls it."""
    template = json.loads(_kubectl(project, "get", "deployment/connector", "-n", DIC, "-o", "json"))["spec"]["template"]
    image = template["spec"]["containers"][0]["image"]
    assert template["metadata"]["annotations"][IMAGE_ID_ANNOTATION] == docker.from_env().images.get(image).id


def _changed(printed: str) -> list[str]:
    """The resources the engine said it changed (`updated`, `created`, `replaced`, `deleted`)."""
    words = (" updated (", " created (", " replaced (", " deleted (", " created replacement (")
    return sorted({line.split()[2] for line in printed.splitlines() if any(w in line for w in words)})


def test_deploy_brings_the_federation_up_certifies_it_rolls_only_what_changed_and_destroy_keeps_the_data(
    project: Path,
) -> None:
    first, printed = _hubnode(project, "deploy", "--stack", STACK)
    for site, port in GATEWAYS.items():
        statement = _metadata(port)
        assert statement["resourceType"] == "CapabilityStatement"
        assert statement["implementation"] == {"description": f"hubnode node {site}"}
    endpoints = json.loads((project / ".hubnode" / STACK / "endpoints.json").read_text())
    assert [node["site"] for node in endpoints["nodes"]] == list(GATEWAYS)
    _, status = _hubnode(project, "status", "--stack", STACK, "--json")
    nodes = json.loads(status)["nodes"]
    assert [(n["site"], n["health"]) for n in nodes] == [("dic", "up"), ("practice", "up")]
    assert nodes[0]["services"]["db"] == {
        "workload": "StatefulSet/db",
        "state": "running",
        "health": "healthy",
        "replicas": "1/1",
    }

    _the_pod_template_names_the_image_docker_built(project)

    rendered = project / "rendered"
    _hubnode(project, "render", "--stack", STACK, "--output", str(rendered))
    for site in GATEWAYS:  # what site IT would `kubectl apply` is what the API server takes (its OpenAPI, admission)
        said = _kubectl(project, "apply", "--dry-run=server", "-f", str(rendered / f"{site}.yaml"))
        assert "deployment.apps/fhir " in said, said

    checked, _ = _hubnode(project, "check", "--stack", STACK)  # exit 0: no step failed or erred
    report = project / ".hubnode" / STACK / "conformance" / "report"
    results = json.loads((report / "results.json").read_text())
    outcomes = Counter(step["outcome"] for scenario in results["scenarios"] for step in scenario["steps"])
    assert outcomes["failed"] == outcomes["error"] == 0, outcomes
    passed = outcomes["passed"]
    assert passed >= 200, f"the suite passed only {passed} steps on the cluster: {outcomes}"
    print(f"deploy: {first:.1f} s; the suite on the cluster: {checked:.1f} s, {passed} steps passed", file=sys.stderr)

    again, printed = _hubnode(project, "deploy", "--stack", STACK)
    assert " unchanged" in printed
    assert _changed(printed) == []

    assert nodes[0]["services"]["fhir"]["replicas"] == nodes[0]["services"]["connector"]["replicas"] == "2/2"
    _concurrent_ingests_of_one_person_through_both_connector_pods_make_one_record(project)
    _rolling_update_of_hapi_under_a_load_loses_and_duplicates_nothing(project)
    _a_drain_takes_one_hapi_pod_at_a_time(project)

    assert _pseudonym(project, "cluster-tier-domain") == 400, "a domain the stack does not declare is refused"
    catalogue = project / "catalogue" / "pseudonym-domains.yaml"
    catalogue.write_text(catalogue.read_text() + "- {name: cluster-tier-domain, prefix: CT}\n")
    changed, printed = _hubnode(project, "deploy", "--stack", STACK)
    workloads = [name for name in _changed(printed) if "/Deployment/" in name or "/StatefulSet/" in name]
    assert workloads == ["hubnode-cluster-dic/Deployment/trustcentre"], _changed(printed)
    assert _pseudonym(project, "cluster-tier-domain") == 200, "the rolled trust centre knows the new domain"
    print(f"deploy again, unchanged: {again:.1f} s; with a new domain: {changed:.1f} s", file=sys.stderr)

    _hubnode(project, "deploy", "--stack", STACK, "--destroy")
    for site in GATEWAYS:
        namespace = f"hubnode-{STACK}-{site}"
        assert _kubectl(project, "get", "deployments,statefulsets,pods", "-n", namespace, "-o", "name").strip() == ""
        assert _kubectl(project, "get", "namespace", namespace, "-o", "name").strip() == f"namespace/{namespace}"
    volumes = json.loads(_kubectl(project, "get", "persistentvolumes", "-o", "json"))["items"]
    assert {v["status"]["phase"] for v in volumes} == {"Bound"}
    database = project / ".hubnode" / "volumes" / f"hubnode-{STACK}-dic-db-data"
    assert any(database.iterdir()), "PostgreSQL's data stays on the node"

    _hubnode(project, "cluster", "down", "--purge")
    assert cluster.leftovers(layout_for(project)) == [], "the cluster leaves nothing behind on the host"
