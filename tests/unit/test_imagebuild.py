from __future__ import annotations

from pathlib import Path

from infra.imagebuild import context_hash, images_to_build
from infra.plan import plan_stack
from infra.spec import parse_stack


def recipe(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\n")
    return tmp_path


def test_the_context_hash_is_stable_for_the_same_inputs(tmp_path: Path) -> None:
    context = recipe(tmp_path)
    assert context_hash(context, {"BASE_IMAGE": "b"}, "sha256:1") == context_hash(
        context, {"BASE_IMAGE": "b"}, "sha256:1"
    )


def test_the_context_hash_changes_with_content_mode_arguments_and_base(tmp_path: Path) -> None:
    context = recipe(tmp_path)
    before = context_hash(context, {"BASE_IMAGE": "b"}, "sha256:1")
    assert context_hash(context, {"BASE_IMAGE": "c"}, "sha256:1") != before
    assert context_hash(context, {"BASE_IMAGE": "b"}, "sha256:2") != before
    (context / "entrypoint.sh").chmod(0o755)
    after_mode = context_hash(context, {"BASE_IMAGE": "b"}, "sha256:1")
    assert after_mode != before
    (context / "entrypoint.sh").write_text("#!/bin/sh\nexit 0\n")
    assert context_hash(context, {"BASE_IMAGE": "b"}, "sha256:1") != after_mode


def test_each_image_is_built_once_however_many_services_use_it() -> None:
    spec = parse_stack("dev", {"hubnode:site": "dev", "hubnode:database": "postgres"})
    builds = images_to_build([*plan_stack(spec), *plan_stack(spec)])
    assert [b.build.recipe for b in builds] == ["postgres", "hapi"]


def test_pulled_images_are_not_built() -> None:
    spec = parse_stack(
        "dev",
        {"hubnode:site": "dev", "hubnode:database": "postgres", "hubnode:images": {"db": "postgres:17"}},
    )
    assert [b.build.recipe for b in images_to_build(plan_stack(spec))] == ["hapi"]
