"""Bring-up failures end with one clear message, a fix, and nothing left running."""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest

from infra import imagebuild
from infra.errors import HubnodeError
from infra.imagebuild import ImageToBuild, build_image
from infra.local import BUDGET_STRETCH, LocalLauncher
from infra.plan import ImageBuild
from infra.progress import Progress
from tests.integration.conftest import node_plan, stack_resources

pytestmark = pytest.mark.usefixtures("built")


def test_a_port_in_use_is_named_with_its_config_key(launcher: LocalLauncher, client: docker.DockerClient) -> None:
    plan = node_plan("itest-port")
    port = plan.services[0].ports[0].host_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(HubnodeError) as caught:
            launcher.up([plan])
    assert caught.value.message == (
        f"port {port} on 127.0.0.1 (hubnode:ports.fhir of site itest) is already in use by another program"
    )
    assert "set another hubnode:ports.fhir" in caught.value.fix
    assert stack_resources(client, plan.stack) == {"containers": [], "networks": []}


def test_a_service_not_healthy_within_its_budget_shows_its_log_and_is_removed(
    launcher: LocalLauncher, client: docker.DockerClient
) -> None:
    plan = node_plan("itest-budget", database="postgres")
    db, fhir = plan.services
    impatient = replace(fhir, health=replace(fhir.health, budget_s=3))
    plan = replace(plan, services=(db, impatient))
    with pytest.raises(HubnodeError) as caught:
        launcher.up([plan])
    first_line = caught.value.message.splitlines()[0]
    waited = re.fullmatch(
        rf"itest/fhir \({fhir.container_name}\) not healthy within (\d+) s; its log last advanced \d+ s ago;"
        " its last log lines:",
        first_line,
    )
    assert waited is not None, first_line
    # A starting HAPI logs all the time: it is given three times its budget, never less, before it fails.
    assert int(waited.group(1)) >= 3 * BUDGET_STRETCH
    assert len(caught.value.message.splitlines()) > 1, "the message must carry the service's log lines"
    assert stack_resources(client, plan.stack) == {"containers": [], "networks": []}
    # A failed bring-up loses no data: the volumes stay for the next `hubnode up`, and the fix says so.
    assert "data volumes kept" in caught.value.fix
    assert all(client.volumes.get(volume) for volume in plan.volumes)
    launcher.down(plan.stack, remove_volumes=True)


def test_a_service_that_exits_is_reported_with_its_exit_code(
    launcher: LocalLauncher, client: docker.DockerClient
) -> None:
    plan = node_plan("itest-exit", database="postgres")
    db, fhir = plan.services
    broken_db = replace(db, env={k: v for k, v in db.env.items() if k != "POSTGRES_PASSWORD_FILE"})
    plan = replace(plan, services=(broken_db, fhir))
    with pytest.raises(HubnodeError) as caught:
        launcher.up([plan])
    assert "itest/db" in caught.value.message
    assert "exited with code 1" in caught.value.message
    assert "POSTGRES_PASSWORD_FILE must name a readable file" in caught.value.message
    assert stack_resources(client, plan.stack) == {"containers": [], "networks": []}


def recipes_in(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make `folder` the image builder's recipe directory for one test."""
    monkeypatch.setattr(imagebuild, "RECIPES_DIR", folder)
    monkeypatch.setattr(imagebuild, "PROJECT_DIR", folder)
    return folder


def test_a_failing_image_build_names_the_image_and_shows_the_build_output(
    client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = recipes_in(tmp_path, monkeypatch) / "broken"
    recipe.mkdir()
    (recipe / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo preparing && exit 3\n")
    image = ImageToBuild("hubnode/itest-broken:0", ImageBuild("broken", "hubnode/base:trixie"))
    with pytest.raises(HubnodeError) as caught:
        build_image(client, image, Progress())
    assert caught.value.message.startswith("building image hubnode/itest-broken:0 failed:")
    assert "returned a non-zero code: 3" in caught.value.message
    assert "preparing" in caught.value.message


def test_health_checks_of_the_plan_are_the_ones_docker_runs(
    launcher: LocalLauncher, client: docker.DockerClient
) -> None:
    plan = node_plan("itest-health", database="postgres")
    launcher.up([plan])
    for service in plan.services:
        health = client.containers.get(service.container_name).attrs["Config"]["Healthcheck"]
        assert health["Test"] == list(service.health.test)
        assert health["Interval"] == service.health.interval_s * 1_000_000_000
        assert health["StartPeriod"] == service.health.start_period_s * 1_000_000_000
        assert client.containers.get(service.container_name).attrs["State"]["Health"]["Status"] in (
            "healthy",
            "starting",
        )


def test_a_rebuild_replaces_the_old_image_and_an_unchanged_recipe_is_not_rebuilt(
    client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = recipes_in(tmp_path, monkeypatch) / "tiny"
    recipe.mkdir()
    (recipe / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nLABEL org.hubnode.test=one\n")
    image = ImageToBuild("hubnode/itest-tiny:0", ImageBuild("tiny", "hubnode/base:trixie"))
    try:
        build_image(client, image, Progress())
        first = client.images.get(image.reference).id
        build_image(client, image, Progress())
        assert client.images.get(image.reference).id == first, "an unchanged recipe must not be rebuilt"
        (recipe / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nLABEL org.hubnode.test=two\n")
        build_image(client, image, Progress())
        assert client.images.get(image.reference).id != first
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(first)
    finally:
        client.images.remove(image.reference, force=True)
