"""A federation's PKI in a folder (`.hubnode/<stack>/pki/`), reused while valid and reissued when not.

Layout: `ca.crt`, `ca.key`, `<site>.crt`, `<site>.key`; the folder is owner-only (0700) and keys
are 0600 from the moment they exist (written to a temporary file of that mode, then renamed), so
a key is never readable by others, not even half-written. `ensure` reports what it did per item so
the CLI can say which certificates are new and why.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from infra import pki
from infra.errors import HubnodeError

CA = "ca"
FOLDER_MODE = 0o700
KEY_MODE = 0o600
CERTIFICATE_MODE = 0o644


@dataclass(frozen=True)
class Action:
    """What `ensure` did with one item (`ca` or a site): reused it, or issued it and why."""

    item: str
    done: Literal["issued", "reused"]
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.item}: {self.done}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class FederationPki:
    """The federation's CA and node certificates as they now are on disk, and what `ensure` did."""

    folder: Path
    ca: pki.Issued
    nodes: Mapping[str, pki.Issued]
    actions: tuple[Action, ...]

    @property
    def ca_file(self) -> Path:
        """The CA certificate (public: every node and client trusts it)."""
        return certificate_file(self.folder, CA)

    def certificate_file(self, site: str) -> Path:
        """A node's certificate."""
        return certificate_file(self.folder, site)

    def key_file(self, site: str) -> Path:
        """A node's private key (0600)."""
        return key_file(self.folder, site)

    def thumbprint(self, site: str) -> str:
        """A node certificate's SHA-512 thumbprint, as the allow list names it."""
        return pki.thumbprint(self.nodes[site].certificate)


def certificate_file(folder: Path, item: str) -> Path:
    """Where the certificate of `ca` or a site lies."""
    return folder / f"{item}.crt"


def key_file(folder: Path, item: str) -> Path:
    """Where the private key of `ca` or a site lies."""
    return folder / f"{item}.key"


def ensure(folder: Path, federation: str, nodes: Mapping[str, Sequence[str]], now: datetime) -> FederationPki:
    """Make the folder hold a valid CA and a valid certificate for each site (site -> host names).

    A CA that is missing, unreadable, for another federation or near its end is issued anew, and
    then every node certificate with it; a node certificate is reissued when `pki.needs_reissue`
    says so. Everything else is left as it is, byte for byte. `now` must be timezone-aware.
    """
    if CA in nodes:
        raise HubnodeError(
            f"a site may not be called {CA!r}: its certificate would take the place of the federation CA's",
            fix="rename the site in the stack file",
        )
    folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    folder.chmod(FOLDER_MODE)
    actions: list[Action] = []
    ca = _load(folder, CA)
    reason = "new" if ca is None else _ca_reason(ca, federation, now)
    if ca is None or reason is not None:
        ca = pki.issue_ca(federation, now)
        store_issued(folder, CA, ca)
        actions.append(Action(CA, "issued", reason or ""))
        renew_all: str | None = "new CA"
    else:
        actions.append(Action(CA, "reused"))
        renew_all = None
    issued: dict[str, pki.Issued] = {}
    for site, hosts in sorted(nodes.items()):
        wanted = pki.node_names(hosts)
        node = _load(folder, site)
        if node is None:
            reason = "new"
        elif not pki.key_matches(node):
            reason = "key does not match the certificate"
        else:
            reason = renew_all or pki.needs_reissue(node.certificate, ca.certificate, wanted, now)
        if node is None or reason is not None:
            node = pki.issue_node(ca, site, hosts, now)
            store_issued(folder, site, node)
            actions.append(Action(site, "issued", reason or ""))
        else:
            actions.append(Action(site, "reused"))
        issued[site] = node
    return FederationPki(folder, ca, issued, tuple(actions))


def _ca_reason(ca: pki.Issued, federation: str, now: datetime) -> str | None:
    """Why the stored CA cannot serve this federation any more, or None."""
    if not pki.key_matches(ca):
        return "key does not match the certificate"
    if pki.federation_of(ca.certificate) != federation:
        return "federation renamed"
    return pki.expiry_reason(ca.certificate, now)


def _load(folder: Path, item: str) -> pki.Issued | None:
    """The stored pair, or None when either file is missing or unreadable (then it is issued anew)."""
    try:
        return pki.Issued(
            pki.load_certificate(certificate_file(folder, item).read_bytes()),
            pki.load_key(key_file(folder, item).read_bytes()),
        )
    except (OSError, ValueError, TypeError):
        return None


def store_issued(folder: Path, item: str, issued: pki.Issued) -> None:
    """Write key first, then certificate, each atomically with its final mode."""
    _write(key_file(folder, item), pki.key_pem(issued.key), KEY_MODE)
    _write(certificate_file(folder, item), pki.certificate_pem(issued.certificate), CERTIFICATE_MODE)


def _write(path: Path, content: bytes, mode: int) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
        Path(temporary).chmod(mode)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
