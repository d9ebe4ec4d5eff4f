"""What a run found: per scenario, per step, an outcome with requirement ids, a message and HTTP excerpts.

The runner produces this model and every report is written from it, so JUnit, HTML, TestReport and the
certificate cannot disagree. The one rule that matters for certification lives here: a requirement that
was only ever not applicable is reported as not applicable, never as passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

EXCERPT_LIMIT = 2000


class Outcome(StrEnum):
    """How a step, scenario or requirement came out."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    NOT_APPLICABLE = "not-applicable"


def combined(outcomes: Iterable[Outcome]) -> Outcome:
    """One outcome for many: any failure wins, then errors, then passes; only not-applicable stays so.

    An empty set is not applicable too: nothing was shown to work.
    """
    found = set(outcomes)
    for outcome in (Outcome.FAILED, Outcome.ERROR, Outcome.PASSED):
        if outcome in found:
            return outcome
    return Outcome.NOT_APPLICABLE


def excerpt(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """At most `limit` characters of `text`, saying how much was left out, for reports a person reads."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n... ({len(text) - limit} more characters)"


@dataclass(frozen=True)
class Exchange:
    """One HTTP request and its response, as excerpts (bodies cut to `EXCERPT_LIMIT`)."""

    method: str
    url: str
    status: int | None
    request: str = ""
    response: str = ""


@dataclass(frozen=True)
class StepResult:
    """The outcome of one scenario step and the requirement ids it bears on."""

    index: int
    title: str
    kind: str
    outcome: Outcome
    requirements: tuple[str, ...]
    duration_s: float
    message: str = ""
    exchanges: tuple[Exchange, ...] = ()


@dataclass(frozen=True)
class ScenarioResult:
    """The steps of one scenario as run against a target."""

    name: str
    title: str
    journey: int
    started: str
    steps: tuple[StepResult, ...]

    @property
    def outcome(self) -> Outcome:
        """Failed if a step failed, error if one could not run, not applicable if none applied, else passed."""
        return combined(step.outcome for step in self.steps)

    @property
    def duration_s(self) -> float:
        """Time spent in the scenario's steps."""
        return sum(step.duration_s for step in self.steps)

    def count(self, outcome: Outcome) -> int:
        """How many steps came out as `outcome`."""
        return sum(step.outcome is outcome for step in self.steps)


@dataclass(frozen=True)
class RunResult:
    """A whole run: which target, which software versions, which scenarios."""

    target: str
    started: str
    scenarios: tuple[ScenarioResult, ...]
    versions: Mapping[str, str] = field(default_factory=dict)

    def requirement_outcomes(self) -> dict[str, Outcome]:
        """Requirement id -> combined outcome of every step that bears on it, in id order."""
        by_requirement: dict[str, list[Outcome]] = {}
        for scenario in self.scenarios:
            for step in scenario.steps:
                for requirement in step.requirements:
                    by_requirement.setdefault(requirement, []).append(step.outcome)
        return {requirement: combined(found) for requirement, found in sorted(by_requirement.items())}

    def matrix(self) -> dict[str, dict[str, Outcome]]:
        """Requirement id -> scenario name -> outcome, for the cells where a scenario bears on a requirement."""
        cells: dict[str, dict[str, list[Outcome]]] = {}
        for scenario in self.scenarios:
            for step in scenario.steps:
                for requirement in step.requirements:
                    cells.setdefault(requirement, {}).setdefault(scenario.name, []).append(step.outcome)
        return {
            requirement: {name: combined(found) for name, found in row.items()}
            for requirement, row in sorted(cells.items())
        }
