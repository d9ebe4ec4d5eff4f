"""`./dev mutants`: prove the conformance suite fails nodes that break a requirement.

On a running local federation: first the scenarios of every mutant's requirement must pass on the
nodes as they are (otherwise a "caught" mutant proves nothing); then each mutant in turn is switched
on (`hubnode up --mutant NAME`, which replaces only the containers it changes) and the suite runs
the scenarios of its requirement (`hubnode check --requirement ID`). A mutant is caught when that
requirement is reported failed. The nodes are restored at the end, their data is not: what a
mutant sent (names in research extracts) stays. Writes
`.hubnode/mutants/latest.json` (a list of `{mutant, requirement, caught, ...}`) and prints a table;
exits 1 if any mutant survived or could not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.mutants import MUTANTS, Mutant

EXIT_SURVIVED = 1
#: Scenarios run per requirement at most this long (a hung node must not hang CI).
CHECK_TIMEOUT_S = 900
UP_TIMEOUT_S = 900


@dataclass(frozen=True)
class MutantResult:
    """One mutant's verdict: `caught` when the suite reported its requirement failed."""

    mutant: str
    requirement: str
    breaks: str
    caught: bool
    #: The requirement's outcome in the suite's certificate (passed, failed, error, ...), or why none.
    verdict: str
    seconds: float


@dataclass(frozen=True)
class Stack:
    """The local stack the mutants run on, and where logs and reports go."""

    project_dir: Path
    name: str
    work_dir: Path

    def hubnode(self, log: Path, *args: str, timeout: float) -> int:
        """Run `hubnode ARGS` on this stack, its output into `log`; the exit status."""
        command = [sys.executable, "-m", "infra.cli", "--project-dir", str(self.project_dir), *args]
        with log.open("a", encoding="utf-8") as output:
            output.write(f"$ hubnode {' '.join(args)}\n")
            output.flush()
            try:
                return subprocess.run(
                    command, stdout=output, stderr=subprocess.STDOUT, check=False, timeout=timeout
                ).returncode
            except subprocess.TimeoutExpired:
                output.write(f"timed out after {timeout:.0f} s\n")
                return -1

    def up(self, log: Path, mutant: str | None = None) -> int:
        """Bring the stack to its plan, with `mutant` switched on (none: the nodes as they are)."""
        switch = ("--mutant", mutant) if mutant else ()
        return self.hubnode(log, "up", "--stack", self.name, *switch, timeout=UP_TIMEOUT_S)

    def outcomes(self, log: Path, requirements: Sequence[str], report_dir: Path) -> dict[str, str]:
        """Run the scenarios bearing on `requirements`; each requirement's outcome from the certificate."""
        selected = [arg for requirement in requirements for arg in ("--requirement", requirement)]
        args = ("check", "--stack", self.name, *selected, "--report-dir", str(report_dir))
        (report_dir / "certificate.json").unlink(missing_ok=True)  # never read an earlier run's
        self.hubnode(log, *args, timeout=CHECK_TIMEOUT_S)
        try:
            certificate = json.loads((report_dir / "certificate.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {rid: outcome for outcome, ids in certificate["requirements"].items() for rid in ids}


def run(stack: Stack, mutants: Sequence[Mutant]) -> list[MutantResult]:
    """The baseline, then every mutant; the nodes are restored afterwards whatever happened."""
    stack.work_dir.mkdir(parents=True, exist_ok=True)
    baseline_log = stack.work_dir / "baseline.log"
    baseline_log.unlink(missing_ok=True)
    requirements = sorted({m.requirement for m in mutants})
    _say(f"baseline: the nodes as they are must pass {len(requirements)} requirement(s)")
    if stack.up(baseline_log) != 0:
        raise SystemExit(f"mutants: `hubnode up --stack {stack.name}` failed; see {baseline_log}")
    baseline = stack.outcomes(baseline_log, requirements, stack.work_dir / "baseline")
    results = []
    try:
        for number, mutant in enumerate(mutants, start=1):
            started = time.monotonic()
            if baseline.get(mutant.requirement) != "passed":
                verdict = f"baseline {baseline.get(mutant.requirement, 'not run')}"
            else:
                verdict = _verdict(stack, mutant)
            seconds = round(time.monotonic() - started, 1)
            result = MutantResult(mutant.name, mutant.requirement, mutant.breaks, verdict == "failed", verdict, seconds)
            results.append(result)
            mark = "caught" if result.caught else "SURVIVED"
            _say(f"[{number}/{len(mutants)}] {mutant.name} ({mutant.requirement}): {mark}, {verdict}, {seconds} s")
    finally:
        _say("restoring the nodes without a mutant")
        stack.up(stack.work_dir / "restore.log")
    return results


def _verdict(stack: Stack, mutant: Mutant) -> str:
    """What the suite said about the mutant's requirement with the mutant switched on."""
    folder = stack.work_dir / mutant.name
    folder.mkdir(exist_ok=True)
    log = folder / "run.log"
    log.unlink(missing_ok=True)
    if stack.up(log, mutant.name) != 0:
        return f"did not start (see {log})"
    return stack.outcomes(log, [mutant.requirement], folder / "report").get(mutant.requirement, "not run")


def table(results: Sequence[MutantResult]) -> str:
    """Mutant, requirement it breaks, the suite's verdict: the table of the README's quality section."""
    rows = [
        ("mutant", "requirement", "suite's verdict", "caught"),
        *((r.mutant, r.requirement, r.verdict, "yes" if r.caught else "NO") for r in results),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    caught = sum(r.caught for r in results)
    return "\n".join([*lines, f"mutation score: {caught}/{len(results)} caught"])


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m infra.mutation`."""
    options = argparse.ArgumentParser(prog="python -m infra.mutation", description=__doc__.splitlines()[0])
    options.add_argument("--project-dir", type=Path, default=Path.cwd(), help="folder holding the stack files")
    options.add_argument("--stack", default="federation", help="a local federation stack (default: federation)")
    options.add_argument("--mutant", action="append", choices=sorted(MUTANTS), help="run only these (repeatable)")
    options.add_argument("--output", type=Path, help="default: .hubnode/mutants/latest.json in the project")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mutants; write the JSON and print the table; 1 if any survived."""
    args = parser().parse_args(argv)
    project = args.project_dir.resolve()
    output = args.output or project / ".hubnode" / "mutants" / "latest.json"
    stack = Stack(project, args.stack, output.parent / args.stack)
    mutants = [MUTANTS[name] for name in args.mutant] if args.mutant else list(MUTANTS.values())
    results = run(stack, mutants)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"written to {output}; logs and reports in {stack.work_dir}")
    print(
        f"what the mutants sent stays on the nodes (names on the research node): throw the stack away with "
        f"`hubnode down --stack {stack.name} --volumes` before trusting its data"
    )
    return 0 if all(r.caught for r in results) else EXIT_SURVIVED


if __name__ == "__main__":
    sys.exit(main())
