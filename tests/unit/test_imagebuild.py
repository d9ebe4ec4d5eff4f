from __future__ import annotations

import io
from pathlib import Path

import pytest

from infra import imagebuild
from infra.imagebuild import PYTHON_SERVICE_DOCKERFILE, Recipe, context_hash, images_to_build, recipe_dir, recipe_for
from infra.plan import ImageBuild, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack


def recipe(tmp_path: Path, base: str = "b") -> Recipe:
    (tmp_path / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\n")
    return Recipe(tmp_path, tmp_path / "Dockerfile", {"BASE_IMAGE": base})


def test_the_context_hash_is_stable_for_the_same_inputs(tmp_path: Path) -> None:
    assert context_hash(recipe(tmp_path), "sha256:1") == context_hash(recipe(tmp_path), "sha256:1")


def test_the_context_hash_changes_with_content_mode_arguments_base_and_dockerfile(tmp_path: Path) -> None:
    before = context_hash(recipe(tmp_path), "sha256:1")
    assert context_hash(recipe(tmp_path, "c"), "sha256:1") != before
    assert context_hash(recipe(tmp_path), "sha256:2") != before
    context = recipe(tmp_path)
    (tmp_path / "entrypoint.sh").chmod(0o755)
    after_mode = context_hash(context, "sha256:1")
    assert after_mode != before
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\nexit 0\n")
    after_content = context_hash(context, "sha256:1")
    assert after_content != after_mode
    shared = tmp_path.parent / f"{tmp_path.name}.Dockerfile"
    shared.write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nUSER nobody\n")
    assert context_hash(Recipe(tmp_path, shared, context.args), "sha256:1") != after_content


def test_the_python_services_share_one_dockerfile_told_apart_by_service_and_port() -> None:
    connector, trustcentre = (recipe_for(ImageBuild(name, "base:1")) for name in ("connector", "trustcentre"))
    assert connector.dockerfile == trustcentre.dockerfile == PYTHON_SERVICE_DOCKERFILE
    assert PYTHON_SERVICE_DOCKERFILE.is_file()
    assert connector.context == recipe_dir("connector") != trustcentre.context
    assert connector.args == {"BASE_IMAGE": "base:1", "SERVICE": "connector", "PORT": "8082"}
    assert trustcentre.args["SERVICE"] == "trustcentre"
    assert "Dockerfile" in connector.files()
    hapi = recipe_for(ImageBuild("hapi", "base:1"))
    assert hapi.dockerfile == recipe_dir("hapi") / "Dockerfile"
    assert hapi.args == {"BASE_IMAGE": "base:1"}


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


def test_the_two_keycloak_images_share_one_recipe_told_apart_by_their_database_vendor() -> None:
    embedded, postgres = (recipe_for(ImageBuild(name, "base:1")) for name in ("idp", "idp-postgres"))
    assert embedded.context == postgres.context == recipe_dir("idp")
    assert embedded.dockerfile == postgres.dockerfile == recipe_dir("idp") / "Dockerfile"
    assert (embedded.args, postgres.args) == (
        {"BASE_IMAGE": "base:1", "KC_DB": "dev-file"},
        {"BASE_IMAGE": "base:1", "KC_DB": "postgres"},
    )
    dockerfile = embedded.dockerfile.read_text()
    assert 'kc.sh build --db="${KC_DB}"' in dockerfile
    assert 'CMD ["start", "--optimized", "--import-realm"]' in dockerfile


def test_staged_keycloak_is_reused_without_maven_and_older_versions_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imagebuild, "RECIPES_DIR", tmp_path)
    (tmp_path / "idp").mkdir()
    current = tmp_path / "idp" / f"keycloak-quarkus-dist-{imagebuild.KEYCLOAK_VERSION}.tar.gz"
    older = tmp_path / "idp" / "keycloak-quarkus-dist-25.0.0.tar.gz"
    current.write_bytes(b"staged")
    older.write_bytes(b"old")
    monkeypatch.setattr(imagebuild, "_run_tool", lambda *_: pytest.fail("Maven must not run"))
    imagebuild.stage_keycloak(Progress(io.StringIO()))
    assert sorted(p.name for p in (tmp_path / "idp").iterdir()) == [current.name]


def test_keycloak_is_fetched_with_maven_into_the_recipe_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imagebuild, "RECIPES_DIR", tmp_path)
    (tmp_path / "idp").mkdir()
    commands: list[list[str]] = []

    def maven(command: list[str], _what: str) -> None:
        commands.append(command)
        output = Path(next(a for a in command if a.startswith("-DoutputDirectory=")).split("=", 1)[1])
        (output / f"keycloak-quarkus-dist-{imagebuild.KEYCLOAK_VERSION}.tar.gz").write_bytes(b"fetched")

    monkeypatch.setattr(imagebuild.shutil, "which", lambda _: "/usr/bin/mvn")
    monkeypatch.setattr(imagebuild, "_run_tool", maven)
    imagebuild.stage_keycloak(Progress(io.StringIO()))
    [command] = commands
    assert f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{imagebuild.KEYCLOAK_VERSION}:tar.gz" in command
    assert [p.name for p in (tmp_path / "idp").iterdir()] == [
        f"keycloak-quarkus-dist-{imagebuild.KEYCLOAK_VERSION}.tar.gz"
    ]
