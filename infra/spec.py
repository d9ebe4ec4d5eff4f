"""Stack config -> validated `StackSpec`: every mistake named by key, value and what is allowed.

Pure: takes the `hubnode:*` keys of a Pulumi stack config as plain Python values (as YAML or
`pulumi.Config.get_object` yields them) and does no I/O, so a broken stack fails before anything
is declared, and the CLI and the Pulumi program reject exactly the same files.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

from infra.errors import HubnodeError
from infra.mutants import MUTANTS
from infra.schedule import Schedule, ScheduleError, parse_schedule

Role = Literal["dic", "practice", "ttp", "research"]
Database = Literal["embedded", "postgres"]
ImageSourceKind = Literal["local", "registry"]
#: `local`: a developer's or CI's stack (demo users allowed); `site`: a real site's node.
Environment = Literal["local", "site"]
UserRole = Literal["patient", "clinician", "site-admin"]

ROLES: tuple[str, ...] = get_args(Role)
DATABASES: tuple[str, ...] = get_args(Database)
IMAGE_SOURCES: tuple[str, ...] = get_args(ImageSourceKind)
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)
#: What `pulumi up` declares the nodes on: a Docker host (`infra.docker_node`) or a Kubernetes cluster
#: (`infra.kubernetes_node`, one namespace per node).
Platform = Literal["docker", "kubernetes"]
PLATFORMS: tuple[str, ...] = get_args(Platform)
#: The realm roles of the node's identity provider, which its demo users are given.
USER_ROLES: tuple[str, ...] = get_args(UserRole)
#: Pseudonym domains the trust centre keeps for itself (the ids each node knows a person by).
RESERVED_DOMAIN_PREFIX = "persons."
#: Components this version can run.
COMPONENTS: tuple[str, ...] = ("fhir", "trustcentre", "connector", "gateway", "idp", "portal")
#: Why each component but HAPI on PostgreSQL runs as one replica only (`replicas` of a node on Kubernetes).
SINGLE_REPLICA: Mapping[str, str] = {
    "trustcentre": "it holds its pseudonyms and consents in one store beside one process",
    "gateway": "its doors are host ports, which one pod per host holds",
    "idp": "Keycloak's sessions are cached per process without a cluster of its own here",
    "portal": "its sign-in sessions live in its process",
}
#: What a node of each role runs when its entry in `hubnode:nodes` names no components.
ROLE_COMPONENTS: Mapping[str, tuple[str, ...]] = {
    "dic": ("fhir", "trustcentre", "connector", "gateway"),
    "practice": ("fhir", "connector", "gateway"),
    "research": ("fhir", "connector", "gateway"),
    "ttp": ("trustcentre", "gateway"),
}
#: Images a site may point at its own registry (`hubnode:images.<name>`).
IMAGE_NAMES: tuple[str, ...] = ("fhir", "db", "trustcentre", "connector", "gateway", "idp", "portal")
#: Host ports: `gateway` is the node's public TLS door, `peer` its mutual-TLS door for other nodes.
PORT_NAMES: tuple[str, ...] = ("fhir", "trustcentre", "gateway", "peer")
DEFAULT_PORTS: Mapping[str, int] = {"fhir": 8080, "trustcentre": 8081, "gateway": 8443, "peer": 9443}
DEFAULT_FEDERATION_DOMAIN = "hubnode.test"
#: Settings a pseudonym domain may carry (checked in full by the trust centre at start-up).
DOMAIN_SETTINGS: Mapping[str, type] = {
    "alphabet": str,
    "length": int,
    "prefix": str,
    "check_digit": bool,
    "multiple_pseudonyms": bool,
}
DEFAULT_BASE_IMAGE = "hubnode/base:trixie"
#: What a consent domain, its policies, templates and their modules may say (checked in full by the trust centre).
CONSENT_DOMAIN_KEYS: tuple[str, ...] = ("name", "signerIdTypes", "policies", "templates")
CONSENT_POLICY_KEYS: tuple[str, ...] = ("name", "version", "codings")
CONSENT_TEMPLATE_KEYS: tuple[str, ...] = ("name", "version", "type", "validityYears", "modules")
CONSENT_TEMPLATE_TYPES: tuple[str, ...] = ("consent", "opt-out")

NAMESPACE = "hubnode"
#: Keys read by adapters rather than the spec (secrets never pass through plain data).
SECRET_KEYS: tuple[str, ...] = (
    "dbPassword",
    "trustcentreSecret",
    "trustcentreAdminToken",
    "connectorAdminToken",
    "connectorReaderToken",
    "connectorTrustcentreToken",
    "gatewaySecret",
    "idpAdminPassword",
    "idpPortalSecret",
    "idpPortalServiceSecret",
    "portalConnectorToken",
    "portalTrustcentreToken",
)
#: Which Pulumi secret (`pulumi config set --secret hubnode:<key>`) fills each secret file of a plan.
SECRET_SOURCES: dict[str, str] = {
    "db-password": "dbPassword",
    "tcdb-password": "dbPassword",
    "cndb-password": "dbPassword",
    "tc-secret": "trustcentreSecret",
    "tc-admin-token": "trustcentreAdminToken",
    "cn-admin-token": "connectorAdminToken",
    "cn-reader-token": "connectorReaderToken",
    "cn-tc-token": "connectorTrustcentreToken",
    "gateway-secret": "gatewaySecret",
    "kcdb-password": "dbPassword",
    "idp-admin-password": "idpAdminPassword",
    "idp-portal-secret": "idpPortalSecret",
    "idp-portal-service-secret": "idpPortalServiceSecret",
    "pt-cn-token": "portalConnectorToken",
    "pt-tc-token": "portalTrustcentreToken",
}
NODE_KEYS: tuple[str, ...] = (
    "site",
    "role",
    "components",
    "database",
    "ports",
    "images",
    "identifierSystems",
    "publicUrl",
    "users",
    "trustCentre",
    "validation",
    "replicas",
)
#: How a node's connector holds input to the profiles it declares: refuse on errors, store and warn, or not ask.
VALIDATION_MODES: tuple[str, ...] = ("strict", "warn", "off")
#: Terminology is checked whenever profiles are: its errors refuse or warn, never pass unreported.
TERMINOLOGY_MODES: tuple[str, ...] = ("strict", "warn")
#: How a node's connector reaches its trust centre through the MOSAIC TTP-FHIR IGs (`TtpSpec`).
TTP_KEYS: tuple[str, ...] = ("url", "epixDomain", "epixSource", "consentDomain", "caCertificate")
FEDERATION_KEYS: tuple[str, ...] = ("federation", "nodes", "peers", "projects")
KEYS: tuple[str, ...] = (
    *NODE_KEYS,
    "domains",
    "consentDomains",
    "environment",
    "platform",
    "kubernetes",
    "mutant",
    "backup",
    *FEDERATION_KEYS,
    *SECRET_KEYS,
)
#: What `hubnode:kubernetes` may say (`KubernetesSettings`).
KUBERNETES_KEYS: tuple[str, ...] = ("storageClass", "volumeSize", "serviceRange", "hostPath")
#: The cluster's Service range (kube-apiserver `--service-cluster-ip-range`, notes/cluster-and-pulumi-engine.md).
DEFAULT_SERVICE_RANGE = "10.96.0.0/24"
_QUANTITY_PATTERN = re.compile(r"^[1-9][0-9]*(Mi|Gi|Ti)$")
_DNS_SUBDOMAIN_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
#: What `hubnode:backup` may say (`BackupPolicy`).
BACKUP_KEYS: tuple[str, ...] = ("schedule", "keep", "keepDays", "output")
#: Sources of the identifiers a node's connector asserts as its own: its source records, its MRNs.
SOURCE_SYSTEM_BASE = "https://hubnode.org/fhir/sid/source"
#: What a demo user entry may say; `password` is refused, since passwords are never literals in a stack file.
USER_KEYS: tuple[str, ...] = ("username", "role", "patient", "fhirUser", "firstName", "lastName")

_SITE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_STACK_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IMAGE_REF_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_DOMAIN_PATTERN = re.compile(r"^(?=.{1,200}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
_THUMBPRINT_PATTERN = re.compile(r"^[0-9a-f]{128}$")
_TTP_NAME_PATTERN = re.compile(r"^\S(.{0,253}\S)?$")
_TTP_URL_PATTERN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_PUBLIC_URL_PATTERN = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?/?$")
#: Keycloak keeps user names in lower case; the name also names the user's password file.
_USERNAME_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{2,63}$")
_FHIR_ID_PATTERN = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
_FHIR_USER_PATTERN = re.compile(r"^(Patient|Practitioner|PractitionerRole|RelatedPerson|Person)/[A-Za-z0-9.-]{1,64}$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config: the full key (`hubnode:ports.fhir`), its value, the rule."""

    key: str
    value: object
    allowed: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.allowed}"


