"""YAML with line numbers, and a collector that reports every problem of a file at once.

Scenario and requirement files are written by people; a mistake must point at its line. `yaml.safe_load`
forgets where values came from, so files are composed into nodes (which keep their marks) and read
through `Fields`, which remembers which keys were used so unknown keys are reported too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, at a line (1-based)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class FileProblemsError(ValueError):
    """A file is malformed; `problems` lists everything wrong with it, each with its line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True)
class Node:
    """A YAML value with its line: scalars plain, sequences as lists of nodes, mappings as dicts of nodes."""

    value: Any
    line: int
    key_lines: Mapping[str, int] = field(default_factory=dict)

    def plain(self) -> object:
        """The value without marks, as `yaml.safe_load` would give it."""
        if isinstance(self.value, list):
            return [item.plain() for item in self.value]
        if isinstance(self.value, dict):
            return {key: item.plain() for key, item in self.value.items()}
        return self.value


class Problems:
    """Collects the problems of one file so a person sees all of them in one run, not one per run."""

    def __init__(self, file: str) -> None:
        self.file = file
        self._found: list[Problem] = []

    def add(self, line: int, message: str) -> None:
        """Note a problem at `line`."""
        self._found.append(Problem(self.file, line, message))

    def raise_if_any(self) -> None:
        """Raise `FileProblemsError` with everything noted, sorted by line."""
        if self._found:
            raise FileProblemsError(sorted(self._found, key=lambda problem: problem.line))


def load_document(path: Path) -> tuple[Node, Problems]:
    """The file's document as nodes, and the collector for further problems of this file.

    A file that is not YAML, or is empty, is refused at once: nothing else about it can be said.
    Problems found while converting (a key given twice) are noted and raised with the rest.
    """
    problems = Problems(str(path))
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.add(mark.line + 1 if mark else 1, f"not valid YAML: {exc.problem or exc}")
    except OSError as exc:
        problems.add(1, f"cannot read the file: {exc.strerror}")
    else:
        if root is not None:
            return _convert(root, yaml.SafeLoader(""), problems), problems
        problems.add(1, "the file is empty")
    problems.raise_if_any()
    raise AssertionError  # pragma: no cover - a problem was noted above


def _convert(node: yaml.Node, loader: yaml.SafeLoader, problems: Problems) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node))
            if key in mapping:
                problems.add(key_node.start_mark.line + 1, f"key {key!r} appears twice")
            mapping[key] = _convert(value_node, loader, problems)
            key_lines[key] = key_node.start_mark.line + 1
        return Node(mapping, line, key_lines)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(item, loader, problems) for item in node.value], line)
    try:
        return Node(loader.construct_object(node), line)
    except yaml.constructor.ConstructorError as exc:
        problems.add(line, f"cannot read this value: {exc.problem}")
        return Node(None, line)


class Fields:
    """Typed access to a mapping node's keys; each problem is noted with the line of the offending value."""

    def __init__(self, node: Node, problems: Problems, where: str) -> None:
        self.line = node.line
        self._key_lines = node.key_lines
        self.problems = problems
        self.where = where
        self._used: set[str] = set()
        if isinstance(node.value, dict):
            self._items: dict[str, Node] = node.value
        else:
            self._items = {}
            problems.add(node.line, f"{where} must be a mapping (key: value lines), got {_kind(node.value)}")

    def has(self, key: str) -> bool:
        """Whether `key` is present (without marking it used)."""
        return key in self._items

    def node(self, key: str, *, required: bool = False) -> Node | None:
        """The node under `key`; a missing required key is noted at the mapping's line."""
        self._used.add(key)
        found = self._items.get(key)
        if found is None and required:
            self.problems.add(self.line, f"{self.where} needs `{key}`")
        return found

    def text(self, key: str, *, required: bool = False, choices: tuple[str, ...] = ()) -> str | None:
        """A string value, optionally one of `choices`."""
        found = self.node(key, required=required)
        if found is None:
            return None
        if not isinstance(found.value, str) or not found.value:
            self.problems.add(found.line, f"{self.where}: `{key}` must be a non-empty string, got {_kind(found.value)}")
            return None
        if choices and found.value not in choices:
            self.problems.add(
                found.line, f"{self.where}: `{key}` must be one of {', '.join(choices)}; got {found.value!r}"
            )
            return None
        return found.value

    def number(self, key: str, *, required: bool = False, minimum: float = 0) -> float | None:
        """A number (int or float) no smaller than `minimum`."""
        found = self.node(key, required=required)
        if found is None:
            return None
        if isinstance(found.value, bool) or not isinstance(found.value, int | float) or found.value < minimum:
            self.problems.add(found.line, f"{self.where}: `{key}` must be a number >= {minimum}, got {found.value!r}")
            return None
        return float(found.value) if isinstance(found.value, float) else found.value

    def integer(self, key: str, *, required: bool = False, minimum: int = 0) -> int | None:
        """A whole number no smaller than `minimum`."""
        found = self.number(key, required=required, minimum=minimum)
        if found is not None and not isinstance(found, int):
            self.problems.add(self.line, f"{self.where}: `{key}` must be a whole number, got {found!r}")
            return None
        return found

    def flag(self, key: str, *, default: bool) -> bool:
        """A boolean."""
        found = self.node(key)
        if found is None:
            return default
        if not isinstance(found.value, bool):
            self.problems.add(found.line, f"{self.where}: `{key}` must be true or false, got {found.value!r}")
            return default
        return found.value

    def strings(self, key: str, *, required: bool = False) -> tuple[tuple[str, int], ...]:
        """A list of strings (a single string counts as a list of one), each with its line."""
        found = self.node(key, required=required)
        if found is None:
            return ()
        items = found.value if isinstance(found.value, list) else [found]
        result = []
        for item in items:
            if isinstance(item.value, str | int) and not isinstance(item.value, bool) and str(item.value):
                result.append((str(item.value), item.line))
            else:
                self.problems.add(item.line, f"{self.where}: `{key}` entries must be strings, got {_kind(item.value)}")
        return tuple(result)

    def mapping(self, key: str, *, required: bool = False) -> Iterator[tuple[str, Node]]:
        """The entries of a mapping under `key`."""
        found = self.node(key, required=required)
        if found is None:
            return
        if not isinstance(found.value, dict):
            self.problems.add(found.line, f"{self.where}: `{key}` must be a mapping, got {_kind(found.value)}")
            return
        yield from found.value.items()

    def sequence(self, key: str, *, required: bool = False) -> list[Node]:
        """The items of a list under `key`."""
        found = self.node(key, required=required)
        if found is None:
            return []
        if not isinstance(found.value, list):
            self.problems.add(found.line, f"{self.where}: `{key}` must be a list, got {_kind(found.value)}")
            return []
        return list(found.value)

    def finish(self) -> None:
        """Note every key that nobody asked for: a typo must not be silently ignored."""
        for key, value in self._items.items():
            if key not in self._used:
                self.problems.add(self._key_lines.get(key, value.line), f"{self.where}: unknown key `{key}`")


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"
