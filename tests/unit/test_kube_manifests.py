"""The plan as Kubernetes manifests: every service confined, probed and reachable exactly as its plan says."""

from __future__ import annotations

import ipaddress
import posixpath
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.cli import main
from infra.errors import HubnodeError
from infra.kube_manifests import (
    FILES_DIGEST_ANNOTATION,
    IMAGE_ID_ANNOTATION,
    SECRET_KEYS_ANNOTATION,
    Manifest,
    cluster_addresses,
    config_key,
    render_yaml,
    stack_manifests,
)
from infra.plan import NodePlan, ServicePlan, plan_stack
from infra.spec import KubernetesSettings, parse_stack
from tests.conftest import PROJECT_DIR, stack_config

FEDERATION = stack_config("federation")


def federation(**config: object) -> tuple[NodePlan, ...]:
    """The example federation (dic, practice, research), every node on PostgreSQL unless `config` says."""
    return plan_stack(
        parse_stack(
            "federation",
            {**FEDERATION, "hubnode:database": "postgres", **{f"hubnode:{k}": v for k, v in config.items()}},
        )
    )


PLANS = federation()
MANIFESTS = stack_manifests(PLANS)


def of_kind(plan: NodePlan, kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in MANIFESTS[plan.site] if m["kind"] == kind}


def workload(plan: NodePlan, service: ServicePlan) -> Manifest:
    [found] = [
        m
        for m in MANIFESTS[plan.site]
        if m["kind"] in ("Deployment", "StatefulSet") and m["metadata"]["name"] == service.component
    ]
    return found


def container(plan: NodePlan, service: ServicePlan) -> dict[str, Any]:
    [only] = workload(plan, service)["spec"]["template"]["spec"]["containers"]
    return only


def every_service() -> list[tuple[NodePlan, ServicePlan]]:
    return [(plan, service) for plan in PLANS for service in plan.services]


def test_the_federation_plans_every_component_so_these_tests_see_each_kind_of_service() -> None:
    components = {service.component for _, service in every_service()}
    assert components == {"db", "fhir", "tcdb", "trustcentre", "cndb", "connector", "gateway", "kcdb", "idp", "portal"}


def test_each_node_is_one_namespace_holding_all_of_its_manifests() -> None:
    for plan in PLANS:
        [namespace, *rest] = MANIFESTS[plan.site]
        assert namespace == {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": plan.network, "labels": dict(plan.labels)},
        }
        assert {m["metadata"]["namespace"] for m in rest} == {plan.network}


def test_every_container_runs_its_plan_image_never_pulled_non_root_and_confined() -> None:
    for plan, service in every_service():
        spec = container(plan, service)
        assert spec["image"] == service.image.reference
        assert spec["imagePullPolicy"] == "Never"
        assert spec["env"] == [{"name": k, "value": v} for k, v in service.env.items()]
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": service.uid,
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": []},
            "readOnlyRootFilesystem": service.hardening.read_only_root,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        memory = f"{service.hardening.memory_mib}Mi"
        assert spec["resources"] == {"requests": {"memory": memory}, "limits": {"memory": memory}}
        pod = workload(plan, service)["spec"]["template"]["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": service.uid,
            "fsGroup": service.uid,
            "fsGroupChangePolicy": "OnRootMismatch",
        }
        assert pod["enableServiceLinks"] is False, "the plan's environment, no Service variables beside it"
        assert pod["automountServiceAccountToken"] is False


def test_the_databases_run_as_their_own_uid_in_stateful_sets_and_the_rest_in_deployments() -> None:
    [dic, *_] = PLANS
    kinds = {service.component: workload(dic, service)["kind"] for service in dic.services}
    assert kinds == {
        **dict.fromkeys(("db", "tcdb", "cndb", "kcdb"), "StatefulSet"),
        **dict.fromkeys(("fhir", "trustcentre", "connector", "gateway", "idp", "portal"), "Deployment"),
    }
    assert container(dic, dic.services[0])["securityContext"]["runAsUser"] == 10002
    assert workload(dic, dic.services[0])["spec"]["serviceName"] == "db"