class SpecError(HubnodeError):
    """The stack config is invalid; lists every problem at once so one edit can fix them all."""

    def __init__(self, problems: list[Problem], source: str = "stack config") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{source} is invalid:\n{lines}",
            fix=f"edit {source} (keys are documented in README.md, 'Stack configuration')",
        )


@dataclass(frozen=True)
class ImageSource:
    """Where a node's images come from: built here from `base_image`, or pulled from a registry.

    `overrides` maps an image name (`fhir`, `db`) to a full reference, e.g. the official
    `postgres:17`, whose environment contract our own database image follows.
    """

    kind: ImageSourceKind = "local"
    base_image: str = DEFAULT_BASE_IMAGE
    registry: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PseudonymDomain:
    """A pseudonym domain the trust centre creates at start-up (e.g. one per research project)."""

    name: str
    settings: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsentDomainSpec:
    """A consent domain of the trust centre (gICS): its signer id types, policies and templates, as declared."""

    name: str
    settings: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoUser:
    """A user a local stack puts into its node's identity provider; its password is generated, never declared.

    `patient` is the FHIR Patient id for SMART's `patient` claim, `fhir_user` the `fhirUser` reference.
    """

    username: str
    role: UserRole
    patient: str = ""
    fhir_user: str = ""
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True)
class TtpSpec:
    """How a node's connector speaks to its trust centre through the MOSAIC TTP-FHIR IGs alone.

    With a `url`, the site's own gPAS/gICS/E-PIX gateway replaces the federation's trust centre for the
    connector (reached with the `connectorTrustcentreToken` secret, over TLS checked against
    `ca_certificate`); without one, the federation's trust centre is used through the same operations.
    """

    epix_domain: str
    url: str | None = None
    #: The E-PIX source the node's identities come from (None: the site name).
    epix_source: str | None = None
    consent_domain: str | None = None
    #: PEM of the CA that signed the site's gateway (None: the system's trust store).
    ca_certificate: str | None = None


@dataclass(frozen=True)
class ValidationSpec:
    """`validation`: what the connector does with what HAPI's `$validate` finds (docs/federation.md).

    The default suits a data integration centre: errors of structure and cardinality against the
    declared profiles refuse the input; terminology errors are stored and reported as warnings.
    """

    profiles: str = "strict"
    terminology: str = "warn"


@dataclass(frozen=True)
class NodeSpec:
    """One hub node as its site declares it; `host` is its name inside the federation."""

    site: str
    role: Role
    components: tuple[str, ...]
    database: Database
    ports: Mapping[str, int]
    images: ImageSource
    domains: tuple[PseudonymDomain, ...] = ()
    #: Consent domains (none: the trust centre's built-in MII broad consent).
    consent_domains: tuple[ConsentDomainSpec, ...] = ()
    host: str = ""
    #: Identifier systems of the site's own patient records (MRNs) besides its source system.
    identifier_systems: tuple[str, ...] = ()
    #: The public door's base URL as clients know it (Bundle links point there); None: the gateway port here.
    public_url: str | None = None
    users: tuple[DemoUser, ...] = ()
    #: The IG contract the connector speaks to its trust centre in (None: hubnode's own `$requestMPI`).
    ttp: TtpSpec | None = None
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    #: Pods per component on Kubernetes (`replicas: {fhir: 2}`); a component not named runs one.
    replicas: Mapping[str, int] = field(default_factory=dict)

    @property
    def own_identifier_systems(self) -> tuple[str, ...]:
        """What the node's connector may assert as its own at the trust centre: its source system and MRNs."""
        return (f"{SOURCE_SYSTEM_BASE}/{self.site}", *self.identifier_systems)


@dataclass(frozen=True)
class PeerSpec:
    """A node of another site that this stack's nodes may exchange with (a real site's federation)."""

    site: str
    role: Role
    address: str
    thumbprint: str


@dataclass(frozen=True)
class Project:
    """A research project: data sent for it is pseudonymised in its own domain, by the nodes named `senders`."""

    name: str
    domain: str
    senders: tuple[str, ...] = ()
    #: What a patient's ledger shows for a use of their data in this project (the name when no title).
    title: str = ""
    #: In plain language, for patients: what the project wants to find out.
    summary: str = ""
    #: Who receives the extracts (an institution, a registry).
    recipient: str = ""
    #: The kinds of data sent for it, as patients would name them ("Diagnosen", "Laborwerte").
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Federation:
    """The federation the stack's nodes belong to: its name (certificate organisation) and DNS domain."""

    name: str
    domain: str = DEFAULT_FEDERATION_DOMAIN
    peers: tuple[PeerSpec, ...] = ()
    projects: tuple[Project, ...] = ()


