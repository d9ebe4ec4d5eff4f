"""A federation stack's PKI and allow list as files on this host, ready to be mounted into its nodes.

`hubnode up` and the Pulumi program both call `prepare_federation_files`: the CA and node
certificates are kept in `.hubnode/<stack>/pki/` and reissued only when they near expiry or their
names change, and the allow list is rebuilt from the spec and the certificates every time, so
every node enforces the same list.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from infra import pki_store
from infra.allow_list import AllowedNode, allow_list_json
from infra.plan import GATEWAY_PEER_PORT
from infra.progress import Progress
from infra.spec import StackSpec

#: Where a site's federation file of a given name lies on this host.
FederationFiles = Callable[[str, str], Path]


def allowed_nodes(spec: StackSpec, pki: pki_store.FederationPki) -> tuple[AllowedNode, ...]:
    """Every node the stack declares, with its certificate, and every peer it names."""
    ours = tuple(
        AllowedNode(node.site, node.role, node.host, GATEWAY_PEER_PORT, pki.thumbprint(node.site))
        for node in spec.nodes
        if "gateway" in node.components
    )
    peers = spec.federation.peers if spec.federation else ()
    theirs = tuple(
        AllowedNode(
            peer.site,
            peer.role,
            urlsplit(peer.address).hostname or "",
            urlsplit(peer.address).port or 443,
            peer.thumbprint,
        )
        for peer in peers
    )
    return ours + theirs


def prepare_federation_files(spec: StackSpec, state_dir: Path, progress: Progress | None) -> FederationFiles:
    """Issue or reuse the PKI and its revocation list, write the allow list and each node's copies; say what was done.

    A local stack also keeps a revoked certificate, so the conformance suite can show that nodes refuse it.
    """
    assert spec.federation is not None  # noqa: S101 -- callers only pass federation stacks
    hosts = {node.site: (node.host,) for node in spec.nodes if "gateway" in node.components}
    probe = spec.environment == "local"
    pki = pki_store.ensure(state_dir / "pki", spec.federation.name, hosts, datetime.now(UTC), revoked_probe=probe)
    if progress is not None:
        for action in pki.actions:
            progress.note(f"certificate {action}")
    allow_list = state_dir / "federation" / "allow-list.json"
    allow_list.parent.mkdir(parents=True, exist_ok=True)
    allow_list.write_text(allow_list_json(allowed_nodes(spec, pki)))
    sources = {
        "federation-ca": lambda _site: pki.ca_file,
        "allow-list": lambda _site: allow_list,
        "revocation-list": lambda _site: pki.crl_file,
    }
    sources |= {"node-certificate": pki.certificate_file, "node-key": pki.key_file}

    def path(site: str, name: str) -> Path:
        """A copy in the site's (owner-only) secrets folder; each container gets its own copy of it to read."""
        copy = state_dir / "secrets" / site / name
        copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        copy.unlink(missing_ok=True)
        shutil.copyfile(sources[name](site), copy)
        copy.chmod(0o600)
        return copy

    return path
