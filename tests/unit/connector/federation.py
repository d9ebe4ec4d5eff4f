"""A federation in one process: real certificates, the real allow list, connectors wired through fake gateways.

Each node is the real connector app (its HAPI the core tests' FakeFhir with `$everything` and
`_include`, one real trust centre for all) and answers peers through a stand-in for its nginx gateway:
the gateway rewrites `/fhir/...` to `/peer/fhir/...` and sets the identity headers from the *sender's*
certificate, exactly as docs/federation.md says nginx does. A node can be taken down (connection refused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.testclient import TestClient

from connector.app import create_app
from connector.auth import Role
from connector.peers import PeerClient
from connector.process_api import node_for
from connector.settings import Project
from fixtures.consents import broad_consent
from infra.allow_list import AllowedNode, allow_list
from infra.pki import Issued, issue_ca, issue_node, thumbprint
from servicekit.allowlist import NodeRole, parse_allow_list
from servicekit.auth import Authenticator, Caller, token_hash
from tests.unit.connector.conftest import connector_settings
from tests.unit.connector.fake_fhir import FakeFhir

NOW = datetime.now(UTC)
CLINIC = "https://clinic.example/pid"
KVNR = "http://fhir.de/sid/gkv/kvid-10"
ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
PROCESS = "https://hubnode.org/fhir/process/"
INPUT = "https://hubnode.org/fhir/CodeSystem/process-input"
CALLERS = {
    "starter": frozenset({Role.PROCESS}),
    "auditor": frozenset({Role.AUDIT_READ}),
    "source": frozenset({Role.INGEST}),
}


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer token-of-{who}", "Content-Type": "application/fhir+json"}


def escaped(issued: Issued) -> str:
    return quote(issued.certificate.public_bytes(Encoding.PEM).decode())


class ProcessFhir(FakeFhir):
    """FakeFhir plus what processes read: `Patient/<id>/$everything` and Condition search with `_include`."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = urlsplit(str(request.url)).path.split("/fhir", 1)[1].strip("/")
        if path.endswith("/$everything"):
            patient = path.removesuffix("/$everything")
            found = [r for key, r in sorted(self.resources.items()) if key == patient or patient in json.dumps(r)]
            return _searchset(found)
        params = dict(parse_qsl(urlsplit(str(request.url)).query))
        if path == "Condition" and params.get("_include") == "Condition:subject":
            system = params["code"].removesuffix("|")
            conditions = [c for c in self.of_type("Condition") if system in json.dumps(c.get("code"))]
            subjects = {c["subject"]["reference"] for c in conditions}
            return _searchset(conditions + [self.resources[s] for s in sorted(subjects) if s in self.resources])
        return super().handle(request)

    def add_patient(
        self,
        pid: str,
        gender: str = "female",
        birth: str = "1970-04-01",
        codes: tuple[str, ...] = (),
        kvnr: str | None = None,
    ) -> str:
        """A stored Patient (id `pid`, identifier `CLINIC|pid`, and the KVNR if given), one Condition per code."""
        self.resources[f"Patient/{pid}"] = {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": CLINIC, "value": pid}, *([{"system": KVNR, "value": kvnr}] if kvnr else [])],
            "name": [{"family": f"Family{pid}", "given": [f"Given{pid}"]}],
            "gender": gender,
            "birthDate": birth,
        }
        for index, code in enumerate(codes):
            self.resources[f"Condition/{pid}-c{index}"] = {
                "resourceType": "Condition",
                "id": f"{pid}-c{index}",
                "code": {"coding": [{"system": ICD, "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
                "recordedDate": "2024-03-01",
                "note": [{"text": f"seen by Dr. Notes{pid}"}],
            }
        return pid


def _searchset(resources: list[dict[str, Any]]) -> httpx.Response:
    entries = [{"resource": r} for r in resources]
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries})


@dataclass
class Node:
    site: str
    role: NodeRole
    issued: Issued
    fhir: ProcessFhir
    app: Starlette
    client: TestClient
    secret: str

    @property
    def host(self) -> str:
        return f"{self.site}.hubnode.test"

    def ingest_patient(
        self,
        pid: str,
        gender: str = "female",
        birth: str = "1970-04-01",
        codes: tuple[str, ...] = (),
        kvnr: str | None = None,
    ) -> str:
        """A patient (identifier `CLINIC|pid`, a KVNR if given) and one Condition per code, sent by the node's
        source: so linked (by the KVNR also at other nodes)."""
        scratch = ProcessFhir()
        scratch.add_patient(pid, gender, birth, codes, kvnr)
        entries = [
            {"resource": resource, "request": {"method": "PUT", "url": key}}
            for key, resource in sorted(scratch.resources.items(), key=lambda item: item[0] != f"Patient/{pid}")
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = self.client.post("/fhir", json=bundle, headers=bearer("source"))
        assert answer.status_code == 200, answer.text
        return pid

    def start(self, process: str, *inputs: dict[str, Any], key: str | None = None) -> httpx.Response:
        task: dict[str, Any] = {
            "resourceType": "Task",
            "instantiatesCanonical": f"{PROCESS}{process}|1.0",
            "status": "requested",
            "intent": "order",
            "input": list(inputs),
        }
        if key is not None:
            task["identifier"] = [{"system": "https://hubnode.org/fhir/sid/idempotency-key", "value": key}]
        return self.client.post("/fhir/Task", json=task, headers=bearer("starter"))

    def audit(self) -> list[dict[str, Any]]:
        bundle = self.client.get("/fhir/AuditEvent", headers=bearer("auditor")).json()
        return [entry["resource"] for entry in bundle.get("entry", [])]


def value(code: str, value_type: str, content: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": INPUT, "code": code}]}, value_type: content}


def outputs(task: dict[str, Any], code: str) -> list[Any]:
    return [
        next(v for k, v in o.items() if k.startswith("value"))
        for o in task.get("output", [])
        if o["type"]["coding"][0]["code"] == code
    ]


@dataclass
class Federation:
    """Nodes by site; `down` holds the sites whose gateways refuse connections."""

    ca: Issued
    trustcentre: httpx.ASGITransport
    tmp_path: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)

    def __getitem__(self, site: str) -> Node:
        return self.nodes[site]

    def gateway_headers(self, receiver: Node, sender: Issued, verify: str = "SUCCESS") -> dict[str, str]:
        return {
            "X-Hubnode-Gateway-Secret": receiver.secret,
            "X-Hubnode-Client-Verify": verify,
            "X-Hubnode-Client-Cert": escaped(sender),
            "Content-Type": "application/fhir+json",
        }

    def consent(self, pid: str, *codes: str) -> None:
        """Record at the trust centre that patient `CLINIC|pid` consents to policies `codes` ("5", "8")."""
        resource = broad_consent({"system": CLINIC, "value": pid}, "2024-01-02T10:00:00+01:00", *codes)
        parameters = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": resource}]}
        with TestClient(self.trustcentre.app) as client:
            answer = client.post("/ttp-fhir/fhir/gics/$addConsent", json=parameters, headers=bearer("admin"))
        assert answer.status_code == 200, answer.text


class Gateway(httpx.AsyncBaseTransport):
    """What a sender's TLS connection to a peer's gateway amounts to, seen from the receiving connector."""

    def __init__(self, federation: Federation, sender: Issued) -> None:
        self.federation = federation
        self.sender = sender

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        receiver = next(n for n in self.federation.nodes.values() if n.host == request.url.host)
        if receiver.site in self.federation.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = await request.aread()
        forwarded = httpx.Request(
            request.method,
            request.url.copy_with(scheme="http", path=request.url.path.replace("/fhir", "/peer/fhir", 1)),
            headers={**request.headers, **self.federation.gateway_headers(receiver, self.sender)},
            content=body,
        )
        return await httpx.ASGITransport(app=receiver.app).handle_async_request(forwarded)


async def _no_wait(_seconds: float) -> None:
    return None


def federation(
    tmp_path: Path, trustcentre: httpx.ASGITransport, sites: dict[str, NodeRole], **changes: Any
) -> Federation:
    """Nodes of `sites` with certificates of one CA, every node on every node's allow list; `changes` to settings."""
    ca = issue_ca("hubnode", NOW - timedelta(days=1))
    issued = {site: issue_node(ca, site, [f"{site}.hubnode.test"], NOW - timedelta(days=1)) for site in sites}
    bundle = allow_list(
        AllowedNode(site, role.value, f"{site}.hubnode.test", 9443, thumbprint(issued[site].certificate))
        for site, role in sites.items()
    )
    result = Federation(ca, trustcentre, tmp_path)
    callers = {token_hash(f"token-of-{name}"): Caller(name, roles) for name, roles in CALLERS.items()}
    for site, role in sites.items():
        folder = tmp_path / site
        folder.mkdir()
        settings = connector_settings(
            folder,
            site=site,
            role=role,
            authenticator=Authenticator(callers, {}),
            allow_list=parse_allow_list(bundle),
            gateway_secret=f"secret-of-{site}",
            trustcentre_token=f"token-of-{site}-connector",
            projects={"study": Project("study", send=role is NodeRole.DIC)},
            **changes,
        )
        fhir = ProcessFhir()
        app = create_app(settings, hapi_transport=fhir.transport(), trustcentre_transport=trustcentre)
        peers = PeerClient(httpx.AsyncClient(transport=Gateway(result, issued[site])), sleep=_no_wait)
        app.state.process_node = node_for(app.state, peers)
        client = TestClient(app, raise_server_exceptions=False)
        result.nodes[site] = Node(site, role, issued[site], fhir, app, client, f"secret-of-{site}")
    return result
