"""`hubnode check`: replay the scenarios against the nodes of a targets file, write every report.

One line per step as it ends (a CI log shows where time went and what failed), then a summary table,
the certificate's verdict and where the HTML report is. Exit 0 only when no step failed or errored;
a malformed scenario or targets file, or a target that cannot be reached as the file says (TLS, tokens),
is refused before anything is sent, each problem named once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from conformance._yaml import FileProblemsError
from conformance.preflight import preflight
from conformance.reports import certificate, write_reports
from conformance.requirements import load_requirements
from conformance.results import Outcome, RunResult, StepResult
from conformance.runner import Runner, RunOptions
from conformance.scenario import SCENARIOS_DIR, Scenario, Step, load_scenarios
from conformance.targets import Targets, load_targets, local_targets_file

EXIT_FAILED = 1
EXIT_INVALID = 2
DEFAULT_STACK = "federation"
_MARKS = {Outcome.PASSED: "✓", Outcome.FAILED: "✗", Outcome.ERROR: "!", Outcome.NOT_APPLICABLE: "-"}


class CheckError(Exception):
    """The check cannot start: the message says what is missing and what to do."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m conformance.check`; returns the exit status."""
    return run(parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Replay the chosen scenarios as `args` (see `add_options`) say; returns the exit status."""
    try:
        scenarios = select_scenarios(load_scenarios(args.scenarios_dir), args.scenario, args.requirement)
        targets_file = targets_path(args.stack, args.targets, args.project_dir)
        targets = load_targets(targets_file)
    except (FileProblemsError, CheckError) as error:
        print(f"hubnode check: {error}", file=sys.stderr)
        return EXIT_INVALID
    unreachable = preflight(targets, timeout_s=min(args.timeout, 30.0))
    if unreachable:
        print(f"hubnode check: {len(unreachable)} target problem(s) in {targets_file}:", file=sys.stderr)
        for problem in unreachable:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_INVALID
    report_dir = args.report_dir or targets_file.resolve().parent / "report"
    print(f"checking {targets.name}: {len(scenarios)} scenarios, {sum(len(s.steps) for s in scenarios)} steps")
    runner = Runner(targets, on_step=StepPrinter(sys.stdout), options=RunOptions(timeout_s=args.timeout))
    run = runner.run(scenarios)
    requirements = load_requirements()
    files = write_reports(run, requirements, report_dir)
    print(summary(run))
    print(f"certificate: {certificate(run, requirements)['result']} ({files.certificate})")
    print(f"report: {files.html}")
    failed = any(step.outcome in {Outcome.FAILED, Outcome.ERROR} for s in run.scenarios for step in s.steps)
    return EXIT_FAILED if failed else 0


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m conformance.check`."""
    options = argparse.ArgumentParser(prog="hubnode check", description=__doc__.splitlines()[0] if __doc__ else None)
    add_options(options)
    options.add_argument(
        "--project-dir", type=Path, help="folder holding .hubnode/ of a local stack (default: the nearest above here)"
    )
    return options


def add_options(options: argparse.ArgumentParser) -> None:
    """The options of `hubnode check`, for its own parser and for the `hubnode` command's."""
    where = options.add_mutually_exclusive_group()
    where.add_argument(
        "--stack", help=f"a stack brought up here by `hubnode up` (its targets file; default: {DEFAULT_STACK})"
    )
    where.add_argument("--targets", type=Path, help="a targets file (YAML or JSON) naming the nodes to check")
    options.add_argument(
        "--scenario", action="append", default=[], metavar="NAME", help="run only this scenario (repeatable)"
    )
    options.add_argument(
        "--requirement",
        action="append",
        default=[],
        metavar="ID",
        help="run only the scenarios with a step that verifies this requirement (repeatable)",
    )
    options.add_argument("--report-dir", type=Path, help="where reports go (default: beside the targets file)")
    options.add_argument("--scenarios-dir", type=Path, default=SCENARIOS_DIR, help="folder of scenario files")
    options.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one answer (default: 120)")


def targets_path(stack: str | None, targets_file: Path | None, project_dir: Path | None = None) -> Path:
    """The targets file given, or the one `hubnode up` wrote for a local stack."""
    if targets_file is not None:
        return targets_file
    name = stack or DEFAULT_STACK
    here = (project_dir or Path.cwd()).resolve()
    folders = (here,) if project_dir is not None else (here, *here.parents)
    for folder in folders:
        if (path := local_targets_file(folder, name)).is_file():
            return path
    raise CheckError(
        f"no targets file of stack {name} in {here}{'' if project_dir else ' or above'} "
        f"({local_targets_file(here, name).relative_to(here)}): bring the stack up first "
        f"(`hubnode up --stack {name}`), or name a targets file with --targets"
    )


def resolve_targets(stack: str | None, targets_file: Path | None, project_dir: Path | None = None) -> Targets:
    """The targets of a file, or of a local stack; raises on problems."""
    return load_targets(targets_path(stack, targets_file, project_dir))


def select_scenarios(
    scenarios: Sequence[Scenario], names: Sequence[str], requirements: Sequence[str] = ()
) -> list[Scenario]:
    """The scenarios named (all if none are) and bearing on the requirements given; an unknown name is an error."""
    known = {scenario.name for scenario in scenarios}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CheckError(f"no scenario {', '.join(map(repr, unknown))}; choose among: {', '.join(sorted(known))}")
    chosen = [scenario for scenario in scenarios if not names or scenario.name in names]
    if requirements:
        chosen = [s for s in chosen if set(requirements) & {r for step in s.steps for r in step.requirements()}]
        if not chosen:
            raise CheckError(f"no scenario has a step that verifies {', '.join(requirements)}")
    return chosen


class StepPrinter:
    """Prints one line per finished step, and a heading when a scenario begins."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._scenario: str | None = None

    def __call__(self, scenario: Scenario, step: Step, result: StepResult) -> None:
        """Print `result` of `step`, with the reason when it did not pass."""
        if scenario.name != self._scenario:
            self._scenario = scenario.name
            print(f"==> {scenario.name}: {scenario.title}", file=self._stream, flush=True)
        line = f"  {_MARKS[result.outcome]} {step.index:02d} {step.title} ({result.duration_s:.1f} s)"
        if result.outcome is not Outcome.PASSED:
            line += f"\n      {result.outcome.value}: {result.message}"
        print(line, file=self._stream, flush=True)


def summary(run: RunResult) -> str:
    """A table of scenarios and how their steps came out."""
    columns = (Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.NOT_APPLICABLE)
    width = max([len("scenario"), *(len(s.name) for s in run.scenarios)])
    rows = [f"{'scenario':<{width}}  " + "  ".join(f"{c.value:>14}" for c in columns) + "  outcome"]
    for scenario in run.scenarios:
        counts = "  ".join(f"{scenario.count(c):>14}" for c in columns)
        rows.append(f"{scenario.name:<{width}}  {counts}  {scenario.outcome.value}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