def test_every_container_is_probed_by_the_command_dockers_health_check_runs() -> None:
    for plan, service in every_service():
        spec, health = container(plan, service), service.health
        assert health.test[0] == "CMD"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert spec[probe]["exec"] == {"command": list(health.test[1:])}
            assert spec[probe]["periodSeconds"] == health.interval_s
            assert spec[probe]["timeoutSeconds"] == health.timeout_s
        assert spec["readinessProbe"]["failureThreshold"] == health.retries
        startup = spec["startupProbe"]["periodSeconds"] * spec["startupProbe"]["failureThreshold"]
        assert health.budget_s <= startup < health.budget_s + health.interval_s
    [dic, *_] = PLANS
    assert container(dic, dic.services[1])["livenessProbe"]["exec"]["command"] == [
        *("curl", "-fsS", "-o", "/dev/null"),
        "http://127.0.0.1:8080/health",
    ]


def flows_of_policies(plan: NodePlan) -> set[tuple[str | None, str, int]]:
    """(caller component or None for anyone, callee component, port) for every allow of the namespace."""
    flows = set()
    for policy in of_kind(plan, "NetworkPolicy").values():
        spec = policy["spec"]
        if not spec["podSelector"]:
            continue
        callee = spec["podSelector"]["matchLabels"]["org.hubnode.component"]
        for rule in spec["ingress"]:
            callers = [peer["podSelector"]["matchLabels"]["org.hubnode.component"] for peer in rule.get("from", [])]
            for port in rule["ports"]:
                flows |= {(caller, callee, port["port"]) for caller in callers or [None]}
    return flows


def test_each_namespace_denies_all_ingress_but_the_flows_its_plan_declares() -> None:
    for plan in PLANS:
        deny = of_kind(plan, "NetworkPolicy")["default-deny-ingress"]["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
        declared = {(s.component, call.service, call.port) for s in plan.services for call in s.calls}
        published = {(None, s.component, p.container_port) for s in plan.services for p in s.ports}
        assert flows_of_policies(plan) == declared | published
    dic = flows_of_policies(PLANS[0])
    assert {("connector", "fhir", 8080), ("fhir", "db", 5432), ("gateway", "portal", 8083)} <= dic
    assert {(None, "gateway", 8443), (None, "gateway", 9443)} <= dic
    assert ("portal", "db", 5432) not in dic
    assert not [flow for flow in dic if flow[2] == 8090], "HAPI's metrics port stays closed"


def test_service_addresses_are_fixed_unique_across_the_federation_and_leave_the_clusters_own_slice() -> None:
    ips = [service["spec"]["clusterIP"] for plan in PLANS for service in of_kind(plan, "Service").values()]
    assert len(ips) == sum(len(plan.services) for plan in PLANS) == len(set(ips))
    for ip in ips:
        address = ipaddress.ip_address(ip)
        assert address in ipaddress.ip_network("10.96.0.0/24")
        assert address not in ipaddress.ip_network("10.96.0.0/28"), "10.96.0.1 is the cluster's API"
    assert of_kind(PLANS[0], "Service")["db"]["spec"]["clusterIP"] == "10.96.0.17"
    assert of_kind(PLANS[1], "Service")["fhir"]["spec"]["clusterIP"] == "10.96.0.34"


def test_each_service_is_reached_on_every_port_it_listens_on() -> None:
    for plan, service in every_service():
        spec = of_kind(plan, "Service")[service.component]["spec"]
        assert spec["selector"] == {"org.hubnode.component": service.component}
        assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(port, port) for port in service.listens]
    assert [p["port"] for p in of_kind(PLANS[0], "Service")["gateway"]["spec"]["ports"]] == [8443, 9443, 8088]


def aliases(plan: NodePlan, service: ServicePlan) -> dict[str, str]:
    pod = workload(plan, service)["spec"]["template"]["spec"]
    return {name: entry["ip"] for entry in pod["hostAliases"] for name in entry["hostnames"]}


