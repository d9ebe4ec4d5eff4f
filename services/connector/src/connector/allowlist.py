"""Which node role may start which process at which other role (docs/federation.md, "Nodes, roles, networks").

The allow list itself (who exists, which certificate is theirs) is the service kit's
(`servicekit.allowlist`), read the same way by the trust centre.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.tasks import Process
from servicekit.allowlist import AllowList, NodeRole, Peer

#: docs/federation.md, table "Nodes, roles, networks": column "may start".
MAY_START: Mapping[NodeRole, frozenset[Process]] = {
    NodeRole.DIC: frozenset(Process),
    NodeRole.PRACTICE: frozenset({Process.PING, Process.CARE_SUMMARY, Process.DATA_SEND}),
    NodeRole.RESEARCH: frozenset({Process.PING, Process.FEASIBILITY}),
    NodeRole.TTP: frozenset({Process.PING}),
}
#: Same table, column "answers".
ANSWERS: Mapping[NodeRole, frozenset[Process]] = {
    NodeRole.DIC: frozenset({Process.PING, Process.CARE_SUMMARY, Process.FEASIBILITY}),
    NodeRole.PRACTICE: frozenset({Process.PING, Process.CARE_SUMMARY, Process.FEASIBILITY}),
    NodeRole.RESEARCH: frozenset({Process.PING, Process.DATA_SEND}),
    NodeRole.TTP: frozenset({Process.PING}),
}


def permitted(requester: NodeRole, process: Process, receiver: NodeRole) -> bool:
    """Whether a node of role `requester` may start `process` at a node of role `receiver`."""
    return process in MAY_START[requester] and process in ANSWERS[receiver]


def answering(allow_list: AllowList, process: Process, requester: NodeRole, own_site: str) -> list[Peer]:
    """Every other organisation at which a `requester` node may start `process`, by site."""
    return sorted(
        (p for p in allow_list.peers if p.site != own_site and permitted(requester, process, p.role)),
        key=lambda p: p.site,
    )
