"""Pulumi's mocks as the adapters' tests use them: record every resource's inputs, see through secrets."""

from __future__ import annotations

import runpy
from typing import Any

import pulumi

# How Pulumi marks a secret value in the inputs it hands to mocks.
SECRET_SIG_KEY, SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


def is_secret(value: object) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG_KEY) == SECRET_SIG


def reveal(value: Any) -> Any:
    """The value with Pulumi's secret wrappers removed, to compare it with the plan."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers every resource with its own inputs and keeps them to compare against the plan."""

    def __init__(self) -> None:
        self.resources: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources[args.name] = args
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None

    def of_type(self, typ: str) -> dict[str, dict[str, Any]]:
        return {name: dict(r.inputs) for name, r in self.resources.items() if r.typ == typ}


@pulumi.runtime.test
def run_program() -> None:
    """Run infra/__main__.py as `pulumi up` would, and wait for what it declares."""
    runpy.run_module("infra", run_name="__main__")
