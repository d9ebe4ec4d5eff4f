"""Simple paths into FHIR JSON, and the content checks scenarios state with them.

A small subset of FHIRPath's navigation is enough for scenario expectations and readable in YAML:
`entry.resource.code.coding.code` (lists flatten, as in FHIRPath), `entry[0]` (an index into the
collection so far) and `output[type.coding.code=count].valueInteger` (keep the items whose sub-path
has that value). Paths are parsed when a scenario is loaded, so a typo fails with its line before
anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")

CheckKind = Literal["equals", "contains", "mentions", "excludes", "exists", "count"]
CHECK_KINDS: tuple[CheckKind, ...] = ("equals", "contains", "mentions", "excludes", "exists", "count")


class PathSyntaxError(ValueError):
    """A path that does not follow the path syntax; the message says where."""


@dataclass(frozen=True)
class _Step:
    name: str
    selectors: tuple[int | tuple[SimplePath, str], ...]


@dataclass(frozen=True)
class SimplePath:
    """A parsed path; `SimplePath.parse` checks the syntax, `values` applies it."""

    text: str
    steps: tuple[_Step, ...]

    @classmethod
    def parse(cls, text: str) -> SimplePath:
        """Parse `text`, or raise `PathSyntaxError` naming the bad part."""
        if not text.strip():
            raise PathSyntaxError("a path must not be empty")
        return cls(text, tuple(_parse_step(part, text) for part in _split(text)))

    def values(self, data: object) -> list[object]:
        """Every value the path reaches in `data`, lists flattened (a missing element reaches nothing)."""
        current = [data]
        for step in self.steps:
            reached: list[object] = []
            for item in current:
                if isinstance(item, dict) and step.name in item:
                    found = item[step.name]
                    reached.extend(found if isinstance(found, list) else [found])
            for selector in step.selectors:
                reached = _select(reached, selector)
            current = reached
        return current


@dataclass(frozen=True)
class PathCheck:
    """An expectation on the values a path reaches: a value, a text, whether any, how many.

    `contains` means one value equals the expected one; `mentions` that one value has the text in it (a
    diagnostics naming a profile); `excludes` that none has (a link must not carry a forged host name, say).
    """

    path: SimplePath
    kind: CheckKind
    expected: object

    def failure(self, data: object) -> str | None:
        """Why `data` does not meet the check, or None when it does."""
        values = self.path.values(data)
        met, unmet = _CHECKS[self.kind]
        return None if met(values, self.expected) else f"{self.path.text}: {unmet(self.expected, values)}"


def _has_text(values: list[object], text: object) -> bool:
    return any(str(text) in str(value) for value in values)


#: Per kind: whether the values meet the expected one, and what a failure says (given expected and values).
_CHECKS: Mapping[str, tuple[Callable[[list[object], object], bool], Callable[[object, list[object]], str]]] = {
    "exists": (
        lambda values, expected: bool(values) == bool(expected),
        lambda e, values: f"expected {'some' if e else 'no'} value, got {_show(values)}",
    ),
    "count": (
        lambda values, expected: len(values) == expected,
        lambda e, values: f"expected {e} values, got {len(values)}: {_show(values)}",
    ),
    "equals": (
        lambda values, expected: bool(values) and all(_same(value, expected) for value in values),
        lambda e, values: f"expected every value to equal {e!r}, got {_show(values)}",
    ),
    "contains": (
        lambda values, expected: any(_same(value, expected) for value in values),
        lambda e, values: f"expected a value {e!r} among {_show(values)}",
    ),
    "mentions": (_has_text, lambda e, values: f"expected a value with {e!r} in it, got {_show(values)}"),
    "excludes": (
        lambda values, text: not _has_text(values, text),
        lambda e, values: f"expected no value with {e!r} in it, got {_show(values)}",
    ),
}


def _split(text: str) -> list[str]:
    """Split at dots outside brackets."""
    parts, depth, start = [], 0, 0
    for position, character in enumerate(text):
        if character == "[":
            depth += 1
        elif character == "]":
            depth -= 1
            if depth < 0:
                raise PathSyntaxError(f"{text!r}: ']' without '[' at character {position + 1}")
        elif character == "." and depth == 0:
            parts.append(text[start:position])
            start = position + 1
    if depth:
        raise PathSyntaxError(f"{text!r}: '[' is not closed")
    parts.append(text[start:])
    return parts


def _parse_step(part: str, text: str) -> _Step:
    name = _NAME.match(part)
    if name is None:
        raise PathSyntaxError(f"{text!r}: {part!r} must start with an element name")
    rest = part[name.end() :]
    selectors: list[int | tuple[SimplePath, str]] = []
    while rest:
        bracket = _BRACKET.match(rest)
        if bracket is None:
            raise PathSyntaxError(f"{text!r}: unexpected {rest!r} after {name.group()!r}")
        selectors.append(_parse_selector(bracket.group(1), text))
        rest = rest[bracket.end() :]
    return _Step(name.group(), tuple(selectors))


def _parse_selector(inside: str, text: str) -> int | tuple[SimplePath, str]:
    if inside.isdigit():
        return int(inside)
    sub_path, equals, value = inside.partition("=")
    if not equals or not value:
        raise PathSyntaxError(f"{text!r}: [{inside}] must be an index like [0] or a filter like [name=value]")
    return SimplePath.parse(sub_path), value


def _select(items: list[object], selector: int | tuple[SimplePath, str]) -> list[object]:
    if isinstance(selector, int):
        return items[selector : selector + 1]
    sub_path, wanted = selector
    return [item for item in items if any(_same(value, wanted) for value in sub_path.values(item))]


def _same(value: object, expected: object) -> bool:
    """YAML gives 5 where JSON has 5 or "5"; compare as JSON scalars, but never True with 1."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected or str(value).lower() == str(expected).lower()
    return value == expected or str(value) == str(expected)


def _show(values: list[object], limit: int = 120) -> str:
    shown = repr(values)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
