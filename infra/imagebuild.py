"""Build the images a plan names from their recipes in `infra/images/`, only when something changed.

A recipe is a directory holding a Dockerfile (which takes `ARG BASE_IMAGE`) and what it copies.
Build artefacts (the HAPI jar, Keycloak's distribution) are staged into the recipe directory first, so the very same
directory is the build context here and for Pulumi's `docker.Image`. Each built image carries a
label with the hash of its context, build arguments and base image; an image whose label matches
is reused, which keeps re-runs and CI fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.images import Image

from infra.errors import HubnodeError
from infra.plan import ImageBuild, ImageRef, NodePlan
from infra.progress import Progress

RECIPES_DIR = Path(__file__).parent / "images"
PROJECT_DIR = Path(__file__).parent.parent
HAPI_PROJECT = PROJECT_DIR / "services" / "hapi"
SERVICES_DIR = PROJECT_DIR / "services"
#: Packages of ours that every Python service image installs beside the service itself.
SHARED_SERVICE_PACKAGES = ("servicekit",)
#: The images run Debian trixie's CPython; the wheelhouse must match it, not the host's Python.
IMAGE_PYTHON = ("3.13", "cp313")
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
HASH_LABEL = "org.hubnode.recipe-hash"
#: Our Python services, each built from the shared Dockerfile with its own wheelhouse: recipe -> port served.
PYTHON_SERVICE_PORTS = {"trustcentre": 8081, "connector": 8082, "portal": 8083}
PYTHON_SERVICE_DOCKERFILE = RECIPES_DIR / "python-service.Dockerfile"
#: Keycloak, from Maven Central (`org.keycloak:keycloak-quarkus-dist`), for the `idp` recipe.
KEYCLOAK_VERSION = "26.7.3"
#: `kc.sh build` bakes the database vendor into Keycloak, so each vendor is its own image from the `idp`
#: recipe: recipe -> the vendor (`KC_DB`) it is built for.
IDP_DATABASES = {"idp": "dev-file", "idp-postgres": "postgres"}
_LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class ImageToBuild:
    """One image a plan needs built: its reference and its recipe."""

    reference: str
    build: ImageBuild


def images_to_build(plans: Iterable[NodePlan]) -> list[ImageToBuild]:
    """The distinct local builds a set of node plans needs, each after the local build it starts FROM."""
    seen: dict[str, ImageToBuild] = {}

    def add(image: ImageRef) -> None:
        if image.build is None or image.reference in seen:
            return
        if image.build.base is not None:
            add(image.build.base)
        seen[image.reference] = ImageToBuild(image.reference, image.build)

    for plan in plans:
        for service in plan.services:
            add(service.image)
    return list(seen.values())


def recipe_dir(recipe: str) -> Path:
    """The build context of a recipe."""
    return RECIPES_DIR / recipe


@dataclass(frozen=True)
class Recipe:
    """How one image is built: its context folder, its Dockerfile (in the context or shared) and arguments."""

    context: Path
    dockerfile: Path
    args: Mapping[str, str]

    def files(self) -> dict[str, Path]:
        """What the build sees, by name in the context: the context's files and the Dockerfile."""
        found = {str(p.relative_to(self.context)): p for p in self.context.rglob("*") if p.is_file()}
        return {**found, "Dockerfile": self.dockerfile}


def recipe_for(build: ImageBuild) -> Recipe:
    """The recipe of a local build; our Python services share one Dockerfile, told apart by arguments.

    The two Keycloak images share one recipe too, told apart by their database vendor.
    """
    args = {"BASE_IMAGE": build.base_image}
    if build.recipe in IDP_DATABASES:
        context = recipe_dir("idp")
        return Recipe(context, context / "Dockerfile", {**args, "KC_DB": IDP_DATABASES[build.recipe]})
    context = recipe_dir(build.recipe)
    port = PYTHON_SERVICE_PORTS.get(build.recipe)
    if port is None:
        return Recipe(context, context / "Dockerfile", args)
    return Recipe(context, PYTHON_SERVICE_DOCKERFILE, {**args, "SERVICE": build.recipe, "PORT": str(port)})