@dataclass(frozen=True)
class KubernetesSettings:
    """`hubnode:kubernetes`: what the cluster decides rather than the plan (`infra.kube_manifests`).

    The storage class and size of each volume's claim, and the Service range whose addresses the
    nodes' Services get (fixed ClusterIPs: the cluster has no DNS). `host_path`, for a single-node
    cluster without a volume provisioner (`hubnode cluster`): a folder on that node under which each
    claim gets a PersistentVolume of its own, bound to it; relative to the project folder until `resolved`.
    """

    storage_class: str = "local-path"
    volume_size: str = "10Gi"
    service_range: str = DEFAULT_SERVICE_RANGE
    host_path: str | None = None

    def resolved(self, project: Path) -> KubernetesSettings:
        """These settings with `host_path` made absolute (the kubelet takes nothing else)."""
        if self.host_path is None:
            return self
        return replace(self, host_path=str((project / self.host_path).resolve()))


@dataclass(frozen=True)
class BackupPolicy:
    """`hubnode:backup`: when each node is backed up, how many archives stay, where they go.

    An archive stays when it is among the newest `keep` or younger than `keep_days` (either rule keeps
    it); with neither set, none is removed. `output` is relative to the project folder unless absolute.
    """

    schedule: Schedule | None = None
    keep: int | None = None
    keep_days: int | None = None
    output: str | None = None


@dataclass(frozen=True)
class StackSpec:
    """A Pulumi stack: its name, the nodes it declares, and their federation (None for a lone node)."""

    stack: str
    nodes: tuple[NodeSpec, ...]
    federation: Federation | None = None
    #: `local` (a developer's or CI's stack: test-only settings allowed) or `site` (a real node).
    environment: Environment = "site"
    #: Where `pulumi up` runs the nodes (`hubnode up` always runs them on Docker).
    platform: Platform = "docker"
    #: How the nodes sit in a Kubernetes cluster (`pulumi up` on `kubernetes`, and `hubnode render`).
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    #: A faulty variant switched on to prove the conformance suite fails it (infra.mutants); local only.
    mutant: str | None = None
    #: Schedule and retention of `hubnode backup` (None: backups only when asked, none removed).
    backup: BackupPolicy | None = None

    def sends_for(self, node: NodeSpec, project: Project) -> bool:
        """Whether `node` sends research data for `project`: named a sender, or a dic when the project names none."""
        return node.site in project.senders if project.senders else node.role == "dic"

    @property
    def trust_centre(self) -> NodeSpec | None:
        """The node serving the federation's trust centre: a `ttp` node if there is one, else the first."""
        serving = [n for n in self.nodes if "trustcentre" in n.components]
        return next((n for n in serving if n.role == "ttp"), serving[0] if serving else None)


def parse_stack(stack: str, config: Mapping[str, Any], source: str = "stack config") -> StackSpec:
    """Validate a stack's config (`{"hubnode:site": ..., ...}`); raise `SpecError` listing all problems.

    A stack declares one node with top-level keys, or a federation with `hubnode:nodes`. Keys outside
    the `hubnode:` namespace (e.g. `docker:host`) belong to other providers and pass.
    """
    problems: list[Problem] = []
    if not _STACK_PATTERN.match(stack):
        problems.append(Problem("stack name", stack, "letters, digits, '.', '_' or '-', at most 63"))
    ours = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith(f"{NAMESPACE}:")}
    problems += [
        Problem(_key(key), value, f"unknown key; known keys: {', '.join(KEYS)}")
        for key, value in ours.items()
        if key not in KEYS
    ]
    domains = _parse_domains(ours.get("domains", []), problems)
    consent_domains = _parse_consent_domains(ours.get("consentDomains", []), problems)
    environment = _choice(_key("environment"), ours.get("environment", "site"), ENVIRONMENTS, problems)
    platform = _choice(_key("platform"), ours.get("platform", "docker"), PLATFORMS, problems)
    kubernetes = _parse_kubernetes(ours.get("kubernetes", {}), problems)
    mutant = _parse_mutant(ours.get("mutant"), environment, problems)
    backup = _parse_backup(ours["backup"], problems) if "backup" in ours else None
    if "nodes" in ours:
        problems += [
            Problem(_key(key), ours[key], "in a federation stack, set this per node under hubnode:nodes")
            for key in ("site", "role", "components", "ports", "users")
            if key in ours
        ]
        nodes = _parse_nodes(ours, problems)
    else:
        nodes = (_parse_node(ours, _key, problems, default_components=["fhir"]),)
    federation = _parse_federation(ours, domains, problems) if any(k in ours for k in FEDERATION_KEYS) else None
    if problems:
        raise SpecError(problems, source)
    located = tuple(_placed(node, federation) for node in cast("tuple[NodeSpec, ...]", nodes))
    spec = StackSpec(
        stack=stack,
        nodes=_with_domains(located, domains, consent_domains),
        federation=federation,
        environment=cast("Environment", environment),
        platform=cast("Platform", platform),
        kubernetes=kubernetes,
        mutant=mutant,
        backup=backup,
    )
    _check_federation(spec, problems)
    _check_ttp_domains(spec, problems)
    _check_identity(spec, problems, listed="nodes" in ours)
    _check_replicas(spec, problems, listed="nodes" in ours)
    if problems:
        raise SpecError(problems, source)
    return spec


Key = Callable[[str], str]


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def _item_key(key: str, index: int) -> Key:
    """Names keys inside the `index`th entry of the list `key`: `hubnode:nodes[1].ports`."""
    return lambda name: _key(f"{key}[{index}].{name}")


def _item_key_of(at: Key, entry: str) -> Key:
    """Names keys inside `entry` of what `at` names: `hubnode:nodes[1].users[0].role`."""
    return lambda name: at(f"{entry}.{name}")


def _parse_nodes(values: Mapping[str, Any], problems: list[Problem]) -> tuple[NodeSpec | None, ...]:
    """The nodes of a federation stack; top-level `database` and `images` are every node's defaults."""
    entries = values["nodes"]
    if not isinstance(entries, list) or not entries:
        problems.append(Problem(_key("nodes"), entries, "a non-empty list of nodes, e.g. [{site: dic, role: dic}]"))
        return ()
    nodes: list[NodeSpec | None] = []
    for index, entry in enumerate(entries):
        at = _item_key("nodes", index)
        if not isinstance(entry, Mapping):
            problems.append(Problem(_key(f"nodes[{index}]"), entry, "a mapping, e.g. {site: dic, role: dic}"))
            continue
        problems += [
            Problem(at(key), value, f"unknown key; known keys: {', '.join(NODE_KEYS)}")
            for key, value in entry.items()
            if key not in NODE_KEYS
        ]
        merged = {"database": values.get("database", "embedded"), "images": values.get("images", {}), **entry}
        role = merged.get("role", "dic")
        nodes.append(_parse_node(merged, at, problems, default_components=list(ROLE_COMPONENTS.get(role, ("fhir",)))))
    sites = [n.site for n in nodes if n is not None]
    if len(set(sites)) != len(sites):
        problems.append(Problem(_key("nodes"), sites, "each site at most once"))
    return tuple(nodes)


