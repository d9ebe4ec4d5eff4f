from __future__ import annotations

import re
from importlib.metadata import version

import pytest

from infra.imagebuild import RECIPES_DIR, recipe_for
from infra.plan import (
    DROPPED_CAPABILITIES,
    HAPI_METRICS_PORT,
    HAPI_PORT,
    TRUSTCENTRE_ROLES,
    CallersFile,
    ImageBuild,
    ImageRef,
    NodePlan,
    PortBinding,
    ServicePlan,
    plan_stack,
)
from infra.spec import COMPONENTS, SpecError, parse_stack
from infra.stackfile import load_stack
from tests.conftest import PROJECT_DIR, stack_config

TAG = version("hubnode")


def node_plan(**config: object) -> NodePlan:
    spec = parse_stack("dev", {"hubnode:site": "dev", **{f"hubnode:{k}": v for k, v in config.items()}})
    [plan] = plan_stack(spec)
    return plan


def test_an_embedded_node_is_one_hapi_container_on_h2() -> None:
    plan = node_plan()
    [fhir] = plan.services
    assert fhir.component == "fhir"
    assert fhir.container_name == "hubnode-dev-dev-fhir"
    assert fhir.image == ImageRef(f"hubnode/hapi:{TAG}", ImageBuild("hapi", "hubnode/base:trixie"))
    assert fhir.env == {
        "SERVER_PORT": "8080",
        "HAPI_METRICS_PORT": "8090",
        "HAPI_DB": "h2",
        "JAVA_TOOL_OPTIONS": "-XX:MaxRAMPercentage=65",
    }
    assert fhir.ports == (PortBinding(8080, 8080, "127.0.0.1"),)
    assert [(v.volume, v.path) for v in fhir.volumes] == [("hubnode-dev-dev-fhir-data", "/var/lib/hapi")]
    assert fhir.secrets == ()
    assert plan.endpoints == {"fhir": "http://127.0.0.1:8080/fhir"}
    assert plan.network == "hubnode-dev-dev"


def test_a_postgres_node_starts_the_database_first_and_shares_the_password_as_a_file() -> None:
    plan = node_plan(database="postgres")
    db, fhir = plan.services
    assert (db.component, fhir.component) == ("db", "fhir")
    assert fhir.depends_on == ("db",)
    assert db.ports == ()  # the database is reachable only on the node's network
    assert db.secrets == fhir.secrets
    [secret] = db.secrets
    assert db.env["POSTGRES_PASSWORD_FILE"] == fhir.env["HAPI_DB_PASSWORD_FILE"] == secret.path
    assert fhir.env["HAPI_DB_URL"] == "jdbc:postgresql://db:5432/hapi"
    assert "db" in db.network_aliases
    assert not any("PASSWORD=" in f"{k}={v}" for s in plan.services for k, v in s.env.items())
    assert plan.volumes == ("hubnode-dev-dev-db-data", "hubnode-dev-dev-fhir-data")


def test_only_a_connector_whose_hapi_stores_on_postgres_asks_for_writes_at_derived_ids() -> None:
    """On the embedded H2 HAPI's writes at client-assigned ids slow as its tables grow."""
    config = {"federation": {"name": "fed"}, "components": ["fhir", "trustcentre", "connector", "gateway"]}
    wanted = {
        database: {s.component: s.env.get("CN_RESOURCE_IDS") for s in node_plan(**config, database=database).services}
        for database in ("embedded", "postgres")
    }
    assert wanted["postgres"]["connector"] == "derived"
    assert wanted["embedded"]["connector"] is None


def test_every_service_runs_as_a_named_non_root_user_with_a_health_check_and_stack_labels() -> None:
    for plan in (node_plan(), node_plan(database="postgres")):
        for service in plan.services:
            assert service.user not in ("", "root", "0")
            assert service.health.test[0] in ("CMD", "CMD-SHELL")
            assert service.health.budget_s > service.health.start_period_s > 0
            assert service.labels["org.hubnode.stack"] == "dev"
            assert service.labels["org.hubnode.component"] == service.component


def test_every_port_is_published_on_loopback_only() -> None:
    plan = node_plan(database="postgres", ports={"fhir": 18080})
    assert [p for s in plan.services for p in s.ports] == [PortBinding(8080, 18080, "127.0.0.1")]


def test_every_local_build_names_a_recipe_with_a_dockerfile_taking_the_base_image() -> None:
    for service in node_plan(database="postgres", components=["fhir", "trustcentre"]).services:
        assert service.image.build is not None
        dockerfile = recipe_for(service.image.build).dockerfile.read_text()
        assert "ARG BASE_IMAGE" in dockerfile
        assert "FROM ${BASE_IMAGE}" in dockerfile
        assert "\nUSER " in dockerfile


