"""Mutants: only a local stack switches one on, and it changes exactly the services it names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.errors import HubnodeError
from infra.imagebuild import RECIPES_DIR, images_to_build
from infra.mutants import MUTANT_VARIABLE, MUTANTS, Mutant, mutated
from infra.mutation import MutantResult, Stack, table
from infra.plan import NodePlan, plan_stack
from infra.spec import SpecError, StackSpec, with_mutant
from infra.stackfile import load_stack
from tests.conftest import PROJECT_DIR

HOOK = RECIPES_DIR / "mutant" / "hubnode_mutant.py"


def federation(mutant: str | None = None) -> StackSpec:
    spec = load_stack(PROJECT_DIR, "federation")
    return with_mutant(spec, mutant) if mutant else spec


def services(plans: tuple[NodePlan, ...], component: str) -> list[object]:
    return [s for plan in plans for s in plan.services if s.component == component]


def test_a_site_stack_refuses_every_mutant() -> None:
    site = load_stack(PROJECT_DIR, "site-example")
    with pytest.raises(SpecError, match="only a stack with hubnode:environment: local runs mutants"):
        with_mutant(site, "self-call")


def test_an_unknown_mutant_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"choose one of .*merge-persons"):
        with_mutant(federation(), "no-such-mutant")


def test_a_patch_mutant_runs_the_hooked_image_of_its_services_only() -> None:
    plain, faulty = plan_stack(federation()), plan_stack(federation("merge-persons"))
    [trustcentre] = services(faulty, "trustcentre")
    [production] = services(plain, "trustcentre")
    assert trustcentre.env == {**production.env, MUTANT_VARIABLE: "merge-persons"}
    assert trustcentre.image.reference == production.image.reference.replace("trustcentre:", "trustcentre-mutant:")
    assert trustcentre.image.build.recipe == "mutant"
    assert trustcentre.image.build.base == production.image
    assert services(faulty, "connector") == services(plain, "connector")
    assert services(faulty, "gateway") == services(plain, "gateway")


def test_a_mutant_image_is_built_after_the_image_it_starts_from() -> None:
    built = images_to_build(plan_stack(federation("self-call")))
    order = [image.reference.split("/")[-1].split(":")[0] for image in built]
    assert order.index("connector") < order.index("connector-mutant")
    assert order.index("trustcentre") < order.index("trustcentre-mutant")


def test_configuration_mutants_take_settings_away() -> None:
    plain, faulty = plan_stack(federation()), plan_stack(federation("revoked-accepted"))
    assert all("CN_CRL_FILE" not in s.env for s in services(faulty, "connector"))
    assert all("TC_CRL_FILE" not in s.env for s in services(faulty, "trustcentre"))
    for before, after in zip(services(plain, "gateway"), services(faulty, "gateway"), strict=True):
        assert "    ssl_crl " in before.files[0].content
        assert "    ssl_crl " not in after.files[0].content
        assert before.image == after.image


def test_the_identity_header_mutant_opens_only_the_public_door() -> None:
    [gateway, *_] = services(plan_stack(federation("public-identity-headers")), "gateway")
    public, peer = gateway.files[0].content.split("# Peer door", 1)
    assert "X-Hubnode-Client-Cert $http_x_hubnode_client_cert;" in public
    assert 'X-Hubnode-Client-Cert "";' not in public
    assert "$http_x_hubnode" not in peer


def test_a_replacement_that_finds_nothing_stops_the_bring_up() -> None:
    stale = Mutant("stale", "HUB-TRN-05", "nothing", gateway=(("no such line", "x"),))
    with pytest.raises(HubnodeError, match="has no 'no such line' to change"):
        mutated(plan_stack(federation()), stale)


def test_every_patch_mutant_has_a_hook_and_every_hook_a_mutant() -> None:
    tree = ast.parse(HOOK.read_text())
    hooked = {
        decorator.args[0].value
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        for decorator in node.decorator_list
        if isinstance(decorator, ast.Call) and isinstance(decorator.args[0], ast.Constant)
    }
    assert hooked == {m.name for m in MUTANTS.values() if m.patched}
    assert all(m.patched or m.unset or m.gateway for m in MUTANTS.values())


def test_every_hook_finds_what_it_patches_in_the_services_of_this_tree() -> None:
    """A renamed function would make the mutant image stop at start; this says so without Docker."""
    script = (
        f"import sys; sys.path.insert(0, {str(HOOK.parent)!r}); import hubnode_mutant as h\n"
        "for name, switch in h.PATCHES.items(): switch()\n"
        "print(len(h.PATCHES))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len([m for m in MUTANTS.values() if m.patched])


def test_an_unknown_name_stops_the_service_loudly() -> None:
    script = f"import sys; sys.path.insert(0, {str(HOOK.parent)!r}); import hubnode_mutant"
    env = {MUTANT_VARIABLE: "no-such-mutant", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 70
    assert "'no-such-mutant' cannot be switched on" in done.stderr


def test_outcomes_come_from_this_run_s_certificate_only(tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    certificate = {"requirements": {"passed": ["HUB-TRN-05"], "failed": ["HUB-SEC-01"], "error": ["HUB-TRN-06"]}}

    class Replayed(Stack):
        writes = True

        def hubnode(self, log: Path, *args: str, timeout: float) -> int:
            if self.writes:
                (report / "certificate.json").write_text(json.dumps(certificate))
            return 1

    stack = Replayed(tmp_path, "federation", tmp_path)
    outcomes = stack.outcomes(tmp_path / "log", ["HUB-SEC-01"], report)
    assert outcomes == {"HUB-TRN-05": "passed", "HUB-SEC-01": "failed", "HUB-TRN-06": "error"}
    stack.writes = False  # the suite could not start: the last run's certificate says nothing
    assert stack.outcomes(tmp_path / "log", ["HUB-SEC-01"], report) == {}


def test_the_table_names_each_mutant_and_the_score() -> None:
    results = [
        MutantResult("merge-persons", "HUB-SEC-01", "links", caught=True, verdict="failed", seconds=3.0),
        MutantResult("self-call", "HUB-TRUST-08", "own door", caught=False, verdict="passed", seconds=2.0),
    ]
    lines = table(results).splitlines()
    assert lines[0].split() == ["mutant", "requirement", "suite's", "verdict", "caught"]
    assert lines[1].split() == ["merge-persons", "HUB-SEC-01", "failed", "yes"]
    assert lines[2].split() == ["self-call", "HUB-TRUST-08", "passed", "NO"]
    assert lines[-1] == "mutation score: 1/2 caught"