def _parse_node(
    values: Mapping[str, Any], at: Key, problems: list[Problem], default_components: list[str]
) -> NodeSpec | None:
    before = len(problems)
    site = _parse_site(values.get("site"), at, problems)
    role = _choice(at("role"), values.get("role", "dic"), ROLES, problems)
    components = _parse_components(values.get("components", default_components), at, problems)
    database = _choice(at("database"), values.get("database", "embedded"), DATABASES, problems)
    ports = _parse_ports(values.get("ports", {}), components, at, problems)
    needed = (*components, "db") if database == "postgres" else components
    images = _parse_images(values.get("images", {}), needed, at, problems)
    systems = _parse_uris(values.get("identifierSystems", []), at("identifierSystems"), problems)
    public_url = values.get("publicUrl")
    if public_url is not None and not (isinstance(public_url, str) and _PUBLIC_URL_PATTERN.match(public_url)):
        problems.append(
            Problem(at("publicUrl"), public_url, "the public door's https:// base, e.g. https://hub.ukl.example")
        )
    users = _parse_users(values.get("users", []), at, problems)
    ttp = _parse_ttp(values["trustCentre"], components, at, problems) if "trustCentre" in values else None
    validation = _parse_validation(values.get("validation", {}), at("validation"), problems)
    replicas = _parse_replicas(values.get("replicas", {}), components, database, at("replicas"), problems)
    if len(problems) > before or images is None:
        return None
    return NodeSpec(
        site=site,
        role=cast("Role", role),
        components=components,
        database=cast("Database", database),
        ports=ports,
        images=images,
        identifier_systems=systems,
        public_url=public_url.rstrip("/") if isinstance(public_url, str) else None,
        users=users,
        ttp=ttp,
        validation=validation,
        replicas=replicas,
    )


def _parse_replicas(
    value: object, components: Sequence[str], database: str, key: str, problems: list[Problem]
) -> dict[str, int]:
    """`replicas`: pods per component; more than one only for HAPI and the connector on PostgreSQL.

    Both keep nothing of their own: HAPI's state is its database, and the connector's pods share theirs,
    each running only the process Tasks it has claimed there (`connector.task_store`).
    """
    if not isinstance(value, Mapping):
        problems.append(Problem(key, value, "a mapping of component to pods, e.g. {fhir: 2}"))
        return {}
    replicas: dict[str, int] = {}
    for component, count in value.items():
        at = f"{key}.{component}"
        if component not in components:
            problems.append(Problem(at, count, f"a component of this node: {', '.join(components)}"))
        elif isinstance(count, bool) or not isinstance(count, int) or count < 1:
            problems.append(Problem(at, count, "a whole number of pods, 1 or more"))
        elif count > 1 and component in SINGLE_REPLICA:
            problems.append(Problem(at, count, f"at most 1, as {SINGLE_REPLICA[component]}"))
        elif count > 1 and database != "postgres":
            problems.append(
                Problem(at, count, "at most 1 on the embedded database, which one process owns (or database: postgres)")
            )
        else:
            replicas[component] = count
    return replicas


def _parse_validation(value: object, key: str, problems: list[Problem]) -> ValidationSpec:
    """`validation`: one mode for both kinds (`warn`), or `{profiles: strict, terminology: warn}`."""
    if isinstance(value, str):
        value = {"profiles": value, "terminology": value if value in TERMINOLOGY_MODES else "warn"}
    if not isinstance(value, Mapping):
        problems.append(Problem(key, value, "strict, warn, off, or {profiles: strict, terminology: warn}"))
        return ValidationSpec()
    problems += [
        Problem(f"{key}.{k}", v, "unknown key; known: profiles, terminology")
        for k, v in value.items()
        if k not in ("profiles", "terminology")
    ]
    profiles = _choice(f"{key}.profiles", value.get("profiles", "strict"), VALIDATION_MODES, problems)
    terminology = _choice(f"{key}.terminology", value.get("terminology", "warn"), TERMINOLOGY_MODES, problems)
    return ValidationSpec(str(profiles), str(terminology))


def _parse_ttp(value: object, components: tuple[str, ...], at: Key, problems: list[Problem]) -> TtpSpec | None:
    """`trustCentre`: the IG contract of the node's connector, and a site's own gateway if it has one."""
    key = at("trustCentre")
    if not isinstance(value, Mapping):
        problems.append(
            Problem(key, value, "a mapping, e.g. {epixDomain: MII, url: https://ttp.ukl.example/ttp-fhir/fhir}")
        )
        return None
    before = len(problems)
    problems += [
        Problem(f"{key}.{k}", v, f"unknown key; known: {', '.join(TTP_KEYS)}")
        for k, v in value.items()
        if k not in TTP_KEYS
    ]
    if "connector" not in components:
        problems.append(Problem(key, dict(value), "only a node with a connector speaks to a trust centre"))
    names = {name: value.get(name) for name in ("epixDomain", "epixSource", "consentDomain")}
    for name, given in names.items():
        if given is not None and not (isinstance(given, str) and _TTP_NAME_PATTERN.match(given)):
            problems.append(Problem(f"{key}.{name}", given, "a name of 1-255 characters, no spaces at either end"))
    if names["epixDomain"] is None:
        problems.append(
            Problem(f"{key}.epixDomain", None, "required: the E-PIX domain the connector links patients in")
        )
    url = value.get("url")
    ca = value.get("caCertificate")
    _check_ttp_gateway(url, ca, components, key, problems)
    if len(problems) > before:
        return None
    return TtpSpec(
        epix_domain=str(names["epixDomain"]),
        url=str(url).rstrip("/") if url is not None else None,
        epix_source=cast("str | None", names["epixSource"]),
        consent_domain=cast("str | None", names["consentDomain"]),
        ca_certificate=cast("str | None", ca),
    )


