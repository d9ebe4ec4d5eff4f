"""NodeSpec -> NodePlan: every container of a node as plain data, the single source of truth.

Pure. The Pulumi adapter (`infra.docker_node`) and the local launcher (`infra.local`) only
translate these plans, so what the launcher proves about a plan holds for `pulumi up` too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version

from infra.spec import NodeSpec, StackSpec

LOOPBACK = "127.0.0.1"
#: Every image of ours runs as this unprivileged user (created in each Dockerfile).
SERVICE_USER = "hubnode"
DB_USER = "postgres"
SECRETS_DIR = "/run/secrets"
LABEL_PREFIX = "org.hubnode"
HAPI_PORT = 8080
TRUSTCENTRE_PORT = 8081
POSTGRES_PORT = 5432
DB_NAME = "hapi"
TRUSTCENTRE_DB_NAME = "trustcentre"
TRUSTCENTRE_BASE = "/ttp-fhir/fhir"
#: Every role of the trust centre (`trustcentre.auth.Role`); the site's admin token holds them all.
TRUSTCENTRE_ROLES = (
    "pseudonymize",
    "depseudonymize",
    "manage-domains",
    "consent-read",
    "consent-write",
    "linkage",
    "linkage-review",
    "audit-read",
)


def _image_tag() -> str:
    return version("hubnode")


@dataclass(frozen=True)
class ImageBuild:
    """A local build: recipe directory under `infra/images/` and the base image it starts FROM."""

    recipe: str
    base_image: str


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
class SecretFile:
    """A file the service reads a secret from; each adapter supplies its content its own way."""

    name: str
    path: str


@dataclass(frozen=True)
class ConfigFile:
    """A non-secret file the service reads, its content fixed by the plan."""

    path: str
    content: str


def trustcentre_callers(admin_token: str) -> str:
    """The trust centre's callers file for a site admin token: only the token's hash is stored."""
    digest = hashlib.sha256(admin_token.encode()).hexdigest()
    callers = [{"name": "site-admin", "token_sha256": digest, "roles": list(TRUSTCENTRE_ROLES)}]
    return json.dumps({"callers": callers}, indent=2) + "\n"


#: Secret files whose content is derived from another secret: name -> (source secret, derivation).
DERIVED_SECRETS: Mapping[str, tuple[str, Callable[[str], str]]] = {
    "tc-callers": ("tc-admin-token", trustcentre_callers),
}


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
    depends_on: tuple[str, ...] = ()
    files: tuple[ConfigFile, ...] = ()
    #: A URL on this host that answers 200 once the service is ready; cheaper to poll than the health check.
    probe_url: str | None = None


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


def plan_stack(spec: StackSpec) -> tuple[NodePlan, ...]:
    """Plan every node of a stack."""
    return tuple(plan_node(spec.stack, node) for node in spec.nodes)


def plan_node(stack: str, node: NodeSpec) -> NodePlan:
    """Plan one node: each component after the database it needs (`db`, `tcdb` with PostgreSQL)."""
    prefix = f"hubnode-{stack}-{node.site}"
    labels = {f"{LABEL_PREFIX}.stack": stack, f"{LABEL_PREFIX}.site": node.site}
    services: list[ServicePlan] = []
    endpoints: dict[str, str] = {}
    probes: dict[str, str] = {}
    if "fhir" in node.components:
        if node.database == "postgres":
            services.append(_db_service(prefix, node, labels, "db", DB_NAME))
        services.append(_fhir_service(prefix, node, labels))
        endpoints["fhir"] = f"http://{LOOPBACK}:{node.ports['fhir']}/fhir"
        probes["fhir"] = f"{endpoints['fhir']}/metadata"
    if "trustcentre" in node.components:
        if node.database == "postgres":
            services.append(_db_service(prefix, node, labels, "tcdb", TRUSTCENTRE_DB_NAME))
        services.append(_trustcentre_service(prefix, node, labels))
        endpoints["trustcentre"] = f"http://{LOOPBACK}:{node.ports['trustcentre']}{TRUSTCENTRE_BASE}"
        probes["trustcentre"] = f"{endpoints['trustcentre']}/gpas/metadata"
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
    )


def _image(node: NodeSpec, name: str, recipe: str) -> ImageRef:
    if name in node.images.overrides:
        return ImageRef(node.images.overrides[name])
    if node.images.kind == "registry":
        return ImageRef(f"{node.images.registry}/{recipe}:{_image_tag()}")
    return ImageRef(f"hubnode/{recipe}:{_image_tag()}", ImageBuild(recipe, node.images.base_image))


def _service_labels(labels: Mapping[str, str], component: str) -> dict[str, str]:
    return {**labels, f"{LABEL_PREFIX}.component": component}


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
        network_aliases=(component,),
        labels=_service_labels(labels, component),
    )


def _fhir_service(prefix: str, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    env = {"SERVER_PORT": str(HAPI_PORT), "HAPI_DB": "h2"}
    secrets: tuple[SecretFile, ...] = ()
    depends_on: tuple[str, ...] = ()
    if node.database == "postgres":
        secret = _db_password("db")
        env = {
            "SERVER_PORT": str(HAPI_PORT),
            "HAPI_DB": "postgres",
            "HAPI_DB_URL": f"jdbc:postgresql://db:{POSTGRES_PORT}/{DB_NAME}",
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
        ports=(PortBinding(HAPI_PORT, node.ports["fhir"]),),
        volumes=(VolumeMount(f"{prefix}-fhir-data", "/var/lib/hapi"),),
        secrets=secrets,
        health=HealthCheck(
            test=("CMD", "curl", "-fsS", "-o", "/dev/null", f"http://{LOOPBACK}:{HAPI_PORT}/health"),
            interval_s=10,
            start_period_s=120,
            budget_s=300,
        ),
        user=SERVICE_USER,
        network_aliases=("fhir",),
        labels=_service_labels(labels, "fhir"),
        depends_on=depends_on,
        probe_url=f"http://{LOOPBACK}:{node.ports['fhir']}/health",
    )


def _trustcentre_service(prefix: str, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    secrets: tuple[SecretFile, ...] = (
        SecretFile("tc-secret", f"{SECRETS_DIR}/tc-secret"),
        SecretFile("tc-callers", f"{SECRETS_DIR}/tc-callers"),
    )
    env = {
        "TC_PORT": str(TRUSTCENTRE_PORT),
        "TC_SITE": node.site,
        "TC_SECRET_FILE": secrets[0].path,
        "TC_CALLERS_FILE": secrets[1].path,
        "TC_DOMAINS_FILE": "/etc/trustcentre/domains.json",
        "TC_DATABASE_URL": "sqlite:////var/lib/trustcentre/trustcentre.db",
    }
    depends_on: tuple[str, ...] = ()
    if node.database == "postgres":
        password = _db_password("tcdb")
        database = TRUSTCENTRE_DB_NAME
        env["TC_DATABASE_URL"] = f"postgresql+psycopg://{database}@tcdb:{POSTGRES_PORT}/{database}"
        env["TC_DB_PASSWORD_FILE"] = password.path
        secrets = (*secrets, password)
        depends_on = ("tcdb",)
    domains = [{"name": d.name, **d.settings} for d in node.domains]
    return ServicePlan(
        component="trustcentre",
        container_name=f"{prefix}-trustcentre",
        image=_image(node, "trustcentre", "trustcentre"),
        env=env,
        ports=(PortBinding(TRUSTCENTRE_PORT, node.ports["trustcentre"]),),
        volumes=(VolumeMount(f"{prefix}-trustcentre-data", "/var/lib/trustcentre"),),
        secrets=secrets,
        health=HealthCheck(
            test=("CMD", "curl", "-fsS", "-o", "/dev/null", f"http://{LOOPBACK}:{TRUSTCENTRE_PORT}/health"),
            interval_s=10,
            start_period_s=20,
            budget_s=120,
        ),
        user=SERVICE_USER,
        network_aliases=("trustcentre",),
        labels=_service_labels(labels, "trustcentre"),
        depends_on=depends_on,
        probe_url=f"http://{LOOPBACK}:{node.ports['trustcentre']}/health",
        files=(ConfigFile(env["TC_DOMAINS_FILE"], json.dumps({"domains": domains}, indent=2, sort_keys=True) + "\n"),),
    )