def test_pods_resolve_their_nodes_services_and_their_peers_gateways_without_cluster_dns() -> None:
    dic, practice, _ = PLANS
    for plan, service in every_service():
        names = aliases(plan, service)
        for other in plan.services:
            assert names[other.component] == of_kind(plan, "Service")[other.component]["spec"]["clusterIP"]
    connector = next(s for s in practice.services if s.component == "connector")
    dic_gateway = of_kind(dic, "Service")["gateway"]["spec"]["clusterIP"]
    assert aliases(practice, connector)["dic.hubnode.test"] == dic_gateway
    fhir = next(s for s in practice.services if s.component == "fhir")
    assert "dic.hubnode.test" not in aliases(practice, fhir), "only services on the peers network see peers"


def test_each_address_is_one_host_alias_entry_as_kubernetes_refuses_two() -> None:
    """A service named on its node's network and on the peers network (the gateway) is one entry, all names."""
    for plan, service in every_service():
        entries = workload(plan, service)["spec"]["template"]["spec"]["hostAliases"]
        ips = [entry["ip"] for entry in entries]
        assert len(ips) == len(set(ips)), (plan.site, service.component)
        for entry in entries:
            assert len(entry["hostnames"]) == len(set(entry["hostnames"]))


def test_a_service_range_too_small_for_the_stack_or_no_range_at_all_is_refused() -> None:
    with pytest.raises(HubnodeError, match=r"3 nodes do not fit in the Service range 10.96.0.0/27 \(1 slices"):
        cluster_addresses(PLANS, "10.96.0.0/27")
    with pytest.raises(HubnodeError, match=r"Service range 'ten\.96'"):
        cluster_addresses(PLANS, "ten.96")
    assert len(cluster_addresses(PLANS, "10.96.0.0/26").ips) == sum(len(p.services) for p in PLANS)


def test_the_gateway_publishes_its_doors_as_host_ports_on_loopback_as_the_docker_path_does() -> None:
    for plan in PLANS:
        gateway = next(s for s in plan.services if s.component == "gateway")
        ports = {p["containerPort"]: p for p in container(plan, gateway)["ports"]}
        for binding in gateway.ports:
            assert ports[binding.container_port]["hostPort"] == binding.host_port
            assert ports[binding.container_port]["hostIP"] == "127.0.0.1"
        assert "hostPort" not in ports[8088]
    dic_gateway = container(PLANS[0], next(s for s in PLANS[0].services if s.component == "gateway"))
    assert [p.get("hostPort") for p in dic_gateway["ports"]] == [
        FEDERATION["hubnode:nodes"][0]["ports"]["gateway"],
        FEDERATION["hubnode:nodes"][0]["ports"]["peer"],
        None,
    ]


def mounts(plan: NodePlan, service: ServicePlan) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Mount path -> (mount, volume) of the service's pod."""
    pod = workload(plan, service)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [spec] = pod["containers"]
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in spec["volumeMounts"]}


def test_every_volume_is_a_claim_of_the_chosen_storage_class_mounted_where_the_plan_says() -> None:
    manifests = stack_manifests(PLANS, KubernetesSettings(storage_class="fast-ssd", volume_size="50Gi"))
    for plan in PLANS:
        claims = {m["metadata"]["name"]: m for m in manifests[plan.site] if m["kind"] == "PersistentVolumeClaim"}
        assert sorted(claims) == sorted(plan.volumes)
        for claim in claims.values():
            assert claim["spec"]["storageClassName"] == "fast-ssd"
            assert claim["spec"]["resources"] == {"requests": {"storage": "50Gi"}}
        for service in plan.services:
            for volume in service.volumes:
                _, mounted = mounts(plan, service)[volume.path]
                assert mounted["persistentVolumeClaim"] == {"claimName": volume.volume}
    assert {m["spec"]["storageClassName"] for m in of_kind(PLANS[0], "PersistentVolumeClaim").values()} == {
        "local-path"
    }