def _check_ttp_gateway(url: object, ca: object, components: tuple[str, ...], key: str, problems: list[Problem]) -> None:
    """A site's own gateway: a URL, instead of the node's own trust centre, and its CA only over https."""
    if url is not None:
        if not (isinstance(url, str) and _TTP_URL_PATTERN.match(url)):
            problems.append(
                Problem(f"{key}.url", url, "the gateway's base, e.g. https://ttp.ukl.example/ttp-fhir/fhir")
            )
        if "trustcentre" in components:
            problems.append(
                Problem(f"{key}.url", url, "a node with its own trustcentre component uses that one; drop url")
            )
    if ca is not None and not (isinstance(ca, str) and ca.lstrip().startswith("-----BEGIN CERTIFICATE-----")):
        problems.append(
            Problem(f"{key}.caCertificate", ca, "PEM text of the CA certificate (-----BEGIN CERTIFICATE-----...)")
        )
    https = isinstance(url, str) and url.startswith("https://")
    if ca is not None and not https:
        problems.append(
            Problem(f"{key}.caCertificate", "...", "only for a site's own gateway reached by an https:// url")
        )
    if ca is None and https:
        problems.append(
            Problem(f"{key}.caCertificate", None, "required with an https:// url: the CA that signed the gateway")
        )


def _parse_uris(value: object, key: str, problems: list[Problem]) -> tuple[str, ...]:
    """A list of identifier system URIs (`https://...`, `http://...`, `urn:...`)."""
    if not isinstance(value, list) or not all(
        isinstance(uri, str) and uri.startswith(("https://", "http://", "urn:")) and len(uri) <= 255 for uri in value
    ):
        problems.append(Problem(key, value, "a list of identifier system URIs, e.g. [https://ukl.example/sid/mrn]"))
        return ()
    return tuple(value)


def _placed(node: NodeSpec, federation: Federation | None) -> NodeSpec:
    """The node with its federation host name."""
    return replace(node, host=f"{node.site}.{federation.domain}") if federation else node


def _with_domains(
    nodes: tuple[NodeSpec, ...], domains: tuple[PseudonymDomain, ...], consent_domains: tuple[ConsentDomainSpec, ...]
) -> tuple[NodeSpec, ...]:
    """Pseudonym and consent domains live in the one trust centre that serves the stack."""
    serving = StackSpec("", nodes).trust_centre
    return tuple(replace(n, domains=domains, consent_domains=consent_domains) if n is serving else n for n in nodes)


def _parse_federation(
    values: Mapping[str, Any], domains: tuple[PseudonymDomain, ...], problems: list[Problem]
) -> Federation:
    settings = values.get("federation", {})
    if not isinstance(settings, Mapping):
        problems.append(Problem(_key("federation"), settings, "a mapping, e.g. {name: my-hub, domain: hub.example}"))
        settings = {}
    problems += [
        Problem(_key(f"federation.{key}"), value, "unknown key; known keys: name, domain")
        for key, value in settings.items()
        if key not in ("name", "domain")
    ]
    name = settings.get("name", "hubnode")
    if not isinstance(name, str) or not _SITE_PATTERN.match(name):
        problems.append(Problem(_key("federation.name"), name, "2-32 lowercase letters, digits or '-'"))
    domain = settings.get("domain", DEFAULT_FEDERATION_DOMAIN)
    if not isinstance(domain, str) or not _DOMAIN_PATTERN.match(domain):
        problems.append(Problem(_key("federation.domain"), domain, "a lowercase DNS domain, e.g. hub.example"))
    return Federation(
        name=str(name),
        domain=str(domain),
        peers=_parse_peers(values.get("peers", []), problems),
        projects=_parse_projects(values.get("projects", []), domains, problems),
    )


def _parse_peers(value: object, problems: list[Problem]) -> tuple[PeerSpec, ...]:
    if not isinstance(value, list):
        problems.append(Problem(_key("peers"), value, "a list of {site, role, address, thumbprint}"))
        return ()
    peers: list[PeerSpec] = []
    for index, entry in enumerate(value):
        at = _item_key("peers", index)
        if not isinstance(entry, Mapping):
            problems.append(Problem(_key(f"peers[{index}]"), entry, "a mapping {site, role, address, thumbprint}"))
            continue
        before = len(problems)
        site = _parse_site(entry.get("site"), at, problems)
        role = _choice(at("role"), entry.get("role"), ROLES, problems)
        address = entry.get("address")
        if not isinstance(address, str) or not address.startswith("https://"):
            problems.append(
                Problem(at("address"), address, "the peer's https:// endpoint, e.g. https://dic.hub.example:9443/fhir")
            )
        thumbprint = entry.get("thumbprint")
        if not isinstance(thumbprint, str) or not _THUMBPRINT_PATTERN.match(thumbprint):
            problems.append(
                Problem(at("thumbprint"), thumbprint, "the SHA-512 of the peer certificate: 128 lowercase hex")
            )
        if len(problems) == before:
            peers.append(PeerSpec(site, cast("Role", role), cast("str", address), cast("str", thumbprint)))
    return tuple(peers)


def _parse_projects(
    value: object, domains: tuple[PseudonymDomain, ...], problems: list[Problem]
) -> tuple[Project, ...]:
    """Research projects; `senders` are the sites that send data for one (default: every dic node)."""
    if not isinstance(value, list):
        problems.append(Problem(_key("projects"), value, "a list of {name, domain, senders, title, ...}"))
        return ()
    known = {d.name for d in domains}
    projects: list[Project] = []
    for index, entry in enumerate(value):
        senders = entry.get("senders", []) if isinstance(entry, Mapping) else []
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            problems.append(Problem(_key(f"projects[{index}]"), entry, "a mapping {name, domain, senders}"))
        elif entry.get("domain") not in known:
            problems.append(
                Problem(
                    _key(f"projects[{index}].domain"), entry.get("domain"), f"one of hubnode:domains: {sorted(known)}"
                )
            )
        elif not isinstance(senders, list) or not all(isinstance(site, str) for site in senders):
            problems.append(Problem(_key(f"projects[{index}].senders"), senders, "a list of sites"))
        elif described := _project_description(entry, index, problems):
            projects.append(Project(entry["name"], entry["domain"], tuple(senders), **described))
    return tuple(projects)


def _project_description(entry: Mapping[str, Any], index: int, problems: list[Problem]) -> dict[str, Any] | None:
    """The optional `title`, `summary`, `recipient` (texts) and `categories` (a list of texts) of a project."""
    found = len(problems)
    texts = {key: entry.get(key, "") for key in ("title", "summary", "recipient")}
    for key, value in texts.items():
        if not isinstance(value, str):
            problems.append(Problem(_key(f"projects[{index}].{key}"), value, "a text"))
    categories = entry.get("categories", [])
    if not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories):
        problems.append(Problem(_key(f"projects[{index}].categories"), categories, "a list of texts"))
    if len(problems) > found:
        return None
    return {**texts, "categories": tuple(categories)}


