"""The conformance targets file of a stack brought up here (`hubnode up` or `deploy`): what the suite needs.

Written from the plans (endpoints), the spec (components become capabilities), the secrets folder (tokens)
and the PKI (the CA, and client certificates each meant to provoke one refusal at a peer door, made with
the project's PKI code). Paths in the file are relative to it, so the folder can be copied as a whole.
The suite reads only this file: it never looks at the stack, the plans or the PKI itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from infra import pki
from infra.idp_realm import PORTAL_CLIENT, PORTAL_SECRET, user_secret
from infra.pki_store import REVOKED_PROBE, ca_key_file, store_issued
from infra.plan import NodePlan
from infra.spec import DemoUser, StackSpec
from infra.state import StackState

#: Token secret (infra/plan.py) -> the credential name scenarios use for it.
CONNECTOR_TOKENS = {"cn-admin-token": "suite", "cn-reader-token": "read-only"}
TRUSTCENTRE_TOKENS = {"tc-admin-token": "trustcentre"}
#: What a node can do for the suite, by the component that does it.
COMPONENT_CAPABILITIES: Mapping[str, tuple[str, ...]] = {
    "connector": ("fhir", "ingest", "read", "processes", "audit"),
    "trustcentre": ("trustcentre",),
    "portal": ("portal",),
}
#: Portal users the suite signs in as, by the realm role of the stack's demo user: credential name -> role.
PORTAL_LOGINS = {"portal-clinician": "clinician", "portal-staff": "site-admin"}
#: Roles that may start no process carrying patient data: their certificate shows a wrong-role refusal.
_NARROW_ROLES = ("research", "ttp")
_BROAD_ROLES = ("dic", "practice")


#: How the suite takes one node's gateway down and brings it back (None: it cannot, `control` is not offered).
Controls = Callable[[NodePlan], dict[str, list[str]] | None]


def write_targets(
    state: StackState, spec: StackSpec, plans: Sequence[NodePlan], now: datetime, controls: Controls
) -> Path:
    """Write the stack's targets file (and its client certificates); return its path."""
    folder = state.conformance_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    components = {node.site: node.components for node in spec.nodes}
    users = {node.site: node.users for node in spec.nodes}
    certificates = _client_certificates(state, plans, now)
    targets = {
        "name": f"local stack {spec.stack}",
        "versions": {"hubnode": metadata.version("hubnode")},
        "nodes": {
            plan.site: {
                **_node(state, plan, components[plan.site], certificates.get(plan.site, {}), controls(plan)),
                **_logins(state, plan, users[plan.site]),
            }
            for plan in plans
        },
    }
    header = "# Written by `hubnode up`/`deploy` (infra/targets_file.py); rewritten on every bring-up.\n"
    state.targets_file.write_text(header + yaml.safe_dump(targets, sort_keys=False), encoding="utf-8")
    return state.targets_file


def _node(
    state: StackState,
    plan: NodePlan,
    components: Sequence[str],
    certificates: Mapping[str, Mapping[str, str]],
    controls: dict[str, list[str]] | None,
) -> dict[str, Any]:
    folder, endpoints = state.conformance_dir, plan.endpoints
    gateway = endpoints.get("gateway")
    entry: dict[str, Any] = {"role": plan.role}
    if gateway is not None:
        entry["public_url"] = gateway
    else:  # a lone node without a gateway: its services answer on their own ports
        entry["public_url"] = str(endpoints.get("fhir", endpoints.get("trustcentre", ""))).removesuffix("/fhir")
        if "fhir" in endpoints:
            entry["fhir_url"] = endpoints["fhir"]
    if "trustcentre" in components:
        entry["trustcentre_url"] = f"{gateway}/ttp-fhir/fhir" if gateway else endpoints.get("trustcentre")
    if "peer" in endpoints:
        entry["peer_url"] = endpoints["peer"]
    ca = state.pki_dir / "ca.crt"
    if ca.is_file():
        entry["ca_file"] = _relative(ca, folder)
    secrets = state.secrets_dir(plan.site)
    names = {
        **(CONNECTOR_TOKENS if "connector" in components else {}),
        **(TRUSTCENTRE_TOKENS if "trustcentre" in components else {}),
    }
    entry["tokens"] = {
        name: _relative(secrets / secret, folder) for secret, name in names.items() if (secrets / secret).is_file()
    }
    capabilities = [c for component in components for c in COMPONENT_CAPABILITIES.get(component, ())]
    if gateway is None and "fhir" in components:
        capabilities += ["fhir", "read"]
    if "peer" in endpoints and certificates:
        capabilities.append("mtls")
        entry["client_certificates"] = dict(certificates)
    if controls is not None:
        capabilities.append("control")
        entry["controls"] = controls
    entry["capabilities"] = list(dict.fromkeys(capabilities))
    return entry


