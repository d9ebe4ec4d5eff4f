"""The portal from its plan on a whole node: real Keycloak, HAPI, trust centre, connector and gateway.

Signs users in the way a browser does (the portal's redirect, Keycloak's own login form, the callback),
so the code flow with PKCE, the ID token's checks against the realm's keys, enrolment through the
trust centre and the service account's write to Keycloak all run for real. Prints how long the node
took to come up and how long the portal and Keycloak took.
"""

from __future__ import annotations

import html
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from fixtures.consents import broad_consent
from infra.federation_files import prepare_federation_files
from infra.idp_realm import PORTAL_CLIENT, PORTAL_SECRET, user_secret
from infra.imagebuild import build_images
from infra.local import LocalLauncher
from infra.plan import NodePlan, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack
from tests.integration.conftest import free_port

STACK = "itest-portal"
KVNR_SYSTEM = "http://fhir.de/sid/gkv/kvid-10"
MRN_SYSTEM = "https://hubnode.org/fhir/sid/mrn/itest"
USERS = [
    {"username": "petra", "role": "patient", "firstName": "Petra"},
    {"username": "dr.lang", "role": "clinician"},
    {"username": "desk", "role": "site-admin"},
]
_LOGIN_FORM = re.compile(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class Node:
    plan: NodePlan
    launcher: LocalLauncher
    state: Path
    tls: ssl.SSLContext

    @property
    def portal(self) -> str:
        return self.plan.endpoints["portal"]

    @property
    def gateway(self) -> str:
        return self.plan.endpoints["gateway"]

    def secret(self, name: str) -> str:
        return (self.state / "secrets" / self.plan.site / name).read_text().strip()

    def browser(self) -> httpx.Client:
        return httpx.Client(verify=self.tls, timeout=60, follow_redirects=False)

    def sign_in(self, browser: httpx.Client, username: str) -> httpx.Response:
        """Through the portal's redirect and Keycloak's login form, back to the portal: the callback's answer."""
        to_idp = browser.get(f"{self.portal}/login")
        assert to_idp.status_code == 303, to_idp.text
        form_page = browser.get(to_idp.headers["location"])
        assert form_page.status_code == 200, form_page.text
        action = html.unescape(_LOGIN_FORM.search(form_page.text).group(1))  # type: ignore[union-attr]
        back = browser.post(action, data={"username": username, "password": self.secret(user_secret(username))})
        assert back.status_code == 302, back.text
        assert back.headers["location"].startswith(f"{self.portal}/auth/callback?")
        return browser.get(back.headers["location"])

    def csrf(self, browser: httpx.Client) -> str:
        return _CSRF.search(browser.get(f"{self.portal}/").text).group(1)  # type: ignore[union-attr]

    def token(self, username: str) -> str:
        answer = httpx.post(
            f"{self.plan.endpoints['idp']}/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": PORTAL_CLIENT,
                "client_secret": self.secret(PORTAL_SECRET),
                "username": username,
                "password": self.secret(user_secret(username)),
                "scope": "openid fhirUser launch/patient",  # SMART: the patient claim comes with launch/patient
            },
            verify=self.tls,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def admin(self, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
        """The site's own tools: the connector (ingest) and the trust centre (consent) as their admin."""
        token = self.secret("tc-admin-token" if path.startswith("/ttp-fhir") else "cn-admin-token")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        return httpx.request(method, f"{self.gateway}{path}", json=body, headers=headers, verify=self.tls, timeout=120)


@pytest.fixture(scope="module")
def node(client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    folder = tmp_path_factory.mktemp("portal")
    values = {
        "hubnode:site": "itest",
        "hubnode:environment": "local",
        "hubnode:federation": {"name": "itest"},
        "hubnode:components": ["fhir", "trustcentre", "connector", "gateway", "idp", "portal"],
        "hubnode:identifierSystems": [MRN_SYSTEM],
        "hubnode:ports": {"gateway": free_port(), "peer": free_port()},
        "hubnode:users": USERS,
    }
    spec = parse_stack(STACK, values)
    [plan] = plan_stack(spec)
    began = time.monotonic()
    build_images(client, [plan], Progress())
    print(f"\nimages ready in {time.monotonic() - began:.1f} s")
    files = prepare_federation_files(spec, folder, progress=None)
    ca = folder / "pki" / "ca.crt"
    launcher = LocalLauncher(client, Progress(), folder, files, ca)
    launcher.down(STACK, remove_volumes=True)
    began = time.monotonic()
    try:
        launcher.up([plan])
    except BaseException:
        launcher.down(STACK, remove_volumes=True)
        raise
    print(f"node with idp and portal up in {time.monotonic() - began:.1f} s")
    yield Node(plan, launcher, folder, ssl.create_default_context(cafile=str(ca)))
    launcher.down(STACK, remove_volumes=True)


def _patient_bundle(kvnr: str, mrn: str) -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "id": f"pt-{mrn}",
        "identifier": [{"system": KVNR_SYSTEM, "value": kvnr}, {"system": MRN_SYSTEM, "value": mrn}],
        "name": [{"family": "Probe", "given": ["Petra"]}],
        "gender": "female",
        "birthDate": "1961-02-03",
    }
    statement = {
        "resourceType": "MedicationStatement",
        "id": f"ms-{mrn}",
        "status": "active",
        "medicationCodeableConcept": {"coding": [{"system": "http://fhir.de/CodeSystem/bfarm/atc", "code": "B01AA03"}]},
        "subject": {"reference": f"Patient/pt-{mrn}"},
        "effectiveDateTime": "2025-03-01",
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in (patient, statement)
        ],
    }


def _consent(kvnr: str, *codes: str) -> dict[str, Any]:
    resource = broad_consent({"system": KVNR_SYSTEM, "value": kvnr}, "2025-01-01T10:00:00+00:00", *codes)
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "domain", "valueString": "MII"}, {"name": "resource", "resource": resource}],
    }


