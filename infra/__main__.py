"""The Pulumi program: read the stack's config, plan it, declare one `HubNode` per node.

Thin on purpose: all decisions live in `infra.spec` and `infra.plan`.
"""

from __future__ import annotations

import pulumi

from infra.docker_node import HubNode
from infra.plan import DERIVED_SECRETS, plan_stack
from infra.pulumi_config import stack_config
from infra.spec import NAMESPACE, parse_stack

#: Which Pulumi secret (`pulumi config set --secret hubnode:<key>`) fills each secret file of a plan.
SECRET_SOURCES = {
    "db-password": "dbPassword",
    "tcdb-password": "dbPassword",
    "tc-secret": "trustcentreSecret",
    "tc-admin-token": "trustcentreAdminToken",
}


def secret_contents(needed: set[str], config: pulumi.Config) -> dict[str, pulumi.Output[str]]:
    """The content of every secret file the plans need, required from the stack's secrets."""
    contents: dict[str, pulumi.Output[str]] = {}
    for name in sorted(needed):
        if name in DERIVED_SECRETS:
            source, derive = DERIVED_SECRETS[name]
            contents[name] = config.require_secret(SECRET_SOURCES[source]).apply(derive)
        else:
            contents[name] = config.require_secret(SECRET_SOURCES[name])
    return contents


spec = parse_stack(pulumi.get_stack(), stack_config(), source=f"Pulumi.{pulumi.get_stack()}.yaml")
for node_plan in plan_stack(spec):
    needed = {secret.name for service in node_plan.services for secret in service.secrets}
    node = HubNode(node_plan.site, node_plan, secret_contents(needed, pulumi.Config(NAMESPACE)))
    pulumi.export(f"{node_plan.site}-endpoints", node.endpoints)