def test_no_volume_is_declared_unless_the_stack_names_a_host_folder() -> None:
    assert not any(m["kind"] == "PersistentVolume" for node in MANIFESTS.values() for m in node)


def test_with_a_host_folder_each_claim_gets_a_retained_volume_there_bound_to_it_alone() -> None:
    settings = KubernetesSettings(storage_class="hubnode-local", volume_size="5Gi", host_path="/srv/hubnode")
    manifests = stack_manifests(PLANS, settings)
    for plan in PLANS:
        volumes = {m["metadata"]["name"]: m for m in manifests[plan.site] if m["kind"] == "PersistentVolume"}
        claims = [m for m in manifests[plan.site] if m["kind"] == "PersistentVolumeClaim"]
        assert sorted(volumes) == sorted(plan.volumes)
        for claim in claims:
            spec = volumes[claim["metadata"]["name"]]["spec"]
            assert spec["claimRef"] == {"namespace": plan.network, "name": claim["metadata"]["name"]}
            assert spec["hostPath"] == {"path": f"/srv/hubnode/{claim['metadata']['name']}", "type": "Directory"}
            assert spec["storageClassName"] == claim["spec"]["storageClassName"] == "hubnode-local"
            assert spec["capacity"] == {"storage": "5Gi"}
            assert spec["persistentVolumeReclaimPolicy"] == "Retain"
        kinds = [m["kind"] for m in manifests[plan.site]]
        assert kinds.index("PersistentVolume") < kinds.index("PersistentVolumeClaim")


def test_secret_files_are_mounted_read_only_0400_from_the_services_secret_which_holds_no_content() -> None:
    for plan, service in every_service():
        if not service.secrets:
            continue
        secret = of_kind(plan, "Secret")[f"{service.component}-secrets"]
        assert secret["metadata"]["annotations"][SECRET_KEYS_ANNOTATION].split(",") == [s.name for s in service.secrets]
        assert "data" not in secret
        assert "stringData" not in secret
        for file in service.secrets:
            mount, volume = mounts(plan, service)[posixpath.dirname(file.path)]
            assert mount["readOnly"] is True
            assert volume["projected"]["defaultMode"] == 0o400
            [source] = [s["secret"] for s in volume["projected"]["sources"] if "secret" in s]
            assert source["name"] == f"{service.component}-secrets"
            assert {"key": file.name, "path": posixpath.basename(file.path)} in source["items"]


def test_config_files_come_from_the_services_config_map_with_the_plans_content() -> None:
    for plan, service in every_service():
        for file in service.files:
            config = of_kind(plan, "ConfigMap")[f"{service.component}-files"]
            if file.rendered_from is None:
                assert config["data"][config_key(file.path)] == file.content
            mount, volume = mounts(plan, service)[posixpath.dirname(file.path)]
            assert mount["readOnly"] is True
            [source] = [s["configMap"] for s in volume["projected"]["sources"] if "configMap" in s]
            assert {"key": config_key(file.path), "path": posixpath.basename(file.path)} in source["items"]


def test_a_rebuilt_image_changes_the_pod_templates_of_the_services_it_runs_alone() -> None:
    def templates(image_ids: dict[str, str]) -> dict[tuple[str, str], Any]:
        manifests = stack_manifests(PLANS, None, image_ids)
        return {
            (site, m["metadata"]["name"]): m["spec"]["template"]
            for site, node in manifests.items()
            for m in node
            if m["kind"] in ("Deployment", "StatefulSet")
        }

    connector = next(s for s in PLANS[0].services if s.component == "connector").image.reference
    before, after = templates({connector: "sha256:aaa"}), templates({connector: "sha256:bbb"})
    rolled = {key for key in before if before[key] != after[key]}
    assert rolled == {(plan.site, "connector") for plan in PLANS if "connector" in {s.component for s in plan.services}}
    assert before["dic", "connector"]["metadata"]["annotations"][IMAGE_ID_ANNOTATION] == "sha256:aaa"
    unknown = templates({})  # a site's own registry: a new image comes under a new reference
    assert all(IMAGE_ID_ANNOTATION not in t["metadata"]["annotations"] for t in unknown.values())


