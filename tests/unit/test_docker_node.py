"""The Pulumi program under mocks: every docker resource is a faithful 1:1 of its plan entry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker
import pytest

from infra.docker_node import HubNode
from infra.imagebuild import recipe_for
from infra.plan import RESTART_POLICY, NodePlan, ServicePlan, plan_stack
from infra.spec import SpecError, parse_stack
from tests.conftest import stack_config
from tests.unit.pulumi_mocks import RecordingMocks, is_secret, reveal, run_program

CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/image:Image"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"


def node_plan(**config: object) -> NodePlan:
    [plan] = plan_stack(parse_stack("dev", {"hubnode:site": "dev", **{f"hubnode:{k}": v for k, v in config.items()}}))
    return plan


def expected_container(service: ServicePlan, network: str, secret: str) -> dict[str, Any]:
    """The container inputs a plan entry must produce, written out field by field.

    Every field of the plan's `Hardening` but `pids`, which pulumi_docker cannot set (infra/docker_node.py).
    """
    health, hardening = service.health, service.hardening
    expected: dict[str, Any] = {
        "name": service.container_name,
        "image": service.image.reference,
        "envs": [f"{k}={v}" for k, v in service.env.items()],
        "networksAdvanced": [
            {"name": network, "aliases": list(service.network_aliases)},
            *({"name": a.network, "aliases": list(a.aliases)} for a in service.networks),
        ],
        "volumes": [
            *({"volumeName": v.volume, "containerPath": v.path} for v in service.volumes),
            # uploads cannot go to a read-only root: each folder of files is an anonymous volume
            *({"containerPath": folder} for folder in service.file_folders),
        ],
        "labels": [{"label": k, "value": v} for k, v in service.labels.items()],
        "healthcheck": {
            "tests": list(health.test),
            "interval": f"{health.interval_s}s",
            "timeout": f"{health.timeout_s}s",
            "retries": health.retries,
            "startPeriod": f"{health.start_period_s}s",
        },
        "ports": [{"internal": p.container_port, "external": p.host_port, "ip": p.host_ip} for p in service.ports],
        "uploads": [
            *({"file": s.path, "content": secret} for s in service.secrets),
            *({"file": f.path, "content": f.content} for f in service.files),
        ],
        "user": service.user,
        "capabilities": {"drops": ["ALL"], "adds": list(hardening.capabilities)},
        "securityOpts": ["no-new-privileges:true"],
        "readOnly": True,
        "mounts": [
            {"target": t.path, "type": "tmpfs", "tmpfsOptions": {"sizeBytes": t.size_mib * 1024 * 1024}}
            for t in hardening.tmpfs
        ],
        "memory": hardening.memory_mib,
        "memorySwap": hardening.memory_mib,
        "restart": RESTART_POLICY,
        "wait": True,
        "waitTimeout": health.budget_s,
    }
    return expected


def check_node_matches_plan(mocks: RecordingMocks, plan: NodePlan) -> pulumi.Output[Any]:
    secrets = {secret.name: pulumi.Output.secret("s3cret") for s in plan.services for secret in s.secrets}
    peers = plan.peers_network
    shared = {peers: pulumi_docker.Network(peers, name=peers)} if peers else {}
    node = HubNode(plan.site, plan, secrets, shared_networks=shared)

    def check(_: object) -> None:
        containers = mocks.of_type(CONTAINER)
        assert sorted(containers) == sorted(s.container_name for s in plan.services)
        for service in plan.services:
            actual = containers[service.container_name]
            for key, value in expected_container(service, plan.network, "s3cret").items():
                assert reveal(actual.get(key)) == value, f"{service.container_name}.{key}"
            if service.secrets:
                assert is_secret(actual["uploads"]), "secret file content must stay a Pulumi secret"
            assert set(actual) <= set(expected_container(service, plan.network, "s3cret")), "nothing beyond the plan"
        assert mocks.of_type(NETWORK)[plan.network]["name"] == plan.network
        assert sorted(mocks.of_type(VOLUME)) == sorted(plan.volumes)
        for service in plan.services:
            if service.image.build is not None:
                image = mocks.of_type(IMAGE)[service.image.reference]
                recipe = recipe_for(service.image.build)
                assert image["imageName"] == service.image.reference
                assert image["skipPush"] is True
                assert image["build"] == {
                    "context": str(recipe.context),
                    "dockerfile": str(recipe.dockerfile),
                    "args": {**recipe.args, "BASE_IMAGE": service.image.build.base_image},
                }
            else:
                assert mocks.of_type(REMOTE_IMAGE)[service.image.reference]["name"] == service.image.reference

    urns = [c.urn for c in node.containers.values()]
    return pulumi.Output.all(node.endpoints, *urns).apply(check)


@pulumi.runtime.test
def test_an_embedded_node_declares_exactly_its_plan(mocks: RecordingMocks) -> pulumi.Output[Any]:
    return check_node_matches_plan(mocks, node_plan())


@pulumi.runtime.test
def test_a_postgres_node_declares_exactly_its_plan(mocks: RecordingMocks) -> pulumi.Output[Any]:
    return check_node_matches_plan(mocks, node_plan(database="postgres", ports={"fhir": 18080}))


IDP_NODE = {
    "environment": "local",
    "federation": {"name": "dev-fed"},
    "components": ["trustcentre", "gateway", "idp"],
    "users": [{"username": "alice", "role": "patient", "patient": "p-0001"}],
}


@pulumi.runtime.test
def test_a_node_with_an_identity_provider_declares_exactly_its_plan(mocks: RecordingMocks) -> pulumi.Output[Any]:
    return check_node_matches_plan(mocks, node_plan(**IDP_NODE))


@pulumi.runtime.test
def test_a_postgres_node_with_an_identity_provider_declares_exactly_its_plan(
    mocks: RecordingMocks,
) -> pulumi.Output[Any]:
    return check_node_matches_plan(mocks, node_plan(**IDP_NODE, database="postgres"))


@pulumi.runtime.test
def test_each_volume_is_declared_before_a_container_mounts_it(mocks: RecordingMocks) -> pulumi.Output[Any]:
    plan = node_plan(database="postgres")
    node = HubNode(plan.site, plan, {"db-password": "pw"})

    def check(_: object) -> None:
        order = list(mocks.resources)
        for service in plan.services:
            for volume in service.volumes:
                assert order.index(volume.volume) < order.index(service.container_name)

    return pulumi.Output.all(*(c.urn for c in node.containers.values())).apply(check)


#: The container inputs that come from the plan's `Hardening` (and, on a read-only root, from its files).
CONFINEMENT = ("capabilities", "securityOpts", "readOnly", "mounts", "memory", "memorySwap", "volumes")


@pulumi.runtime.test
def test_every_container_of_a_federation_node_is_confined_as_its_plan_says(mocks: RecordingMocks) -> pulumi.Output[Any]:
    config = stack_config("federation")
    [dic, *_] = plan_stack(parse_stack("federation", {**config, "hubnode:database": "postgres"}))
    assert {s.component for s in dic.services} == {
        *("db", "fhir", "tcdb", "trustcentre", "cndb", "connector", "gateway"),
        *("kcdb", "idp", "portal"),
    }
    assert dic.peers_network is not None
    peers = pulumi_docker.Network(dic.peers_network, name=dic.peers_network)
    secrets = {secret.name: "s3cret" for service in dic.services for secret in service.secrets}
    node = HubNode(dic.site, dic, secrets, shared_networks={dic.peers_network: peers})

    def check(_: object) -> None:
        containers = mocks.of_type(CONTAINER)
        for service in dic.services:
            expected = expected_container(service, dic.network, "s3cret")
            for key in CONFINEMENT:
                assert containers[service.container_name].get(key) == expected[key], f"{service.container_name}.{key}"

    return pulumi.Output.all(*(c.urn for c in node.containers.values())).apply(check)


@pulumi.runtime.test
def test_registry_images_are_pulled_not_built(mocks: RecordingMocks) -> pulumi.Output[Any]:
    plan = node_plan(
        database="postgres", images={"source": "registry", "registry": "r.example/hubnode", "db": "postgres:17"}
    )
    return check_node_matches_plan(mocks, plan)


def test_the_fhir_container_depends_on_the_database_container(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    options: dict[str, pulumi.ResourceOptions] = {}
    real_container = pulumi_docker.Container

    def recording_container(resource_name: str, *args: Any, opts: pulumi.ResourceOptions, **kwargs: Any) -> Any:
        options[resource_name] = opts
        return real_container(resource_name, *args, opts=opts, **kwargs)

    monkeypatch.setattr(pulumi_docker, "Container", recording_container)
    plan = node_plan(database="postgres")
    nodes: list[HubNode] = []

    @pulumi.runtime.test
    def declare() -> None:
        nodes.append(HubNode(plan.site, plan, {"db-password": "pw"}))

    declare()
    [node] = nodes
    db, fhir = plan.services
    assert options[fhir.container_name].depends_on == [node.containers["db"]]
    assert options[db.container_name].depends_on == []
    assert options[fhir.container_name].parent is node


@pulumi.runtime.test
def test_endpoints_are_the_component_outputs(mocks: RecordingMocks) -> pulumi.Output[Any]:
    plan = node_plan(ports={"fhir": 18080})
    node = HubNode(plan.site, plan, {})
    return node.endpoints.apply(lambda endpoints: _assert_equal(endpoints, {"fhir": "http://127.0.0.1:18080/fhir"}))


def _assert_equal(actual: object, expected: object) -> None:
    assert actual == expected


def test_the_program_reads_the_stack_config_and_declares_its_node(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"hubnode:site": "ukl", "hubnode:database": "postgres", "hubnode:ports": json.dumps({"fhir": 18080})}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({**config, "hubnode:dbPassword": "from-secret"}))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["hubnode:dbPassword"]))
    pulumi.runtime.set_mocks(mocks, project="hubnode", stack="dev", preview=False)

    run_program()

    assert sorted(mocks.of_type(CONTAINER)) == ["hubnode-dev-ukl-db", "hubnode-dev-ukl-fhir"]
    fhir = mocks.of_type(CONTAINER)["hubnode-dev-ukl-fhir"]
    assert fhir["ports"] == [{"internal": 8080, "external": 18080, "ip": "127.0.0.1"}]
    assert is_secret(fhir["uploads"])
    assert reveal(fhir["uploads"]) == [{"file": "/run/secrets/db-password", "content": "from-secret"}]


def test_the_program_rejects_a_bad_stack_before_declaring_anything(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"hubnode:site": "ukl", "hubnode:database": "mysql"}))
    with pytest.raises(SpecError, match=r"hubnode:database = 'mysql': choose one of embedded, postgres"):
        run_program()
    assert mocks.resources == {}


def test_the_trust_centre_gets_its_callers_file_derived_from_the_admin_token_and_its_domains(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {
        "hubnode:site": "ukl",
        "hubnode:components": json.dumps(["trustcentre"]),
        "hubnode:domains": json.dumps([{"name": "research", "prefix": "R"}]),
        "hubnode:trustcentreSecret": "s" * 48,
        "hubnode:trustcentreAdminToken": "the-admin-token",
    }
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(config))
    monkeypatch.setenv(
        "PULUMI_CONFIG_SECRET_KEYS", json.dumps(["hubnode:trustcentreSecret", "hubnode:trustcentreAdminToken"])
    )
    run_program()

    trustcentre = mocks.of_type(CONTAINER)["hubnode-dev-ukl-trustcentre"]
    assert is_secret(trustcentre["uploads"])
    files = {upload["file"]: upload["content"] for upload in reveal(trustcentre["uploads"])}
    callers = json.loads(files["/run/secrets/tc-callers"])["callers"]
    assert callers[0]["token_sha256"] == hashlib.sha256(b"the-admin-token").hexdigest()
    assert "the-admin-token" not in files["/run/secrets/tc-callers"]
    assert files["/run/secrets/tc-secret"] == "s" * 48
    assert json.loads(files["/etc/trustcentre/domains.json"]) == {"domains": [{"name": "research", "prefix": "R"}]}


def test_a_missing_trust_centre_secret_stops_the_program(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"hubnode:site": "ukl", "hubnode:components": '["trustcentre"]'}))
    with pytest.raises(pulumi.ConfigMissingError, match="hubnode:trustcentreAdminToken"):
        run_program()


IDP_SECRETS = {
    "hubnode:trustcentreSecret": "s" * 48,
    "hubnode:trustcentreAdminToken": "the-admin-token",
    "hubnode:gatewaySecret": "the-gateway-secret",
    "hubnode:idpAdminPassword": "the-idp-admin-password",
    "hubnode:idpPortalSecret": "the-portal-secret",
    "hubnode:idpPortalServiceSecret": "the-portal-service-secret",
}


def run_idp_program(monkeypatch: pytest.MonkeyPatch, folder: Path, secrets: dict[str, str]) -> None:
    """The program for a local node with an identity provider, run in `folder` (its state goes there)."""
    monkeypatch.chdir(folder)
    config = {f"hubnode:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in IDP_NODE.items()}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"hubnode:site": "ukl", **config, **secrets}))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(sorted(secrets)))
    run_program()


def test_keycloak_gets_its_realm_from_pulumi_secrets_and_the_demo_users_generated_passwords(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    run_idp_program(monkeypatch, tmp_path, IDP_SECRETS)

    idp = mocks.of_type(CONTAINER)["hubnode-dev-ukl-idp"]
    assert is_secret(idp["uploads"])
    files = {upload["file"]: upload["content"] for upload in reveal(idp["uploads"])}
    assert files["/run/secrets/idp-admin-password"] == "the-idp-admin-password"
    realm = json.loads(files["/opt/keycloak/data/import/hubnode-realm.json"])
    clients = {c["clientId"]: c["secret"] for c in realm["clients"]}
    assert clients == {"portal": "the-portal-secret", "portal-service": "the-portal-service-secret"}
    [alice] = [u for u in realm["users"] if u["username"] == "alice"]
    generated = tmp_path / ".hubnode" / "dev" / "secrets" / "ukl" / "idp-user-alice"
    assert alice["credentials"][0]["value"] == generated.read_text()
    assert not [value for value in IDP_SECRETS.values() if value in json.dumps(idp["envs"])]


def test_a_missing_client_secret_of_the_identity_provider_stops_the_program(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = {k: v for k, v in IDP_SECRETS.items() if k != "hubnode:idpPortalServiceSecret"}
    with pytest.raises(pulumi.ConfigMissingError, match="hubnode:idpPortalServiceSecret"):
        run_idp_program(monkeypatch, tmp_path, secrets)
