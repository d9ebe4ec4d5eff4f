"""NodePlan -> plain Kubernetes manifests (dicts), one namespace per node: a 1:1 translation, pure.

`infra.kubernetes_node` declares these through pulumi_kubernetes; `hubnode render` writes them as YAML
for site IT to review or `kubectl apply`. Secret contents never pass through here: a Secret lists the
keys it must hold (`SECRET_KEYS_ANNOTATION`) and the Pulumi layer fills them from Pulumi secrets.

The target cluster has no cluster DNS: every Service gets a fixed ClusterIP from the stack's Service range
(`ClusterAddresses`) and every pod resolves the names the Docker path gives its networks through
`hostAliases`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import yaml

from infra.errors import HubnodeError
from infra.gateway_config import Upstream
from infra.gateway_config import render as render_gateway_config
from infra.plan import DROPPED_CAPABILITIES, LABEL_PREFIX, ConfigFile, HealthCheck, NodePlan, ServicePlan
from infra.spec import DEFAULT_SERVICE_RANGE, KubernetesSettings

Manifest = dict[str, Any]

#: Each node gets this many addresses of the block; the first share stays the cluster's (10.96.0.1: its API).
ADDRESSES_PER_NODE = 16
SLICE_BITS = ADDRESSES_PER_NODE.bit_length() - 1
COMPONENT_LABEL = f"{LABEL_PREFIX}.component"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: Names the keys a Secret must hold; its content comes from Pulumi secrets (or site IT's `kubectl create secret`).
SECRET_KEYS_ANNOTATION = "org.hubnode/secret-keys"  # noqa: S105 -- an annotation's name
#: On a workload's pod template: a digest of the service's files (ConfigMap) and of its secret files (the Pulumi
#: layer's, keyed); when either changes, so does the template, and the workload rolls (as `kubectl rollout restart`).
FILES_DIGEST_ANNOTATION = "org.hubnode/files-sha256"
SECRETS_DIGEST_ANNOTATION = "org.hubnode/secrets-hmac-sha256"
#: The id of the image the cluster holds under the service's reference: a rebuilt image rolls its pods.
IMAGE_ID_ANNOTATION = "org.hubnode/image-id"
#: Owner-read only; the pod's fsGroup (the service's uid) adds group read, so the service can read them.
SECRET_FILE_MODE = 0o400


@dataclass(frozen=True)
class ClusterAddresses:
    """A fixed ClusterIP per Service of every node of a stack, and the host names pods resolve without DNS.

    Node `i` (in stack order) gets the `(i+1)`th slice of `ADDRESSES_PER_NODE` addresses of the block,
    its `j`th service the slice's `(j+1)`th address; so adding a node at the end moves nobody.
    """

    plans: tuple[NodePlan, ...]
    ips: Mapping[tuple[str, str], str]

    def ip(self, plan: NodePlan, service: ServicePlan) -> str:
        """The ClusterIP of `service` of `plan`."""
        return self.ips[plan.site, service.component]

    def by_alias(self, plan: NodePlan) -> dict[str, str]:
        """The ClusterIP of each name a service of `plan` has on its node's network."""
        return {alias: self.ip(plan, s) for s in plan.services for alias in s.network_aliases}

    def host_aliases(self, plan: NodePlan, service: ServicePlan) -> list[dict[str, Any]]:
        """The names `service` resolves: its node's services, and each shared network's aliases it joins."""
        entries = [(self.ip(plan, other), list(other.network_aliases)) for other in plan.services]
        joined = {attachment.network for attachment in service.networks}
        entries += [
            (self.ip(node, other), list(attachment.aliases))
            for node in self.plans
            for other in node.services
            for attachment in other.networks
            if attachment.network in joined and attachment.aliases
        ]
        merged: dict[str, list[str]] = {}  # Kubernetes takes one entry per address
        for ip, hostnames in entries:
            known = merged.setdefault(ip, [])
            known += [name for name in hostnames if name not in known]
        return [{"ip": ip, "hostnames": hostnames} for ip, hostnames in merged.items()]