def test_a_changed_file_changes_the_pod_template_of_its_service_alone_so_that_only_it_rolls() -> None:
    def templates(plans: tuple[NodePlan, ...]) -> dict[tuple[str, str], tuple[str, object]]:
        """(site, component) -> (the template's files digest, its ConfigMap's data)."""
        manifests = stack_manifests(plans)
        files = {
            (site, m["metadata"]["name"]): m["data"]
            for site, n in manifests.items()
            for m in n
            if m["kind"] == "ConfigMap"
        }
        return {
            (site, m["metadata"]["name"]): (
                m["spec"]["template"]["metadata"]["annotations"][FILES_DIGEST_ANNOTATION],
                files.get((site, f"{m['metadata']['name']}-files")),
            )
            for site, node in manifests.items()
            for m in node
            if m["kind"] in ("Deployment", "StatefulSet")
        }

    before = templates(PLANS)
    assert templates(federation()) == before, "the same plan, the same templates: nothing rolls"
    after = templates(federation(projects=[{"name": "new-study", "domain": "research-demo"}]))
    rolled = {key for key in before if before[key][0] != after[key][0]}
    assert rolled == {key for key in before if before[key][1] != after[key][1]}
    assert ("dic", "connector") in rolled
    assert ("dic", "fhir") not in rolled


def test_replicated_hapi_and_connector_are_rolled_a_pod_at_a_time_and_evicted_at_most_one_at_a_time() -> None:
    replicated = {"fhir": 2, "connector": 2}
    nodes = [{**n, "replicas": replicated} if n["site"] == "dic" else n for n in FEDERATION["hubnode:nodes"]]
    plans = federation(platform="kubernetes", nodes=nodes)
    dic = stack_manifests(plans)["dic"]
    workloads = {m["metadata"]["name"]: m["spec"] for m in dic if m["kind"] in ("Deployment", "StatefulSet")}
    for name in replicated:
        assert workloads[name]["replicas"] == 2
        assert workloads[name]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        }
    assert {
        name: spec.get("strategy", {}).get("type") for name, spec in workloads.items() if name not in replicated
    } == {
        "db": None,  # StatefulSets roll pod by pod anyway
        "tcdb": None,
        "cndb": None,
        "trustcentre": "Recreate",
        "gateway": "Recreate",
        "idp": "Recreate",
        "kcdb": None,
        "portal": "Recreate",
    }
    budgets = {m["metadata"]["name"]: m["spec"] for m in dic if m["kind"] == "PodDisruptionBudget"}
    assert budgets == {
        name: {"maxUnavailable": 1, "selector": {"matchLabels": workloads[name]["selector"]["matchLabels"]}}
        for name in replicated
    }
    assert not any(m["kind"] == "PodDisruptionBudget" for m in MANIFESTS["dic"]), "one replica: nothing to budget"


def test_the_gateway_reaches_its_upstreams_by_their_cluster_addresses_as_nginx_asks_no_hosts_file() -> None:
    dic = PLANS[0]
    services = of_kind(dic, "Service")
    [nginx] = of_kind(dic, "ConfigMap")["gateway-files"]["data"].values()
    for name, port in (("connector", 8082), ("trustcentre", 8081), ("idp", 8180), ("portal", 8083)):
        assert f"set $hubnode_upstream http://{services[name]['spec']['clusterIP']}:{port};" in nginx
        assert f"http://{name}:{port}" not in nginx
    [gateway] = [s for s in dic.services if s.component == "gateway"]
    [file] = gateway.files
    named = nginx
    for name in ("connector", "trustcentre", "idp", "portal"):
        named = named.replace(f"http://{services[name]['spec']['clusterIP']}:", f"http://{name}:")
    assert named == file.content, "only the upstreams' addresses differ from the Docker path"


def test_tmpfs_folders_are_in_memory_volumes_of_their_size() -> None:
    for plan, service in every_service():
        for tmpfs in service.hardening.tmpfs:
            _, volume = mounts(plan, service)[tmpfs.path]
            assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{tmpfs.size_mib}Mi"}


