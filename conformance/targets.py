"""Targets: which nodes the suite talks to, where they answer, with which credentials, and what they can do.

Written by `hubnode up` for a local stack (`.hubnode/<stack>/conformance/targets.yaml`, see
`local_targets_file`) or by hand for another DigiHUB's node. YAML or JSON (JSON is YAML). A target that
lacks a capability a step needs gets that step reported as not applicable, never as passed; so
capabilities are declared, not guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from conformance._yaml import Fields, Node, Problems, load_document
from conformance.logins import Login, access_token

#: What a node may offer; steps need some of these (see `docs/scenarios.md`).
CAPABILITIES = ("fhir", "ingest", "read", "processes", "trustcentre", "audit", "portal", "mtls", "control")
ROLES = ("dic", "practice", "research", "ttp")
#: Client certificates a trust test may present at a peer listener, by what they are meant to provoke.
CLIENT_CERTIFICATE_KINDS = ("valid", "own", "other-ca", "expired", "revoked", "not-allowed", "wrong-role")
#: What a target's `controls` may do to its peer door (a peer that is down, and back).
CONTROL_ACTIONS = ("stop", "start")
#: Where `hubnode up` writes the targets file of a local stack, relative to the project folder.
LOCAL_TARGETS = ".hubnode/{stack}/conformance/targets.yaml"


def local_targets_file(project_dir: Path, stack: str) -> Path:
    """The targets file `hubnode up` wrote for a local stack (whether or not it exists yet)."""
    return project_dir / LOCAL_TARGETS.format(stack=stack)


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate and its key (PEM files) for mutual-TLS tests."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class NodeTarget:
    """One node as the suite sees it."""

    site: str
    role: str
    public_url: str
    fhir_url: str
    trustcentre_url: str | None
    peer_url: str | None
    ca_file: Path | None
    tokens: Mapping[str, Path]
    client_certificates: Mapping[str, ClientCertificate]
    capabilities: frozenset[str]
    #: Action (`stop`, `start`) -> the command (argument list) that does it to the node's peer door.
    controls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Credentials the suite gets a token for by signing in (`conformance.logins`), e.g. at a portal.
    logins: Mapping[str, Login] = field(default_factory=dict)

    def token(self, credential: str) -> str:
        """The bearer token of `credential`: read from its file, or got by signing in (secrets stay in files)."""
        if credential in self.logins:
            return access_token(self.logins[credential], self.ca_file)
        if credential not in self.tokens:
            known = ", ".join(sorted([*self.tokens, *self.logins]))
            raise KeyError(f"node {self.site} has no token {credential!r}; it has: {known}")
        return self.tokens[credential].read_text(encoding="utf-8").strip()

    def has_credential(self, credential: str) -> bool:
        """Whether the node holds `credential`, as a token file or a login."""
        return credential in self.tokens or credential in self.logins


@dataclass(frozen=True)
class Targets:
    """A named set of nodes (a federation, or one node under test) and the software versions it runs."""

    name: str
    nodes: Mapping[str, NodeTarget]
    versions: Mapping[str, str] = field(default_factory=dict)

    def trustcentre(self) -> NodeTarget | None:
        """The node that hosts the federation's trust centre, if any target does."""
        return next((node for node in self.nodes.values() if "trustcentre" in node.capabilities), None)


def load_targets(path: Path) -> Targets:
    """Read a targets file; every problem (missing keys, unknown capabilities, missing files) is raised at once."""
    root, problems = load_document(path)
    fields = Fields(root, problems, "the targets file")
    name = fields.text("name", required=True) or ""
    versions = {key: str(value.value) for key, value in fields.mapping("versions")}
    nodes = {site: _node(site, node, path.parent, problems) for site, node in fields.mapping("nodes", required=True)}
    fields.finish()
    if not nodes and fields.has("nodes"):
        problems.add(fields.line, "the targets file names no nodes")
    problems.raise_if_any()
    return Targets(name, nodes, versions)


