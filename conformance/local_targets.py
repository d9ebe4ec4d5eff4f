"""The targets file of a stack `hubnode up` brought up on this host, written from what it left behind.

`.hubnode/<stack>/endpoints.json` says where each node answers, the stack file which components it runs
(capabilities follow from them), `secrets/<site>/` holds the tokens and `pki/` the federation CA. Client
certificates for trust tests are made here with the project's PKI code, each meant to provoke one
refusal at a peer door (`CLIENT_CERTIFICATE_KINDS`). Paths in the file are relative to it, so the
folder can be copied as a whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from conformance.runner import SUITE_CREDENTIAL, TRUSTCENTRE_CREDENTIAL
from infra import pki
from infra.errors import HubnodeError
from infra.pki_store import store_issued
from infra.stackfile import load_stack

TARGETS_FILE = "targets.yaml"
#: Token secret (infra/plan.py) -> the credential name scenarios use for it.
CONNECTOR_TOKENS = {"cn-admin-token": SUITE_CREDENTIAL, "cn-reader-token": "read-only"}
TRUSTCENTRE_TOKEN = "tc-admin-token"  # noqa: S105 - a secret's file name, not a secret
#: What a node can do for the suite, by the component that does it.
COMPONENT_CAPABILITIES: Mapping[str, tuple[str, ...]] = {
    "connector": ("ingest", "read", "processes", "audit"),
    "trustcentre": ("trustcentre",),
    "portal": ("portal",),
}
#: Roles that may start no process carrying patient data: their certificate shows a wrong-role refusal.
_NARROW_ROLES = ("research", "ttp")
_BROAD_ROLES = ("dic", "practice")


def state_folder(project_dir: Path, stack: str) -> Path:
    """Where `hubnode` keeps a stack's local state."""
    return project_dir / ".hubnode" / stack


def write_local_targets(project_dir: Path, stack: str, now: datetime | None = None) -> Path:
    """Write `.hubnode/<stack>/conformance/targets.yaml` (and its client certificates); return its path."""
    state = state_folder(project_dir, stack)
    endpoints_file = state / "endpoints.json"
    try:
        recorded = json.loads(endpoints_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubnodeError(
            f"no {endpoints_file}: stack {stack} was not brought up here", fix=f"run: hubnode up --stack {stack}"
        ) from None
    spec = load_stack(project_dir, stack)
    components = {node.site: node.components for node in spec.nodes}
    folder = state / "conformance"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    nodes: list[Mapping[str, Any]] = recorded["nodes"]
    unknown = [node["site"] for node in nodes if node["site"] not in components]
    if unknown:
        raise HubnodeError(
            f"{endpoints_file} names sites the stack file no longer has: {', '.join(unknown)}",
            fix=f"bring the stack up again: hubnode up --stack {stack}",
        )
    certificates = _client_certificates(state, folder, nodes, now or datetime.now(UTC))
    targets = {
        "name": f"local stack {stack}",
        "versions": {"hubnode": metadata.version("hubnode")},
        "nodes": {
            node["site"]: _node(state, folder, node, components[node["site"]], certificates.get(node["site"], {}))
            for node in nodes
        },
    }
    path = folder / TARGETS_FILE
    header = f"# Written by conformance.local_targets from {endpoints_file}; rewritten on every local check.\n"
    path.write_text(header + yaml.safe_dump(targets, sort_keys=False), encoding="utf-8")
    return path


def _node(
    state: Path,
    folder: Path,
    node: Mapping[str, Any],
    components: Sequence[str],
    certificates: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    site, endpoints = node["site"], node["endpoints"]
    gateway = endpoints.get("gateway")
    entry: dict[str, Any] = {"role": node["role"]}
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
    ca = state / "pki" / "ca.crt"
    if ca.is_file():
        entry["ca_file"] = _relative(ca, folder)
    secrets = state / "secrets" / site
    tokens = {name: secrets / secret for secret, name in CONNECTOR_TOKENS.items() if "connector" in components}
    if "trustcentre" in components:
        tokens[TRUSTCENTRE_CREDENTIAL] = secrets / TRUSTCENTRE_TOKEN
    entry["tokens"] = {name: _relative(path, folder) for name, path in tokens.items() if path.is_file()}
    capabilities = [c for component in components for c in COMPONENT_CAPABILITIES.get(component, ())]
    if gateway is None and "fhir" in components:
        capabilities.append("read")
    if "peer" in endpoints and certificates:
        capabilities.append("mtls")
        entry["client_certificates"] = dict(certificates)
    entry["capabilities"] = list(dict.fromkeys(capabilities))
    return entry


def _client_certificates(
    state: Path, folder: Path, nodes: Sequence[Mapping[str, Any]], now: datetime
) -> dict[str, dict[str, dict[str, str]]]:
    """Site -> kind -> {cert, key}: made once per run for the federation, chosen per node for valid/wrong-role."""
    pki_folder = state / "pki"
    ca_files = pki_folder / "ca.crt", pki_folder / "ca.key"
    if not all(path.is_file() for path in ca_files):
        return {}
    ca = pki.Issued(pki.load_certificate(ca_files[0].read_bytes()), pki.load_key(ca_files[1].read_bytes()))
    made = folder / "client-certificates"
    made.mkdir(exist_ok=True, mode=0o700)
    other_ca = pki.issue_ca("not-this-federation", now)
    shared = {
        "other-ca": pki.issue_node(other_ca, "intruder", (), now),
        "expired": pki.issue_node(ca, "expired", (), now - timedelta(days=2), validity=timedelta(days=1)),
        "not-allowed": pki.issue_node(ca, "not-allowed", (), now),
    }
    files: dict[str, dict[str, str]] = {}
    for kind, issued in shared.items():
        store_issued(made, kind, issued)
        files[kind] = _pair(made, kind, folder)
    roles = {str(node["site"]): str(node["role"]) for node in nodes}
    return {
        site: {**{kind: dict(pair) for kind, pair in files.items()}, **_chosen(site, roles, pki_folder, folder)}
        for site in roles
    }


def _chosen(site: str, roles: Mapping[str, str], pki_folder: Path, folder: Path) -> dict[str, dict[str, str]]:
    """`valid`: another allowed node that may start processes here; `wrong-role`: one whose role may not."""
    others = [other for other in roles if other != site] or [site]
    chosen = {
        "valid": next((o for o in others if roles[o] in _BROAD_ROLES), others[0]),
        "wrong-role": next((o for o in [*others, site] if roles[o] in _NARROW_ROLES), None),
    }
    return {
        kind: _pair(pki_folder, other, folder)
        for kind, other in chosen.items()
        if other is not None and (pki_folder / f"{other}.crt").is_file()
    }


def _pair(where: Path, item: str, folder: Path) -> dict[str, str]:
    return {"cert": _relative(where / f"{item}.crt", folder), "key": _relative(where / f"{item}.key", folder)}


def _relative(path: Path, folder: Path) -> str:
    return os.path.relpath(path, folder)
