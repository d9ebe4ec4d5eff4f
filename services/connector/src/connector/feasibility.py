"""Feasibility: how many patients match some criteria, across nodes, without small counts leaving a node.

The criteria travel as Task inputs (docs/federation.md); each answering node counts distinct patients in
its own HAPI and reports counts of 1-4 only as `<5`, since a count that small can single a patient out.
Larger counts leave rounded down to a multiple of the granularity (5: `5-9`, `10-14`, ...): otherwise two
questions that differ by a little (born before 1956, or not) give exact counts whose difference is a
count of 1-4 after all. A requester also gets only so many questions a day (the budget), so it cannot
walk a boundary question by question. The asking node adds up the lower bounds it was told.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update

from connector.db import feasibility_budget
from connector.tasks import Values, output, parameter
from servicekit.db import insert_ignoring_conflicts
from servicekit.fhir import FhirError

ICD10GM_SYSTEM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
GENDERS = ("male", "female", "other", "unknown")
SMALLEST_SHOWN = 5


@dataclass(frozen=True)
class Criteria:
    """Patients with a condition coded under `code_prefix`, optionally of a gender and born in a year range."""

    code_prefix: str
    system: str = ICD10GM_SYSTEM
    gender: str | None = None
    birth_year_min: int | None = None
    birth_year_max: int | None = None

    def inputs(self) -> list[dict[str, Any]]:
        """These criteria as Task inputs."""
        found = [parameter("condition-code", "valueCoding", {"system": self.system, "code": self.code_prefix})]
        if self.gender is not None:
            found.append(parameter("gender", "valueCode", self.gender))
        for code, year in (("birth-year-min", self.birth_year_min), ("birth-year-max", self.birth_year_max)):
            if year is not None:
                found.append(parameter(code, "valueInteger", year))
        return found

    def search(self) -> dict[str, str]:
        """HAPI search parameters for the candidate Conditions (every code of the system) and their patients."""
        return {"code": f"{self.system}|", "_include": "Condition:subject", "_count": "1000"}

    def matches_patient(self, patient: Mapping[str, Any]) -> bool:
        """Whether a Patient resource satisfies the gender and birth-year criteria."""
        if self.gender is not None and patient.get("gender") != self.gender:
            return False
        if self.birth_year_min is None and self.birth_year_max is None:
            return True
        birth = patient.get("birthDate")
        if not isinstance(birth, str) or not birth[:4].isdigit():
            return False
        year = int(birth[:4])
        return (self.birth_year_min or year) <= year <= (self.birth_year_max or year)

    def matches_condition(self, condition: Mapping[str, Any]) -> bool:
        """Whether a Condition carries a code of the system that starts with the prefix."""
        codings = condition.get("code", {}).get("coding", []) if isinstance(condition.get("code"), dict) else []
        return any(
            isinstance(c, dict)
            and c.get("system") == self.system
            and isinstance(c.get("code"), str)
            and c["code"].upper().startswith(self.code_prefix.upper())
            for c in codings
        )


def criteria_from(inputs: Values) -> Criteria:
    """The criteria of a feasibility Task; 400 naming the input at fault."""
    system, code = inputs.coding("condition-code")
    gender = inputs.code("gender")
    if gender is not None and gender not in GENDERS:
        raise FhirError(400, "invalid", f"gender must be one of {', '.join(GENDERS)}", ("Task.input",))
    low, high = inputs.integer("birth-year-min"), inputs.integer("birth-year-max")
    if low is not None and high is not None and low > high:
        raise FhirError(400, "invalid", f"birth-year-min {low} is after birth-year-max {high}", ("Task.input",))
    return Criteria(code.strip(), system or ICD10GM_SYSTEM, gender, low, high)


class PatientTally:
    """Distinct patients matching `criteria`, folded from search results page by page.

    Only references and verdicts are kept, never the resources: a node asked many questions at once,
    each over thousands of Conditions, must not hold them all in memory.
    """

    def __init__(self, criteria: Criteria) -> None:
        self._criteria = criteria
        self._patient_matches: dict[str, bool] = {}
        self._subjects: set[str] = set()

    def add(self, resources: Iterable[Mapping[str, Any]]) -> None:
        """Take in one page (Conditions plus their included Patients, in any order across pages)."""
        for resource in resources:
            if resource.get("resourceType") == "Patient":
                self._patient_matches[f"Patient/{resource.get('id')}"] = self._criteria.matches_patient(resource)
            elif resource.get("resourceType") == "Condition" and self._criteria.matches_condition(resource):
                subject = resource.get("subject", {})
                reference = subject.get("reference") if isinstance(subject, dict) else None
                if isinstance(reference, str):
                    self._subjects.add(reference)

    @property
    def count(self) -> int:
        """Patients with a matching Condition who match themselves (and were included in the results)."""
        return sum(1 for reference in self._subjects if self._patient_matches.get(reference, False))


@dataclass(frozen=True)
class NodeCount:
    """One node's answer: a count rounded down to the granularity (0, or at least 5), or None when it was 1-4."""

    site: str
    count: int | None
    granularity: int = SMALLEST_SHOWN

    @property
    def label(self) -> str:
        """`<site>:0`, `<site>:<5`, or the band the count lies in, `<site>:5-9`."""
        if self.count is None:
            return f"{self.site}:<{SMALLEST_SHOWN}"
        if self.count == 0 or self.granularity == 1:
            return f"{self.site}:{self.count}"
        return f"{self.site}:{self.count}-{self.count + self.granularity - 1}"


