"""NodePlan -> pulumi_docker resources: one `HubNode` component per node, a 1:1 translation.

Nothing here decides anything a plan does not say; `tests/unit/test_docker_node.py` holds every
container resource against its plan entry, so what the local launcher proves holds for `pulumi up`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import pulumi
import pulumi_docker as docker

from infra.imagebuild import recipe_for
from infra.plan import DROPPED_CAPABILITIES, RESTART_POLICY, NodePlan, ServicePlan


class HubNode(pulumi.ComponentResource):
    """A hub node on one Docker host: its network, volumes, images and containers."""

    endpoints: pulumi.Output[Mapping[str, str]]
    containers: Mapping[str, docker.Container]

    def __init__(
        self,
        name: str,
        plan: NodePlan,
        secrets: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
        shared_networks: Mapping[str, docker.Network] | None = None,
    ) -> None:
        """Declare `plan`; `secrets` maps each plan `SecretFile.name` to its (secret) content.

        `shared_networks` are the networks several nodes join (a local federation's peers network),
        declared once outside any node.
        """
        super().__init__("hubnode:index:HubNode", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = [docker.NetworkLabelArgs(label=k, value=v) for k, v in plan.labels.items()]
        network = docker.Network(plan.network, name=plan.network, labels=labels, opts=child)
        # Containers name their volumes by these resources' outputs, so each volume exists (with the
        # stack's labels) before a container mounts it; docker would otherwise make an unlabelled one.
        volumes = {
            volume: docker.Volume(
                volume,
                name=volume,
                labels=[docker.VolumeLabelArgs(label=k, value=v) for k, v in plan.labels.items()],
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
            for volume in plan.volumes
        }
        networks = {plan.network: network, **(shared_networks or {})}
        containers: dict[str, docker.Container] = {}
        for service in plan.services:
            containers[service.component] = _container(
                service,
                _image(service, child),
                Wiring(_attachments(service, networks, plan.network), _mounts(service, volumes)),
                secrets,
                pulumi.ResourceOptions(parent=self, depends_on=[containers[d] for d in service.depends_on]),
            )
        self.containers = containers
        self.endpoints = pulumi.Output.from_input(dict(plan.endpoints))
        self.register_outputs({"endpoints": self.endpoints})


def _image(service: ServicePlan, opts: pulumi.ResourceOptions) -> pulumi.Input[str]:
    """A local build (never pushed: there is no registry here) or a reference to pull."""
    build = service.image.build
    if build is None:
        pulled = docker.RemoteImage(service.image.reference, name=service.image.reference, keep_locally=True, opts=opts)
        return pulled.name
    recipe = recipe_for(build)
    built = docker.Image(
        service.image.reference,
        image_name=service.image.reference,
        build=docker.DockerBuildArgs(
            context=str(recipe.context), dockerfile=str(recipe.dockerfile), args=dict(recipe.args)
        ),
        skip_push=True,
        opts=opts,
    )
    return built.image_name


class Wiring(NamedTuple):
    """What a container is attached to: its networks and its mounted volumes."""

    networks: list[docker.ContainerNetworksAdvancedArgs]
    volumes: list[docker.ContainerVolumeArgs]


def _mounts(service: ServicePlan, volumes: Mapping[str, docker.Volume]) -> list[docker.ContainerVolumeArgs]:
    """The service's volumes, each named through its resource (so it is declared first).

    Files reach a container as uploads (`docker cp`), which Docker refuses into a read-only root
    filesystem but not into a volume: so on a read-only root each folder of the service's files is an
    anonymous volume, made and removed with the container (owned by root, so the service cannot write it).
    """
    named = [
        docker.ContainerVolumeArgs(volume_name=volumes[v.volume].name, container_path=v.path) for v in service.volumes
    ]
    uploads = service.file_folders if service.hardening.read_only_root else ()
    return named + [docker.ContainerVolumeArgs(container_path=folder) for folder in uploads]


def _attachments(
    service: ServicePlan, networks: Mapping[str, docker.Network], node_network: str
) -> list[docker.ContainerNetworksAdvancedArgs]:
    """The node's network with the service's aliases there, then each shared network it joins."""
    return [
        docker.ContainerNetworksAdvancedArgs(name=networks[node_network].name, aliases=list(service.network_aliases)),
        *(
            docker.ContainerNetworksAdvancedArgs(name=networks[a.network].name, aliases=list(a.aliases))
            for a in service.networks
        ),
    ]


def _container(
    service: ServicePlan,
    image: pulumi.Input[str],
    wiring: Wiring,
    secrets: Mapping[str, pulumi.Input[str]],
    opts: pulumi.ResourceOptions,
) -> docker.Container:
    health, hardening = service.health, service.hardening
    return docker.Container(
        service.container_name,
        name=service.container_name,
        image=image,
        envs=[f"{k}={v}" for k, v in service.env.items()],
        ports=[
            docker.ContainerPortArgs(internal=p.container_port, external=p.host_port, ip=p.host_ip)
            for p in service.ports
        ],
        volumes=wiring.volumes,
        uploads=[
            *(docker.ContainerUploadArgs(file=s.path, content=secrets[s.name]) for s in service.secrets),
            *(docker.ContainerUploadArgs(file=f.path, content=f.content) for f in service.files),
        ],
        networks_advanced=wiring.networks,
        labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in service.labels.items()],
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=list(health.test),
            interval=f"{health.interval_s}s",
            timeout=f"{health.timeout_s}s",
            retries=health.retries,
            start_period=f"{health.start_period_s}s",
        ),
        user=service.user,
        capabilities=docker.ContainerCapabilitiesArgs(
            drops=list(DROPPED_CAPABILITIES), adds=list(hardening.capabilities)
        ),
        security_opts=list(hardening.security_options),
        read_only=hardening.read_only_root,
        mounts=[
            docker.ContainerMountArgs(
                target=t.path,
                type="tmpfs",
                tmpfs_options=docker.ContainerMountTmpfsOptionsArgs(size_bytes=t.size_bytes),
            )
            for t in hardening.tmpfs
        ],
        # MiB, as the provider counts; swap as large as the memory limit means none.
        memory=hardening.memory_mib,
        memory_swap=hardening.memory_mib,
        # `hardening.pids` has no counterpart: pulumi_docker 5.2 (the Terraform docker provider) cannot set a
        # container's PID limit. `hubnode up` sets it; after `pulumi up`, `docker update --pids-limit` does.
        restart=RESTART_POLICY,
        wait=True,
        wait_timeout=health.budget_s,
        opts=opts,
    )