def test_registry_images_are_pulled_by_reference_and_overrides_win() -> None:
    plan = node_plan(
        database="postgres",
        images={"source": "registry", "registry": "registry.site.example/hubnode", "db": "postgres:17"},
    )
    db, fhir = plan.services
    assert db.image == ImageRef("postgres:17")
    assert fhir.image == ImageRef(f"registry.site.example/hubnode/hapi:{TAG}")


#: A node opting in to the components no example stack runs yet (the federation will, with the portal).
OPT_IN = {
    "hubnode:site": "opt-in",
    "hubnode:federation": {"name": "opt-in"},
    "hubnode:components": ["trustcentre", "gateway", "idp"],
}


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_has_a_plan_an_image_recipe_and_readme_documentation(component: str) -> None:
    specs = [load_stack(PROJECT_DIR, stack) for stack in ("dev", "federation")] + [parse_stack("opt-in", OPT_IN)]
    planned = {s.component: s for spec in specs for p in plan_stack(spec) for s in p.services}
    assert component in planned
    assert planned[component].image.build is not None
    assert recipe_for(planned[component].image.build).dockerfile.is_file()
    readme = (RECIPES_DIR.parent.parent / "README.md").read_text()
    assert f"`{component}`" in readme


def test_the_site_admin_of_the_trust_centre_holds_every_role_the_service_knows() -> None:
    from trustcentre.auth import Role  # noqa: PLC0415 -- the service is a separate package

    assert set(TRUSTCENTRE_ROLES) == {role.value for role in Role}


def test_a_postgres_trust_centre_has_its_own_database_container_apart_from_clinical_data() -> None:
    plan = node_plan(database="postgres", components=["fhir", "trustcentre"])
    assert [s.component for s in plan.services] == ["db", "fhir", "tcdb", "trustcentre"]
    trustcentre = plan.services[-1]
    assert trustcentre.depends_on == ("tcdb",)
    assert trustcentre.env["TC_DATABASE_URL"] == "postgresql+psycopg://trustcentre@tcdb:5432/trustcentre"
    assert {s.name for s in trustcentre.secrets} == {"tc-secret", "tc-callers", "tcdb-password"}
    assert plan.endpoints["trustcentre"] == "http://127.0.0.1:8081/ttp-fhir/fhir"


def test_a_portal_signs_in_at_its_node_reads_through_its_connector_and_asks_the_trust_centre() -> None:
    spec = load_stack(PROJECT_DIR, "federation")
    plans = {plan.site: plan for plan in plan_stack(spec)}
    dic = next(s for s in plans["dic"].services if s.component == "portal")
    practice = next(s for s in plans["practice"].services if s.component == "portal")
    assert dic.env["PT_ISSUER"] == "https://127.0.0.1:8443/idp/realms/hubnode"
    assert dic.env["PT_PUBLIC_URL"] == "https://127.0.0.1:8443/portal"
    assert dic.env["PT_IDP_URL"] == "http://idp:8180/idp/realms/hubnode"
    assert dic.env["PT_TRUSTCENTRE_URL"] == "http://trustcentre:8081/ttp-fhir/fhir"
    assert practice.env["PT_TRUSTCENTRE_URL"] == "https://dic.hubnode.test:8443/ttp-fhir/fhir"
    assert [n.network for n in practice.networks] == ["hubnode-federation-peers"]
    assert plans["dic"].endpoints["portal"] == "https://127.0.0.1:8443/portal"
    assert {s.name for s in dic.secrets} >= {
        "idp-portal-secret",
        "idp-portal-service-secret",
        "pt-cn-token",
        "pt-tc-token",
    }


def test_each_portal_holds_least_privilege_grants_at_its_connector_and_the_trust_centre() -> None:
    spec = load_stack(PROJECT_DIR, "federation")
    plans = {plan.site: plan for plan in plan_stack(spec)}
    callers = next(s.derived for svc in plans["dic"].services for s in svc.secrets if s.name == "tc-callers")
    assert isinstance(callers, CallersFile)
    grants = {grant.name: (grant, secret) for grant, secret in callers.tokens}
    assert grants["portal"][1] == "pt-tc-token"
    assert grants["practice-portal"][1] == "practice/pt-tc-token"  # kept in the practice's folder
    assert grants["practice-portal"][0].site == "practice"
    assert set(grants["portal"][0].roles) == {
        "enrolment",
        "consent-read",
        "consent-write",
        "consent-check",
        "audit-read",
    }
    assert grants["portal"][0].domains == ()
    connector = next(s.derived for svc in plans["practice"].services for s in svc.secrets if s.name == "cn-callers")
    assert isinstance(connector, CallersFile)
    assert ("portal", "pt-cn-token") in [(grant.name, secret) for grant, secret in connector.tokens]