def cluster_addresses(plans: Sequence[NodePlan], block: str = DEFAULT_SERVICE_RANGE) -> ClusterAddresses:
    """Carve `block` into one slice per node; refuse a range that is not one, or a stack that does not fit it."""
    try:
        network = ipaddress.IPv4Network(block)
        slices = list(network.subnets(new_prefix=network.max_prefixlen - SLICE_BITS))
    except ValueError as error:
        raise HubnodeError(
            f"Service range {block!r}: {error}",
            fix=f"give the cluster's --service-cluster-ip-range: {2 * ADDRESSES_PER_NODE} addresses or more",
        ) from None
    if len(plans) >= len(slices):
        raise HubnodeError(
            f"{len(plans)} nodes do not fit in the Service range {block} ({len(slices) - 1} slices of "
            f"{ADDRESSES_PER_NODE} addresses after the cluster's own)",
            fix="give a larger Service range (the cluster's --service-cluster-ip-range)",
        )
    ips: dict[tuple[str, str], str] = {}
    for plan, addresses in zip(plans, slices[1:], strict=False):
        if len(plan.services) >= ADDRESSES_PER_NODE:
            raise HubnodeError(
                f"node {plan.site} has {len(plan.services)} services; a node's slice holds {ADDRESSES_PER_NODE - 1}",
                fix="raise ADDRESSES_PER_NODE in infra/kube_manifests.py",
            )
        for index, service in enumerate(plan.services, start=1):
            ips[plan.site, service.component] = str(addresses.network_address + index)
    return ClusterAddresses(tuple(plans), ips)


def stack_manifests(
    plans: Sequence[NodePlan], settings: KubernetesSettings | None = None, image_ids: Mapping[str, str] | None = None
) -> dict[str, list[Manifest]]:
    """Every node's manifests by site, addressed together (pods resolve the peers of their federation).

    `image_ids`: reference -> id of the images the cluster holds (built here and imported, so a rebuilt
    image keeps its reference); each pod template names its image's, so a rebuild rolls the service.
    """
    chosen = settings or KubernetesSettings()
    for plan in plans:
        _check_name(plan.network, f"the namespace of node {plan.site}")
    addresses = cluster_addresses(plans, chosen.service_range)
    return {plan.site: node_manifests(plan, addresses, chosen, image_ids or {}) for plan in plans}


def _check_name(name: str, what: str) -> None:
    """Refuse a name Kubernetes would refuse (a DNS label), before anything is declared."""
    if not DNS_LABEL.match(name):
        raise HubnodeError(
            f"{what} would be {name!r}, which is no Kubernetes name (at most 63 lowercase letters, digits or '-')",
            fix="name the stack with lowercase letters, digits and '-' (hubnode-<stack>-<site> is the namespace)",
        )


def node_manifests(
    plan: NodePlan, addresses: ClusterAddresses, settings: KubernetesSettings, image_ids: Mapping[str, str]
) -> list[Manifest]:
    """One node's manifests, each before what refers to it (namespace first, workloads last)."""
    namespace = plan.network
    manifests: list[Manifest] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(plan.labels)}},
        *network_policies(plan),
    ]
    ips = addresses.by_alias(plan)
    for service in plan.services:
        manifests += _files(namespace, service, ips)
    for volume in plan.volumes:
        if settings.host_path is not None:
            manifests.append(_local_volume(namespace, plan, volume, settings.host_path, settings))
        manifests.append(_claim(namespace, plan, volume, settings))
    manifests += [_service(namespace, service, addresses.ip(plan, service)) for service in plan.services]
    manifests += [_disruption_budget(namespace, service) for service in plan.services if service.replicas > 1]
    manifests += [
        _workload(
            namespace, plan, service, addresses, _config_data(service, ips), image_ids.get(service.image.reference)
        )
        for service in plan.services
    ]
    return manifests


def _metadata(namespace: str, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def _selector(component: str) -> dict[str, str]:
    return {COMPONENT_LABEL: component}


def network_policies(plan: NodePlan) -> list[Manifest]:
    """Deny all ingress, then allow each call the plan declares and each port it publishes (from anywhere).

    Other nodes reach a node only through its gateway's published doors, so those allows cover them.
    """

    def policy(name: str, target: str, port: int, peers: list[dict[str, Any]] | None) -> Manifest:
        rule: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
        if peers is not None:
            rule["from"] = peers
        spec = {"podSelector": {"matchLabels": _selector(target)}, "policyTypes": ["Ingress"], "ingress": [rule]}
        return _policy(plan, name, spec)

    deny = _policy(plan, "default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
    calls = [
        policy(
            f"allow-{caller.component}-to-{call.service}-{call.port}",
            call.service,
            call.port,
            [{"podSelector": {"matchLabels": _selector(caller.component)}}],
        )
        for caller in plan.services
        for call in caller.calls
    ]
    published = [
        policy(f"allow-any-to-{service.component}-{port.container_port}", service.component, port.container_port, None)
        for service in plan.services
        for port in service.ports
    ]
    return [deny, *calls, *published]


def _policy(plan: NodePlan, name: str, spec: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(plan.network, name, plan.labels),
        "spec": spec,
    }


def secret_name(service: ServicePlan) -> str:
    """The Secret holding a service's secret files (keyed by `SecretFile.name`)."""
    return f"{service.component}-secrets"


def config_name(service: ServicePlan) -> str:
    """The ConfigMap holding a service's non-secret files (keyed by `config_key`)."""
    return f"{service.component}-files"


def config_key(path: str) -> str:
    """A config file's key in its ConfigMap: its path with `/` spelt `_` (keys may hold no `/`)."""
    return path.strip("/").replace("/", "_")


def addressed(file: ConfigFile, ips: Mapping[str, str]) -> str:
    """A config file's content; a gateway's rendered with its upstreams' ClusterIPs (nginx resolves names by DNS)."""
    config = file.rendered_from
    if config is None:
        return file.content
    upstreams: dict[str, Any] = {
        field.name: Upstream(ips[value.host], value.port)
        for field in fields(config)
        if isinstance(value := getattr(config, field.name), Upstream)
    }
    return render_gateway_config(replace(config, **upstreams))


def _files(namespace: str, service: ServicePlan, ips: Mapping[str, str]) -> list[Manifest]:
    """The service's Secret (keys only) and ConfigMap, where it has such files."""
    manifests: list[Manifest] = []
    if service.secrets:
        metadata = _metadata(namespace, secret_name(service), service.labels)
        metadata["annotations"] = {SECRET_KEYS_ANNOTATION: ",".join(s.name for s in service.secrets)}
        manifests.append({"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque"})
    if service.files:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _metadata(namespace, config_name(service), service.labels),
                "data": _config_data(service, ips),
            }
        )
    return manifests


