"""A pytest plugin: scenario files become test nodes, their steps test items, run against targets.

`pytest -p conformance.plugin --hubnode-stack federation scenarios/` (or `--hubnode-targets FILE`)
collects each scenario file in the scenarios folder as a node with one item per step, so pytest's own
reporting (`-rs`, `--junitxml`, `-x`, `-k`) applies. Steps run in order when their item runs (an item
asked for alone runs the steps before it first); a step that is not applicable is skipped with its
reason, never passed silently. Without either option the plugin collects nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance._yaml import FileProblemsError
from conformance.check import CheckError, resolve_targets
from conformance.preflight import preflight
from conformance.reports import failure_text
from conformance.results import Outcome, StepResult
from conformance.runner import Runner, ScenarioRun
from conformance.scenario import SCENARIOS_DIR, Scenario, Step, load_scenario

RUNNER = pytest.StashKey[Runner]()


class StepNotPassedError(Exception):
    """A step failed or could not run; carries its result for the report."""

    def __init__(self, result: StepResult) -> None:
        super().__init__(result.message)
        self.result = result


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's options."""
    group = parser.getgroup("hubnode", "hubnode conformance scenarios")
    group.addoption("--hubnode-targets", type=Path, help="targets file naming the nodes to check")
    group.addoption("--hubnode-stack", help="a stack brought up here by `hubnode up` (the targets file it wrote)")
    group.addoption(
        "--hubnode-scenario", action="append", default=[], metavar="NAME", help="run only this scenario (repeatable)"
    )
    group.addoption("--hubnode-scenarios-dir", type=Path, default=SCENARIOS_DIR, help="folder of scenario files")


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the targets once, so a broken targets file stops the session before anything runs."""
    stack, targets_file = config.getoption("hubnode_stack"), config.getoption("hubnode_targets")
    if stack is None and targets_file is None:
        return
    try:
        targets = resolve_targets(stack, targets_file)
    except (FileProblemsError, CheckError) as error:
        raise pytest.UsageError(f"hubnode conformance: {error}") from None
    unreachable = preflight(targets)
    if unreachable:
        raise pytest.UsageError("hubnode conformance: " + "; ".join(unreachable))
    config.stash[RUNNER] = Runner(targets)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the runner's connections."""
    if RUNNER in config.stash:
        config.stash[RUNNER].http.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """Each `*.yaml` directly in the scenarios folder, when targets were given and the scenario is wanted."""
    config = parent.config
    folder = Path(config.getoption("hubnode_scenarios_dir")).resolve()
    if RUNNER not in config.stash or file_path.suffix != ".yaml" or file_path.parent.resolve() != folder:
        return None
    wanted = config.getoption("hubnode_scenario")
    if wanted and file_path.stem not in wanted:
        return None
    found: ScenarioFile = ScenarioFile.from_parent(parent, path=file_path)
    return found


class ScenarioFile(pytest.File):
    """One scenario: its steps are the items, run in order by one `ScenarioRun`."""

    _run: ScenarioRun | None = None

    def collect(self) -> Iterator[StepItem]:
        """One item per step; a malformed file is a collection error naming each problem's line."""
        try:
            scenario = load_scenario(self.path)
        except FileProblemsError as error:
            raise self.CollectError(str(error)) from None
        for step in scenario.steps:
            yield StepItem.from_parent(self, name=f"{step.index:02d} {step.title}", scenario=scenario, step=step)

    def scenario_run(self, scenario: Scenario) -> ScenarioRun:
        """The run of this scenario, started by its first item."""
        if self._run is None:
            self._run = self.config.stash[RUNNER].start(scenario)
        return self._run


class StepItem(pytest.Item):
    """One step: passes, fails, errors, or is skipped as not applicable with the reason."""

    def __init__(self, *, scenario: Scenario, step: Step, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.scenario = scenario
        self.step = step
        self.user_properties.extend(("requirement", requirement) for requirement in step.requirements())

    def runtest(self) -> None:
        """Run the step (and any earlier one not yet run) and turn its outcome into pytest's."""
        assert isinstance(self.parent, ScenarioFile)  # noqa: S101 -- made by ScenarioFile.collect
        result = self.parent.scenario_run(self.scenario).result(self.step.index)
        if result.outcome is Outcome.NOT_APPLICABLE:
            # at the step's line in the scenario, not here (what pytest's own skip marks do)
            raise pytest.skip.Exception(f"not applicable: {result.message}", _use_item_location=True)
        if result.outcome is not Outcome.PASSED:
            raise StepNotPassedError(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: str | None = None,
    ) -> str:
        """The step's message and its HTTP exchanges, not a Python traceback."""
        if isinstance(excinfo.value, StepNotPassedError):
            result = excinfo.value.result
            return f"{result.outcome.value}: {failure_text(result)}"
        return str(super().repr_failure(excinfo, style))  # type: ignore[arg-type]

    def reportinfo(self) -> tuple[Path, int, str]:
        """Where the step is written, for pytest's report lines."""
        return self.path, self.step.line - 1, f"{self.scenario.name} step {self.name}"
