"""A federation's PKI in a folder (`.hubnode/<stack>/pki/`), reused while valid and reissued when not.

Layout: `ca.crt`, `<site>.crt`, `<site>.key`, the revocation list `federation.crl` and what it is made
from (`revoked.json`); the CA's private key lies apart, in `../ca/ca.key`, since nodes' files are copied
out of `pki/` and the CA key must never travel with them. Folders are owner-only (0700) and keys are
0600 from the moment they exist (written to a temporary file of that mode, then renamed), so a key is
never readable by others, not even half-written. A node certificate that is reissued while its old one
is still valid is revoked, so a copy of the old key is refused by every node. `ensure` reports what it
did per item so the CLI can say which certificates are new and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509

from infra import pki
from infra.errors import HubnodeError
from infra.files import write_atomically

CA = "ca"
#: A certificate of the federation CA kept revoked, so local stacks can show that nodes refuse revoked ones.
REVOKED_PROBE = "revoked-probe"
CRL_FILE = "federation.crl"
REVOKED_FILE = "revoked.json"
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

    @property
    def crl_file(self) -> Path:
        """The federation's revocation list, signed by the CA (public)."""
        return self.folder / CRL_FILE

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
    """Where the private key of a site lies; the CA's lies apart, in the `ca` folder beside `folder`."""
    return ca_key_file(folder) if item == CA else folder / f"{item}.key"


def ca_key_file(folder: Path) -> Path:
    """Where the federation CA's private key lies: beside the PKI folder, never in it."""
    return folder.parent / CA / f"{CA}.key"


@dataclass(frozen=True)
class Validity:
    """How long a certificate of the folder holds: for `hubnode status`, so renewals are never a surprise."""

    item: str
    valid_until: datetime
    days_left: int
    #: Why the next `hubnode up` would renew it now (`expires within 30 days`, `expired`), or None.
    renew: str | None


def validity(folder: Path, items: Sequence[str], now: datetime) -> list[Validity]:
    """The validity of each certificate of `items` (`ca`, sites) that the folder holds and can read."""
    found = []
    for item in items:
        try:
            certificate = x509.load_pem_x509_certificate(certificate_file(folder, item).read_bytes())
        except (OSError, ValueError):
            continue
        until = certificate.not_valid_after_utc
        found.append(Validity(item, until, (until - now).days, pki.expiry_reason(certificate, now)))
    return found


def ensure(
    folder: Path,
    federation: str,
    nodes: Mapping[str, Sequence[str]],
    now: datetime,
    *,
    revoked_probe: bool = False,
) -> FederationPki:
    """Make the folder hold a valid CA, a valid certificate for each site (site -> host names) and the CRL.

    A CA that is missing, unreadable, for another federation or near its end is issued anew, and
    then every node certificate with it; a node certificate is reissued when `pki.needs_reissue`
    says so, and an old one that was still valid goes on the revocation list. With `revoked_probe`
    (local stacks), a revoked certificate is kept for tests. Everything else is left as it is, byte
    for byte. `now` must be timezone-aware.
    """
    if CA in nodes:
        raise HubnodeError(
            f"a site may not be called {CA!r}: its certificate would take the place of the federation CA's",
            fix="rename the site in the stack file",
        )
    folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    folder.chmod(FOLDER_MODE)
    ca_key_file(folder).parent.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    if (old := folder / f"{CA}.key").is_file() and not ca_key_file(folder).is_file():
        old.replace(ca_key_file(folder))  # kept in the PKI folder before it moved apart
    actions: list[Action] = []
    ca = _load(folder, CA)
    reason = "new" if ca is None else _ca_reason(ca, federation, now)
    if ca is None or reason is not None:
        ca = pki.issue_ca(federation, now)
        store_issued(folder, CA, ca)
        actions.append(Action(CA, "issued", reason or ""))
        renew_all: str | None = "new CA"
        revoked: dict[int, datetime] = {}
    else:
        actions.append(Action(CA, "reused"))
        renew_all = None
        revoked = _revoked(folder)
    issued: dict[str, pki.Issued] = {}
    for site, hosts in sorted(nodes.items()):
        issued[site], action = _node(folder, ca, site, hosts, now, renew_all, revoked)
        actions.append(action)
    if revoked_probe:
        probe = _load(folder, REVOKED_PROBE)
        if probe is None or pki.needs_reissue(probe.certificate, ca.certificate, pki.node_names(()), now):
            probe = pki.issue_node(ca, REVOKED_PROBE, (), now)
            store_issued(folder, REVOKED_PROBE, probe)
        revoked.setdefault(probe.certificate.serial_number, now)
    _write_revocations(folder, ca, revoked, now)
    return FederationPki(folder, ca, issued, tuple(actions))


def _node(  # noqa: PLR0913, PLR0917 -- where, signed by whom, for whom, when, why all, what to revoke
    folder: Path,
    ca: pki.Issued,
    site: str,
    hosts: Sequence[str],
    now: datetime,
    renew_all: str | None,
    revoked: dict[int, datetime],
) -> tuple[pki.Issued, Action]:
    """The site's certificate, reused or issued anew; an old one still valid is added to `revoked`."""
    node = _load(folder, site)
    if node is None:
        reason: str | None = "new"
    elif not pki.key_matches(node):
        reason = "key does not match the certificate"
    else:
        reason = renew_all or pki.needs_reissue(node.certificate, ca.certificate, pki.node_names(hosts), now)
    if node is not None and reason is None:
        return node, Action(site, "reused")
    if node is not None and renew_all is None and pki.expiry_reason(node.certificate, now) != "expired":
        revoked[node.certificate.serial_number] = now
    node = pki.issue_node(ca, site, hosts, now)
    store_issued(folder, site, node)
    return node, Action(site, "issued", reason or "")


def _revoked(folder: Path) -> dict[int, datetime]:
    """Serial -> when it was revoked, as `revoked.json` records it (nothing if it is missing)."""
    try:
        recorded = json.loads((folder / REVOKED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {int(serial): datetime.fromisoformat(when) for serial, when in recorded.get("revoked", {}).items()}


def _write_revocations(folder: Path, ca: pki.Issued, revoked: Mapping[int, datetime], now: datetime) -> None:
    """Record the revoked serials and sign a CRL of them, unless the CRL on disk says the same and is fresh."""
    record = {"revoked": {str(serial): when.isoformat() for serial, when in sorted(revoked.items())}}
    write_atomically(folder / REVOKED_FILE, (json.dumps(record, indent=2) + "\n").encode(), CERTIFICATE_MODE)
    try:
        current = x509.load_pem_x509_crl((folder / CRL_FILE).read_bytes())
    except (OSError, ValueError):
        current = None
    fresh = (
        current is not None
        and current.is_signature_valid(ca.key.public_key())
        and {entry.serial_number for entry in current} == set(revoked)
        and current.next_update_utc is not None
        and current.next_update_utc - now > pki.RENEW_BEFORE
    )
    if not fresh:
        write_atomically(folder / CRL_FILE, pki.crl_pem(pki.issue_crl(ca, revoked, now)), CERTIFICATE_MODE)


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
    write_atomically(key_file(folder, item), pki.key_pem(issued.key), KEY_MODE)
    write_atomically(certificate_file(folder, item), pki.certificate_pem(issued.certificate), CERTIFICATE_MODE)
