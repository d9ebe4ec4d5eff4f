"""Read `Pulumi.<stack>.yaml` without the Pulumi CLI, so `hubnode up` works on any laptop.

Errors name the file and line: a YAML mistake, a missing `config:` map, or (via `infra.spec`) a key
whose value is not allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from infra.errors import HubnodeError
from infra.spec import NAMESPACE, SECRET_KEYS, Problem, SpecError, StackSpec, parse_stack


def stack_file(project_dir: Path, stack: str) -> Path:
    """Where a stack's config lives, as Pulumi has it."""
    return project_dir / f"Pulumi.{stack}.yaml"


def load_stack(project_dir: Path, stack: str) -> StackSpec:
    """Read and validate a stack file; every error names the file (and line where there is one)."""
    path = stack_file(project_dir, stack)
    config, lines = _read(project_dir, stack)
    secret_values = {f"hubnode:{key}" for key in SECRET_KEYS}
    plain = read_named_files({k: v for k, v in config.items() if k not in secret_values}, project_dir)
    try:
        return parse_stack(stack, plain, source=str(path))
    except SpecError as error:
        located = [_locate(problem, lines) for problem in error.problems]
        raise SpecError(located, str(path)) from None


def stack_config_map(project_dir: Path, stack: str) -> dict[str, Any]:
    """The stack file's `config:` map as written (what `hubnode deploy` hands the Pulumi engine)."""
    return _read(project_dir, stack)[0]


def _read(project_dir: Path, stack: str) -> tuple[dict[str, Any], dict[str, int]]:
    path = stack_file(project_dir, stack)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in project_dir.glob("Pulumi.*.yaml"))
        raise HubnodeError(
            f"no stack file {path}",
            fix=f"choose one of the stacks here ({', '.join(known) or 'none'}) or write {path.name}",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HubnodeError(f"cannot read {path}: {exc}", fix="check the file's permissions and encoding") from None
    return _parse(path, text)


#: Keys whose value may be the name of a YAML file beside the stack file, holding what the key would hold:
#: long lists one federation's stacks share (its pseudonym and consent domains, its projects) and demo users.
FILE_KEYS: tuple[str, ...] = ("users", "domains", "consentDomains", "projects")


def read_named_files(config: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """The config with each `FILE_KEYS` value (and a node's `users`) that names a YAML file in `folder` read in."""
    resolved = dict(config)
    for name in FILE_KEYS:
        key = f"{NAMESPACE}:{name}"
        if isinstance(resolved.get(key), str):
            resolved[key] = _named_file(folder / resolved[key], key)
    nodes = resolved.get(f"{NAMESPACE}:nodes")
    if isinstance(nodes, list):
        resolved[f"{NAMESPACE}:nodes"] = [
            {**node, "users": _named_file(folder / node["users"], f"{NAMESPACE}:nodes[{index}].users")}
            if isinstance(node, dict) and isinstance(node.get("users"), str)
            else node
            for index, node in enumerate(nodes)
        ]
    return resolved


def _named_file(path: Path, key: str) -> Any:  # noqa: ANN401 -- any YAML; infra.spec checks its shape
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise HubnodeError(
            f"{key} names {path}, which cannot be read: {exc}",
            fix="write that file beside the stack file (YAML, what the key holds when written in place), "
            "or write the value in the stack file",
        ) from None


def _parse(path: Path, text: str) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        document = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise HubnodeError(f"{where}: not valid YAML: {problem}", fix="fix the YAML syntax at that line") from None
    if document is None:
        document = {}
    config = document.get("config", {}) if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise HubnodeError(
            f"{path}: expected a map with a `config:` map of keys such as hubnode:site",
            fix="see Pulumi.dev.yaml for the shape of a stack file",
        )
    return config, _key_lines(root)


def _key_lines(root: yaml.Node | None) -> dict[str, int]:
    """Line (1-based) of each key under `config:`, to point errors at them."""
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key, value in root.value:
        if key.value == "config" and isinstance(value, yaml.MappingNode):
            return {k.value: k.start_mark.line + 1 for k, _ in value.value if isinstance(k, yaml.ScalarNode)}
    return {}


def _locate(problem: Problem, lines: dict[str, int]) -> Problem:
    top_key = problem.key.split(".", 1)[0]
    if top_key in lines:
        return Problem(f"{problem.key} (line {lines[top_key]})", problem.value, problem.allowed)
    return problem
