"""NodeSpec -> NodePlan: every container of a node as plain data, the single source of truth.

Pure. The Pulumi adapter (`infra.docker_node`) and the local launcher (`infra.local`) only
translate these plans, so what the launcher proves about a plan holds for `pulumi up` too.
"""

from __future__ import annotations

from collections.abc import Mapping
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
POSTGRES_PORT = 5432
DB_NAME = "hapi"


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


def plan_stack(spec: StackSpec) -> tuple[NodePlan, ...]:
    """Plan every node of a stack."""
    return tuple(plan_node(spec.stack, node) for node in spec.nodes)


def plan_node(stack: str, node: NodeSpec) -> NodePlan:
    """Plan one node: `db` first when the database is PostgreSQL, then `fhir`."""
    prefix = f"hubnode-{stack}-{node.site}"
    labels = {f"{LABEL_PREFIX}.stack": stack, f"{LABEL_PREFIX}.site": node.site}
    services: list[ServicePlan] = []
    if node.database == "postgres":
        services.append(_db_service(prefix, node, labels))
    services.append(_fhir_service(prefix, node, labels))
    return NodePlan(
        stack=stack,
        site=node.site,
        role=node.role,
        network=prefix,
        labels=labels,
        volumes=tuple(v.volume for s in services for v in s.volumes),
        services=tuple(services),
        endpoints={"fhir": f"http://{LOOPBACK}:{node.ports['fhir']}/fhir"},
    )


def _image(node: NodeSpec, name: str, recipe: str) -> ImageRef:
    if name in node.images.overrides:
        return ImageRef(node.images.overrides[name])
    if node.images.kind == "registry":
        return ImageRef(f"{node.images.registry}/{recipe}:{_image_tag()}")
    return ImageRef(f"hubnode/{recipe}:{_image_tag()}", ImageBuild(recipe, node.images.base_image))


def _service_labels(labels: Mapping[str, str], component: str) -> dict[str, str]:
    return {**labels, f"{LABEL_PREFIX}.component": component}


def _db_password() -> SecretFile:
    return SecretFile("db-password", f"{SECRETS_DIR}/db-password")


def _db_service(prefix: str, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    secret = _db_password()
    return ServicePlan(
        component="db",
        container_name=f"{prefix}-db",
        image=_image(node, "db", "postgres"),
        # The official postgres image reads the same variables, so it can be swapped in.
        env={
            "POSTGRES_USER": DB_NAME,
            "POSTGRES_DB": DB_NAME,
            "POSTGRES_PASSWORD_FILE": secret.path,
            "PGDATA": "/var/lib/postgresql/data/pgdata",
        },
        ports=(),
        volumes=(VolumeMount(f"{prefix}-db-data", "/var/lib/postgresql/data"),),
        secrets=(secret,),
        health=HealthCheck(
            test=("CMD", "pg_isready", "-q", "-h", LOOPBACK, "-U", DB_NAME, "-d", DB_NAME),
            interval_s=5,
            start_period_s=10,
            budget_s=90,
        ),
        user=DB_USER,
        network_aliases=("db",),
        labels=_service_labels(labels, "db"),
    )


def _fhir_service(prefix: str, node: NodeSpec, labels: Mapping[str, str]) -> ServicePlan:
    env = {"SERVER_PORT": str(HAPI_PORT), "HAPI_DB": "h2"}
    secrets: tuple[SecretFile, ...] = ()
    depends_on: tuple[str, ...] = ()
    if node.database == "postgres":
        secret = _db_password()
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
    )
