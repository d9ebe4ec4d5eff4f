"""`hubnode status` on Kubernetes: workloads as the cluster reports them, rolled up as on Docker."""

from __future__ import annotations

import json
from typing import Any

from infra.kube_status import service_status, status
from infra.plan import NodePlan, plan_stack
from infra.spec import parse_stack
from tests.conftest import stack_config

CLUSTER = stack_config("cluster")


def _workload(kind: str, name: str, wanted: int, ready: int) -> dict[str, Any]:
    status = {"readyReplicas": ready} if ready else {}  # the API leaves out a count of none
    return {"kind": kind, "metadata": {"name": name}, "spec": {"replicas": wanted}, "status": status}


def _plans() -> tuple[NodePlan, ...]:
    return plan_stack(parse_stack("cluster", CLUSTER))


def test_a_workload_is_healthy_only_with_every_replica_it_wants_ready() -> None:
    fhir = next(s for s in _plans()[0].services if s.component == "fhir")
    assert service_status(fhir, _workload("Deployment", "fhir", 2, 2)) == {
        "workload": "Deployment/fhir",
        "state": "running",
        "health": "healthy",
        "replicas": "2/2",
    }
    assert service_status(fhir, _workload("Deployment", "fhir", 2, 1))["health"] == "unhealthy"
    assert service_status(fhir, _workload("Deployment", "fhir", 1, 0))["state"] == "starting"
    assert service_status(fhir, _workload("Deployment", "fhir", 0, 0)) | {"workload": ""} == {
        "workload": "",
        "state": "stopped",
        "health": "unhealthy",
        "replicas": "0/0",
    }
    assert service_status(fhir, None)["state"] == "absent"


def test_a_node_with_a_stopped_gateway_is_degraded_and_one_not_deployed_is_down() -> None:
    plans = _plans()
    asked: list[tuple[str, ...]] = []

    def kubectl(*args: str) -> str:
        asked.append(args)
        namespace = args[args.index("--namespace") + 1]
        if namespace.endswith("-practice"):
            return json.dumps({"items": []})
        dic = next(p for p in plans if p.network == namespace)
        items = [
            _workload(
                "StatefulSet" if s.is_database else "Deployment", s.component, 1, 0 if s.component == "gateway" else 1
            )
            for s in dic.services
        ]
        return json.dumps({"items": items})

    dic, practice = status(plans, kubectl, verify=True)
    assert (dic["site"], dic["health"]) == ("dic", "degraded")
    assert dic["services"]["gateway"]["state"] == "starting"
    assert dic["services"]["db"]["workload"] == "StatefulSet/db"
    assert (practice["site"], practice["health"]) == ("practice", "down")
    assert {s["state"] for s in practice["services"].values()} == {"absent"}
    assert [a[a.index("--namespace") + 1] for a in asked] == ["hubnode-cluster-dic", "hubnode-cluster-practice"]