def _node(site: str, node: Node, folder: Path, problems: Problems) -> NodeTarget:
    fields = Fields(node, problems, f"node {site}")
    role = fields.text("role", required=True, choices=ROLES) or ""
    public_url = (fields.text("public_url", required=True) or "").rstrip("/")
    fhir_url = (fields.text("fhir_url") or f"{public_url}/fhir").rstrip("/")
    capabilities = frozenset(value for value, _ in fields.strings("capabilities"))
    for value, line in fields.strings("capabilities"):
        if value not in CAPABILITIES:
            problems.add(line, f"node {site}: unknown capability {value!r}; known: {', '.join(CAPABILITIES)}")
    tokens = {
        name: _file(folder, entry, f"node {site}: token {name}", problems) for name, entry in fields.mapping("tokens")
    }
    certificates = {}
    for kind, entry in fields.mapping("client_certificates"):
        if kind not in CLIENT_CERTIFICATE_KINDS:
            problems.add(
                entry.line,
                f"node {site}: unknown certificate kind {kind!r}; known: {', '.join(CLIENT_CERTIFICATE_KINDS)}",
            )
        pair = Fields(entry, problems, f"node {site}: certificate {kind}")
        cert, key = pair.node("cert", required=True), pair.node("key", required=True)
        pair.finish()
        if cert is not None and key is not None:
            where = f"node {site}: certificate {kind}"
            certificates[kind] = ClientCertificate(
                _file(folder, cert, where, problems), _file(folder, key, where, problems)
            )
    controls = _controls(site, fields, problems)
    logins = {name: _login(folder, site, name, entry, problems) for name, entry in fields.mapping("logins")}
    ca = fields.node("ca_file")
    target = NodeTarget(
        site=site,
        role=role,
        public_url=public_url,
        fhir_url=fhir_url,
        trustcentre_url=fields.text("trustcentre_url"),
        peer_url=fields.text("peer_url"),
        ca_file=_file(folder, ca, f"node {site}: ca_file", problems) if ca is not None else None,
        tokens=tokens,
        client_certificates=certificates,
        capabilities=capabilities,
        controls=controls,
        logins=logins,
    )
    fields.finish()
    if "trustcentre" in capabilities and target.trustcentre_url is None:
        problems.add(node.line, f"node {site}: capability trustcentre needs `trustcentre_url`")
    if "mtls" in capabilities and (target.peer_url is None or not certificates):
        problems.add(node.line, f"node {site}: capability mtls needs `peer_url` and `client_certificates`")
    if "control" in capabilities and set(controls) != set(CONTROL_ACTIONS):
        problems.add(
            node.line, f"node {site}: capability control needs `controls` with {' and '.join(CONTROL_ACTIONS)}"
        )
    return target


def _controls(site: str, fields: Fields, problems: Problems) -> dict[str, tuple[str, ...]]:
    """Action -> command (a list of strings run without a shell) that does it to the node's peer door."""
    controls: dict[str, tuple[str, ...]] = {}
    for action, entry in fields.mapping("controls"):
        command = entry.plain()
        if action not in CONTROL_ACTIONS:
            problems.add(entry.line, f"node {site}: unknown control {action!r}; known: {', '.join(CONTROL_ACTIONS)}")
        elif not isinstance(command, list) or not command or not all(isinstance(part, str) for part in command):
            problems.add(entry.line, f"node {site}: control {action} must be a command as a list of strings")
        else:
            controls[action] = tuple(command)
    return controls


def _login(folder: Path, site: str, name: str, node: Node, problems: Problems) -> Login:
    """A login: `token_url`, `client_id`, `username`, and files holding `client_secret` and `password`."""
    where = f"node {site}: login {name}"
    fields = Fields(node, problems, where)
    texts = {key: fields.text(key, required=True) or "" for key in ("token_url", "client_id", "username")}
    files = {
        key: _file(folder, found, where, problems) if (found := fields.node(key, required=True)) else folder
        for key in ("client_secret", "password")
    }
    scope = fields.text("scope") or "openid"
    fields.finish()
    return Login(
        texts["token_url"], texts["client_id"], files["client_secret"], texts["username"], files["password"], scope
    )


def _file(folder: Path, node: Node, where: str, problems: Problems) -> Path:
    path = folder / str(node.value)
    if not isinstance(node.value, str) or not path.is_file():
        problems.add(node.line, f"{where}: no such file {path}")
    return path