def _check_federation(spec: StackSpec, problems: list[Problem]) -> None:
    """What only the whole stack can tell: components that need each other, shared ports and names."""
    for index, node in enumerate(spec.nodes):
        at = _key(f"nodes[{index}].components") if len(spec.nodes) > 1 or spec.federation else _key("components")
        if "connector" in node.components and not {"fhir", "gateway"} <= set(node.components):
            problems.append(Problem(at, list(node.components), "a connector needs fhir and gateway on its node"))
        if "gateway" in node.components and not {"connector", "trustcentre"} & set(node.components):
            problems.append(Problem(at, list(node.components), "a gateway needs a connector or trustcentre behind it"))
        if "connector" in node.components and spec.federation is None:
            problems.append(
                Problem(at, list(node.components), "a connector needs a federation: set hubnode:federation")
            )
    has_connector = any("connector" in n.components for n in spec.nodes)
    remote_ttp = spec.federation and any(p.role in ("ttp", "dic") for p in spec.federation.peers)
    if has_connector and spec.trust_centre is None and not remote_ttp:
        problems.append(
            Problem(
                _key("nodes"),
                [n.site for n in spec.nodes],
                "connectors need a trust centre: give a dic or ttp node the trustcentre component",
            )
        )
    ports = [(n.site, name, port) for n in spec.nodes for name, port in n.ports.items()]
    taken = [port for _, _, port in ports]
    clashes = sorted({f"{site}.{name}={port}" for site, name, port in ports if taken.count(port) > 1})
    if clashes:
        problems.append(
            Problem(_key("nodes[].ports"), clashes, "every node needs its own host ports; set them under ports")
        )
    sites = {n.site for n in spec.nodes}
    for index, project in enumerate(spec.federation.projects if spec.federation else ()):
        unknown = sorted(set(project.senders) - sites)
        if unknown:
            problems.append(
                Problem(_key(f"projects[{index}].senders"), unknown, f"sites of this stack: {sorted(sites)}")
            )
    peer_sites = [p.site for p in spec.federation.peers] if spec.federation else []
    shared = sorted({n.site for n in spec.nodes} & set(peer_sites))
    if shared:
        problems.append(Problem(_key("peers"), shared, "a peer cannot have the site name of one of this stack's nodes"))


def _check_ttp_domains(spec: StackSpec, problems: list[Problem]) -> None:
    """A node speaking the IGs to the federation's trust centre links in a domain that trust centre declares."""
    served = spec.trust_centre
    declared = {d.name for d in served.domains} if served else set()
    for index, node in enumerate(spec.nodes):
        if (
            node.ttp is not None
            and node.ttp.url is None
            and served is not None
            and node.ttp.epix_domain not in declared
        ):
            problems.append(
                Problem(
                    _key(f"nodes[{index}].trustCentre.epixDomain"),
                    node.ttp.epix_domain,
                    f"a domain the federation's trust centre declares (hubnode:domains): {sorted(declared)}",
                )
            )


def _check_replicas(spec: StackSpec, problems: list[Problem], *, listed: bool) -> None:
    """Several pods of a service need Kubernetes: a Docker host runs one container per service."""
    if spec.platform == "kubernetes":
        return
    for index, node in enumerate(spec.nodes):
        for component, count in node.replicas.items():
            if count > 1:
                key = _key(f"nodes[{index}].replicas.{component}" if listed else f"replicas.{component}")
                problems.append(Problem(key, count, "at most 1 on Docker; more with hubnode:platform: kubernetes"))


def _check_identity(spec: StackSpec, problems: list[Problem], *, listed: bool) -> None:
    """The identity provider is reached through its node's gateway; demo users belong to local stacks.

    `listed`: the stack declares its nodes under `hubnode:nodes` (their keys are named there).
    """
    for index, node in enumerate(spec.nodes):
        at = _item_key("nodes", index) if listed else _key
        if "idp" in node.components and "gateway" not in node.components:
            problems.append(
                Problem(at("components"), list(node.components), "an idp needs a gateway on its node (its public door)")
            )
        if "portal" in node.components and not {"idp", "gateway", "connector"} <= set(node.components):
            problems.append(
                Problem(
                    at("components"),
                    list(node.components),
                    "a portal needs idp (sign-in), gateway (its public door) and connector (the data) on its node",
                )
            )
        if "portal" in node.components and spec.trust_centre is None:
            problems.append(
                Problem(at("components"), list(node.components), "a portal needs a trust centre on a node of its stack")
            )
        if not node.users:
            continue
        usernames = [user.username for user in node.users]
        if spec.environment != "local":
            problems.append(
                Problem(
                    at("users"),
                    usernames,
                    "demo users are for local stacks only (hubnode:environment: local); "
                    "a site manages its users in its identity provider",
                )
            )
        if "idp" not in node.components:
            problems.append(Problem(at("users"), usernames, "demo users live in the node's idp: add idp to components"))


def _parse_users(value: object, at: Key, problems: list[Problem]) -> tuple[DemoUser, ...]:
    """Demo users: `{username, role, patient?, fhirUser?, firstName?, lastName?}`, each name once."""
    if not isinstance(value, list):
        problems.append(Problem(at("users"), value, "a list of users, e.g. [{username: alice, role: patient}]"))
        return ()
    users: list[DemoUser] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            problems.append(Problem(at(f"users[{index}]"), entry, "a mapping, e.g. {username: alice, role: patient}"))
            continue
        user = _parse_user(entry, _item_key_of(at, f"users[{index}]"), problems)
        if user is not None:
            users.append(user)
    names = [u.username for u in users]
    if len(set(names)) != len(names):
        problems.append(Problem(at("users"), names, "each username at most once"))
    return tuple(users)


def _parse_user(entry: Mapping[str, Any], at: Key, problems: list[Problem]) -> DemoUser | None:
    before = len(problems)
    for key, value in entry.items():
        if key == "password":
            problems.append(
                Problem(
                    at(key),
                    "(hidden)",
                    "never a literal in the stack file: hubnode up generates each demo user's password "
                    "into .hubnode/<stack>/secrets/<site>/idp-user-<username>",
                )
            )
        elif key not in USER_KEYS:
            problems.append(Problem(at(key), value, f"unknown key; known keys: {', '.join(USER_KEYS)}"))
    username = entry.get("username")
    if not isinstance(username, str) or not _USERNAME_PATTERN.match(username):
        problems.append(Problem(at("username"), username, "3-64 lowercase letters, digits, '.', '_' or '-'"))
    role = _choice(at("role"), entry.get("role"), USER_ROLES, problems)
    texts = {
        key: _parse_text(entry.get(key, ""), at(key), pattern, allowed, problems)
        for key, pattern, allowed in (
            ("patient", _FHIR_ID_PATTERN, "a FHIR Patient id, e.g. p-0001"),
            ("fhirUser", _FHIR_USER_PATTERN, "a FHIR reference, e.g. Patient/p-0001 or Practitioner/pr-0042"),
            ("firstName", None, "a name"),
            ("lastName", None, "a name"),
        )
    }
    if len(problems) > before:
        return None
    return DemoUser(
        username=cast("str", username),
        role=cast("UserRole", role),
        patient=texts["patient"],
        fhir_user=texts["fhirUser"],
        first_name=texts["firstName"],
        last_name=texts["lastName"],
    )