def test_the_yaml_of_a_node_reads_back_as_its_manifests_with_files_as_literal_blocks() -> None:
    text = render_yaml("dic", MANIFESTS["dic"])
    assert list(yaml.safe_load_all(text)) == MANIFESTS["dic"]
    assert text.count("\n---\n") == len(MANIFESTS["dic"]), "each manifest opens with ---"
    assert "nginx.conf: |" in text


def test_hubnode_render_writes_one_file_per_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--project-dir", str(PROJECT_DIR), "render", "--stack", "federation", "--output", str(tmp_path)]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dic.yaml", "practice.yaml", "research.yaml"]
    written = list(yaml.safe_load_all((tmp_path / "practice.yaml").read_text()))
    assert written == stack_manifests(plan_stack(parse_stack("federation", FEDERATION)))["practice"]
    assert f"practice: {len(written)} manifests in {tmp_path / 'practice.yaml'}" in capsys.readouterr().out


def rendered(project: Path, kubernetes: str) -> list[Manifest]:
    """What `hubnode render` writes for a one-node stack `k8s` whose `hubnode:kubernetes` is `kubernetes`."""
    (project / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    (project / "Pulumi.k8s.yaml").write_text(f"config:\n  hubnode:site: ukl\n  hubnode:kubernetes: {kubernetes}\n")
    assert main(["--project-dir", str(project), "render", "--stack", "k8s"]) == 0
    return list(yaml.safe_load_all((project / ".hubnode" / "k8s" / "kubernetes" / "ukl.yaml").read_text()))


def test_hubnode_render_places_volumes_and_services_as_the_stack_says(tmp_path: Path) -> None:
    written = rendered(tmp_path, "{storageClass: fast-ssd, volumeSize: 50Gi, serviceRange: 10.100.0.0/24}")
    [claim] = [m for m in written if m["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"] == {"requests": {"storage": "50Gi"}}
    [service] = [m for m in written if m["kind"] == "Service"]
    assert service["spec"]["clusterIP"] == "10.100.0.17"


def test_hubnode_render_puts_a_relative_host_folder_under_the_project(tmp_path: Path) -> None:
    written = rendered(tmp_path, "{storageClass: hubnode-local, hostPath: .hubnode/volumes}")
    [volume] = [m for m in written if m["kind"] == "PersistentVolume"]
    assert volume["spec"]["hostPath"]["path"] == str(tmp_path.resolve() / ".hubnode/volumes/hubnode-k8s-ukl-fhir-data")


def test_a_stack_whose_namespace_kubernetes_would_refuse_is_refused_before_anything_is_written() -> None:
    plans = plan_stack(parse_stack("My_Stack", {"hubnode:site": "ukl"}))
    with pytest.raises(HubnodeError, match=r"the namespace of node ukl would be 'hubnode-My_Stack-ukl'"):
        stack_manifests(plans)


def test_hubnode_render_of_one_site_writes_that_node_only_and_names_the_others_for_a_wrong_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--project-dir", str(PROJECT_DIR), "render", "--stack", "federation", "--output", str(tmp_path)]
    assert main([*argv, "--site", "research"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["research.yaml"]
    assert main([*argv, "--site", "nowhere"]) == 1
    assert "its nodes: dic, practice, research" in capsys.readouterr().err


def test_every_name_and_key_is_one_kubernetes_takes() -> None:
    subdomain = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    label = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    key = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
    for plan in PLANS:
        for manifest in MANIFESTS[plan.site]:
            name = manifest["metadata"]["name"]
            assert subdomain.match(name), name
            if manifest["kind"] in ("Namespace", "Service", "Deployment", "StatefulSet"):
                assert label.match(name), name
            annotations = manifest["metadata"].get("annotations", {})
            keys = [*manifest.get("data", {}), *annotations.get(SECRET_KEYS_ANNOTATION, "").split(",")]
            assert all(key.match(k) for k in keys if k), keys
