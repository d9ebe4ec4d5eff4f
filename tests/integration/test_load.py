"""`hubnode load` into a real node: a generated volume with one bad line, interrupted and resumed, sent again;
the MII KDS bundles one per line.

A dic node (HAPI and the trust centre on PostgreSQL, connector, gateway) must end up holding every good
resource of the volume once, per type exactly as many as the file holds, whatever was sent twice: the
chunks around the interruption, the whole volume again with `--restart`, the MII bundles again. Being new
and on PostgreSQL, it writes them at ids derived from their keys (`connector.resource_ids`).
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import docker
import pytest

from fixtures.volume import write_volume
from tests.conftest import MII_KDS_DIR, PROJECT_DIR
from tests.integration.test_backup import MII_SYSTEMS, Node, timed, write_stack
from tests.integration.test_cli import hubnode

pytestmark = pytest.mark.usefixtures("built")
STACK = "itest-load"
PATIENTS = 40
SEED = 1515
MII_BUNDLES = [MII_KDS_DIR / f"Bundle-mii-exa-test-data-bundle-pat-{n}.json" for n in (1, 2, 3)]
INTERRUPT_BUDGET_S = 300.0


def counts(node: Node, types: set[str]) -> Counter[str]:
    """How many resources of each type the node's HAPI holds (through the connector)."""
    return Counter({kind: node.call("GET", f"/fhir/{kind}?_summary=count")["total"] for kind in sorted(types)})


def volume_with_a_bad_line(path: Path) -> tuple[Counter[str], int]:
    """A generated volume whose first Condition lost its subject: the good resources per type, the bad line."""
    write_volume(path, PATIENTS, SEED)
    resources = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    bad = next(index for index, r in enumerate(resources) if r["resourceType"] == "Condition")
    del resources[bad]["subject"]
    path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in resources)))
    good = Counter(r["resourceType"] for r in resources)
    good["Condition"] -= 1
    return good, bad + 1


def interrupted(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hubnode ARGS`, stopped with Ctrl-C once its state records a chunk answered."""
    command = [sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args]
    process = subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a tier run in the background ignores Ctrl-C, and so would the child: it must hear it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 -- resets one signal only
    )
    deadline = time.monotonic() + INTERRUPT_BUDGET_S
    while process.poll() is None and time.monotonic() < deadline:
        states = list((project / ".hubnode" / STACK / "loads").glob("*.json"))
        if states and json.loads(states[0].read_text())["files"][0]["done_below"] > 1:
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.1)
    out, err = process.communicate(timeout=INTERRUPT_BUDGET_S)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def test_a_volume_is_stored_once_through_an_interruption_and_replays(
    tmp_path: Path, client: docker.DockerClient
) -> None:
    write_stack(tmp_path, STACK, [*MII_SYSTEMS, "https://hubnode.org/fhir/sid/mrn/dic"])
    volume = tmp_path / "volume.ndjson.gz"
    good, bad_line = volume_with_a_bad_line(volume)
    load = ("load", "--stack", STACK, "--site", "dic", "--chunk", "300", str(volume))
    try:
        timed(tmp_path, "up", "--stack", STACK)
        node = Node(tmp_path, STACK)

        stopped = interrupted(tmp_path, *load, "--parallel", "1")
        assert stopped.returncode == 130, stopped.stderr[-2000:]
        assert "rerun the same command to continue" in stopped.stderr
        began = time.monotonic()
        resumed = hubnode(tmp_path, *load)
        took = time.monotonic() - began
        assert resumed.returncode == 1, resumed.stderr[-2000:]
        assert "continuing the load recorded in" in resumed.stderr
        [report] = (tmp_path / ".hubnode" / STACK / "loads").glob("*.report.jsonl")
        [refused] = [json.loads(line) for line in report.read_text().splitlines()]
        assert (refused["file"], refused["line"]) == (str(volume.resolve()), bad_line)
        assert report.name in resumed.stdout
        assert counts(node, set(good)) == good
        written = node.call("GET", "/fhir/Condition?_count=50")["entry"]
        assert all(e["resource"]["id"].startswith("hn-") for e in written), "a new node on PostgreSQL: derived ids"

        again = hubnode(tmp_path, *load, "--restart")
        assert again.returncode == 1, again.stderr[-2000:]
        assert counts(node, set(good)) == good, "the same volume again stores nothing twice"

        mii = tmp_path / "mii.ndjson"
        mii.write_text("".join(json.dumps(json.loads(path.read_text())) + "\n" for path in MII_BUNDLES))
        mii_load = ("load", "--stack", STACK, "--site", "dic", str(mii))
        assert (done := hubnode(tmp_path, *mii_load)).returncode == 0, done.stderr[-2000:]
        types = {entry["resource"]["resourceType"] for p in MII_BUNDLES for entry in json.loads(p.read_text())["entry"]}
        held = counts(node, types | set(good))
        assert held["Patient"] == PATIENTS + len(MII_BUNDLES)
        assert (done := hubnode(tmp_path, *mii_load, "--restart")).returncode == 0, done.stderr[-2000:]
        assert counts(node, types | set(good)) == held, "MII bundles again store nothing twice"
        print(f"\nresumed load of {sum(good.values())} resources ({PATIENTS} patients) took {took:.1f} s")
    finally:
        down = hubnode(tmp_path, "down", "--stack", STACK, "--volumes")
        assert down.returncode == 0, down.stderr
