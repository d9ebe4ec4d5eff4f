"""`hubnode backup` and `restore` as a site runs them: a node with data, backed up, wiped, restored, the same again.

A dic node (HAPI and the trust centre on PostgreSQL, connector, gateway) gets two MII KDS bundles through
its connector, a pseudonym and a consent at its trust centre. After `backup`, `down --volumes`, `restore`
and `up`, `hubnode compare --against` the inventory taken right after the backup must find it identical:
resources (count and content hash per type), pseudonyms, consents and policy states, persons and MPI
links, both audit trails. It must also still give the same pseudonym and link the patient's KVNR to the
same master person. Prints how long backup and restore took.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from fixtures.consents import broad_consent
from infra.archive import verify
from tests.conftest import MII_KDS_DIR
from tests.integration.conftest import free_port
from tests.integration.test_cli import hubnode

pytestmark = pytest.mark.usefixtures("built")
STACK = "itest-backup"
BUNDLES = [MII_KDS_DIR / f"Bundle-mii-exa-test-data-bundle-pat-{n}.json" for n in (1, 2)]
KVNR = {"system": "http://fhir.de/sid/gkv/kvid-10", "value": "A123456780"}  # pat-1's
DOMAIN = "research-demo"
SOURCE = {"name": "source", "valueString": "dic"}
MII_SYSTEMS = ["https://www.charite.de/fhir/sid/patientenidentifikation"]


class Node:
    """The node's gateway as the site's admin uses it (connector and trust centre admin tokens)."""

    def __init__(self, project: Path, stack: str = STACK) -> None:
        self.state = project / ".hubnode" / stack
        self.gateway = json.loads((self.state / "endpoints.json").read_text())["nodes"][0]["endpoints"]["gateway"]
        self.tls = ssl.create_default_context(cafile=str(self.state / "pki" / "ca.crt"))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        token = self.state / "secrets" / "dic" / ("tc-admin-token" if path.startswith("/ttp") else "cn-admin-token")
        headers = {"Authorization": f"Bearer {token.read_text().strip()}", "Content-Type": "application/fhir+json"}
        answer = httpx.request(
            method, f"{self.gateway}{path}", json=body, headers=headers, verify=self.tls, timeout=180
        )
        assert answer.status_code in (200, 201), f"{method} {path}: {answer.status_code} {answer.text[:500]}"
        return answer.json()

    def tc(self, operation: str, *parameters: dict[str, Any]) -> Any:
        return self.call("POST", f"/ttp-fhir/fhir/{operation}", {"resourceType": "Parameters", "parameter": parameters})


def answers(node: Node) -> dict[str, Any]:
    """What the restored node must answer as before: the same pseudonym, the KVNR linked to the same person."""
    original = {"name": "original", "valueString": "mrn-4711"}
    pseudonym = node.tc("gpas/$pseudonymize", {"name": "target", "valueString": DOMAIN}, original)
    linked = node.tc("epix/$requestMPI", {"name": "identifier", "valueIdentifier": KVNR}, SOURCE)
    return {
        "pseudonym": pseudonym["parameter"][0]["part"][2]["valueIdentifier"]["value"],
        "mpi": linked["parameter"][0]["valueIdentifier"]["value"],
        "mpi_created": linked["parameter"][1]["valueBoolean"],
    }


def write_stack(project: Path, stack: str = STACK, systems: list[str] = MII_SYSTEMS) -> None:
    """A one-node federation stack on free ports, in a project folder of its own; its patients' `systems`."""
    (project / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    config = {
        "hubnode:site": "dic",
        "hubnode:environment": "local",
        "hubnode:federation": {"name": stack},
        "hubnode:database": "postgres",
        "hubnode:components": ["fhir", "trustcentre", "connector", "gateway"],
        "hubnode:identifierSystems": systems,
        "hubnode:ports": {"gateway": free_port(), "peer": free_port()},
        "hubnode:domains": [{"name": DOMAIN, "prefix": "RD", "length": 10}],
    }
    (project / f"Pulumi.{stack}.yaml").write_text(json.dumps({"config": config}))


def fill(node: Node) -> set[str]:
    """Two MII KDS bundles through the connector, a pseudonym and a consent; the resource types stored."""
    types: set[str] = set()
    for path in BUNDLES:
        bundle = json.loads(path.read_text())
        types |= {entry["resource"]["resourceType"] for entry in bundle["entry"]}
        node.call("POST", "/fhir", bundle)
    original = {"name": "original", "valueString": "mrn-4711"}
    node.tc("gpas/$pseudonymizeAllowCreate", {"name": "target", "valueString": DOMAIN}, original)
    consent = broad_consent(KVNR, "2025-01-01T10:00:00+00:00", "2", "3", "5", "6", "7", "8")
    node.tc("gics/$addConsent", {"name": "domain", "valueString": "MII"}, {"name": "resource", "resource": consent})
    return types


def anonymous_volumes(client: docker.DockerClient) -> set[str]:
    """Volumes no container uses and nobody named or labelled: what a container removed without `v` leaves."""
    dangling = client.volumes.list(filters={"dangling": True})
    return {volume.name for volume in dangling if not volume.attrs.get("Labels")}


def timed(project: Path, *args: str) -> tuple[str, float]:
    """Run `hubnode ARGS`, which must succeed: its output and how long it took."""
    began = time.monotonic()
    done = hubnode(project, *args)
    assert done.returncode == 0, f"hubnode {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout, time.monotonic() - began


def test_a_restored_node_holds_what_the_backed_up_one_held(tmp_path: Path, client: docker.DockerClient) -> None:
    write_stack(tmp_path)
    state = tmp_path / ".hubnode" / STACK
    inventory_file = tmp_path / "before.json"
    try:
        timed(tmp_path, "up", "--stack", STACK)
        types = fill(Node(tmp_path))
        before = answers(Node(tmp_path))

        anonymous_before = anonymous_volumes(client)
        backed_up, backup_s = timed(tmp_path, "backup", "--stack", STACK)
        assert "keep a copy of it off this machine" in backed_up
        [archive] = sorted((tmp_path / ".hubnode" / "backups" / STACK).glob("*.hnb"))
        assert archive.name.startswith(f"hubnode-backup-{STACK}-dic-")
        assert str(archive) in backed_up
        manifest = verify(archive, (state / "backup-key").read_bytes())
        assert {m.name for m in manifest.members if m.kind == "volume"} == {
            f"volume/{name}-data" for name in ("db", "fhir", "tcdb", "trustcentre", "cndb", "connector")
        }
        assert not any("ca.key" in m.name for m in manifest.members)
        # Right after the backup: the inventory's own reads are then in neither copy's audit trail.
        _, inventory_s = timed(tmp_path, "inventory", "--stack", STACK, "--output", str(inventory_file))
        stores = json.loads(inventory_file.read_text())["stores"]
        assert stores["fhir/Patient"]["count"] == 2
        assert stores["trustcentre/consents/MII"]["count"] == 1
        assert stores[f"trustcentre/pseudonyms/{DOMAIN}"]["count"] == 1
        assert stores["trustcentre/links"]["count"] >= 1
        assert stores["trustcentre/audit"]["count"] > 0
        assert stores["connector/audit"]["count"] > 0
        status, _ = timed(tmp_path, "status", "--stack", STACK, "--json")  # up again after the backup
        assert json.loads(status)["nodes"][0]["last_backup"]["archive"] == str(archive)

        refused = hubnode(tmp_path, "restore", "--stack", STACK, str(archive))
        assert refused.returncode == 1
        assert "a restore needs an empty stack" in refused.stderr

        timed(tmp_path, "down", "--stack", STACK, "--volumes")
        assert (state / "backup-key").is_file()
        assert not (state / "secrets").exists()
        restored, restore_s = timed(tmp_path, "restore", "--stack", STACK, str(archive))
        assert f"now run: hubnode up --stack {STACK}" in restored
        assert anonymous_volumes(client) == anonymous_before, "a backup or restore helper left its anonymous volume"
        _, up_s = timed(tmp_path, "up", "--stack", STACK)

        compared = hubnode(tmp_path, "compare", "--stack", STACK, "--against", str(inventory_file), "--json")
        assert compared.returncode == 0, f"the restored node differs:\n{compared.stdout}{compared.stderr[-2000:]}"
        assert json.loads(compared.stdout)["identical"] is True
        after = answers(Node(tmp_path))
        assert (after["pseudonym"], after["mpi"]) == (before["pseudonym"], before["mpi"])
        assert after["mpi_created"] is False
        figures = next(line for line in backed_up.splitlines() if "unavailable" in line)
        resources = sum(store["count"] for name, store in stores.items() if name.startswith("fhir/"))
        print(
            f"\nbackup {backup_s:.1f} s ({figures.strip()}); restore {restore_s:.1f} s; up after restore {up_s:.1f} s;"
            f" inventory {inventory_s:.1f} s; {resources} resources in {len(types)} types,"
            f" {stores['trustcentre/audit']['count']} trust-centre and {stores['connector/audit']['count']}"
            " connector audit entries"
        )
    finally:
        down = hubnode(tmp_path, "down", "--stack", STACK, "--volumes")
        assert down.returncode == 0, down.stderr
