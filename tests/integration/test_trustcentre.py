"""The trust centre container: reachable on its port, authenticated, persistent, on SQLite or PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import httpx
import pytest

from infra.local import LocalLauncher
from servicekit.kvnr import make_kvnr
from tests.integration.conftest import assert_confined_as_planned, node_plan

pytestmark = pytest.mark.usefixtures("built")
DOMAINS = [{"name": "research", "prefix": "R", "length": 10}]


def pseudonymize(base: str, token: str, *originals: str) -> dict[str, str]:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "target", "valueString": "research"},
            *({"name": "original", "valueString": o} for o in originals),
        ],
    }
    response = httpx.post(
        f"{base}/gpas/$pseudonymizeAllowCreate",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()["parameter"]
    pairs = [{part["name"]: part["valueIdentifier"]["value"] for part in p["part"]} for p in answer]
    return {pair["original"]: pair["pseudonym"] for pair in pairs}


@pytest.mark.parametrize("database", ["embedded", "postgres"])
def test_the_trust_centre_pseudonymizes_with_the_site_token_and_keeps_its_pseudonyms(
    database: str, launcher: LocalLauncher, client: docker.DockerClient, tmp_path: Path
) -> None:
    plan = node_plan(f"itest-tc-{database}", database=database, components=["trustcentre"], domains=DOMAINS)
    launcher.up([plan])
    base = plan.endpoints["trustcentre"]
    token = (tmp_path / "state" / "secrets" / plan.site / "tc-admin-token").read_text()

    first = pseudonymize(base, token, "mrn-1", "mrn-2")
    assert all(p.startswith("R") for p in first.values())
    assert httpx.post(f"{base}/gpas/$pseudonymize", json={}).status_code == 401
    [node] = launcher.status([plan])
    assert node["health"] == "up"
    for service in plan.services:
        container = client.containers.get(service.container_name)
        assert all(row[1] != "root" for row in container.top(ps_args="-o pid,user")["Processes"])
        assert_confined_as_planned(client, service)

    launcher.down(plan.stack)
    launcher.up([plan])
    assert pseudonymize(base, token, "mrn-2", "mrn-1") == first


def test_links_of_one_new_person_at_once_on_postgresql_name_one_person(launcher: LocalLauncher, tmp_path: Path) -> None:
    """PostgreSQL runs links side by side (SQLite takes them in turn): those losing the race join the winner.

    Each link also names its own record, which the loser did claim: it must end with the winner's person too.
    """
    plan = node_plan("itest-tc-race", database="postgres", components=["trustcentre"], domains=DOMAINS)
    launcher.up([plan])
    base = plan.endpoints["trustcentre"]
    token = (tmp_path / "state" / "secrets" / plan.site / "tc-admin-token").read_text()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    def request_mpi(kvnr_and_record: tuple[str, str]) -> str:
        kvnr, record = kvnr_and_record
        body = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "identifier", "valueIdentifier": {"system": "http://fhir.de/sid/gkv/kvid-10", "value": kvnr}},
                {
                    "name": "identifier",
                    "valueIdentifier": {"system": "https://itest.example/sid/record", "value": record},
                },
                {"name": "source", "valueString": "itest"},
                {"name": "family", "valueString": "Gleichzeitig"},  # with demographics: compared, stored, slower
                {"name": "given", "valueString": "Clara"},
                {"name": "birthDate", "valueDate": "1961-08-13"},
            ],
        }
        answer = httpx.post(f"{base}/epix/$requestMPI", json=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        [mpi] = [p["valueIdentifier"]["value"] for p in answer.json()["parameter"] if p["name"] == "mpi"]
        return str(mpi)

    for round_number in range(10):
        kvnr = make_kvnr("R", f"{26120610 + round_number}")
        with ThreadPoolExecutor(8) as pool:
            persons = set(pool.map(request_mpi, [(kvnr, f"{kvnr}-record-{n}") for n in range(8)]))
        assert len(persons) == 1, f"one KVNR linked at once, each with its own record, became {len(persons)} persons"
