"""The identity provider from its plan, behind its node's gateway: Keycloak with the node's realm.

Proves from this host what the portal relies on: one issuer whichever door a client uses (the
gateway for browsers, `http://idp:8180/idp` inside the node), tokens for demo users carrying their
role and SMART claims, the portal's service account managing users, the generated admin password,
and all of it still there after a restart on the same data. Prints how long Keycloak took to start.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from docker.models.containers import Container

from infra.federation_files import prepare_federation_files
from infra.idp_realm import PORTAL_CLIENT, PORTAL_SECRET, PORTAL_SERVICE_CLIENT, PORTAL_SERVICE_SECRET, user_secret
from infra.imagebuild import build_images
from infra.local import LocalLauncher
from infra.plan import IDP_ADMIN, IDP_PATH, IDP_PORT, NodePlan, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack
from tests.integration.conftest import free_port

USERS = [
    {"username": "alice", "role": "patient", "patient": "p-0001", "fhirUser": "Patient/p-0001", "firstName": "Alice"},
    {"username": "bob", "role": "clinician", "fhirUser": "Practitioner/pr-0042"},
    {"username": "carol", "role": "patient"},
]
PATIENT_SCOPES = "openid fhirUser launch/patient patient/*.read"
BACK_CHANNEL = f"http://idp:{IDP_PORT}{IDP_PATH}/realms/hubnode"


@dataclass(frozen=True)
class Node:
    plan: NodePlan
    launcher: LocalLauncher
    state: Path
    tls: ssl.SSLContext
    client: docker.DockerClient

    @property
    def issuer(self) -> str:
        return self.plan.endpoints["idp"]

    def secret(self, name: str) -> str:
        return (self.state / "secrets" / self.plan.site / name).read_text()

    def token(self, realm_path: str = "", **form: str) -> httpx.Response:
        """A token request at the public door (`realm_path` another realm's issuer, e.g. master's)."""
        url = f"{realm_path or self.issuer}/protocol/openid-connect/token"
        return httpx.post(url, data=form, verify=self.tls, timeout=30)

    def password_grant(self, username: str, password: str | None = None, scope: str = PATIENT_SCOPES) -> httpx.Response:
        return self.token(
            grant_type="password",
            client_id=PORTAL_CLIENT,
            client_secret=self.secret(PORTAL_SECRET),
            username=username,
            password=self.secret(user_secret(username)) if password is None else password,
            scope=scope,
        )

    def container(self, component: str) -> Container:
        """The running container of one of the node's services."""
        return self.client.containers.get(
            next(s for s in self.plan.services if s.component == component).container_name
        )

    def inside(self, url: str) -> dict[str, Any]:
        """GET `url` from inside the node (its gateway's container), as the node's services would."""
        gateway = self.container("gateway")
        code, output = gateway.exec_run(["curl", "-fsS", url])
        assert code == 0, output
        answer: dict[str, Any] = json.loads(output)
        return answer

    def claims(self, token: str) -> dict[str, Any]:
        """The token's claims, once its signature checks against the realm's published keys."""
        header, payload, signature = token.split(".")
        keys = httpx.get(f"{self.issuer}/protocol/openid-connect/certs", verify=self.tls).json()["keys"]
        key = next(k for k in keys if k["kid"] == json.loads(_b64(header))["kid"])
        public = RSAPublicNumbers(int.from_bytes(_b64(key["e"])), int.from_bytes(_b64(key["n"]))).public_key()
        public.verify(_b64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        claims: dict[str, Any] = json.loads(_b64(payload))
        return claims

    def idp_ready_after(self) -> float:
        """Seconds from the start of Keycloak's container to the end of its bootstrap (schema, realm import)."""
        container = self.container("idp")
        [done] = [line for line in container.logs(timestamps=True).splitlines() if b"Bootstrap completed" in line]
        return (_instant(done.split()[0].decode()) - _instant(container.attrs["State"]["StartedAt"])).total_seconds()


def _instant(docker_time: str) -> datetime:
    """Docker's nanosecond UTC timestamps, to the microsecond."""
    return datetime.fromisoformat(docker_time[:26]).replace(tzinfo=UTC)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def start(node: Node, what: str) -> None:
    began = time.monotonic()
    node.launcher.up([node.plan])
    took = time.monotonic() - began
    print(f"\n{what}: node up in {took:.1f} s, Keycloak ready {node.idp_ready_after():.1f} s after its start")


def bring_up(client: docker.DockerClient, folder: Path, stack: str, **config: Any) -> Node:
    values = {
        "hubnode:site": "itest",
        "hubnode:environment": "local",
        "hubnode:federation": {"name": "itest"},
        "hubnode:components": ["trustcentre", "gateway", "idp"],
        "hubnode:ports": {"gateway": free_port(), "peer": free_port()},
        "hubnode:users": USERS,
        **{f"hubnode:{key}": value for key, value in config.items()},
    }
    spec = parse_stack(stack, values)
    [plan] = plan_stack(spec)
    began = time.monotonic()
    build_images(client, [plan], Progress())
    print(f"\nimages for {stack} ready in {time.monotonic() - began:.1f} s")
    files = prepare_federation_files(spec, folder, progress=None)
    ca = folder / "pki" / "ca.crt"
    launcher = LocalLauncher(client, Progress(), folder, files, ca)
    node = Node(plan, launcher, folder, ssl.create_default_context(cafile=str(ca)), client)
    # Keycloak imports the realm only into a fresh database: never start on what an earlier run left.
    launcher.down(stack, remove_volumes=True)
    try:
        start(node, f"{stack} on a fresh database")
    except BaseException:
        launcher.down(stack, remove_volumes=True)
        raise
    return node


@pytest.fixture(scope="module")
def node(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    started = bring_up(client, tmp_path_factory.mktemp("idp"), "itest-idp")
    yield started
    started.launcher.down(started.plan.stack, remove_volumes=True)


def test_both_doors_name_the_public_issuer_and_inside_the_node_the_back_channel_endpoints(node: Node) -> None:
    public = httpx.get(f"{node.issuer}/.well-known/openid-configuration", verify=node.tls).json()
    internal = node.inside(f"{BACK_CHANNEL}/.well-known/openid-configuration")
    assert public["issuer"] == internal["issuer"] == node.issuer
    assert node.issuer.startswith("https://127.0.0.1:")
    assert public["token_endpoint"] == f"{node.issuer}/protocol/openid-connect/token"
    assert internal["token_endpoint"] == f"{BACK_CHANNEL}/protocol/openid-connect/token"
    assert internal["jwks_uri"] == f"{BACK_CHANNEL}/protocol/openid-connect/certs"
    # browsers are always sent to the public door
    assert internal["authorization_endpoint"] == public["authorization_endpoint"].replace(BACK_CHANNEL, node.issuer)
    assert public["authorization_endpoint"].startswith(node.issuer)
    assert {"fhirUser", "launch/patient", "patient/*.read", "user/*.read"} <= set(public["scopes_supported"])
    assert "S256" in public["code_challenge_methods_supported"]


def test_a_wrong_password_is_refused(node: Node) -> None:
    refused = node.password_grant("alice", password="not-her-password")
    assert refused.status_code == 400  # RFC 6749, 5.2
    assert refused.json()["error"] == "invalid_grant"


def test_a_demo_patient_gets_a_token_with_her_role_and_smart_claims(node: Node) -> None:
    response = node.password_grant("alice")
    assert response.status_code == 200, response.text
    claims = node.claims(response.json()["access_token"])
    assert claims["iss"] == node.issuer
    assert claims["sub"]
    assert "patient" in claims["realm_access"]["roles"]
    assert (claims["patient"], claims["fhirUser"]) == ("p-0001", "Patient/p-0001")
    assert claims["given_name"] == "Alice"
    assert {"launch/patient", "patient/*.read", "fhirUser"} <= set(claims["scope"].split())
    identity = node.claims(response.json()["id_token"])
    assert (identity["iss"], identity["aud"], identity["fhirUser"]) == (node.issuer, PORTAL_CLIENT, "Patient/p-0001")


def test_a_clinician_is_not_granted_patient_scopes(node: Node) -> None:
    response = node.password_grant("bob", scope="openid fhirUser launch/patient patient/*.read user/*.read")
    assert response.status_code == 200, response.text
    claims = node.claims(response.json()["access_token"])
    assert "clinician" in claims["realm_access"]["roles"]
    assert "patient" not in claims["realm_access"]["roles"]
    granted = set(claims["scope"].split())
    assert {"user/*.read", "fhirUser"} <= granted
    assert not {"patient/*.read", "launch/patient"} & granted
    assert "patient" not in claims
    assert claims["fhirUser"] == "Practitioner/pr-0042"


def test_the_portal_service_account_links_an_enrolled_patient_to_her_record(node: Node) -> None:
    """What the portal does after enrolment: client credentials, then set the user's `patient_id`."""
    response = node.token(
        grant_type="client_credentials",
        client_id=PORTAL_SERVICE_CLIENT,
        client_secret=node.secret(PORTAL_SERVICE_SECRET),
    )
    assert response.status_code == 200, response.text
    admin = f"{node.issuer.replace('/realms/', '/admin/realms/')}/users"
    bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
    with httpx.Client(verify=node.tls, headers=bearer, timeout=30) as api:
        [carol] = api.get(admin, params={"username": "carol", "exact": "true"}).raise_for_status().json()
        assert "patient_id" not in carol.get("attributes", {})
        carol["attributes"] = {**carol.get("attributes", {}), "patient_id": ["p-0003"]}
        assert api.put(f"{admin}/{carol['id']}", json=carol).status_code == 204
        refused = api.post(f"{admin.removesuffix('/users')}/roles", json={"name": "superuser"})
    assert refused.status_code == 403  # it manages users, not the realm
    claims = node.claims(node.password_grant("carol").json()["access_token"])
    assert claims["patient"] == "p-0003"


def test_the_generated_admin_password_logs_in_to_the_master_realm(node: Node) -> None:
    master = node.issuer.replace("/realms/hubnode", "/realms/master")
    form = {"grant_type": "password", "client_id": "admin-cli", "username": IDP_ADMIN}
    assert node.token(master, **form, password=node.secret("idp-admin-password")).status_code == 200
    assert node.token(master, **form, password="admin").json()["error"] == "invalid_grant"


def test_secrets_stay_out_of_the_container_configuration_and_keycloak_runs_unprivileged(node: Node) -> None:
    idp = node.container("idp")
    configured = json.dumps(idp.attrs["Config"])
    for name in ("idp-admin-password", PORTAL_SECRET, PORTAL_SERVICE_SECRET, user_secret("alice")):
        assert node.secret(name) not in configured, name
    top = idp.top(ps_args="-o pid,uid,args")
    uid = top["Titles"].index("UID")
    assert {row[uid] for row in top["Processes"]} == {"10001"}


def test_keycloak_keeps_its_realm_users_and_secrets_when_the_node_restarts(node: Node) -> None:
    node.launcher.down(node.plan.stack)
    start(node, "the same node on its existing database")
    idp = node.container("idp")
    assert b"Realm 'hubnode' already exists. Import skipped" in idp.logs()
    claims = node.claims(node.password_grant("carol").json()["access_token"])
    assert claims["patient"] == "p-0003"  # set through the admin API before the restart


def test_on_a_postgres_node_keycloak_keeps_its_data_in_its_own_database(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    node = bring_up(client, tmp_path, "itest-idp-pg", database="postgres")
    try:
        assert [s.component for s in node.plan.services][-2:] == ["kcdb", "idp"]
        response = node.password_grant("alice")
        assert response.status_code == 200, response.text
        assert node.claims(response.json()["access_token"])["patient"] == "p-0001"
        idp = node.container("idp")
        assert all(m["Type"] in ("bind", "tmpfs") for m in idp.attrs["Mounts"])  # no volume of its own
    finally:
        node.launcher.down(node.plan.stack, remove_volumes=True)
