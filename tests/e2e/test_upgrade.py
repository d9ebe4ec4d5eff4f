"""An upgrade as a site does it: the previous release's federation, filled with journeys, brought up by this code.

The previous release's own tree (`git archive` of its commit) builds its images and brings up the
federation its `Pulumi.federation.yaml` declares; its own suite fills the nodes with journeys. Then
this checkout's `hubnode up` runs on the same stack and volumes (new images; the services migrate
their databases at start). Every node must hold the same resources as before (count and content hash
per type), the trust centre the same consents, pseudonyms, master persons and audit entries, and
this release's suite must pass on the upgraded federation.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_DIR, content_digest
from tests.e2e.conftest import SITES, Federation, federation_project, hubnode

#: The release upgraded from: its tag and the commit it names (a clone without tags still has the commit).
PREVIOUS_RELEASE = ("v0.1.0", "b8f4d673d89427b645685ca36e6efac151868570")
STACK = "e2e-upgrade"
KVNR_SYSTEM = "http://fhir.de/sid/gkv/kvid-10"
PERSON_SYSTEM = "https://hubnode.org/fhir/sid/person"
PSEUDONYM_SYSTEM_BASE = "https://hubnode.org/fhir/sid/pseudonym/"
TYPES = ("Patient", "Encounter", "Condition", "Observation", "Procedure", "MedicationStatement", "Consent")


def release_tree(folder: Path) -> Path:
    """The previous release's files, from its commit in this repository."""
    tag, commit = PREVIOUS_RELEASE
    named = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", "--verify", "--quiet", f"{tag}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert named.returncode != 0 or named.stdout.strip() == commit, f"{tag} names {named.stdout.strip()}, not {commit}"
    archived = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "archive", "--format=tar", commit], capture_output=True, check=False
    )
    assert archived.returncode == 0, f"the previous release {tag} ({commit}) is not in this clone: {archived.stderr!r}"
    tree = folder / "release"
    tree.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archived.stdout)) as archive:
        archive.extractall(tree, filter="data")
    return tree


def released_hubnode(tree: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The previous release's own `hubnode` (its infra, services and suite first on the path)."""
    paths = [str(tree), *sorted(str(p) for p in (tree / "services").glob("*/src"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    command = [sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=tree, env=env, timeout=3600)


def tc_call(federation: Federation, operation: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return federation.trustcentre(operation, {"resourceType": "Parameters", "parameter": list(parts)})


def snapshot(federation: Federation) -> dict[str, Any]:
    """What a site would check after an upgrade: every node's resources, the trust centre's stores."""
    stored = {site: {kind: content_digest(federation.search(site, kind)) for kind in TYPES} for site in SITES}
    research = federation.search("research", "Patient")
    pseudonyms = sorted(
        (i["system"].removeprefix(PSEUDONYM_SYSTEM_BASE), i["value"])
        for patient in research
        for i in patient.get("identifier", [])
        if i.get("system", "").startswith(PSEUDONYM_SYSTEM_BASE)
    )
    originals = {
        f"{domain}|{value}": tc_call(
            federation,
            "gpas/$dePseudonymize",
            {"name": "target", "valueString": domain},
            {"name": "pseudonym", "valueString": value},
        )["parameter"]
        for domain, value in pseudonyms
    }
    kvnrs = sorted(
        {i["value"] for p in federation.search("dic", "Patient") for i in p["identifier"] if i["system"] == KVNR_SYSTEM}
    )
    persons = {
        kvnr: tc_call(
            federation,
            "epix/$requestMPI",
            {"name": "identifier", "valueIdentifier": {"system": KVNR_SYSTEM, "value": kvnr}},
            {"name": "source", "valueString": "dic"},
        )["parameter"][0]
        for kvnr in kvnrs
    }
    consents = tc_call(federation, "gics/$allConsentsForDomain", {"name": "domain", "valueString": "MII"})
    with federation.client("dic", "tc-admin-token") as client:
        audited = {
            value: sorted(
                (e["resource"]["id"], e["resource"]["subtype"][0]["code"], e["resource"]["recorded"])
                for e in client.get("/ttp-fhir/fhir/AuditEvent", params={"entity": value}).json().get("entry", [])
            )
            for _, value in pseudonyms
        }
    return {
        "stored": stored,
        "originals": originals,
        "persons": persons,
        "consents": content_digest([e["resource"] for e in consents.get("entry", [])]),
        "audited": audited,
    }


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, dict[str, Any]]]:
    """The previous release's federation, filled by its own suite; its snapshot before the upgrade."""
    folder = tmp_path_factory.mktemp("upgrade")
    tree = release_tree(folder)
    project = folder / "project"
    project.mkdir()
    federation = federation_project(project, STACK, tree)
    try:
        up = released_hubnode(tree, project, "up", "--stack", STACK)
        assert up.returncode == 0, f"the previous release's hubnode up failed:\n{up.stderr[-4000:]}"
        filled = released_hubnode(tree, project, "check", "--stack", STACK)
        assert filled.returncode == 0, f"the previous release's suite failed on its own nodes:\n{filled.stdout[-3000:]}"
        yield federation, snapshot(federation)
    finally:
        down = hubnode(project, "down", "--stack", STACK, "--volumes", timeout=600)
        assert down.returncode == 0, down.stderr


def test_an_upgrade_keeps_every_nodes_data_and_passes_this_releases_suite(
    upgraded: tuple[Federation, dict[str, Any]],
) -> None:
    federation, before = upgraded
    assert sum(count for count, _ in before["stored"]["dic"].values()) > 0, "the release's suite stored journeys"
    assert before["originals"], "the release's suite sent pseudonymised data to the research node"
    federation_project(federation.project, STACK, PROJECT_DIR, on=federation)  # this release's stack file
    up = hubnode(federation.project, "up", "--stack", STACK)
    assert up.returncode == 0, f"this release's hubnode up on the old stack failed:\n{up.stderr[-4000:]}"
    after = snapshot(federation)
    assert after["stored"] == before["stored"]
    assert after["originals"] == before["originals"]
    assert after["persons"] == before["persons"]
    assert after["consents"] == before["consents"]
    for value, events in before["audited"].items():
        assert set(events) <= set(after["audited"][value]), f"audit entries about {value} were lost"
    check = hubnode(federation.project, "check", "--stack", STACK, timeout=1800)
    assert check.returncode == 0, "this release's suite failed on the upgraded federation:\n" + failed_steps(federation)


def failed_steps(federation: Federation) -> str:
    """The suite's failed and erroneous steps with their messages, from its JSON report."""
    results = json.loads((federation.state / "conformance" / "report" / "results.json").read_text())
    return "\n".join(
        f"{scenario['name']} step {step.get('index')}: {step.get('message')}"
        for scenario in results["scenarios"]
        for step in scenario["steps"]
        if step["outcome"] in ("failed", "error")
    )