@dataclass(frozen=True)
class FeasibilityPolicy:
    """How this node lets counts leave: rounded down to `granularity`, at most `daily_budget` questions a requester."""

    granularity: int = SMALLEST_SHOWN
    daily_budget: int = 200

    def obfuscate(self, site: str, count: int) -> NodeCount:
        """A count as it may leave the node: 1-4 become `<5`, 0 stays 0, the rest rounds down to the granularity."""
        if 0 < count < SMALLEST_SHOWN:
            return NodeCount(site, None, self.granularity)
        return NodeCount(site, count - count % self.granularity, self.granularity)


def spend_budget(engine: Engine, requester: str, policy: FeasibilityPolicy) -> bool:
    """Count one question of `requester` today; False (and nothing counted) once its budget is used up."""
    today = datetime.now(UTC).date()
    key = (feasibility_budget.c.requester == requester) & (feasibility_budget.c.day == today)
    with engine.begin() as connection:
        insert_ignoring_conflicts(
            connection, feasibility_budget, [{"requester": requester, "day": today, "answered": 0}]
        )
        answered = connection.execute(select(feasibility_budget.c.answered).where(key)).scalar_one()
        if answered >= policy.daily_budget:
            return False
        connection.execute(update(feasibility_budget).where(key).values(answered=feasibility_budget.c.answered + 1))
    return True


def answer_outputs(node: NodeCount) -> list[dict[str, Any]]:
    """The answering node's Task outputs: the rounded count (not when under 5), its band, the granularity."""
    found = [
        output("node-count", "valueString", node.label),
        output("obfuscated", "valueBoolean", node.count is None),
        output("granularity", "valueInteger", node.granularity),
    ]
    if node.count is not None:
        found.insert(0, output("count", "valueInteger", node.count))
    return found


def from_answer(site: str, outputs: Values, policy: FeasibilityPolicy) -> NodeCount:
    """A peer's answer read back; a careless peer's small or unrounded count is obfuscated here too."""
    if outputs.boolean("obfuscated"):
        return NodeCount(site, None, policy.granularity)
    count = outputs.integer("count", required=True)
    if count is None or count < 0:
        raise FhirError(502, "invalid", f"peer {site!r} answered feasibility with count {count!r}")
    granularity = outputs.integer("granularity") or policy.granularity
    return FeasibilityPolicy(max(granularity, policy.granularity), policy.daily_budget).obfuscate(site, count)


def aggregate_outputs(nodes: Sequence[NodeCount]) -> list[dict[str, Any]]:
    """The asking node's outputs: the sum of what the nodes said (rounded), each node's count, any obfuscated."""
    total = sum(node.count for node in nodes if node.count is not None)
    return [
        output("count", "valueInteger", total),
        *(output("node-count", "valueString", node.label) for node in nodes),
        output("obfuscated", "valueBoolean", any(node.count is None for node in nodes)),
    ]
