"""Restore (issue 16): a node holding the MII KDS bundles and 1,000 generated patients, restored from backup.

The node is backed up, wiped, restored and compared with itself.

One node in a scratch project (HAPI and the trust centre on PostgreSQL, connector, gateway), filled with
`hubnode load`; then, as a site runs them, `hubnode backup`, `inventory`, `down --volumes`, `restore`,
`up` and `compare --against` the inventory. Figures: each command's wall time, restore (and restore
plus `up`) against backup, and whether the restored node is identical. Standalone: its own stack, not
the bench federation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.federation import PROJECT_DIR, free_port, timed_hubnode
from fixtures.volume import write_volume

BENCHMARKS = ("restore",)
_timed = partial(timed_hubnode, "restore")
STACK = "bench-restore"
SITE = "dic"
PATIENTS = 1000
SEED = 16_000
MII_KDS_DIR = PROJECT_DIR / "fixtures" / "data" / "mii-kds"
#: The systems of the node's patient numbers: the generated journeys' and the MII test data's.
IDENTIFIER_SYSTEMS = [
    f"https://hubnode.org/fhir/sid/mrn/{SITE}",
    "https://www.charite.de/fhir/sid/patientenidentifikation",
    "https://www.medizininformatik-initiative.de/fhir/sid/patienten",
]


def bench_restore() -> dict[str, Any]:
    """Fill, back up, restore and compare one node; the commands' times and the verdict."""
    with tempfile.TemporaryDirectory(prefix="hubnode-bench-restore-") as folder:
        project = Path(folder)
        _write_stack(project)
        seconds: dict[str, float] = {}
        try:
            seconds["up"] = _timed(project, "up", "--stack", STACK)
            volume, mii = project / "volume.ndjson.gz", project / "mii-kds.ndjson"
            generated = write_volume(volume, PATIENTS, SEED, site=SITE)
            bundles = sorted(MII_KDS_DIR.glob("Bundle-*.json"))
            mii.write_text("".join(json.dumps(json.loads(path.read_text())) + "\n" for path in bundles))
            load = ("load", "--stack", STACK, "--site", SITE, str(mii), str(volume))
            seconds["load"] = _timed(project, *load)
            seconds["backup"] = _timed(project, "backup", "--stack", STACK, "--site", SITE)
            before = project / "before.json"
            inventory = ("inventory", "--stack", STACK, "--site", SITE, "--output", str(before))
            seconds["inventory"] = _timed(project, *inventory)
            [archive] = (project / ".hubnode" / "backups" / STACK).glob("*.hnb")
            _timed(project, "down", "--stack", STACK, "--volumes")
            seconds["restore"] = _timed(project, "restore", "--stack", STACK, "--site", SITE, str(archive))
            seconds["up_after_restore"] = _timed(project, "up", "--stack", STACK)
            compared = _compare(project, before)
            held = json.loads(before.read_text())
            archive_bytes = archive.stat().st_size
        finally:
            _timed(project, "down", "--stack", STACK, "--volumes")
    return {
        "mii_bundles": len(bundles),
        "generated_patients": PATIENTS,
        "generated_resources": generated.resources,
        "archive_mib": round(archive_bytes / 2**20, 1),
        "inventory": held,
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "restore_vs_backup": seconds["restore"] / seconds["backup"],
        "restore_and_up_vs_backup": (seconds["restore"] + seconds["up_after_restore"]) / seconds["backup"],
        "identical": compared["identical"],
        "differences": compared.get("differences", []),
    }


def _write_stack(project: Path) -> None:
    (project / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    config = {
        "hubnode:site": SITE,
        "hubnode:environment": "local",
        "hubnode:federation": {"name": STACK},
        "hubnode:database": "postgres",
        "hubnode:components": ["fhir", "trustcentre", "connector", "gateway"],
        "hubnode:identifierSystems": IDENTIFIER_SYSTEMS,
        "hubnode:ports": {"gateway": free_port(), "peer": free_port()},
    }
    (project / f"Pulumi.{STACK}.yaml").write_text(json.dumps({"config": config}))


def _compare(project: Path, before: Path) -> dict[str, Any]:
    """`hubnode compare --against` the inventory taken after the backup, as JSON (exit 1 means: differs)."""
    command = [sys.executable, "-m", "infra.cli", "--project-dir", str(project), "compare"]
    command += ["--stack", STACK, "--site", SITE, "--against", str(before), "--json"]
    done = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"hubnode compare failed: {done.stderr[-2000:]}")
    compared: dict[str, Any] = json.loads(done.stdout)
    return compared


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table, if the restore benchmark ran."""
    if "restore" not in results:
        return []
    restore = results["restore"]
    took = restore["seconds"]
    held = f"{restore['mii_bundles']} MII bundles + {restore['generated_patients']} patients"
    return [
        (
            "restore: backup, restore, up after it (s)",
            f"{took['backup']}, {took['restore']}, {took['up_after_restore']}",
            held,
        ),
        (
            "restore: restore vs backup",
            f"{restore['restore_vs_backup']:.2f}",
            f"with up: {restore['restore_and_up_vs_backup']:.2f}",
        ),
        ("restore: restored node identical", str(restore["identical"]), f"archive {restore['archive_mib']} MiB"),
    ]