def context_hash(recipe: Recipe, base_image_id: str) -> str:
    """Hash of everything that decides an image: the files it sees (names, modes, bytes), args, base."""
    digest = hashlib.sha256()
    for name, path in sorted(recipe.files().items()):
        digest.update(name.encode())
        digest.update(oct(path.stat().st_mode & 0o777).encode())
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    for key in sorted(recipe.args):
        digest.update(f"{key}={recipe.args[key]}".encode())
    digest.update(base_image_id.encode())
    return digest.hexdigest()


def build_images(client: docker.DockerClient, plans: Iterable[NodePlan], progress: Progress) -> None:
    """Build every local image the plans name whose recipe, arguments or base changed."""
    for image in images_to_build(plans):
        prepare = _PREPARE.get(image.build.recipe)
        if prepare is not None:
            prepare(progress)
        build_image(client, image, progress)


def build_image(client: docker.DockerClient, image: ImageToBuild, progress: Progress) -> None:
    """Build one image unless an image with the same reference and hash exists."""
    recipe = recipe_for(image.build)
    if not recipe.dockerfile.is_file():
        raise HubnodeError(
            f"image {image.reference}: no recipe at {recipe.dockerfile}",
            fix=f"add the recipe, or choose one of: {', '.join(sorted(p.name for p in RECIPES_DIR.iterdir()))}",
        )
    base_id = _base_image_id(client, image.build.base_image)
    wanted = context_hash(recipe, base_id)
    previous = _existing(client, image.reference)
    if previous is not None and (previous.labels or {}).get(HASH_LABEL) == wanted:
        progress.note(f"{image.reference} is up to date")
        return
    progress.note(f"building {image.reference} from {recipe.context.relative_to(PROJECT_DIR)}")
    log: list[str] = []
    stream = client.api.build(
        fileobj=_context_tar(recipe),
        custom_context=True,
        tag=image.reference,
        buildargs=dict(recipe.args),
        labels={HASH_LABEL: wanted},
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    for event in stream:
        _follow_build_event(event, image.reference, log, progress)
    if previous is not None and previous.id is not None:
        _remove_superseded(client, previous.id)


def _remove_superseded(client: docker.DockerClient, image_id: str) -> None:
    """Delete the image a rebuild replaced, so disks do not fill with old builds.

    Docker refuses while a container still uses it, and then it stays, as it should.
    """
    with contextlib.suppress(docker.errors.APIError):
        client.images.remove(image_id)


def _follow_build_event(event: Mapping[str, Any], reference: str, log: list[str], progress: Progress) -> None:
    if "error" in event:
        tail = "\n".join(log[-_LOG_TAIL_LINES:])
        raise HubnodeError(
            f"building image {reference} failed: {str(event['error']).strip()}\nlast build output:\n{tail}",
            fix="fix the Dockerfile or its inputs and run again; the build reuses what already succeeded",
        )
    text = str(event.get("stream", "")).rstrip()
    if text:
        log.extend(text.splitlines())
        if text.startswith("Step "):
            progress.note(f"{reference}: {text}")


def _base_image_id(client: docker.DockerClient, base_image: str) -> str:
    try:
        return str(client.images.get(base_image).id)
    except docker.errors.ImageNotFound:
        raise HubnodeError(
            f"base image {base_image} is not on this host (no registry to pull it from)",
            fix="run `hubnode bootstrap` to make hubnode/base:trixie, or set hubnode:images.base",
        ) from None


def _existing(client: docker.DockerClient, reference: str) -> Image | None:
    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def _context_tar(recipe: Recipe) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, path in sorted(recipe.files().items()):
            archive.add(path, arcname=name, recursive=False)
    buffer.seek(0)
    return buffer


def stage_hapi_jar(progress: Progress) -> None:
    """Build the HAPI jar with Maven when its sources changed, and stage it into the recipe."""
    jar = HAPI_PROJECT / "target" / "hubnode-hapi.jar"
    stamp = HAPI_PROJECT / "target" / ".hubnode-source-hash"
    sources = _sources_hash([HAPI_PROJECT], ["pom.xml", "src/**/*"])
    if not jar.is_file() or not stamp.is_file() or stamp.read_text() != sources:
        _require_maven("to build the HAPI FHIR server")
        progress.note("building the HAPI FHIR server with Maven (first time: several minutes)")
        command = ["mvn", "-B", "-q", "-f", str(HAPI_PROJECT / "pom.xml"), "package", "-DskipTests"]
        _run_tool(command, "Maven build of services/hapi")
        stamp.write_text(sources)
    staged = recipe_dir("hapi") / jar.name
    if staged.is_file() and staged.samefile(jar):
        return
    staged.unlink(missing_ok=True)
    try:
        os.link(jar, staged)  # the same bytes without a copy
    except OSError:
        shutil.copy2(jar, staged)


def stage_keycloak(progress: Progress) -> None:
    """Fetch Keycloak's distribution from Maven Central and stage it into the `idp` recipe.

    Maven keeps the archive in its local repository (`~/.m2`), so only the first fetch on a host
    downloads it; a recipe already holding this version is left as it is, and an older one removed.
    The archive is copied into a folder beside the recipe and then moved in, so an interrupted
    fetch never leaves a truncated archive behind that later runs would take for a good one.
    """
    context = recipe_dir("idp")
    staged = context / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz"
    for other in context.glob("keycloak-quarkus-dist-*.tar.gz"):
        if other != staged:
            other.unlink()
    if staged.is_file():
        return
    _require_maven("to fetch Keycloak from Maven Central")
    progress.note(f"fetching Keycloak {KEYCLOAK_VERSION} with Maven (first time: a 170 MB download)")
    with tempfile.TemporaryDirectory(dir=context.parent, prefix=".idp-") as fetched:
        artifact = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:tar.gz"
        command = ["mvn", "-B", "-q", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={fetched}"]
        _run_tool(command, f"fetching {artifact}")
        (Path(fetched) / staged.name).replace(staged)


def _require_maven(why: str) -> None:
    if shutil.which("mvn") is None:
        raise HubnodeError(
            f"Maven (mvn) is needed {why} and is not installed", fix="apt-get install maven (Debian), then run again"
        )


def stage_service_wheelhouse(service: str, progress: Progress) -> None:
    """Build a Python service's wheels (with the shared service kit) and download its dependencies.

    The dependencies are wheels for the image's Python, so the image installs with `--no-index`.
    Reproducible (SOURCE_DATE_EPOCH), so an unchanged source gives the same bytes and the image
    is not rebuilt; redone only when the sources change.
    """
    wheelhouse = recipe_dir(service) / "wheelhouse"
    projects = [SERVICES_DIR / name for name in (*SHARED_SERVICE_PACKAGES, service)]
    stamp = wheelhouse / ".source-hash"
    sources = _sources_hash(projects, ["pyproject.toml", "src/**/*.py", "src/**/*.json", "src/**/*.yaml"])
    if stamp.is_file() and stamp.read_text() == sources:
        return
    progress.note(f"building the {service} wheelhouse (wheels for the image's Python)")
    shutil.rmtree(wheelhouse, ignore_errors=True)
    wheelhouse.mkdir(parents=True)
    for project in projects:  # setuptools' build/ keeps modules deleted from src/: never package them
        shutil.rmtree(project / "build", ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run_tool(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheelhouse), *map(str, projects)],
        f"building the {service} wheels",
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
    )
    [wheel] = wheelhouse.glob(f"hubnode_{service}-*.whl")
    version, abi = IMAGE_PYTHON
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
    _run_tool(
        [
            *pip,
            "download",
            "--dest",
            str(wheelhouse),
            "--find-links",
            str(wheelhouse),
            "--only-binary=:all:",
            "--python-version",
            version,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            *platforms,
            str(wheel),
        ],
        f"downloading the {service} dependencies",
    )
    stamp.write_text(sources)


def _run_tool(command: list[str], what: str, env: Mapping[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:])
        raise HubnodeError(
            f"{what} failed (exit {result.returncode}):\n{tail}", fix=f"run `{' '.join(command)}` to see why"
        )


def _sources_hash(projects: Iterable[Path], patterns: list[str]) -> str:
    digest = hashlib.sha256()
    for project in projects:
        paths = sorted({path for pattern in patterns for path in project.glob(pattern) if path.is_file()})
        for path in paths:
            digest.update(str(path.relative_to(project.parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


#: Artefacts a recipe needs staged into its context before it is built.
_PREPARE: Mapping[str, Callable[[Progress], None]] = {
    "hapi": stage_hapi_jar,
    **dict.fromkeys(IDP_DATABASES, stage_keycloak),
    **{service: partial(stage_service_wheelhouse, service) for service in PYTHON_SERVICE_PORTS},
}