def _parse_text(value: object, key: str, pattern: re.Pattern[str] | None, allowed: str, problems: list[Problem]) -> str:
    """An optional text setting: empty, or a string (matching `pattern`, where there is one)."""
    if value == "":
        return ""
    if not isinstance(value, str) or not value.strip() or (pattern is not None and not pattern.match(value)):
        problems.append(Problem(key, value, allowed))
        return ""
    return value


def _parse_site(value: object, at: Key, problems: list[Problem]) -> str:
    if value is None:
        problems.append(Problem(at("site"), None, "required: the node's site id, e.g. ukl-dic"))
        return ""
    if not isinstance(value, str) or not _SITE_PATTERN.match(value):
        problems.append(Problem(at("site"), value, "2-32 lowercase letters, digits or '-', starting with a letter"))
        return ""
    return value


def with_mutant(spec: StackSpec, mutant: str, source: str = "--mutant") -> StackSpec:
    """`spec` with `mutant` switched on (as if the stack file named it); SpecError unless it may be."""
    problems: list[Problem] = []
    name = _parse_mutant(mutant, spec.environment, problems)
    if problems:
        raise SpecError(problems, source)
    return replace(spec, mutant=name)


def _parse_mutant(value: object, environment: str, problems: list[Problem]) -> str | None:
    """A mutant's name, allowed only in a local stack: a site stack never runs a faulty variant."""
    if value is None:
        return None
    if environment != "local":
        problems.append(Problem(_key("mutant"), value, "only a stack with hubnode:environment: local runs mutants"))
        return None
    return _choice(_key("mutant"), value, tuple(MUTANTS), problems) or None


def _parse_backup(value: object, problems: list[Problem]) -> BackupPolicy | None:
    """`hubnode:backup`: a schedule systemd can run, whole numbers above 0 to keep, a folder."""
    key = _key("backup")
    if not isinstance(value, Mapping):
        problems.append(Problem(key, value, "a mapping, e.g. {schedule: daily 02:30, keep: 14}"))
        return None
    before = len(problems)
    problems += [
        Problem(f"{key}.{name}", value[name], f"unknown key; known: {', '.join(BACKUP_KEYS)}")
        for name in value
        if name not in BACKUP_KEYS
    ]
    schedule = None
    if "schedule" in value:
        try:
            schedule = parse_schedule(value["schedule"])
        except ScheduleError as error:
            problems.append(Problem(f"{key}.schedule", value["schedule"], str(error)))
    counts: dict[str, int | None] = {}
    for name in ("keep", "keepDays"):
        count = value.get(name)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            problems.append(Problem(f"{key}.{name}", count, "a whole number above 0"))
        counts[name] = count
    output = value.get("output")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        problems.append(Problem(f"{key}.output", output, "a folder, e.g. /srv/hubnode-backups"))
    if len(problems) > before:
        return None
    return BackupPolicy(schedule, counts["keep"], counts["keepDays"], output)


def _parse_kubernetes(value: object, problems: list[Problem]) -> KubernetesSettings:
    """`hubnode:kubernetes`: a storage class name, a size in Mi/Gi/Ti, an IPv4 Service range."""
    key = _key("kubernetes")
    if not isinstance(value, Mapping):
        problems.append(Problem(key, value, "a mapping, e.g. {storageClass: local-path, volumeSize: 10Gi}"))
        return KubernetesSettings()
    problems += [
        Problem(f"{key}.{name}", value[name], f"unknown key; known: {', '.join(KUBERNETES_KEYS)}")
        for name in value
        if name not in KUBERNETES_KEYS
    ]
    default = KubernetesSettings()
    settings = KubernetesSettings(
        storage_class=value.get("storageClass", default.storage_class),
        volume_size=value.get("volumeSize", default.volume_size),
        service_range=value.get("serviceRange", default.service_range),
        host_path=value.get("hostPath"),
    )
    if settings.host_path is not None and (not isinstance(settings.host_path, str) or not settings.host_path):
        problems.append(Problem(f"{key}.hostPath", settings.host_path, "a folder, e.g. .hubnode/volumes"))
    checks = (
        ("storageClass", settings.storage_class, _DNS_SUBDOMAIN_PATTERN, "a storage class name, e.g. local-path"),
        ("volumeSize", settings.volume_size, _QUANTITY_PATTERN, "a size in Mi, Gi or Ti, e.g. 10Gi"),
    )
    for name, given, pattern, allowed in checks:
        if not isinstance(given, str) or not pattern.match(given):
            problems.append(Problem(f"{key}.{name}", given, allowed))
    try:
        ipaddress.IPv4Network(str(settings.service_range))
    except ValueError:
        problems.append(
            Problem(
                f"{key}.serviceRange", settings.service_range, "the cluster's IPv4 Service range, e.g. 10.96.0.0/24"
            )
        )
    return settings


def _choice(key: str, value: object, allowed: tuple[str, ...], problems: list[Problem]) -> str:
    if value not in allowed:
        problems.append(Problem(key, value, f"choose one of {', '.join(allowed)}"))
        return ""
    return str(value)