@pytest.fixture(scope="module")
def enrolled(node: Node) -> str:
    """Petra's record at the node, her consent, and her login enrolled by the desk's code."""
    kvnr, mrn = "T123456780", "77001"
    assert node.admin("POST", "/fhir", _patient_bundle(kvnr, mrn)).status_code == 200
    assert (
        node.admin("POST", "/ttp-fhir/fhir/gics/$addConsent", _consent(kvnr, "2", "3", "5", "6", "7", "8")).status_code
        == 200
    )
    with node.browser() as desk:
        assert node.sign_in(desk, "desk").status_code == 303
        issued = desk.post(
            f"{node.portal}/staff/enrolments", data={"csrf": node.csrf(desk), "kind": "local", "value": mrn}
        )
        assert issued.status_code == 200, issued.text
        code = re.search(r'id="enrolment-code">([A-Z0-9-]+)<', issued.text).group(1)  # type: ignore[union-attr]
    with node.browser() as petra:
        node.sign_in(petra, "petra")
        redeemed = petra.post(f"{node.portal}/me/enrol", data={"csrf": node.csrf(petra), "code": code})
        assert redeemed.status_code == 200, redeemed.text
    return kvnr


def test_a_patient_signs_in_through_keycloaks_login_form_and_gets_a_secure_session(node: Node) -> None:
    with node.browser() as browser:
        answer = node.sign_in(browser, "petra")
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=lax", "Path=/portal"))
        assert "Petra" in browser.get(f"{node.portal}/").text


def test_enrolment_binds_the_login_and_the_next_token_names_the_patient(node: Node, enrolled: str) -> None:
    claims = httpx.get(
        f"{node.portal}/fhir/Consent", headers={"Authorization": f"Bearer {node.token('petra')}"}, verify=node.tls
    )
    assert claims.status_code == 200, claims.text
    assert claims.json()["total"] >= 1


def test_withdrawing_research_use_is_shown_enforced_and_in_the_ledger(node: Node, enrolled: str) -> None:
    with node.browser() as petra:
        node.sign_in(petra, "petra")
        receipt = petra.post(f"{node.portal}/me/consents/8", data={"csrf": node.csrf(petra), "action": "withdraw"})
        assert receipt.status_code == 200, receipt.text
        assert "dataSend" in receipt.text
        assert 'id="signed-receipt"' in receipt.text  # signed with the node's key from the federation files
        ledger = petra.get(f"{node.portal}/me/ledger")
        assert "$withdrawConsent" in ledger.text
        assert "view-ledger" in ledger.text or "consent-withdraw" in ledger.text


def test_a_clinician_sees_the_warning_sources_and_is_refused_without_treatment_consent(
    node: Node, enrolled: str
) -> None:
    with node.browser() as doctor:
        node.sign_in(doctor, "dr.lang")
        summary = doctor.get(f"{node.portal}/patients/kvnr/{enrolled}")
        assert summary.status_code == 200, summary.text
        assert '<td class="source">itest</td>' in summary.text
    unknown = httpx.get(
        f"{node.portal}/fhir/DetectedIssue",
        params={"patient.identifier": f"{KVNR_SYSTEM}|X000000001"},
        headers={"Authorization": f"Bearer {node.token('dr.lang')}"},
        verify=node.tls,
    )
    assert unknown.status_code in (400, 404)


def test_logout_ends_the_keycloak_session_too(node: Node) -> None:
    with node.browser() as browser:
        node.sign_in(browser, "petra")
        csrf = node.csrf(browser)
        out = browser.post(f"{node.portal}/logout", data={"csrf": csrf})
        assert out.status_code == 303
        ended = browser.get(out.headers["location"])
        assert ended.status_code in (200, 302), ended.text
        assert browser.get(f"{node.portal}/me/consents").status_code == 401
        again = browser.get(browser.get(f"{node.portal}/login").headers["location"])
        assert _LOGIN_FORM.search(again.text), "Keycloak should ask for the password again"


def test_a_token_of_another_realm_client_is_refused(node: Node) -> None:
    answer = httpx.get(
        f"{node.portal}/fhir/Consent", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}, verify=node.tls
    )
    assert answer.status_code == 401
