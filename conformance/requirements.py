"""Requirements as data: what the suite verifies, with ids that scenarios, checks and reports share.

Kept in `requirements.yaml` beside this module (as Inferno keeps its requirement CSVs) so that a
certificate can say which requirements a target met and a person can read where each one comes from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from conformance._yaml import Fields, load_document

REQUIREMENTS_FILE = Path(__file__).with_name("requirements.yaml")
LEVELS = ("SHALL", "SHOULD")
AREAS = ("fhir", "invariant", "transport", "trust", "process", "security", "ttp")
ID_PATTERN = re.compile(r"HUB-[A-Z]+-\d{2}")

Level = Literal["SHALL", "SHOULD"]


@dataclass(frozen=True)
class Requirement:
    """One requirement: its id, its wording, where it comes from, how binding it is and its area."""

    id: str
    text: str
    source: str
    level: Level
    area: str


def load_requirements(path: Path = REQUIREMENTS_FILE) -> Mapping[str, Requirement]:
    """Requirement id -> requirement, in file order; every problem of the file is raised at once with its line."""
    root, problems = load_document(path)
    found: dict[str, Requirement] = {}
    if not isinstance(root.value, list):
        problems.add(root.line, "the file must be a list of requirements")
    for item in root.value if isinstance(root.value, list) else []:
        fields = Fields(item, problems, "a requirement")
        identifier = fields.text("id", required=True)
        text = fields.text("text", required=True)
        source = fields.text("source", required=True)
        level = fields.text("level", required=True, choices=LEVELS)
        area = fields.text("area", required=True, choices=AREAS)
        fields.finish()
        if identifier is not None and not ID_PATTERN.fullmatch(identifier):
            problems.add(item.line, f"id {identifier!r} does not look like HUB-<AREA>-<two digits>")
        elif identifier in found:
            problems.add(item.line, f"id {identifier} is defined twice")
        elif identifier and text and source and level and area:
            found[identifier] = Requirement(identifier, text, source, "SHALL" if level == "SHALL" else "SHOULD", area)
    problems.raise_if_any()
    return found
