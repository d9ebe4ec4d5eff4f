"""`KubernetesHubNode` under Pulumi's mocks: every resource is a faithful 1:1 of its manifest."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes
import pytest

from infra import kubernetes_node
from infra.kube_manifests import SECRET_KEYS_ANNOTATION, SECRETS_DIGEST_ANNOTATION, Manifest, stack_manifests
from infra.kubernetes_node import KubernetesHubNode, resource_name, secrets_digest
from infra.plan import NodePlan, plan_stack
from infra.spec import SpecError, parse_stack
from tests.conftest import stack_config
from tests.unit.pulumi_mocks import RecordingMocks, is_secret, reveal, run_program

FEDERATION = stack_config("federation")
#: The example federation on Kubernetes, on PostgreSQL, the dic's HAPI in two pods: every kind the layer declares.
PLANS = plan_stack(
    parse_stack(
        "federation",
        {
            **FEDERATION,
            "hubnode:database": "postgres",
            "hubnode:platform": "kubernetes",
            "hubnode:nodes": [
                {**node, "replicas": {"fhir": 2}} if node["site"] == "dic" else node
                for node in FEDERATION["hubnode:nodes"]
            ],
        },
    )
)
MANIFESTS = stack_manifests(PLANS)
TYPES = {
    "Namespace": "kubernetes:core/v1:Namespace",
    "NetworkPolicy": "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "Secret": "kubernetes:core/v1:Secret",
    "ConfigMap": "kubernetes:core/v1:ConfigMap",
    "PersistentVolumeClaim": "kubernetes:core/v1:PersistentVolumeClaim",
    "Service": "kubernetes:core/v1:Service",
    "PodDisruptionBudget": "kubernetes:policy/v1:PodDisruptionBudget",
    "Deployment": "kubernetes:apps/v1:Deployment",
    "StatefulSet": "kubernetes:apps/v1:StatefulSet",
}


def contents(plan: NodePlan) -> dict[str, pulumi.Input[str]]:
    """A distinct content per secret file, so a Secret filled from the wrong file shows."""
    return {s.name: pulumi.Output.secret(f"content of {s.name}") for service in plan.services for s in service.secrets}


def expected_inputs(manifest: Manifest) -> dict[str, Any]:
    """The manifest as the resource's inputs: a Secret's keys filled with their files' contents, and a
    workload that mounts secret files carrying their digest on its pod template (nothing else added)."""
    if manifest["kind"] == "Secret":
        keys = manifest["metadata"]["annotations"][SECRET_KEYS_ANNOTATION].split(",")
        return {**manifest, "stringData": {key: f"content of {key}" for key in keys}}
    if manifest["kind"] in ("Deployment", "StatefulSet"):
        template = manifest["spec"]["template"]
        mounted = sorted(
            item["key"]
            for volume in template["spec"]["volumes"]
            for source in volume.get("projected", {}).get("sources", [])
            for item in source.get("secret", {}).get("items", [])
        )
        if mounted:
            expected = copy.deepcopy(manifest)
            digest = secrets_digest([f"content of {key}" for key in mounted])
            expected["spec"]["template"]["metadata"]["annotations"][SECRETS_DIGEST_ANNOTATION] = digest
            return expected
    return manifest


@pytest.mark.parametrize("site", [plan.site for plan in PLANS])
@pulumi.runtime.test
def test_each_node_declares_exactly_its_manifests(mocks: RecordingMocks, site: str) -> pulumi.Output[Any]:
    [plan] = [p for p in PLANS if p.site == site]
    node = KubernetesHubNode(plan.site, plan, MANIFESTS[site], contents(plan))

    def check(_: object) -> None:
        declared = {name: r for name, r in mocks.resources.items() if r.typ.startswith("kubernetes:")}
        assert sorted(declared) == sorted(resource_name(m) for m in MANIFESTS[site])
        for manifest in MANIFESTS[site]:
            recorded = declared[resource_name(manifest)]
            assert recorded.typ == TYPES[manifest["kind"]]
            assert reveal(dict(recorded.inputs)) == expected_inputs(manifest), resource_name(manifest)
            if manifest["kind"] == "Secret":
                assert is_secret(recorded.inputs["stringData"]), "contents stay Pulumi secrets"

    return pulumi.Output.all(*(r.urn for r in node.resources.values())).apply(check)


def test_the_secrets_digest_changes_with_any_secret_file_and_shows_none_of_them() -> None:
    before = secrets_digest(["db password", "token"])
    assert secrets_digest(["db password", "rotated token"]) != before
    assert secrets_digest(["db password", "token"]) == before
    assert "db password" not in before
    assert len(before) == 64


@pulumi.runtime.test
def test_every_resource_of_the_node_goes_to_the_provider_the_component_is_given(
    mocks: RecordingMocks,
) -> pulumi.Output[Any]:
    plan = PLANS[2]
    cluster = kubernetes.Provider("site-cluster", kubeconfig="apiVersion: v1\nkind: Config\n")
    node = KubernetesHubNode(
        plan.site, plan, MANIFESTS[plan.site], contents(plan), pulumi.ResourceOptions(provider=cluster)
    )

    def check(_: object) -> None:
        providers = {mocks.resources[name].provider for name in node.resources}
        assert len(providers) == 1
        [provider] = providers
        assert provider is not None
        assert "$pulumi:providers:kubernetes::site-cluster::" in provider

    return pulumi.Output.all(*(r.urn for r in node.resources.values())).apply(check)


def test_workloads_wait_for_their_files_and_what_they_depend_on_and_the_data_outlives_the_stack(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    options: dict[str, pulumi.ResourceOptions] = {}

    def recording(real: Callable[..., pulumi.CustomResource]) -> Callable[..., pulumi.CustomResource]:
        def construct(name: str, opts: pulumi.ResourceOptions, **fields: Any) -> pulumi.CustomResource:
            options[name] = opts
            return real(name, opts=opts, **fields)

        return construct

    constructors = {kind: recording(real) for kind, real in kubernetes_node.CONSTRUCTORS.items()}
    monkeypatch.setattr(kubernetes_node, "CONSTRUCTORS", constructors)
    plan = PLANS[0]
    nodes: list[KubernetesHubNode] = []

    @pulumi.runtime.test
    def declare() -> None:
        nodes.append(KubernetesHubNode(plan.site, plan, MANIFESTS[plan.site], contents(plan)))

    declare()
    [node] = nodes
    prefix = plan.network
    namespace = node.resources[f"Namespace/{prefix}"]
    assert options[f"Namespace/{prefix}"].depends_on == []
    assert options[f"Namespace/{prefix}"].retain_on_delete is True, "deleting it would delete the claims"
    assert options[f"{prefix}/Secret/fhir-secrets"].depends_on == [namespace]
    assert options[f"{prefix}/PersistentVolumeClaim/hubnode-federation-dic-fhir-data"].retain_on_delete is True
    assert not options[f"{prefix}/Service/fhir"].retain_on_delete
    fhir_after = options[f"{prefix}/Deployment/fhir"].depends_on
    assert isinstance(fhir_after, list)
    assert node.resources[f"{prefix}/StatefulSet/db"] in fhir_after
    assert node.resources[f"{prefix}/Secret/fhir-secrets"] in fhir_after
    assert node.resources[f"{prefix}/Deployment/connector"] not in fhir_after
    assert options[f"{prefix}/StatefulSet/db"].parent is node


def test_the_program_declares_a_kubernetes_stack_as_namespaces(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"hubnode:site": "ukl", "hubnode:database": "postgres", "hubnode:platform": "kubernetes"}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({**config, "hubnode:dbPassword": "from-secret"}))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["hubnode:dbPassword"]))
    pulumi.runtime.set_mocks(mocks, project="hubnode", stack="dev", preview=False)

    run_program()

    assert not [r for r in mocks.resources.values() if r.typ.startswith("docker:")]
    assert sorted(mocks.of_type(TYPES["Namespace"])) == ["Namespace/hubnode-dev-ukl"]
    assert sorted(mocks.of_type(TYPES["StatefulSet"])) == ["hubnode-dev-ukl/StatefulSet/db"]
    assert sorted(mocks.of_type(TYPES["Deployment"])) == ["hubnode-dev-ukl/Deployment/fhir"]
    secret = mocks.of_type(TYPES["Secret"])["hubnode-dev-ukl/Secret/fhir-secrets"]
    assert is_secret(secret["stringData"])
    assert reveal(secret["stringData"]) == {"db-password": "from-secret"}


def test_the_program_rejects_an_unknown_platform_naming_the_key(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"hubnode:site": "ukl", "hubnode:platform": "nomad"}))
    with pytest.raises(SpecError, match=r"hubnode:platform = 'nomad': choose one of docker, kubernetes"):
        run_program()
    assert mocks.resources == {}