def test_a_portal_needs_idp_gateway_and_connector_on_its_node() -> None:
    with pytest.raises(SpecError, match="a portal needs idp"):
        parse_stack(
            "p",
            {
                "hubnode:site": "clinic",
                "hubnode:federation": {"name": "fed"},
                "hubnode:components": ["fhir", "trustcentre", "connector", "gateway", "portal"],
            },
        )


def every_kind_of_container() -> list[ServicePlan]:
    """One of each: HAPI on H2 and on PostgreSQL, both databases, the trust centre, connector and gateway."""
    federation = plan_stack(load_stack(PROJECT_DIR, "federation"))
    postgres = node_plan(database="postgres", components=["fhir", "trustcentre"])
    return [s for p in (*federation, postgres) for s in p.services]


def test_hapis_metrics_port_is_set_on_every_fhir_container_and_never_published_nor_proxied() -> None:
    services = every_kind_of_container()
    fhirs = [s for s in services if s.component == "fhir"]
    assert {s.env.get("HAPI_DB", "h2") for s in fhirs} == {"h2", "postgres"}
    for fhir in fhirs:
        assert fhir.env["HAPI_METRICS_PORT"] == str(HAPI_METRICS_PORT) != fhir.env["SERVER_PORT"]
        assert HAPI_METRICS_PORT not in {p.container_port for p in fhir.ports}
    published = node_plan(ports={"fhir": 18080}).services[0]
    assert [p.container_port for p in published.ports] == [HAPI_PORT]
    gateways = [s for s in services if s.component == "gateway"]
    assert gateways
    for gateway in gateways:
        [config] = gateway.files
        assert "http://fhir:" not in config.content
        assert f":{HAPI_METRICS_PORT}" not in config.content


def test_every_container_drops_every_capability_and_gets_none_back_on_a_read_only_root() -> None:
    assert DROPPED_CAPABILITIES == ("ALL",)
    for service in every_kind_of_container():
        confined = service.hardening
        assert confined.capabilities == (), f"{service.component} needs no capability"
        assert confined.read_only_root, service.component
        assert confined.security_options == ("no-new-privileges:true",), service.component
        assert {t.path for t in confined.tmpfs}.isdisjoint(v.path for v in service.volumes)


def test_every_container_has_memory_and_pid_limits_that_leave_room_beside_its_tmpfs() -> None:
    for service in every_kind_of_container():
        confined = service.hardening
        assert confined.pids >= 256, service.component
        assert sum(t.size_mib for t in confined.tmpfs) <= confined.memory_mib // 8, service.component


def test_hapis_heap_is_a_share_of_its_memory_limit_large_enough_for_mii_bundles() -> None:
    for fhir in (s for s in every_kind_of_container() if s.component == "fhir"):
        [percent] = [o.split("=")[1] for o in fhir.env["JAVA_TOOL_OPTIONS"].split() if "MaxRAMPercentage" in o]
        heap_mib = fhir.hardening.memory_mib * int(percent) // 100
        assert 1536 <= heap_mib <= fhir.hardening.memory_mib - 768, "heap for HAPI, the rest for the JVM itself"


def test_on_a_read_only_root_files_are_mounted_into_their_folders() -> None:
    [trustcentre] = node_plan(components=["trustcentre"]).services
    assert trustcentre.file_folders == ("/etc/trustcentre", "/run/secrets")


def sibling_addresses(plan: NodePlan, service: ServicePlan) -> set[str]:
    """`host:port` of every URL in the service's settings and files that names a service of its own node."""
    aliases = {alias for other in plan.services for alias in other.network_aliases}
    texts = [*service.env.values(), *(file.content for file in service.files)]
    found = re.findall(r"(?:://|@)([a-z][a-z0-9-]*):(\d+)", "\n".join(texts))
    return {f"{host}:{port}" for host, port in found if host in aliases}


@pytest.mark.parametrize("database", ["embedded", "postgres"])
def test_each_service_calls_exactly_the_services_of_its_node_its_urls_name(database: str) -> None:
    config = stack_config("federation")
    plans = plan_stack(parse_stack("federation", {**config, "hubnode:database": database}))
    for plan in plans:
        for service in plan.services:
            assert {call.address for call in service.calls} == sibling_addresses(plan, service), service.component
            served = {other.component: other.listens for other in plan.services}
            assert all(call.port in served[call.service] for call in service.calls), service.component
    dic = {s.component: s for s in plans[0].services}
    assert {c.address for c in dic["portal"].calls} == {"idp:8180", "connector:8082", "trustcentre:8081"}
    assert {c.address for c in dic["gateway"].calls} == {
        *("connector:8082", "trustcentre:8081", "idp:8180", "portal:8083")
    }
    expected_db = {"db:5432"} if database == "postgres" else set()
    assert {c.address for c in dic["fhir"].calls} == expected_db
