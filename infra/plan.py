"""NodeSpec -> NodePlan: every container of a node as plain data, the single source of truth.

Pure. The Pulumi adapter (`infra.docker_node`) and the local launcher (`infra.local`) only
translate these plans, so what the launcher proves about a plan holds for `pulumi up` too.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version

from infra.gateway_config import GatewayConfig, Upstream
from infra.gateway_config import render as render_gateway_config
from infra.idp_realm import (
    PORTAL_CLIENT,
    PORTAL_SECRET,
    PORTAL_SERVICE_CLIENT,
    PORTAL_SERVICE_SECRET,
    REALM,
    Realm,
)
from infra.mutants import MUTANTS, mutated
from infra.spec import SOURCE_SYSTEM_BASE, NodeSpec, StackSpec, TtpSpec

LOOPBACK = "127.0.0.1"
#: Every image of ours runs as this unprivileged user (created in each Dockerfile with this uid).
SERVICE_USER = "hubnode"
SERVICE_UID = 10001
DB_USER = "postgres"
#: Our PostgreSQL image pins its user's uid; the official image's is 999.
DB_UID = 10002
OFFICIAL_DB_UID = 999
SECRETS_DIR = "/run/secrets"
LABEL_PREFIX = "org.hubnode"
HAPI_PORT = 8080
#: HAPI's Prometheus `/metrics`, on a port of its own so nothing that reaches FHIR reaches it; never published.
HAPI_METRICS_PORT = 8090
TRUSTCENTRE_PORT = 8081
POSTGRES_PORT = 5432
DB_NAME = "hapi"
TRUSTCENTRE_DB_NAME = "trustcentre"
CONNECTOR_DB_NAME = "connector"
TRUSTCENTRE_BASE = "/ttp-fhir/fhir"
#: Where a connector finds the CA of a site's own trust-centre gateway.
TRUSTCENTRE_CA_PATH = "/etc/connector/trustcentre-ca.pem"
CONNECTOR_PORT = 8082
#: Keycloak inside its container: HTTP under `IDP_PATH` (TLS ends at the gateway), health on the management port.
IDP_PORT = 8180
IDP_MANAGEMENT_PORT = 9000
IDP_PATH = "/idp"
IDP_DB_NAME = "keycloak"
IDP_ADMIN = "admin"
#: Keycloak imports realms from this folder of its installation (`start --import-realm`).
IDP_REALM_FILE = "/opt/keycloak/data/import/hubnode-realm.json"
IDP_DATA_DIR = "/opt/keycloak/data/h2"
#: The portal inside its container; the gateway serves it under `/portal/` of the public door.
PORTAL_PORT = 8083
PORTAL_PATH = "/portal"
#: The gateway's doors inside its container: public TLS, mutual-TLS for peers, plain health.
GATEWAY_PUBLIC_PORT = 8443
GATEWAY_PEER_PORT = 9443
GATEWAY_HEALTH_PORT = 8088
HUBNODE_FILES_DIR = "/run/hubnode"
GATEWAY_CONFIG_PATH = "/etc/hubnode/nginx.conf"
#: The nginx variable holding the gateway secret (its name, not the secret).
GATEWAY_SECRET_VARIABLE = "hubnode_gateway_secret"  # noqa: S105
#: What a local caller with the site's connector admin token may do.
CONNECTOR_ROLES = ("ingest", "read", "process", "audit-read")
#: What a connector may ask of the federation's trust centre: link its own records, check one consent,
#: pseudonymise for the projects it sends research data for (its domains say which), redeem a ledger ticket.
CONNECTOR_TRUSTCENTRE_ROLES = ("linkage", "consent-check", "pseudonymize", "ledger")
#: A research node's connector: only redeem a ticket for a patient's ledger (it links and pseudonymises nothing).
RESEARCH_CONNECTOR_TRUSTCENTRE_ROLES = ("ledger",)
#: What a node's portal may ask of its node's connector: read the patient's data (audited there), store their
#: questionnaire answers (ingest), start a careSummary for a clinician (process), read the ledger (audit-read).
PORTAL_CONNECTOR_ROLES = ("read", "ingest", "process", "audit-read")
#: What a node's portal may ask of the federation's trust centre, for persons it names by its own person ids
#: only: enrolment codes, a patient's consents (read, grant, withdraw, check) and their ledger.
PORTAL_TRUSTCENTRE_ROLES = ("enrolment", "consent-read", "consent-write", "consent-check", "audit-read")
#: Secrets holding the portal's tokens at its connector and at the trust centre.
PORTAL_CONNECTOR_TOKEN = "pt-cn-token"  # noqa: S105 -- the name of a secret file
PORTAL_TRUSTCENTRE_TOKEN = "pt-tc-token"  # noqa: S105
#: Between a site and a secret's name: a secret kept in another node's folder (a remote portal's token,
#: whose hash the trust centre's node needs).
SECRET_OF_SITE = "/"  # noqa: S105 -- a separator in secret names
#: Every role of the trust centre (`trustcentre.auth.Role`); the site's admin token holds them all.
TRUSTCENTRE_ROLES = (
    "pseudonymize",
    "depseudonymize",
    "manage-domains",
    "consent-check",
    "consent-read",
    "consent-write",
    "linkage",
    "linkage-review",
    "audit-read",
    "enrolment",
    "ledger",
)


def of_site(site: str, secret: str) -> str:
    """The name of a secret kept in another node's folder (`<site>/<secret>`)."""
    return f"{site}{SECRET_OF_SITE}{secret}"


def owner_of(site: str, secret: str) -> tuple[str, str]:
    """The node whose folder holds `secret` (a name `of_site` made, or one of `site`'s own) and its plain name."""
    owner, _, name = secret.rpartition(SECRET_OF_SITE)
    return (owner or site), name


def _image_tag() -> str:
    return version("hubnode")


@dataclass(frozen=True)
class ImageBuild:
    """A local build: recipe directory under `infra/images/` and the base image it starts FROM."""

    recipe: str
    base_image: str
    #: The image `base_image` names when that is a local build too (built first).
    base: ImageRef | None = None


@dataclass(frozen=True)
class ImageRef:
    """The image a container runs; `build` is set when it is built here rather than pulled."""

    reference: str
    build: ImageBuild | None = None