def _logins(state: StackState, plan: NodePlan, users: Sequence[DemoUser]) -> dict[str, Any]:
    """How the suite signs in at the node's portal: a demo user per role, by the password grant of local stacks."""
    if "portal" not in plan.endpoints or "idp" not in plan.endpoints or not users:
        return {}
    folder, secrets = state.conformance_dir, state.secrets_dir(plan.site)
    logins = {}
    for credential, role in PORTAL_LOGINS.items():
        user = next((u for u in users if u.role == role), None)
        if user is None or not (secrets / user_secret(user.username)).is_file():
            continue
        logins[credential] = {
            "token_url": f"{plan.endpoints['idp']}/protocol/openid-connect/token",
            "client_id": PORTAL_CLIENT,
            "client_secret": _relative(secrets / PORTAL_SECRET, folder),
            "username": user.username,
            "password": _relative(secrets / user_secret(user.username), folder),
        }
    return {"logins": logins} if logins else {}


def docker_controls(plan: NodePlan) -> dict[str, list[str]] | None:
    """Stopping the node's gateway container takes its doors down; starting it brings it back as it was."""
    container = next((s.container_name for s in plan.services if s.component == "gateway"), None)
    if container is None:
        return None
    door = [sys.executable, "-m", "infra.door"]
    return {"stop": [*door, "stop", container], "start": [*door, "start", container]}


def kubernetes_controls(kubectl: Path, kubeconfig: Path) -> Controls:
    """The same on a cluster: the gateway's Deployment in the node's namespace scaled to none and back."""

    def controls(plan: NodePlan) -> dict[str, list[str]] | None:
        if not any(s.component == "gateway" for s in plan.services):
            return None
        door = [sys.executable, "-m", "infra.door", f"--kubectl={kubectl}", f"--kubeconfig={kubeconfig}"]
        target = f"{plan.network}/gateway"
        return {"stop": [*door, "stop", target], "start": [*door, "start", target]}

    return controls


def _client_certificates(
    state: StackState, plans: Sequence[NodePlan], now: datetime
) -> dict[str, dict[str, dict[str, str]]]:
    """Site -> kind -> {cert, key}: made once per bring-up for the federation, chosen per node for the rest."""
    pki_folder = state.pki_dir
    ca_files = pki_folder / "ca.crt", ca_key_file(pki_folder)
    if not all(path.is_file() for path in ca_files):
        return {}
    ca = pki.Issued(pki.load_certificate(ca_files[0].read_bytes()), pki.load_key(ca_files[1].read_bytes()))
    folder = state.conformance_dir
    made = folder / "client-certificates"
    made.mkdir(exist_ok=True, mode=0o700)
    other_ca = pki.issue_ca("not-this-federation", now)
    shared = {
        "other-ca": pki.issue_node(other_ca, "intruder", (), now),
        "expired": pki.issue_node(ca, "expired", (), now - timedelta(days=2), validity=timedelta(days=1)),
    }
    files: dict[str, dict[str, str]] = {}
    for kind, issued in shared.items():
        store_issued(made, kind, issued)
        files[kind] = _pair(made, kind, folder)
    if (pki_folder / f"{REVOKED_PROBE}.crt").is_file():  # kept revoked by the PKI of a local stack
        files["revoked"] = _pair(pki_folder, REVOKED_PROBE, folder)
    roles = {plan.site: plan.role for plan in plans if "peer" in plan.endpoints}
    per_site: dict[str, dict[str, dict[str, str]]] = {}
    for site in roles:
        chosen = _chosen(site, roles, pki_folder, folder)
        # The same name as an allowed peer, from the federation CA, but a key of its own: an impersonation.
        impostor = pki.issue_node(ca, _valid_peer(site, roles), (), now)
        store_issued(made, f"not-allowed-{site}", impostor)
        chosen["not-allowed"] = _pair(made, f"not-allowed-{site}", folder)
        per_site[site] = {**{kind: dict(pair) for kind, pair in files.items()}, **chosen}
    return per_site


def _chosen(site: str, roles: Mapping[str, str], pki_folder: Path, folder: Path) -> dict[str, dict[str, str]]:
    """`valid`: another allowed node that may start processes here; `wrong-role`: one whose role may not; `own`."""
    others = [other for other in roles if other != site] or [site]
    chosen = {
        "valid": _valid_peer(site, roles),
        "wrong-role": next((o for o in [*others, site] if roles[o] in _NARROW_ROLES), None),
        "own": site,
    }
    return {
        kind: _pair(pki_folder, other, folder)
        for kind, other in chosen.items()
        if other is not None and (pki_folder / f"{other}.crt").is_file()
    }


def _valid_peer(site: str, roles: Mapping[str, str]) -> str:
    """Another node that may start processes at `site` (the site itself if it is alone)."""
    others = [other for other in roles if other != site] or [site]
    return next((o for o in others if roles[o] in _BROAD_ROLES), others[0])


def _pair(where: Path, item: str, folder: Path) -> dict[str, str]:
    return {"cert": _relative(where / f"{item}.crt", folder), "key": _relative(where / f"{item}.key", folder)}


def _relative(path: Path, folder: Path) -> str:
    return os.path.relpath(path, folder)
