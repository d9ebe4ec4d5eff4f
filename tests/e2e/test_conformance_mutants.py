"""Issue 12/19: the suite is proven able to fail. Every mutant is switched on in the running federation
in turn and must be caught by the requirement it breaks (`python -m infra.mutation`, as `./dev mutants`).

The table lands in `.hubnode/mutants/latest.json` of this checkout, where `./dev mutants` writes it too.
It runs right after test_conformance.py (file order), before other tests add patients that change
feasibility counts. The runner brings the nodes back without a mutant, but what a leaking mutant sent
stays on the research node: later tests that look for leaks judge only what they stored themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys

from infra.mutants import MUTANTS
from tests.conftest import PROJECT_DIR
from tests.e2e.conftest import STACK, Federation

LATEST = PROJECT_DIR / ".hubnode" / "mutants" / "latest.json"


def test_every_mutant_is_caught_by_the_requirement_it_breaks(federation: Federation) -> None:
    command = [sys.executable, "-m", "infra.mutation", "--project-dir", str(federation.project), "--stack", STACK]
    done = subprocess.run(
        [*command, "--output", str(LATEST)], capture_output=True, text=True, check=False, cwd=PROJECT_DIR, timeout=3600
    )
    print(done.stdout)
    results = json.loads(LATEST.read_text())
    assert {r["mutant"] for r in results} == set(MUTANTS)
    survivors = [f"{r['mutant']} ({r['requirement']}): {r['verdict']}" for r in results if not r["caught"]]
    assert survivors == [], "\n".join(survivors) + f"\nlogs: {federation.state.parent / 'mutants'}"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "mutation score: " in done.stdout
