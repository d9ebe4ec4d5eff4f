"""Values carried between steps (`keep:`): what an earlier answer held, for later templates and expectations.

A step that says `keep: {pseudonym: "parameter[name=pseudonym].part[name=pseudonym].valueIdentifier.value"}`
stores the first value that path reaches in its answer; later steps see it as `kept.pseudonym`. Round trips
through a node (pseudonymise, then resolve what it made) need this: the value exists only on the wire.
Templates see `kept` as a `KeptValues`, which names the problem when a step asks for a value it cannot have.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jinja2

from conformance.paths import SimplePath

#: A kept value's name: what a template writes after `kept.`.
KEPT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class UnknownKeptValueError(jinja2.UndefinedError):
    """A template asked for `kept.<name>` that no earlier step keeps, or whose step kept nothing."""


class KeptValues:
    """What a step's templates see as `kept`: the values earlier steps kept, by name.

    `keepers` maps each name to the step that keeps it; `before` is the index of the step rendering. A
    name asked for is noted in `used` (the runner holds a step back when the step keeping it did not pass).
    """

    def __init__(self, values: Mapping[str, object], keepers: Mapping[str, int], before: int) -> None:
        self._values = values
        self._keepers = keepers
        self._before = before
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> object:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> object:
        self.used.add(name)
        keeper = self._keepers.get(name)
        if keeper is None:
            kept = ", ".join(sorted(self._keepers)) or "none"
            raise UnknownKeptValueError(f"kept.{name}: no step keeps a value {name!r} (kept names: {kept})")
        if keeper >= self._before:
            raise UnknownKeptValueError(f"kept.{name} is kept by step {keeper}, which comes after this one")
        if name not in self._values:
            raise UnknownKeptValueError(f"kept.{name} has no value: step {keeper}, which keeps it, kept nothing")
        return self._values[name]


def placeholders(keepers: Mapping[str, int]) -> dict[str, str]:
    """Stand-ins for kept values when a scenario is loaded, so templates using them render and are checked."""
    return {name: f"kept-{name}" for name in keepers}


def keep_from(body: object, keep: Mapping[str, SimplePath]) -> tuple[dict[str, object], list[str]]:
    """The first value each path reaches in `body`, and a problem naming each key whose path reaches nothing."""
    found: dict[str, object] = {}
    problems = []
    for name, path in keep.items():
        values = path.values(body)
        if values:
            found[name] = values[0]
        else:
            problems.append(f"keep {name}: {path.text} reached nothing in the answer")
    return found, problems
