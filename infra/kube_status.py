"""`hubnode status` of a stack on Kubernetes: each node's workloads as the cluster reports them.

The report has the Docker path's shape (`infra.local.node_report`), so site IT's monitoring reads one
format: a service is `healthy` when all the replicas its workload wants are ready (their readiness
probes are the plan's health checks), and a node is `up` when every service is and its endpoints answer.
Instead of a container, each service names its workload (`Deployment/fhir`) and its replicas (`2/2`).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from infra.errors import HubnodeError
from infra.local import node_report
from infra.plan import NodePlan, ServicePlan
from infra.progress import Progress

#: Runs kubectl with these arguments; its standard output.
Kubectl = Callable[..., str]
#: How long `hubnode deploy` waits for every node to be up after the engine is done (HAPI starts in ~1-2 min).
READY_WITHIN_S = 600.0
POLL_S = 3.0


def status(plans: Iterable[NodePlan], kubectl: Kubectl, verify: ssl.SSLContext | bool) -> list[dict[str, Any]]:
    """Each node's endpoints, its workloads' state and readiness, and whether its endpoints answer."""
    report = []
    for plan in plans:
        found = workloads(kubectl, plan.network)
        services = {
            service.component: service_status(service, found.get(service.component)) for service in plan.services
        }
        report.append(node_report(plan, services, verify))
    return report


def workloads(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    """The namespace's Deployments and StatefulSets by name (a namespace not there has none)."""
    listed = json.loads(kubectl("get", "deployments,statefulsets", "--namespace", namespace, "--output=json"))
    return {item["metadata"]["name"]: item for item in listed.get("items", [])}


def service_status(service: ServicePlan, workload: Mapping[str, Any] | None) -> dict[str, str]:
    """`running` while a replica is ready, `stopped` when scaled to none, `starting` otherwise."""
    if workload is None:
        return {"workload": service.component, "state": "absent", "health": "absent", "replicas": "0/0"}
    wanted = int(workload.get("spec", {}).get("replicas", 1))
    ready = int(workload.get("status", {}).get("readyReplicas", 0))
    state = "running" if ready > 0 else "stopped" if wanted == 0 else "starting"
    return {
        "workload": f"{workload['kind']}/{service.component}",
        "state": state,
        "health": "healthy" if wanted > 0 and ready >= wanted else "unhealthy",
        "replicas": f"{ready}/{wanted}",
    }


def wait_until_up(
    plans: Sequence[NodePlan],
    kubectl: Kubectl,
    verify: ssl.SSLContext | bool,
    progress: Progress,
    within_s: float = READY_WITHIN_S,
) -> None:
    """Return once every node is up (each workload fully ready, each endpoint answering), or fail naming what is not.

    The engine's own wait is not enough: it can report a Deployment that is recreating its pods as done
    (seen with pulumi-kubernetes 4.24 and `Recreate`), and a node is only usable once its doors answer.
    """
    deadline = time.monotonic() + within_s
    said = ""
    while True:
        report = status(plans, kubectl, verify)
        waiting = [
            f"{node['site']}/{component} ({service['replicas']} ready)"
            for node in report
            for component, service in node["services"].items()
            if service["health"] != "healthy"
        ] or [f"{node['site']}'s endpoints" for node in report if node["health"] != "up"]
        if not waiting:
            return
        if (line := "waiting for " + ", ".join(waiting)) != said:
            progress.note(line)
            said = line
        if time.monotonic() >= deadline:
            raise HubnodeError(
                f"not ready within {within_s:.0f} s: {', '.join(waiting)}",
                fix="`hubnode status --stack <stack>` shows each workload; "
                "`kubectl describe pod` and `kubectl logs` in its namespace say why",
            )
        time.sleep(POLL_S)