def _config_data(service: ServicePlan, ips: Mapping[str, str]) -> dict[str, str]:
    return {config_key(f.path): addressed(f, ips) for f in service.files}


def _claim(namespace: str, plan: NodePlan, volume: str, settings: KubernetesSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(namespace, volume, plan.labels),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": settings.storage_class,
            "resources": {"requests": {"storage": settings.volume_size}},
        },
    }


def local_volume_path(host_path: str, volume: str) -> str:
    """Where on the cluster's node a claim's data lives when the stack names a `hostPath` folder.

    Volume names carry stack and site (`hubnode-<stack>-<site>-fhir-data`), so one folder serves every stack.
    """
    return posixpath.join(host_path, volume)


def _local_volume(
    namespace: str, plan: NodePlan, volume: str, host_path: str, settings: KubernetesSettings
) -> Manifest:
    """A PersistentVolume bound to one claim, in a folder of the node (made beforehand, owned by the service's user).

    `Retain`: the data outlives the claim, as a Docker volume outlives its container.
    """
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume, "labels": dict(plan.labels)},
        "spec": {
            "capacity": {"storage": settings.volume_size},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": settings.storage_class,
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": local_volume_path(host_path, volume), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": volume},
        },
    }


def _service(namespace: str, service: ServicePlan, ip: str) -> Manifest:
    """A Service named as the Docker path's network alias, at its fixed ClusterIP."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(namespace, service.component, service.labels),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "selector": _selector(service.component),
            "ports": [
                {"name": f"tcp-{port}", "protocol": "TCP", "port": port, "targetPort": port} for port in service.listens
            ],
        },
    }


def _disruption_budget(namespace: str, service: ServicePlan) -> Manifest:
    """At most one pod of a replicated service evicted at a time (a drain, a node's maintenance)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(namespace, service.component, service.labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(service.component)}},
    }


def _workload(  # noqa: PLR0913, PLR0917 -- the service and what the cluster knows of it
    namespace: str,
    plan: NodePlan,
    service: ServicePlan,
    addresses: ClusterAddresses,
    files: Mapping[str, str],
    image_id: str | None,
) -> Manifest:
    """A StatefulSet for a database, a Deployment for the rest, with the plan's replicas.

    One replica is replaced, not rolled (its RWO volume is its state). Several (HAPI, the connector on
    PostgreSQL) are rolled one at a time, never fewer ready than wanted. The pod template carries a digest
    of the files and the image's id where known, so a changed file or a rebuilt image starts new pods.
    """
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    annotations = {FILES_DIGEST_ANNOTATION: digest, **({IMAGE_ID_ANNOTATION: image_id} if image_id else {})}
    template = {
        "metadata": {"labels": dict(service.labels), "annotations": annotations},
        "spec": _pod(plan, service, addresses),
    }
    spec: dict[str, Any] = {"replicas": service.replicas, "selector": {"matchLabels": _selector(service.component)}}
    if service.is_database:
        kind = "StatefulSet"
        spec |= {"serviceName": service.component, "template": template}
    else:
        kind = "Deployment"
        rolled = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        spec |= {"strategy": rolled if service.replicas > 1 else {"type": "Recreate"}, "template": template}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": _metadata(namespace, service.component, service.labels),
        "spec": spec,
    }


