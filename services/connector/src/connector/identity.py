"""Whether an identified peer may start this process here, naming itself honestly.

Who the peer is the service kit decides (`servicekit.identity.Federation.identify`: gateway secret,
verified certificate, allow-list thumbprint, revocation, not this node itself); here the role table of
docs/federation.md and the Task's `requester` are held against that identity.
"""

from __future__ import annotations

from connector.allowlist import permitted
from connector.tasks import Process
from servicekit.allowlist import NodeRole, Peer
from servicekit.fhir import FhirError


def authorise(peer: Peer, process: Process, requester: str | None, own_role: NodeRole) -> None:
    """Refuse with 403 unless `peer` may start `process` at this node and names itself as requester."""
    if requester != peer.site:
        raise FhirError(
            403,
            "forbidden",
            f"Task.requester {requester!r} does not match the certificate's organisation {peer.site!r}",
            ("Task.requester",),
        )
    if not permitted(peer.role, process, own_role):
        raise FhirError(
            403,
            "forbidden",
            f"a {peer.role.value} node may not start {process.value} at a {own_role.value} node",
            ("Task.instantiatesCanonical",),
        )
