"""The authorisation matrix page is generated from the scenarios and must match them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from conformance import matrix
from conformance._yaml import FileProblemsError
from conformance.scenario import load_scenario, load_scenarios


def test_the_docs_page_is_what_the_scenarios_test() -> None:
    assert matrix.main(["--check"]) == 0, "run: python -m conformance.matrix"


def test_every_cell_of_every_door_is_tested() -> None:
    text = matrix.page(matrix.cells(load_scenarios()))
    counted = text.splitlines()[-1]
    tested, total = (int(word) for word in counted.strip("*").split() if word.isdigit())
    assert tested == total >= 80


def scenario(tmp_path: Path, steps: str) -> Path:
    path = tmp_path / "m.yaml"
    head = "name: m\ntitle: t\njourney: 0\nactors: {a: {site: dic}, b: {site: dic, credential: none}}\nsteps:\n"
    path.write_text(head + textwrap.dedent(steps))
    return path


def test_a_cell_no_step_tests_is_shown_as_a_gap_and_counted(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        - read: {at: a, query: Patient}
          cell: {caller: admin, operation: "door: search"}
          expect: {status: 200}
        - read: {at: b, query: AuditEvent}
          cell: {caller: nobody, operation: "door: audit"}
          expect: {status: 401}
        """,
    )
    text = matrix.page(matrix.cells([load_scenario(path)]))
    assert "| admin | 200 | · |" in text
    assert "| nobody | · | 401 |" in text
    assert "**2 of 4 cells tested from outside.**" in text


def test_a_cell_without_an_expected_status_is_refused(tmp_path: Path) -> None:
    path = scenario(tmp_path, "- read: {at: a, query: Patient}\n  cell: {caller: admin, operation: 'door: x'}\n")
    with pytest.raises(FileProblemsError, match=re.escape("a matrix cell needs `expect: {status: ...}`")):
        load_scenario(path)
