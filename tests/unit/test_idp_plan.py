"""The identity provider in the plan: Keycloak behind the node's gateway, its secrets as files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infra.gateway_config import Upstream
from infra.idp_realm import PORTAL_SECRET, Realm
from infra.local import secret_file
from infra.plan import FEDERATION_FILES, NodePlan, ServicePlan, plan_stack
from infra.spec import parse_stack

USERS = [{"username": "alice", "role": "patient", "patient": "p-0001"}]


def idp_node(**config: Any) -> NodePlan:
    values = {
        "hubnode:site": "dev",
        "hubnode:environment": "local",
        "hubnode:federation": {"name": "dev-fed"},
        "hubnode:components": ["trustcentre", "gateway", "idp"],
        "hubnode:ports": {"gateway": 18443, "peer": 19443},
        "hubnode:users": USERS,
        **{f"hubnode:{key}": value for key, value in config.items()},
    }
    [plan] = plan_stack(parse_stack("dev", values))
    return plan


def service(plan: NodePlan, component: str) -> ServicePlan:
    return next(s for s in plan.services if s.component == component)


def test_an_embedded_idp_keeps_its_database_in_a_volume_and_answers_to_idp() -> None:
    plan = idp_node()
    assert [s.component for s in plan.services] == ["trustcentre", "gateway", "idp"]
    idp = service(plan, "idp")
    assert idp.image.reference.startswith("hubnode/idp:")
    assert idp.image.build is not None
    assert idp.image.build.recipe == "idp"
    assert [(v.volume, v.path) for v in idp.volumes] == [("hubnode-dev-dev-idp-data", "/opt/keycloak/data/h2")]
    assert (idp.network_aliases, idp.ports, idp.depends_on) == (("idp",), (), ())
    assert idp.health.test[-1] == "http://127.0.0.1:9000/idp/health/ready"
    assert "KC_DB_URL" not in idp.env


def test_a_postgres_idp_starts_after_its_own_database_with_the_postgres_build() -> None:
    plan = idp_node(database="postgres")
    assert [s.component for s in plan.services] == ["tcdb", "trustcentre", "gateway", "kcdb", "idp"]
    idp, kcdb = service(plan, "idp"), service(plan, "kcdb")
    assert idp.image.build is not None
    assert idp.image.build.recipe == "idp-postgres"
    assert (idp.volumes, idp.depends_on) == ((), ("kcdb",))
    assert idp.env["KC_DB_URL"] == "jdbc:postgresql://kcdb:5432/keycloak"
    assert idp.env["KC_DB_USERNAME"] == kcdb.env["POSTGRES_USER"] == "keycloak"
    [password] = kcdb.secrets
    assert password in idp.secrets
    assert idp.env["KC_DB_PASSWORD_FILE"] == kcdb.env["POSTGRES_PASSWORD_FILE"] == password.path


def test_the_public_issuer_is_under_the_gateway_and_the_endpoint_is_probed_there() -> None:
    plan = idp_node()
    idp = service(plan, "idp")
    assert idp.env["KC_HOSTNAME"] == "https://127.0.0.1:18443/idp"
    assert idp.env["KC_HOSTNAME_BACKCHANNEL_DYNAMIC"] == "true"
    assert idp.env["KC_PROXY_HEADERS"] == "xforwarded"
    assert plan.endpoints["idp"] == "https://127.0.0.1:18443/idp/realms/hubnode"
    assert plan.probes["idp"] == "https://127.0.0.1:18443/idp/realms/hubnode/.well-known/openid-configuration"
    gateway = service(plan, "gateway")
    [config] = gateway.files
    assert "location /idp/ {" in config.content
    assert f"set $hubnode_upstream {Upstream('idp', 8180).url};" in config.content


def test_a_node_without_an_idp_routes_nothing_to_one() -> None:
    plan = idp_node(components=["trustcentre", "gateway"], users=[])
    assert "idp" not in plan.endpoints
    assert "/idp/" not in service(plan, "gateway").files[0].content


def test_the_idp_gets_its_secrets_as_files_and_the_realm_as_a_derived_secret() -> None:
    idp = service(idp_node(), "idp")
    files = {s.name: s for s in idp.secrets}
    assert files["idp-admin-password"].path == "/run/secrets/idp-admin-password"
    assert idp.env["KC_BOOTSTRAP_ADMIN_PASSWORD_FILE"] == files["idp-admin-password"].path
    realm = files["idp-realm"]
    assert realm.path == "/opt/keycloak/data/import/hubnode-realm.json"
    assert isinstance(realm.derived, Realm)
    assert realm.derived.portal_url == "https://127.0.0.1:18443/portal"
    assert [u.username for u in realm.derived.users] == ["alice"]
    assert idp.files == ()


def test_only_a_local_stack_opens_the_password_grant() -> None:
    local = service(idp_node(), "idp").secrets[1].derived
    site = service(idp_node(environment="site", users=[]), "idp").secrets[1].derived
    assert isinstance(local, Realm)
    assert isinstance(site, Realm)
    assert (local.password_grant, site.password_grant) == (True, False)


def test_no_secret_reaches_an_environment_variable_or_a_plain_config_file(tmp_path: Path) -> None:
    plan = idp_node(database="postgres")
    contents = {
        secret.name: secret_file(tmp_path, plan.site, secret).read_text()
        for s in plan.services
        for secret in s.secrets
        if secret.name not in FEDERATION_FILES
    }
    generated = [
        (tmp_path / "secrets" / plan.site / name).read_text()
        for name in (
            "idp-admin-password",
            PORTAL_SECRET,
            "idp-portal-service-secret",
            "idp-user-alice",
            "kcdb-password",
        )
    ]
    plain = json.dumps([[dict(s.env), [f.content for f in s.files]] for s in plan.services])
    assert not [value for value in generated if value in plain]
    realm = json.loads(contents["idp-realm"])
    assert realm["clients"][0]["secret"] == (tmp_path / "secrets" / plan.site / PORTAL_SECRET).read_text()
    [alice] = [u for u in realm["users"] if u["username"] == "alice"]
    assert alice["credentials"][0]["value"] == (tmp_path / "secrets" / plan.site / "idp-user-alice").read_text()