def _pod(plan: NodePlan, service: ServicePlan, addresses: ClusterAddresses) -> dict[str, Any]:
    hardening = service.hardening
    memory = f"{hardening.memory_mib}Mi"
    container: dict[str, Any] = {
        "name": service.component,
        "image": service.image.reference,
        "imagePullPolicy": "Never",
        "env": [{"name": k, "value": v} for k, v in service.env.items()],
        "ports": [_container_port(service, port) for port in service.listens],
        "resources": {"requests": {"memory": memory}, "limits": {"memory": memory}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": service.uid,
            "privileged": False,
            "allowPrivilegeEscalation": not hardening.no_new_privileges,
            "capabilities": {"drop": list(DROPPED_CAPABILITIES), "add": list(hardening.capabilities)},
            "readOnlyRootFilesystem": hardening.read_only_root,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **probes(service.health),
    }
    volumes, mounts = _volumes(service)
    container["volumeMounts"] = mounts
    return {
        "hostAliases": addresses.host_aliases(plan, service),
        # The plan's environment and nothing else: no `<SERVICE>_PORT=tcp://...` per Service of the namespace
        # (a `DB_PORT` or `PORTAL_PORT` a program might read), and no API token (no service calls the cluster).
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": service.uid,
            "fsGroup": service.uid,
            # Group access is given once, to a new volume's root: PostgreSQL refuses a data folder others can read.
            "fsGroupChangePolicy": "OnRootMismatch",
        },
        "containers": [container],
        "volumes": volumes,
    }


def _container_port(service: ServicePlan, port: int) -> dict[str, Any]:
    """A port it listens on; a published one also on the host, at the address the Docker path publishes it."""
    entry: dict[str, Any] = {"containerPort": port, "protocol": "TCP"}
    for binding in service.ports:
        if binding.container_port == port:
            entry |= {"hostPort": binding.host_port, "hostIP": binding.host_ip}
    return entry


def probes(health: HealthCheck) -> dict[str, Any]:
    """Docker's HEALTHCHECK as exec probes: startup within the bring-up budget, then readiness and liveness.

    The plan's checks are `CMD` argument lists (no shell), which an exec probe runs as they are.
    """
    command = health.test[1:]

    def probe(failures: int) -> dict[str, Any]:
        return {
            "exec": {"command": list(command)},
            "periodSeconds": health.interval_s,
            "timeoutSeconds": health.timeout_s,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe(math.ceil(health.budget_s / health.interval_s)),
        "readinessProbe": probe(health.retries),
        "livenessProbe": probe(health.retries),
    }


def _volumes(service: ServicePlan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pod volumes and their mounts: claims, in-memory tmpfs, and one read-only projection per file folder."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, mount in enumerate(service.volumes):
        volumes.append({"name": f"data-{index}", "persistentVolumeClaim": {"claimName": mount.volume}})
        mounts.append({"name": f"data-{index}", "mountPath": mount.path})
    for index, tmpfs in enumerate(service.hardening.tmpfs):
        volumes.append({"name": f"tmp-{index}", "emptyDir": {"medium": "Memory", "sizeLimit": f"{tmpfs.size_mib}Mi"}})
        mounts.append({"name": f"tmp-{index}", "mountPath": tmpfs.path})
    for index, folder in enumerate(service.file_folders):
        secrets = [
            {"key": s.name, "path": posixpath.basename(s.path)}
            for s in service.secrets
            if posixpath.dirname(s.path) == folder
        ]
        configs = [
            {"key": config_key(f.path), "path": posixpath.basename(f.path)}
            for f in service.files
            if posixpath.dirname(f.path) == folder
        ]
        sources = [
            *([{"secret": {"name": secret_name(service), "items": secrets}}] if secrets else []),
            *([{"configMap": {"name": config_name(service), "items": configs}}] if configs else []),
        ]
        volumes.append({"name": f"files-{index}", "projected": {"defaultMode": SECRET_FILE_MODE, "sources": sources}})
        mounts.append({"name": f"files-{index}", "mountPath": folder, "readOnly": True})
    return volumes, mounts


class _Dumper(yaml.SafeDumper):
    """Writes file contents (nginx.conf, JSON) as literal blocks, so a reviewer reads them as files."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        """A multi-line string as a `|` block; anything else as PyYAML would."""
        style = "|" if "\n" in data else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _Dumper.represent_str)


def render_yaml(site: str, manifests: Sequence[Manifest]) -> str:
    """One node's manifests as one YAML stream (`---` between them), headed by how to fill its Secrets."""
    header = (
        f"# hubnode: node {site} as Kubernetes manifests (kubectl apply -f). Secrets carry no data here:\n"
        f"# give each the keys its {SECRET_KEYS_ANNOTATION} annotation names before the workloads start.\n"
    )
    return header + yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, explicit_start=True)
