"""The Pulumi program: read the stack's config, plan it, declare one node component per node.

`hubnode:platform` chooses the adapter: `HubNode` on Docker (default) or `KubernetesHubNode`.
A function, so that `pulumi up` (through `infra/__main__.py`) and `hubnode deploy` (an Automation API
inline program) run the same declarations.

Thin on purpose: all decisions live in `infra.spec` and `infra.plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.cluster_files import imported_images, layout_for
from infra.docker_node import HubNode
from infra.federation_files import prepare_federation_files
from infra.idp_realm import USER_SECRET_PREFIX
from infra.kube_manifests import stack_manifests
from infra.kubernetes_node import KubernetesHubNode
from infra.local import secret_file
from infra.plan import FEDERATION_FILES, LABEL_PREFIX, NodePlan, SecretFile, owner_of, plan_stack
from infra.pulumi_config import stack_config
from infra.spec import NAMESPACE, SECRET_SOURCES, KubernetesSettings, parse_stack


def secret_contents(
    needed: set[SecretFile], config: pulumi.Config, generated: Callable[[str], Path]
) -> dict[str, pulumi.Output[str]]:
    """The content of every secret file the plans need, required from the stack's secrets.

    Demo users' passwords have no Pulumi secret: only local stacks declare demo users, and their
    passwords are the files `generated` names, made as `hubnode up` makes them.
    """

    def source(name: str) -> pulumi.Output[str]:
        if name.startswith(USER_SECRET_PREFIX):
            return pulumi.Output.secret(generated(name).read_text())
        return config.require_secret(SECRET_SOURCES[owner_of("", name)[1]])

    contents: dict[str, pulumi.Output[str]] = {}
    for secret in sorted(needed, key=lambda s: s.name):
        if secret.derived is not None:
            sources = {name: source(name) for name in secret.derived.sources}
            contents[secret.name] = pulumi.Output.all(**sources).apply(secret.derived.render)
        elif secret.name not in FEDERATION_FILES:
            contents[secret.name] = source(secret.name)
    return contents


STACK_LABEL = f"{LABEL_PREFIX}.stack"
#: What declares one node: its plan and its secrets' contents in, a component with `endpoints` out.
DeclareNode = Callable[[NodePlan, Mapping[str, pulumi.Input[str]]], HubNode | KubernetesHubNode]


def docker_nodes(stack: str, plans: tuple[NodePlan, ...]) -> DeclareNode:
    """Nodes as containers on one Docker host; the networks several nodes join are declared once, here."""
    shared = {
        name: docker.Network(name, name=name, labels=[docker.NetworkLabelArgs(label=STACK_LABEL, value=stack)])
        for name in sorted({plan.peers_network for plan in plans if plan.peers_network})
    }
    return lambda plan, contents: HubNode(plan.site, plan, contents, shared_networks=shared)


def kubernetes_nodes(
    plans: tuple[NodePlan, ...], settings: KubernetesSettings, image_ids: Mapping[str, str]
) -> DeclareNode:
    """Nodes as namespaces of the cluster Pulumi's kubernetes provider reaches, addressed together."""
    manifests = stack_manifests(plans, settings, image_ids)
    return lambda plan, contents: KubernetesHubNode(plan.site, plan, manifests[plan.site], contents)


def declare_stack() -> None:
    """Declare the current stack's nodes and export each node's endpoints as `<site>-endpoints`."""
    spec = parse_stack(pulumi.get_stack(), stack_config(), source=f"Pulumi.{pulumi.get_stack()}.yaml")
    # The federation's PKI lives beside the stack (reissued when it nears expiry); keys enter Pulumi as secrets.
    state_dir = Path(".hubnode") / spec.stack
    federation_files = prepare_federation_files(spec, state_dir, progress=None) if spec.federation else None
    plans = plan_stack(spec)
    if spec.platform == "kubernetes":
        # On the project's own cluster the images are Docker's, imported under their references; a site's
        # cluster (`kubernetes:kubeconfig`) pulls from its registry, where a new image has a new reference.
        own_cluster = pulumi.Config("kubernetes").get("kubeconfig") is None
        image_ids = imported_images(layout_for(Path.cwd())) if own_cluster else {}
        declare = kubernetes_nodes(plans, spec.kubernetes.resolved(Path.cwd()), image_ids)
    else:
        declare = docker_nodes(spec.stack, plans)
    for node_plan in plans:
        needed = {secret for service in node_plan.services for secret in service.secrets}
        contents = secret_contents(needed, pulumi.Config(NAMESPACE), partial(secret_file, state_dir, node_plan.site))
        if federation_files is not None:
            for secret in needed:
                if secret.name in FEDERATION_FILES:
                    contents[secret.name] = pulumi.Output.secret(
                        federation_files(node_plan.site, secret.name).read_text()
                    )
        node = declare(node_plan, contents)
        pulumi.export(f"{node_plan.site}-endpoints", node.endpoints)