def _parse_components(value: object, at: Key, problems: list[Problem]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        problems.append(Problem(at("components"), value, "a non-empty list, e.g. [fhir]"))
        return ()
    bad = [c for c in value if c not in COMPONENTS]
    if bad:
        problems.append(
            Problem(at("components"), bad, f"unknown component; this version runs: {', '.join(COMPONENTS)}")
        )
        return ()
    if len(set(value)) != len(value):
        problems.append(Problem(at("components"), value, "each component at most once"))
        return ()
    return tuple(cast("list[str]", value))


def _parse_ports(value: object, components: tuple[str, ...], at: Key, problems: list[Problem]) -> dict[str, int]:
    """Host ports; by default a node behind a gateway publishes only the gateway's doors."""
    if not isinstance(value, Mapping):
        problems.append(Problem(at("ports"), value, "a mapping of component to host port, e.g. {fhir: 8080}"))
        return {}
    published = ("gateway", "peer") if "gateway" in components else components
    ports = {name: DEFAULT_PORTS[name] for name in published if name in DEFAULT_PORTS}
    for name, port in value.items():
        key = at(f"ports.{name}")
        if name not in PORT_NAMES:
            problems.append(Problem(key, port, f"no such port; ports exist for: {', '.join(PORT_NAMES)}"))
        elif components and name not in components and not (name == "peer" and "gateway" in components):
            problems.append(Problem(key, port, f"the node has no {name}; it runs {', '.join(components)}"))
        elif isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            problems.append(Problem(key, port, "a whole number from 1024 to 65535"))
        else:
            ports[name] = port
    clashes = sorted({p for p in ports.values() if list(ports.values()).count(p) > 1})
    if clashes:
        problems.append(Problem(at("ports"), dict(value), f"each component needs its own port; {clashes} used twice"))
    return ports


def _parse_domains(value: object, problems: list[Problem]) -> tuple[PseudonymDomain, ...]:
    if not isinstance(value, list):
        problems.append(Problem(_key("domains"), value, "a list of pseudonym domains, e.g. [{name: research}]"))
        return ()
    domains: list[PseudonymDomain] = []
    for index, entry in enumerate(value):
        key = _key(f"domains[{index}]")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
            problems.append(Problem(key, entry, "a mapping with a name, e.g. {name: research, prefix: R}"))
            continue
        if entry["name"].startswith(RESERVED_DOMAIN_PREFIX):
            problems.append(
                Problem(f"{key}.name", entry["name"], f"names starting {RESERVED_DOMAIN_PREFIX!r} are reserved")
            )
        settings = {k: v for k, v in entry.items() if k != "name"}
        for name, setting in settings.items():
            expected = DOMAIN_SETTINGS.get(name)
            if expected is None:
                problems.append(
                    Problem(f"{key}.{name}", setting, f"unknown setting; known: {', '.join(DOMAIN_SETTINGS)}")
                )
            elif not isinstance(setting, expected) or (expected is int and isinstance(setting, bool)):
                problems.append(Problem(f"{key}.{name}", setting, f"must be {expected.__name__}"))
        domains.append(PseudonymDomain(entry["name"], settings))
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        problems.append(Problem(_key("domains"), names, "each domain name at most once"))
    return tuple(domains)


def _parse_consent_domains(value: object, problems: list[Problem]) -> tuple[ConsentDomainSpec, ...]:
    """Consent domains: names, known keys, template types, and modules naming policies of their domain."""
    if not isinstance(value, list):
        problems.append(Problem(_key("consentDomains"), value, "a list of consent domains, e.g. [{name: MII, ...}]"))
        return ()
    found: list[ConsentDomainSpec] = []
    for index, entry in enumerate(value):
        key = _key(f"consentDomains[{index}]")
        if not _named_entry(key, entry, CONSENT_DOMAIN_KEYS, problems):
            continue
        policies = _entries(f"{key}.policies", entry.get("policies"), CONSENT_POLICY_KEYS, problems, required=True)
        offered = {policy["name"] for policy in policies}
        templates = _entries(f"{key}.templates", entry.get("templates", []), CONSENT_TEMPLATE_KEYS, problems)
        for number, template in enumerate(templates):
            at = f"{key}.templates[{number}]"
            if template.get("type", "consent") not in CONSENT_TEMPLATE_TYPES:
                _choice(f"{at}.type", template["type"], CONSENT_TEMPLATE_TYPES, problems)
            for place, module in enumerate(
                _entries(f"{at}.modules", template.get("modules"), (), problems, required=True)
            ):
                named = module.get("policies")
                if (
                    not isinstance(named, list)
                    or not named
                    or not all(isinstance(n, str) and n in offered for n in named)
                ):
                    problems.append(
                        Problem(
                            f"{at}.modules[{place}].policies",
                            named,
                            f"a list of this domain's policies: {sorted(offered)}",
                        )
                    )
        found.append(ConsentDomainSpec(entry["name"], {k: v for k, v in entry.items() if k != "name"}))
    names = [d.name for d in found]
    if len(set(names)) != len(names):
        problems.append(Problem(_key("consentDomains"), names, "each consent domain name at most once"))
    return tuple(found)


def _named_entry(key: str, entry: object, allowed: tuple[str, ...], problems: list[Problem]) -> bool:
    """Whether `entry` is a mapping with a non-empty string name and (if `allowed` is given) only those keys."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry["name"]:
        problems.append(Problem(key, entry, "a mapping with a name"))
        return False
    unknown = sorted(str(k) for k in entry if allowed and k not in allowed)
    problems += [Problem(f"{key}.{k}", entry[k], f"unknown key; known: {', '.join(allowed)}") for k in unknown]
    return not unknown


def _entries(
    key: str, value: object, allowed: tuple[str, ...], problems: list[Problem], *, required: bool = False
) -> list[Mapping[str, Any]]:
    """The well-formed named entries of the list `key` (a required list may not be empty)."""
    if not isinstance(value, list) or (required and not value):
        problems.append(Problem(key, value, "a non-empty list" if required else "a list"))
        return []
    return [e for i, e in enumerate(value) if _named_entry(f"{key}[{i}]", e, allowed, problems)]


def _parse_images(value: object, needed: tuple[str, ...], at: Key, problems: list[Problem]) -> ImageSource | None:
    """Where images come from; with a registry, every image the node `needed` must resolve."""
    if not isinstance(value, Mapping):
        problems.append(Problem(at("images"), value, "a mapping, e.g. {source: local}"))
        return None
    before = len(problems)
    kind = _choice(at("images.source"), value.get("source", "local"), IMAGE_SOURCES, problems)
    base_image = value.get("base", DEFAULT_BASE_IMAGE)
    registry = value.get("registry", "")
    overrides = _parse_image_overrides(value, at, problems)
    if not _is_image_ref(base_image):
        problems.append(Problem(at("images.base"), base_image, "an image reference, e.g. debian:trixie-slim"))
    if kind == "registry":
        missing = [n for n in IMAGE_NAMES if n in needed and n not in overrides]
        if missing and not _is_image_ref(registry):
            problems.append(
                Problem(
                    _key("images.registry"),
                    registry or None,
                    f"required with source: registry (images {', '.join(missing)} have no reference), "
                    "e.g. registry.site.example/hubnode",
                )
            )
    elif registry:
        problems.append(Problem(at("images.registry"), registry, "only used with source: registry"))
    if len(problems) > before:
        return None
    return ImageSource(
        kind=cast("ImageSourceKind", kind), base_image=base_image, registry=registry, overrides=overrides
    )


def _parse_image_overrides(value: Mapping[str, Any], at: Key, problems: list[Problem]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for name, ref in value.items():
        if name in ("source", "base", "registry"):
            continue
        if name not in IMAGE_NAMES:
            allowed = ", ".join(("source", "base", "registry", *IMAGE_NAMES))
            problems.append(Problem(at(f"images.{name}"), ref, f"unknown key; known keys: {allowed}"))
        elif not _is_image_ref(ref):
            problems.append(Problem(at(f"images.{name}"), ref, "an image reference, e.g. postgres:17"))
        else:
            overrides[name] = ref
    return overrides


def _is_image_ref(value: object) -> bool:
    return isinstance(value, str) and bool(_IMAGE_REF_PATTERN.match(value))
