"""The Pulumi program: read the stack's config, plan it, declare one `HubNode` per node.

Thin on purpose: all decisions live in `infra.spec` and `infra.plan`.
"""

from __future__ import annotations

import pulumi

from infra.docker_node import HubNode
from infra.plan import plan_stack
from infra.pulumi_config import stack_config
from infra.spec import NAMESPACE, parse_stack

spec = parse_stack(pulumi.get_stack(), stack_config(), source=f"Pulumi.{pulumi.get_stack()}.yaml")
config = pulumi.Config(NAMESPACE)
for node_plan in plan_stack(spec):
    needs_password = any(s.secrets for s in node_plan.services)
    secrets = {"db-password": config.require_secret("dbPassword")} if needs_password else {}
    node = HubNode(node_plan.site, node_plan, secrets)
    pulumi.export(f"{node_plan.site}-endpoints", node.endpoints)
