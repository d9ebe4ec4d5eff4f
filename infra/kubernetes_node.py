"""Kubernetes manifests -> pulumi_kubernetes resources: one `KubernetesHubNode` component per node, 1:1.

Every resource is one manifest of `infra.kube_manifests`, passed on as it is; this layer adds only what
the pure layer must not hold (secret contents, as Pulumi secrets; a keyed digest of them on the pod
templates that mount them, so a changed secret rolls its workload) and the order of creation.
`tests/unit/test_kubernetes_node.py` holds every resource against its manifest.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from infra.kube_manifests import SECRET_KEYS_ANNOTATION, SECRETS_DIGEST_ANNOTATION, Manifest
from infra.plan import NodePlan

#: The typed constructor of each kind the pure layer writes.
CONSTRUCTORS: Mapping[str, Callable[..., pulumi.CustomResource]] = {
    "Namespace": kubernetes.core.v1.Namespace,
    "NetworkPolicy": kubernetes.networking.v1.NetworkPolicy,
    "Secret": kubernetes.core.v1.Secret,
    "ConfigMap": kubernetes.core.v1.ConfigMap,
    "PersistentVolume": kubernetes.core.v1.PersistentVolume,
    "PersistentVolumeClaim": kubernetes.core.v1.PersistentVolumeClaim,
    "Service": kubernetes.core.v1.Service,
    "PodDisruptionBudget": kubernetes.policy.v1.PodDisruptionBudget,
    "Deployment": kubernetes.apps.v1.Deployment,
    "StatefulSet": kubernetes.apps.v1.StatefulSet,
}
WORKLOADS = ("Deployment", "StatefulSet")
#: What `pulumi destroy` leaves, as the Docker path leaves its volumes: the claims, their namespace
#: (deleting a namespace deletes the claims in it) and the volumes they are bound to.
KEPT = ("Namespace", "PersistentVolume", "PersistentVolumeClaim")


def resource_name(manifest: Manifest) -> str:
    """The Pulumi name of a manifest's resource: unique in the stack, as kinds repeat names across nodes."""
    metadata = manifest["metadata"]
    return "/".join(filter(None, (metadata.get("namespace"), manifest["kind"], metadata["name"])))


class KubernetesHubNode(pulumi.ComponentResource):
    """A hub node in one namespace of a Kubernetes cluster: the node's manifests as resources."""

    endpoints: pulumi.Output[Mapping[str, str]]
    resources: Mapping[str, pulumi.CustomResource]

    def __init__(
        self,
        name: str,
        plan: NodePlan,
        manifests: Sequence[Manifest],
        secrets: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """Declare `manifests` (`kube_manifests.node_manifests` of `plan`) in their order.

        `secrets` maps each plan `SecretFile.name` to its content. A cluster other than the ambient one
        comes as `opts.provider` (a `kubernetes.Provider` with its own kubeconfig); every resource of the
        node inherits it. A workload waits for its files, claims and the workloads of the services it
        depends on, as the Docker path's containers do.
        """
        super().__init__("hubnode:index:KubernetesHubNode", name, None, opts)
        resources: dict[str, pulumi.CustomResource] = {}
        setup: list[pulumi.Resource] = []  # the namespace first, then everything but the workloads
        workloads: dict[str, pulumi.Resource] = {}  # by component: the pure layer names each after it
        needs = {service.component: service.depends_on for service in plan.services}
        for manifest in manifests:
            kind, object_name = manifest["kind"], manifest["metadata"]["name"]
            workload = kind in WORKLOADS
            after = [*setup, *(workloads[needed] for needed in needs[object_name])] if workload else setup[:1]
            child = pulumi.ResourceOptions(parent=self, depends_on=after, retain_on_delete=kind in KEPT)
            resource = CONSTRUCTORS[kind](resource_name(manifest), opts=child, **_fields(manifest, secrets))
            resources[resource_name(manifest)] = resource
            if workload:
                workloads[object_name] = resource
            else:
                setup.append(resource)
        self.resources = resources
        self.endpoints = pulumi.Output.from_input(dict(plan.endpoints))
        self.register_outputs({"endpoints": self.endpoints})


def _fields(manifest: Manifest, secrets: Mapping[str, pulumi.Input[str]]) -> dict[str, Any]:
    """The constructor's arguments: the manifest's own fields, and a Secret's keys filled as Pulumi secrets."""
    fields = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
    if manifest["kind"] == "Secret":
        keys = manifest["metadata"]["annotations"][SECRET_KEYS_ANNOTATION].split(",")
        fields["string_data"] = {key: pulumi.Output.secret(secrets[key]) for key in keys}
    elif manifest["kind"] in WORKLOADS and (keys := _secret_keys(manifest, secrets)):
        template = fields["spec"]["template"]
        digest = pulumi.Output.all(*(secrets[key] for key in keys)).apply(secrets_digest)
        annotations = {**template["metadata"]["annotations"], SECRETS_DIGEST_ANNOTATION: digest}
        fields["spec"] = {
            **fields["spec"],
            "template": {**template, "metadata": {**template["metadata"], "annotations": annotations}},
        }
    return fields


def _secret_keys(workload: Manifest, secrets: Mapping[str, pulumi.Input[str]]) -> list[str]:
    """The keys of the Secret the workload's pods mount (its projected `secret` sources)."""
    volumes = workload["spec"]["template"]["spec"].get("volumes", [])
    items = [
        i
        for v in volumes
        for source in v.get("projected", {}).get("sources", [])
        for i in source.get("secret", {}).get("items", [])
    ]
    return sorted({item["key"] for item in items if item["key"] in secrets})


def secrets_digest(contents: Sequence[str]) -> str:
    """A digest that changes when any of the service's secret files does, and tells nothing of them.

    Keyed with the secrets themselves (HMAC), not a bare hash: a site-given password among them cannot be
    guessed from the annotation without also guessing the generated ones beside it.
    """
    key = "\x00".join(contents).encode()
    return hmac.new(key, b"org.hubnode/secret-files", hashlib.sha256).hexdigest()