@dataclass(frozen=True)
class PortBinding:
    """A container port published on the host (loopback: the gateway is the only public door)."""

    container_port: int
    host_port: int
    host_ip: str = LOOPBACK


@dataclass(frozen=True)
class VolumeMount:
    """A named volume holding a service's state across restarts."""

    volume: str
    path: str


@dataclass(frozen=True)
class Grant:
    """What one caller may do: its roles, and for a node the site it speaks for, its identifiers, its domains."""

    name: str
    roles: tuple[str, ...]
    site: str | None = None
    identifier_systems: tuple[str, ...] = ()
    domains: tuple[str, ...] | None = None

    def entry(self) -> dict[str, object]:
        """The grant as a callers-file entry (servicekit.auth), without its credential."""
        entry: dict[str, object] = {"name": self.name, "roles": list(self.roles)}
        if self.site is not None:
            entry |= {"site": self.site, "identifier_systems": list(self.identifier_systems)}
        if self.domains is not None:
            entry["domains"] = list(self.domains)
        return entry


@dataclass(frozen=True)
class CallersFile:
    """A callers file made from other secrets: each token's hash (never the token), and the nodes by certificate.

    `tokens` are (grant, secret holding the token); `nodes` are grants of other nodes of the federation,
    known by the certificate of their `site` on the allow list.
    """

    tokens: tuple[tuple[Grant, str], ...]
    nodes: tuple[Grant, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        """The secrets this file is made from."""
        return tuple(secret for _, secret in self.tokens)

    def render(self, secrets: Mapping[str, str]) -> str:
        """The file's content, given the content of each source secret."""
        callers = [
            {**grant.entry(), "token_sha256": hashlib.sha256(secrets[secret].encode()).hexdigest()}
            for grant, secret in self.tokens
        ]
        callers += [{**grant.entry(), "certificate": True} for grant in self.nodes]
        return json.dumps({"callers": callers}, indent=2) + "\n"


@dataclass(frozen=True)
class NginxSecretInclude:
    """An nginx include defining `$<variable>` as a secret's content (nginx reads no files per request)."""

    source: str
    variable: str

    @property
    def sources(self) -> tuple[str, ...]:
        """The secret this file is made from."""
        return (self.source,)

    def render(self, secrets: Mapping[str, str]) -> str:
        """The include's content, given the source secret."""
        return f'map "" ${self.variable} {{\n    default "{secrets[self.source].strip()}";\n}}\n'


@dataclass(frozen=True)
class SecretFile:
    """A file the service reads a secret from; each adapter supplies its content its own way.

    A `derived` file is made from other secrets by a rule every adapter applies the same way.
    """

    name: str
    path: str
    derived: CallersFile | NginxSecretInclude | Realm | None = None
    #: Given by the site (a credential of one of its own systems), never generated.
    provided: bool = False


#: Files of the federation's PKI and allow list, supplied by `infra.federation_files` rather than generated.
FEDERATION_FILES = ("node-certificate", "node-key", "federation-ca", "allow-list", "revocation-list")


@dataclass(frozen=True)
class ConfigFile:
    """A non-secret file the service reads, its content fixed by the plan.

    `rendered_from` is the gateway configuration the content was rendered from: nginx finds its
    upstreams through Docker's DNS, so a network without DNS (Kubernetes here) renders it anew with
    their addresses (`infra.kube_manifests`).
    """

    path: str
    content: str
    rendered_from: GatewayConfig | None = None


@dataclass(frozen=True)
class HealthCheck:
    """Docker health check, plus `budget_s`: how long bring-up may wait before giving up."""

    test: tuple[str, ...]
    interval_s: int = 10
    timeout_s: int = 5
    retries: int = 3
    start_period_s: int = 30
    budget_s: int = 180


@dataclass(frozen=True)
class Call:
    """A connection a service opens to another service of its node: the callee's network alias and port.

    The one place a flow inside a node is declared: the caller's URLs are written from it and the
    Kubernetes adapter allows exactly these flows (`infra.kube_manifests`).
    """

    service: str
    port: int

    @property
    def address(self) -> str:
        """`host:port` as the caller's URLs name it."""
        return f"{self.service}:{self.port}"


#: Where services reach each other inside a node (each call is one flow the node's network must allow).
FHIR_CALL = Call("fhir", HAPI_PORT)
TRUSTCENTRE_CALL = Call("trustcentre", TRUSTCENTRE_PORT)
CONNECTOR_CALL = Call("connector", CONNECTOR_PORT)
IDP_CALL = Call("idp", IDP_PORT)
PORTAL_CALL = Call("portal", PORTAL_PORT)


@dataclass(frozen=True)
class NetworkAttachment:
    """A network a service joins besides its node's, and the names it answers to there."""

    network: str
    aliases: tuple[str, ...] = ()


#: Linux capabilities every container drops before any is added back (`Hardening.capabilities`).
DROPPED_CAPABILITIES = ("ALL",)
#: Docker starts a container again when it dies on its own (the kernel's OOM killer, a crash), but not
#: after `docker stop` or `docker kill` (a backup's stop, a fault campaign's kill), nor after `hubnode down`.
RESTART_POLICY = "unless-stopped"


@dataclass(frozen=True)
class Tmpfs:
    """A writable folder in memory on a read-only root: emptied at each start, never on disk, at most `size_mib`.

    Its pages count against the container's memory limit. Docker mounts it noexec, nosuid and nodev,
    owned by root with the mode the image gives the folder, so the image makes the folder writable for
    its user as /tmp is (world-writable, sticky).
    """

    path: str
    size_mib: int

    @property
    def size_bytes(self) -> int:
        """Its size as Docker's mount options count it."""
        return self.size_mib * 1024 * 1024


@dataclass(frozen=True)
class Hardening:
    """How a container is confined (security review L2): what it may do, write and use.

    Every capability is dropped (`DROPPED_CAPABILITIES`) and `capabilities` are added back: none of our
    services needs one, since each runs as an unprivileged user, listens above port 1024 and writes
    only what it owns. The root filesystem is read-only: a service writes to its volumes and to
    `tmpfs`, nowhere else. `no_new_privileges` keeps a setuid binary from raising a process's rights.
    """

    memory_mib: int
    pids: int
    tmpfs: tuple[Tmpfs, ...] = ()
    capabilities: tuple[str, ...] = ()
    read_only_root: bool = True
    no_new_privileges: bool = True

    @property
    def security_options(self) -> tuple[str, ...]:
        """Docker's security options for this confinement."""
        return ("no-new-privileges:true",) if self.no_new_privileges else ()


#: Python services (trust centre, connector) write only their database volume and /tmp (Python's and
#: SQLite's temporary files).
PYTHON_TMP = Tmpfs("/tmp", 16)  # noqa: S108 -- a private tmpfs of the container
#: HAPI's heap as a share of its memory limit: the rest is the JVM's own (metaspace, code cache, threads).
HAPI_HEAP_PERCENT = 65


@dataclass(frozen=True)
class ServicePlan:
    """One container of a node, as plain data."""

    component: str
    container_name: str
    image: ImageRef
    env: Mapping[str, str]
    ports: tuple[PortBinding, ...]
    volumes: tuple[VolumeMount, ...]
    secrets: tuple[SecretFile, ...]
    health: HealthCheck
    user: str
    network_aliases: tuple[str, ...]
    labels: Mapping[str, str]
    hardening: Hardening
    depends_on: tuple[str, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    #: A URL on this host that answers 200 once the service is ready; cheaper to poll than the health check.
    probe_url: str | None = None
    #: Networks joined besides the node's own (the federation's peers network).
    networks: tuple[NetworkAttachment, ...] = ()
    #: The numeric id of `user`: secret files are made readable by it alone.
    uid: int = SERVICE_UID
    #: A JVM that takes a minute or more to start: the launcher starts few of them at once.
    slow_start: bool = False
    #: The ports it serves on (inside its container): what other services and its published ports reach.
    listens: tuple[int, ...] = ()
    #: The services of its node it connects to (calls to other nodes go through their published doors).
    calls: tuple[Call, ...] = ()
    #: Pods of it on Kubernetes (`NodeSpec.replicas`); a Docker host runs one container.
    replicas: int = 1

    @property
    def is_database(self) -> bool:
        """A PostgreSQL container (state that needs a stable identity, e.g. a Kubernetes StatefulSet)."""
        return self.user == DB_USER

    @property
    def file_folders(self) -> tuple[str, ...]:
        """The folders its secret and config files lie in."""
        paths = [secret.path for secret in self.secrets] + [file.path for file in self.files]
        return tuple(sorted({posixpath.dirname(path) for path in paths}))


@dataclass(frozen=True)
class NodePlan:
    """A node: its network, its volumes, its services in start order, and its public endpoints."""

    stack: str
    site: str
    role: str
    network: str
    labels: Mapping[str, str]
    volumes: tuple[str, ...]
    services: tuple[ServicePlan, ...]
    endpoints: Mapping[str, str] = field(default_factory=dict)
    #: URL per endpoint that answers 200 from this host once the node is up.
    probes: Mapping[str, str] = field(default_factory=dict)
    #: The network shared by the federation's nodes (gateways and connectors), if any.
    peers_network: str | None = None


def plan_stack(spec: StackSpec) -> tuple[NodePlan, ...]:
    """Plan every node of a stack (with the stack's mutant switched on, if it names one)."""
    plans = tuple(plan_node(spec, node) for node in spec.nodes)
    return plans if spec.mutant is None else mutated(plans, MUTANTS[spec.mutant])


def peers_network(stack: str) -> str:
    """The network where a local federation's gateways meet."""
    return f"hubnode-{stack}-peers"


def plan_node(spec: StackSpec, node: NodeSpec) -> NodePlan:
    """Plan one node: each component after what it needs (its database, the services behind a gateway)."""
    stack = spec.stack
    prefix = f"hubnode-{stack}-{node.site}"
    labels = {f"{LABEL_PREFIX}.stack": stack, f"{LABEL_PREFIX}.site": node.site}
    services: list[ServicePlan] = []
    endpoints: dict[str, str] = {}
    probes: dict[str, str] = {}
    if "fhir" in node.components:
        services += _own_database(prefix, node, labels, "db", DB_NAME)
        services.append(_fhir_service(prefix, node, labels))
        if "fhir" in node.ports:
            endpoints["fhir"] = f"http://{LOOPBACK}:{node.ports['fhir']}/fhir"
            probes["fhir"] = f"{endpoints['fhir']}/metadata"
    if "trustcentre" in node.components:
        services += _own_database(prefix, node, labels, "tcdb", TRUSTCENTRE_DB_NAME)
        services.append(_trustcentre_service(prefix, spec, node, labels))
        if "trustcentre" in node.ports:
            endpoints["trustcentre"] = f"http://{LOOPBACK}:{node.ports['trustcentre']}{TRUSTCENTRE_BASE}"
            probes["trustcentre"] = f"{endpoints['trustcentre']}/gpas/metadata"
    if "connector" in node.components:
        services += _own_database(prefix, node, labels, "cndb", CONNECTOR_DB_NAME)
        services.append(_connector_service(prefix, spec, node, labels))
    if "gateway" in node.components:
        services.append(_gateway_service(prefix, spec, node, labels))
        endpoints["gateway"] = f"https://{LOOPBACK}:{node.ports['gateway']}"
        endpoints["peer"] = f"https://{LOOPBACK}:{node.ports['peer']}"
        probes["gateway"] = f"{endpoints['gateway']}/health"
    services += _people_services(prefix, spec, node, labels)
    for name, (endpoint, probe) in _people_endpoints(node).items():
        endpoints[name], probes[name] = endpoint, probe
    return NodePlan(
        stack=stack,
        site=node.site,
        role=node.role,
        network=prefix,
        labels=labels,
        volumes=tuple(v.volume for s in services for v in s.volumes),
        services=tuple(services),
        endpoints=endpoints,
        probes=probes,
        peers_network=peers_network(stack) if "gateway" in node.components else None,
    )


def _image(node: NodeSpec, name: str, recipe: str) -> ImageRef:
    if name in node.images.overrides:
        return ImageRef(node.images.overrides[name])
    if node.images.kind == "registry":
        return ImageRef(f"{node.images.registry}/{recipe}:{_image_tag()}")
    return ImageRef(f"hubnode/{recipe}:{_image_tag()}", ImageBuild(recipe, node.images.base_image))


def _http_health(port: int, *, start_period_s: int, budget_s: int, path: str = "/health") -> HealthCheck:
    """The health check of our HTTP services: `path` on `port` answers 200 from inside the container."""
    return HealthCheck(
        test=("CMD", "curl", "-fsS", "-o", "/dev/null", f"http://{LOOPBACK}:{port}{path}"),
        interval_s=10,
        start_period_s=start_period_s,
        budget_s=budget_s,
    )


def _service_labels(labels: Mapping[str, str], component: str) -> dict[str, str]:
    return {**labels, f"{LABEL_PREFIX}.component": component}


def _own_database(
    prefix: str, node: NodeSpec, labels: Mapping[str, str], component: str, database: str
) -> list[ServicePlan]:
    """The PostgreSQL container of one service of a `database: postgres` node (none on the embedded ones)."""
    return [_db_service(prefix, node, labels, component, database)] if node.database == "postgres" else []


def _db_call(component: str) -> Call:
    """How a service reaches its PostgreSQL container (`db`, `tcdb`, `cndb`, `kcdb`)."""
    return Call(component, POSTGRES_PORT)


def _psycopg_url(component: str, database: str) -> str:
    """A Python service's URL of its PostgreSQL container (`tcdb`, `cndb`): user and database share the name."""
    return f"postgresql+psycopg://{database}@{_db_call(component).address}/{database}"


def _db_password(component: str) -> SecretFile:
    return SecretFile(f"{component}-password", f"{SECRETS_DIR}/{component}-password")


def _db_service(prefix: str, node: NodeSpec, labels: Mapping[str, str], component: str, database: str) -> ServicePlan:
    """A PostgreSQL container; the trust centre gets its own (`tcdb`), apart from clinical data."""
    secret = _db_password(component)
    return ServicePlan(
        component=component,
        container_name=f"{prefix}-{component}",
        image=_image(node, "db", "postgres"),
        # The official postgres image reads the same variables, so it can be swapped in.
        env={
            "POSTGRES_USER": database,
            "POSTGRES_DB": database,
            "POSTGRES_PASSWORD_FILE": secret.path,
            "PGDATA": "/var/lib/postgresql/data/pgdata",
        },
        ports=(),
        volumes=(VolumeMount(f"{prefix}-{component}-data", "/var/lib/postgresql/data"),),
        secrets=(secret,),
        health=HealthCheck(
            test=("CMD", "pg_isready", "-q", "-h", LOOPBACK, "-U", database, "-d", database),
            interval_s=5,
            start_period_s=10,
            budget_s=90,
        ),
        user=DB_USER,
        uid=OFFICIAL_DB_UID if "db" in node.images.overrides else DB_UID,
        network_aliases=(component,),
        labels=_service_labels(labels, component),
        # PostgreSQL runs a process per connection (HAPI's pool of 10, the trust centre's up to 20) beside its
        # own; it writes its data volume and, in /var/run/postgresql, its socket and the socket's lock file.
        hardening=Hardening(memory_mib=1024, pids=256, tmpfs=(Tmpfs("/var/run/postgresql", 1),)),
        listens=(POSTGRES_PORT,),
    )


def _fhir_service(prefix: str, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    java = f"-XX:MaxRAMPercentage={HAPI_HEAP_PERCENT}"
    ports = {"SERVER_PORT": str(HAPI_PORT), "HAPI_METRICS_PORT": str(HAPI_METRICS_PORT)}
    env = {**ports, "HAPI_DB": "h2", "JAVA_TOOL_OPTIONS": java}
    secrets: tuple[SecretFile, ...] = ()
    depends_on: tuple[str, ...] = ()
    calls: tuple[Call, ...] = ()
    if node.database == "postgres":
        secret = _db_password("db")
        calls = (_db_call("db"),)
        env = {
            **ports,
            "JAVA_TOOL_OPTIONS": java,
            "HAPI_DB": "postgres",
            "HAPI_DB_URL": f"jdbc:postgresql://{calls[0].address}/{DB_NAME}",
            "HAPI_DB_USER": DB_NAME,
            "HAPI_DB_PASSWORD_FILE": secret.path,
        }
        secrets = (secret,)
        depends_on = ("db",)
    return ServicePlan(
        component="fhir",
        container_name=f"{prefix}-fhir",
        image=_image(node, "fhir", "hapi"),
        env=env,
        ports=_published(node, "fhir", HAPI_PORT),
        volumes=(VolumeMount(f"{prefix}-fhir-data", "/var/lib/hapi"),),
        secrets=secrets,
        health=_http_health(HAPI_PORT, start_period_s=120, budget_s=300),
        user=SERVICE_USER,
        network_aliases=("fhir",),
        labels=_service_labels(labels, "fhir"),
        slow_start=True,
        # A JVM: Tomcat's up to 200 request threads beside its own; it writes its volume (H2) and, in /tmp,
        # Tomcat's work folder and the JVM's performance data.
        hardening=Hardening(memory_mib=3072, pids=1024, tmpfs=(Tmpfs("/tmp", 64),)),  # noqa: S108
        depends_on=depends_on,
        probe_url=_probe(node, "fhir", "/health"),
        listens=(HAPI_PORT, HAPI_METRICS_PORT),
        calls=calls,
        replicas=node.replicas.get("fhir", 1),
    )


def _trustcentre_service(prefix: str, spec: StackSpec, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    secrets: tuple[SecretFile, ...] = (
        SecretFile("tc-secret", f"{SECRETS_DIR}/tc-secret"),
        SecretFile("tc-callers", f"{SECRETS_DIR}/tc-callers", _trustcentre_callers(spec, node)),
    )
    env = {
        "TC_PORT": str(TRUSTCENTRE_PORT),
        "TC_SITE": node.site,
        "TC_SECRET_FILE": secrets[0].path,
        "TC_CALLERS_FILE": secrets[1].path,
        "TC_DOMAINS_FILE": "/etc/trustcentre/domains.json",
        "TC_PROJECTS_FILE": "/etc/trustcentre/projects.json",
        "TC_DATABASE_URL": "sqlite:////var/lib/trustcentre/trustcentre.db",
    }
    if "gateway" in node.components:  # other nodes call through the peer door, known by the allow list
        files = _federation_files("allow-list", "federation-ca", "revocation-list")
        secrets = (*secrets, *files, SecretFile("gateway-secret", f"{SECRETS_DIR}/gateway-secret"))
        env |= {
            "TC_ALLOW_LIST_FILE": files[0].path,
            "TC_CA_FILE": files[1].path,
            "TC_CRL_FILE": files[2].path,
            "TC_GATEWAY_SECRET_FILE": f"{SECRETS_DIR}/gateway-secret",
        }
    depends_on: tuple[str, ...] = ()
    calls: tuple[Call, ...] = ()
    if node.database == "postgres":
        password = _db_password("tcdb")
        calls = (_db_call("tcdb"),)
        env["TC_DATABASE_URL"] = _psycopg_url("tcdb", TRUSTCENTRE_DB_NAME)
        env["TC_DB_PASSWORD_FILE"] = password.path
        secrets = (*secrets, password)
        depends_on = ("tcdb",)
    domains = [{"name": d.name, **d.settings} for d in node.domains]
    projects = {p.name: {"domain": p.domain} for p in (spec.federation.projects if spec.federation else ())}
    config_files: tuple[ConfigFile, ...] = (
        ConfigFile(env["TC_DOMAINS_FILE"], json.dumps({"domains": domains}, indent=2, sort_keys=True) + "\n"),
        ConfigFile(env["TC_PROJECTS_FILE"], json.dumps(projects, indent=2, sort_keys=True) + "\n"),
    )
    if node.consent_domains:  # none declared: the trust centre's built-in MII broad consent
        env["TC_CONSENT_DOMAINS_FILE"] = "/etc/trustcentre/consent-domains.json"
        consent = [{"name": d.name, **d.settings} for d in node.consent_domains]
        text = json.dumps({"domains": consent}, indent=2, sort_keys=True) + "\n"
        config_files = (*config_files, ConfigFile(env["TC_CONSENT_DOMAINS_FILE"], text))
    return ServicePlan(
        component="trustcentre",
        container_name=f"{prefix}-trustcentre",
        image=_image(node, "trustcentre", "trustcentre"),
        env=env,
        ports=_published(node, "trustcentre", TRUSTCENTRE_PORT),
        volumes=(VolumeMount(f"{prefix}-trustcentre-data", "/var/lib/trustcentre"),),
        secrets=secrets,
        health=_http_health(TRUSTCENTRE_PORT, start_period_s=20, budget_s=120),
        user=SERVICE_USER,
        network_aliases=("trustcentre",),
        labels=_service_labels(labels, "trustcentre"),
        # Bodies are at most 8 MiB (TC_* limits); one process with a thread pool.
        hardening=Hardening(memory_mib=512, pids=256, tmpfs=(PYTHON_TMP,)),
        depends_on=depends_on,
        probe_url=_probe(node, "trustcentre", "/health"),
        files=config_files,
        listens=(TRUSTCENTRE_PORT,),
        calls=calls,
    )


def _published(node: NodeSpec, name: str, container_port: int) -> tuple[PortBinding, ...]:
    """The host port of `name`, if the node publishes one (behind a gateway, only on request)."""
    return (PortBinding(container_port, node.ports[name]),) if name in node.ports else ()


def _probe(node: NodeSpec, name: str, path: str) -> str | None:
    return f"http://{LOOPBACK}:{node.ports[name]}{path}" if name in node.ports else None


def _trustcentre_callers(spec: StackSpec, node: NodeSpec) -> CallersFile:
    """The site admin (everything), this node's connector by token, other nodes' connectors by certificate.

    A connector speaks for its own site only: it links by its own identifier systems and pseudonymises
    in the domains of the projects it sends for. A research node needs nothing here: it receives
    pseudonymised extracts and starts only feasibility counts; it may only redeem a ticket for a
    patient's ledger (`trustcentre.ledger_tickets`).
    """
    tokens: list[tuple[Grant, str]] = [(Grant("site-admin", TRUSTCENTRE_ROLES), "tc-admin-token")]
    if "connector" in node.components:
        tokens.append((_connector_grant(spec, node, "connector"), "cn-tc-token"))
    for other in spec.nodes:  # each node's portal by its own token (kept in that node's folder)
        if "portal" in other.components:
            secret = PORTAL_TRUSTCENTRE_TOKEN if other is node else of_site(other.site, PORTAL_TRUSTCENTRE_TOKEN)
            name = "portal" if other is node else f"{other.site}-portal"
            grant = Grant(name, PORTAL_TRUSTCENTRE_ROLES, other.site, other.own_identifier_systems, ())
            tokens.append((grant, secret))
    nodes = tuple(
        _connector_grant(spec, other, f"{other.site}-connector")
        for other in spec.nodes
        if spec.federation and other is not node and "connector" in other.components
    )
    return CallersFile(tuple(tokens), nodes)


def _connector_grant(spec: StackSpec, node: NodeSpec, name: str) -> Grant:
    if node.role == "research":
        return Grant(name, RESEARCH_CONNECTOR_TRUSTCENTRE_ROLES, node.site, (), ())
    projects = spec.federation.projects if spec.federation else ()
    domains = {p.domain for p in projects if spec.sends_for(node, p)}
    if node.ttp is not None and node.ttp.url is None:  # links through the E-PIX IG, in a domain of ours
        domains.add(node.ttp.epix_domain)
    return Grant(name, CONNECTOR_TRUSTCENTRE_ROLES, node.site, node.own_identifier_systems, tuple(sorted(domains)))


def _federation_files(*names: str) -> tuple[SecretFile, ...]:
    paths = {
        "node-certificate": f"{SECRETS_DIR}/node.crt",
        "node-key": f"{SECRETS_DIR}/node.key",
        "federation-ca": f"{HUBNODE_FILES_DIR}/ca.crt",
        "allow-list": f"{HUBNODE_FILES_DIR}/allow-list.json",
        "revocation-list": f"{HUBNODE_FILES_DIR}/federation.crl",
    }
    return tuple(SecretFile(name, paths[name]) for name in names)


def public_url(node: NodeSpec) -> str:
    """Where clients reach the node's public door: as the stack says, else its gateway port on this host."""
    return node.public_url or f"https://{LOOPBACK}:{node.ports['gateway']}"


def _trustcentre_url(spec: StackSpec, node: NodeSpec) -> str:
    """Where a node's connector finds its trust centre: the site's own, beside it, or behind a peer's gateway."""
    if node.ttp is not None and node.ttp.url is not None:
        return node.ttp.url
    if "trustcentre" in node.components:
        return f"http://{TRUSTCENTRE_CALL.address}{TRUSTCENTRE_BASE}"
    serving = spec.trust_centre
    if serving is not None:
        return f"https://{serving.host}:{GATEWAY_PEER_PORT}{TRUSTCENTRE_BASE}"
    peers = spec.federation.peers if spec.federation else ()
    remote = next(p for p in sorted(peers, key=lambda p: p.role != "ttp") if p.role in ("ttp", "dic"))
    return remote.address.removesuffix("/fhir") + TRUSTCENTRE_BASE


def _ttp_environment(ttp: TtpSpec) -> dict[str, str]:
    """The connector's CN_EPIX_* / CN_CONSENT_DOMAIN settings: link and ask consent through the IGs."""
    env = {"CN_EPIX_DOMAIN": ttp.epix_domain}
    if ttp.epix_source is not None:
        env["CN_EPIX_SOURCE"] = ttp.epix_source
    if ttp.consent_domain is not None:
        env["CN_CONSENT_DOMAIN"] = ttp.consent_domain
    return env


def _connector_service(prefix: str, spec: StackSpec, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    federation = spec.federation
    assert federation is not None  # noqa: S101 -- the spec refuses a connector outside a federation
    secrets = (
        *_federation_files("node-certificate", "node-key", "federation-ca", "allow-list", "revocation-list"),
        SecretFile("gateway-secret", f"{SECRETS_DIR}/gateway-secret"),
        SecretFile(
            "cn-callers",
            f"{SECRETS_DIR}/cn-callers",
            CallersFile(
                (
                    (Grant("site-admin", CONNECTOR_ROLES), "cn-admin-token"),
                    (Grant("reader", ("read",)), "cn-reader-token"),
                    *(
                        ((Grant("portal", PORTAL_CONNECTOR_ROLES), PORTAL_CONNECTOR_TOKEN),)
                        if "portal" in node.components
                        else ()
                    ),
                )
            ),
        ),
    )
    env = {
        "CN_SITE": node.site,
        "CN_ROLE": node.role,
        "CN_PORT": str(CONNECTOR_PORT),
        "CN_DB_URL": "sqlite:////var/lib/connector/connector.db",
        "CN_FHIR_URL": f"http://{FHIR_CALL.address}/fhir",
        "CN_TRUSTCENTRE_URL": _trustcentre_url(spec, node),
        "CN_CALLERS_FILE": f"{SECRETS_DIR}/cn-callers",
        "CN_ALLOW_LIST_FILE": f"{HUBNODE_FILES_DIR}/allow-list.json",
        "CN_GATEWAY_SECRET_FILE": f"{SECRETS_DIR}/gateway-secret",
        "CN_CLIENT_CERT_FILE": f"{SECRETS_DIR}/node.crt",
        "CN_CLIENT_KEY_FILE": f"{SECRETS_DIR}/node.key",
        "CN_CA_FILE": f"{HUBNODE_FILES_DIR}/ca.crt",
        "CN_CRL_FILE": f"{HUBNODE_FILES_DIR}/federation.crl",
        "CN_PROJECTS_FILE": "/etc/connector/projects.json",
        "CN_PUBLIC_URL": public_url(node),
        "CN_VALIDATION": node.validation.profiles,
        "CN_VALIDATION_TERMINOLOGY": node.validation.terminology,
    }
    depends_on: tuple[str, ...] = ("fhir",)
    calls: tuple[Call, ...] = (FHIR_CALL,)
    files: tuple[ConfigFile, ...] = ()
    site_ttp = node.ttp is not None and node.ttp.url is not None
    if "trustcentre" in node.components or site_ttp:
        secrets = (*secrets, SecretFile("cn-tc-token", f"{SECRETS_DIR}/cn-tc-token", provided=site_ttp))
        env["CN_TRUSTCENTRE_TOKEN_FILE"] = f"{SECRETS_DIR}/cn-tc-token"
        if not site_ttp:
            depends_on, calls = (*depends_on, "trustcentre"), (*calls, TRUSTCENTRE_CALL)
    if node.database == "postgres":  # one database for every pod of it (`replicas`), its Tasks claimed per pod
        password = _db_password("cndb")
        env["CN_DB_ADOPT_FILE"] = env["CN_DB_URL"].removeprefix("sqlite:///")  # a store kept before, moved once
        env["CN_DB_URL"] = _psycopg_url("cndb", CONNECTOR_DB_NAME)
        env["CN_DB_PASSWORD_FILE"] = password.path
        env["CN_RESOURCE_IDS"] = "derived"  # HAPI on PostgreSQL: writes at client ids do not slow with volume
        secrets = (*secrets, password)
        depends_on, calls = (*depends_on, "cndb"), (*calls, _db_call("cndb"))
    if node.ttp is not None:
        env.update(_ttp_environment(node.ttp))
        if node.ttp.ca_certificate is not None:
            files = (ConfigFile(TRUSTCENTRE_CA_PATH, node.ttp.ca_certificate),)
            env["CN_TRUSTCENTRE_CA_FILE"] = TRUSTCENTRE_CA_PATH
    projects = {p.name: {"domain": p.domain, "send": spec.sends_for(node, p)} for p in federation.projects}
    return ServicePlan(
        component="connector",
        container_name=f"{prefix}-connector",
        image=_image(node, "connector", "connector"),
        env=env,
        ports=(),
        volumes=(VolumeMount(f"{prefix}-connector-data", "/var/lib/connector"),),
        secrets=secrets,
        health=_http_health(CONNECTOR_PORT, start_period_s=20, budget_s=120),
        user=SERVICE_USER,
        network_aliases=("connector",),
        labels=_service_labels(labels, "connector"),
        # A 32 MiB ingest body is validated and rewritten as Python objects: about 30 times its size at the peak.
        hardening=Hardening(memory_mib=1536, pids=256, tmpfs=(PYTHON_TMP,)),
        depends_on=depends_on,
        files=(ConfigFile(env["CN_PROJECTS_FILE"], json.dumps(projects, indent=2, sort_keys=True) + "\n"), *files),
        networks=(NetworkAttachment(peers_network(spec.stack)),),
        listens=(CONNECTOR_PORT,),
        replicas=node.replicas.get("connector", 1),
        calls=calls,
    )


def _gateway_service(prefix: str, spec: StackSpec, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    """nginx: the node's only published doors, TLS for clients and mutual TLS for peers."""
    include = SecretFile(
        "gateway-secret.conf",
        f"{SECRETS_DIR}/gateway-secret.conf",
        NginxSecretInclude("gateway-secret", GATEWAY_SECRET_VARIABLE),
    )
    secrets = (*_federation_files("node-certificate", "node-key", "federation-ca", "revocation-list"), include)
    upstreams = {
        call.service: Upstream(call.service, call.port) if call.service in node.components else None
        for call in (CONNECTOR_CALL, TRUSTCENTRE_CALL, IDP_CALL, PORTAL_CALL)
    }
    config = GatewayConfig(
        connector=upstreams["connector"],
        trustcentre=upstreams["trustcentre"],
        idp=upstreams["idp"],
        portal=upstreams["portal"],
        certificate_file=secrets[0].path,
        key_file=secrets[1].path,
        ca_file=secrets[2].path,
        crl_file=secrets[3].path,
        secret_include=include.path,
        secret_variable=GATEWAY_SECRET_VARIABLE,
        public_port=GATEWAY_PUBLIC_PORT,
        peer_port=GATEWAY_PEER_PORT,
        health_port=GATEWAY_HEALTH_PORT,
    )
    behind = tuple(c for c in ("connector", "trustcentre") if c in node.components)
    return ServicePlan(
        component="gateway",
        container_name=f"{prefix}-gateway",
        image=_image(node, "gateway", "gateway"),
        env={},
        ports=(
            PortBinding(GATEWAY_PUBLIC_PORT, node.ports["gateway"]),
            PortBinding(GATEWAY_PEER_PORT, node.ports["peer"]),
        ),
        volumes=(),
        secrets=secrets,
        health=_http_health(GATEWAY_HEALTH_PORT, start_period_s=10, budget_s=60),
        user=SERVICE_USER,
        network_aliases=("gateway",),
        labels=_service_labels(labels, "gateway"),
        # nginx writes only its pid file and empty temp folders to its state folder: it streams request bodies
        # to the services and holds answers in memory (GatewayConfig), so no request or answer touches a disk.
        hardening=Hardening(memory_mib=512, pids=256, tmpfs=(Tmpfs(config.state_dir, 16),)),
        depends_on=behind,
        files=(ConfigFile(GATEWAY_CONFIG_PATH, render_gateway_config(config), config),),
        networks=(NetworkAttachment(peers_network(spec.stack), (node.host,)),),
        listens=(GATEWAY_PUBLIC_PORT, GATEWAY_PEER_PORT, GATEWAY_HEALTH_PORT),
        calls=tuple(Call(u.host, u.port) for u in upstreams.values() if u is not None),
    )


def idp_issuer(node: NodeSpec) -> str:
    """The issuer of the node's tokens: its realm under the gateway, the one URL browsers and services agree on."""
    return f"{public_url(node)}{IDP_PATH}/realms/{REALM}"


def _idp_services(prefix: str, spec: StackSpec, node: NodeSpec, labels: Mapping[str, str]) -> list[ServicePlan]:
    """Keycloak (after its own PostgreSQL, `kcdb`, on a postgres node) behind the node's gateway.

    Its front-end URLs (issuer, login pages) are always the public ones under the gateway's `/idp`;
    requests from inside the node (`http://idp:8180/idp`) get back-channel URLs (token, keys) on the
    address they used. Secrets are files: the image's entrypoint reads each `KC_*_FILE` into its
    variable right before Keycloak starts.
    """
    realm = Realm(
        site=node.site,
        portal_url=f"{public_url(node)}/portal",
        users=node.users,
        password_grant=spec.environment == "local",
    )
    secrets: tuple[SecretFile, ...] = (
        SecretFile("idp-admin-password", f"{SECRETS_DIR}/idp-admin-password"),
        SecretFile("idp-realm", IDP_REALM_FILE, realm),
    )
    env = {
        "KC_HTTP_ENABLED": "true",
        "KC_HTTP_PORT": str(IDP_PORT),
        "KC_HOSTNAME": f"{public_url(node)}{IDP_PATH}",
        "KC_HOSTNAME_BACKCHANNEL_DYNAMIC": "true",
        "KC_PROXY_HEADERS": "xforwarded",
        "KC_BOOTSTRAP_ADMIN_USERNAME": IDP_ADMIN,
        "KC_BOOTSTRAP_ADMIN_PASSWORD_FILE": secrets[0].path,
    }
    volumes: tuple[VolumeMount, ...] = (VolumeMount(f"{prefix}-idp-data", IDP_DATA_DIR),)
    depends_on: tuple[str, ...] = ()
    calls: tuple[Call, ...] = ()
    database: list[ServicePlan] = []
    if node.database == "postgres":
        database.append(_db_service(prefix, node, labels, "kcdb", IDP_DB_NAME))
        password = _db_password("kcdb")
        calls = (_db_call("kcdb"),)
        env["KC_DB_URL"] = f"jdbc:postgresql://{calls[0].address}/{IDP_DB_NAME}"
        env["KC_DB_USERNAME"] = IDP_DB_NAME
        env["KC_DB_PASSWORD_FILE"] = password.path
        secrets = (*secrets, password)
        volumes = ()
        depends_on = ("kcdb",)
    idp = ServicePlan(
        component="idp",
        container_name=f"{prefix}-idp",
        # Keycloak bakes its database vendor into its build: one image per vendor.
        image=_image(node, "idp", "idp-postgres" if node.database == "postgres" else "idp"),
        env=env,
        ports=(),
        volumes=volumes,
        secrets=secrets,
        health=_http_health(IDP_MANAGEMENT_PORT, start_period_s=120, budget_s=300, path=f"{IDP_PATH}/health/ready"),
        user=SERVICE_USER,
        network_aliases=("idp",),
        labels=_service_labels(labels, "idp"),
        slow_start=True,
        depends_on=depends_on,
        # Keycloak writes scratch files under data/tmp and the JVM under /tmp; its heap is 512 MiB (kc.sh's default).
        hardening=Hardening(
            memory_mib=1536,
            pids=1024,
            tmpfs=(Tmpfs("/tmp", 64), Tmpfs("/opt/keycloak/data/tmp", 64)),  # noqa: S108
        ),
        listens=(IDP_PORT, IDP_MANAGEMENT_PORT),
        calls=calls,
    )
    return [*database, idp]


def _people_services(prefix: str, spec: StackSpec, node: NodeSpec, labels: Mapping[str, str]) -> list[ServicePlan]:
    """What people use: the identity provider (after its database) and the portal."""
    services = _idp_services(prefix, spec, node, labels) if "idp" in node.components else []
    return services + ([_portal_service(prefix, spec, node, labels)] if "portal" in node.components else [])


def _people_endpoints(node: NodeSpec) -> dict[str, tuple[str, str]]:
    """Endpoint name -> (URL, probe) of the identity provider and the portal, where the node runs them."""
    found = {}
    if "idp" in node.components:
        found["idp"] = (idp_issuer(node), f"{idp_issuer(node)}/.well-known/openid-configuration")
    if "portal" in node.components:
        found["portal"] = (portal_url(node), f"{portal_url(node)}/")
    return found


def portal_url(node: NodeSpec) -> str:
    """The portal's public base: under the node's public door, where browsers reach it."""
    return f"{public_url(node)}{PORTAL_PATH}"


def _portal_trustcentre(spec: StackSpec, node: NodeSpec) -> str:
    """The trust centre the portal asks: beside it, or at its node's public door (bearer token, TLS)."""
    if "trustcentre" in node.components:
        return f"http://{TRUSTCENTRE_CALL.address}{TRUSTCENTRE_BASE}"
    serving = spec.trust_centre
    assert serving is not None  # noqa: S101 -- the spec refuses a portal without a trust centre in its stack
    return f"https://{serving.host}:{GATEWAY_PUBLIC_PORT}{TRUSTCENTRE_BASE}"


def _portal_service(prefix: str, spec: StackSpec, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    """The portal: signs users in at the node's Keycloak, reads through its connector, asks the trust centre.

    Its clients' secrets are the ones the realm was made with; its tokens at the connector and the trust
    centre are its own (their hashes are in those services' callers files). A portal whose trust centre is
    on another node reaches it at that node's public door over the peers network, trusting the federation CA.
    """
    secrets = (
        SecretFile(PORTAL_SECRET, f"{SECRETS_DIR}/{PORTAL_SECRET}"),
        SecretFile(PORTAL_SERVICE_SECRET, f"{SECRETS_DIR}/{PORTAL_SERVICE_SECRET}"),
        SecretFile(PORTAL_CONNECTOR_TOKEN, f"{SECRETS_DIR}/{PORTAL_CONNECTOR_TOKEN}"),
        SecretFile(PORTAL_TRUSTCENTRE_TOKEN, f"{SECRETS_DIR}/{PORTAL_TRUSTCENTRE_TOKEN}"),
        *_federation_files("federation-ca", "node-certificate", "node-key"),
    )
    peers = [
        other.site
        for other in spec.nodes
        if other is not node and "connector" in other.components and other.role in ("dic", "practice")
    ]
    env = {
        "PT_SITE": node.site,
        "PT_PORT": str(PORTAL_PORT),
        "PT_PUBLIC_URL": portal_url(node),
        "PT_ISSUER": idp_issuer(node),
        "PT_IDP_URL": f"http://{IDP_CALL.address}{IDP_PATH}/realms/{REALM}",
        "PT_CLIENT_ID": PORTAL_CLIENT,
        "PT_CLIENT_SECRET_FILE": secrets[0].path,
        "PT_SERVICE_CLIENT_ID": PORTAL_SERVICE_CLIENT,
        "PT_SERVICE_CLIENT_SECRET_FILE": secrets[1].path,
        "PT_CONNECTOR_URL": f"http://{CONNECTOR_CALL.address}/fhir",
        "PT_CONNECTOR_TOKEN_FILE": secrets[2].path,
        "PT_TRUSTCENTRE_URL": _portal_trustcentre(spec, node),
        "PT_TRUSTCENTRE_TOKEN_FILE": secrets[3].path,
        "PT_CA_FILE": secrets[4].path,
        "PT_NODE_CERT_FILE": secrets[5].path,
        "PT_NODE_KEY_FILE": secrets[6].path,
        "PT_DB_URL": "sqlite:////var/lib/portal/portal.db",
        "PT_LOCAL_SYSTEM": node.identifier_systems[0]
        if node.identifier_systems
        else f"{SOURCE_SYSTEM_BASE}/{node.site}",
        "PT_PEERS": ",".join(peers),
        "PT_PROJECTS_FILE": "/etc/portal/projects.json",
    }
    projects = {
        p.name: {"title": p.title, "summary": p.summary, "recipient": p.recipient, "categories": list(p.categories)}
        for p in (spec.federation.projects if spec.federation else ())
    }
    remote = "trustcentre" not in node.components
    return ServicePlan(
        component="portal",
        container_name=f"{prefix}-portal",
        image=_image(node, "portal", "portal"),
        env=env,
        ports=(),
        volumes=(VolumeMount(f"{prefix}-portal-data", "/var/lib/portal"),),
        secrets=secrets,
        health=_http_health(PORTAL_PORT, start_period_s=20, budget_s=120),
        user=SERVICE_USER,
        network_aliases=("portal",),
        labels=_service_labels(labels, "portal"),
        # Form bodies and questionnaire answers are small (the gateway lets at most 1 MiB through); one process.
        hardening=Hardening(memory_mib=512, pids=256, tmpfs=(PYTHON_TMP,)),
        # Not on the idp: the portal reads the realm's discovery at the first sign-in, so it need not wait for
        # Keycloak's slow start.
        depends_on=("connector", *(("trustcentre",) if not remote else ())),
        files=(ConfigFile(env["PT_PROJECTS_FILE"], json.dumps(projects, indent=2, sort_keys=True) + "\n"),),
        networks=(NetworkAttachment(peers_network(spec.stack)),) if remote else (),
        listens=(PORTAL_PORT,),
        calls=(IDP_CALL, CONNECTOR_CALL, *((TRUSTCENTRE_CALL,) if not remote else ())),
    )
