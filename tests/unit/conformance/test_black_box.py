"""The suite is a black box: it (and the synthetic-patient generator it ships) imports no code it certifies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

#: Top-level packages of the code the suite certifies, and of what brings it up.
FORBIDDEN = ("connector", "servicekit", "trustcentre", "portal", "infra", "benchmarks", "tests")
SHIPPED = sorted([*(PROJECT_DIR / "conformance").rglob("*.py"), *(PROJECT_DIR / "fixtures").rglob("*.py")])


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(PROJECT_DIR)))
def test_the_suite_imports_nothing_it_certifies(path: Path) -> None:
    assert imported_packages(path).isdisjoint(FORBIDDEN)


def test_the_guard_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "leaky.py"
    module.write_text("def f():\n    from connector.tasks import request_task\n    return request_task\n")
    assert "connector" in imported_packages(module)
