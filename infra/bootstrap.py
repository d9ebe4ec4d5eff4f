"""Make this host able to run nodes with no container registry: a Docker engine and a base image.

Idempotent: whatever already answers or exists is reused, and every action taken is said aloud.
The base image is a minimal Debian made by debootstrap and `docker import`; every Dockerfile
takes `ARG BASE_IMAGE`, so sites with a registry build the same files on an official image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from infra.errors import HubnodeError
from infra.progress import Progress
from infra.spec import DEFAULT_BASE_IMAGE

DEBIAN_SUITE = "trixie"
DEBIAN_MIRROR = os.environ.get("HUBNODE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DOCKERD_LOG = Path("/var/log/hubnode-dockerd.log")
ENGINE_START_BUDGET_S = 60
# Trimmed from the base image: documentation and package caches no service needs (globs).
_BASE_IMAGE_TRIM = (
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*_*",
)


def docker_client() -> docker.DockerClient:
    """A client for the engine `DOCKER_HOST` names (default: the local socket), checked to answer."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise HubnodeError(
            f"no Docker engine answers ({os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}): {exc}",
            fix="run `hubnode bootstrap` as root to install and start one, or start Docker yourself",
        ) from exc
    return client


def ensure_docker_engine(progress: Progress) -> docker.DockerClient:
    """Return a client of a running engine; install Debian's docker.io and start dockerd if needed."""
    try:
        return docker_client()
    except HubnodeError as unreachable:
        if os.geteuid() != 0:
            raise HubnodeError(
                f"{unreachable.message}; hubnode is not root, so it cannot install or start one",
                fix="start Docker (e.g. `sudo systemctl start docker`), or run "
                "`sudo hubnode bootstrap`, or add yourself to the docker group",
            ) from unreachable
    if shutil.which("dockerd") is None:
        progress.note("no dockerd on this host: installing Debian's docker.io package")
        apt_install("docker.io")
    _start_dockerd(progress)
    return _wait_for_engine()


def _start_dockerd(progress: Progress) -> None:
    if Path("/run/systemd/system").is_dir():
        progress.note("starting docker with systemctl")
        _run(["systemctl", "start", "docker"], "systemctl start docker")
        return
    progress.note(f"starting dockerd in the background (log: {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_for_engine() -> docker.DockerClient:
    deadline = time.monotonic() + ENGINE_START_BUDGET_S
    while True:
        try:
            return docker_client()
        except HubnodeError:
            if time.monotonic() > deadline:
                tail = _tail(DOCKERD_LOG, 15)
                raise HubnodeError(
                    f"dockerd did not answer within {ENGINE_START_BUDGET_S} s; its log ends:\n{tail}",
                    fix=f"read {DOCKERD_LOG}; a host without cgroups or overlayfs needs Docker's own setup",
                ) from None
            time.sleep(0.5)


def ensure_build_tools(progress: Progress) -> None:
    """Make sure Maven and a JDK are there to build the HAPI FHIR server; install Debian's if root."""
    if shutil.which("mvn") and shutil.which("javac"):
        return
    if os.geteuid() != 0:
        raise HubnodeError(
            "Maven and a JDK (17 or newer) are needed to build the HAPI FHIR server",
            fix="install them (Debian: apt-get install maven default-jdk-headless) or run `sudo hubnode bootstrap`",
        )
    progress.note("installing Debian's maven and default-jdk-headless")
    apt_install("maven", "default-jdk-headless")


#: The browser the end-to-end tier drives with Playwright (`executable_path`; no browser download).
CHROMIUM = "chromium"


def ensure_browser(progress: Progress) -> str:
    """Debian's Chromium for the browser tests: its path, installed first if missing and this is root."""
    found = shutil.which(CHROMIUM)
    if found:
        return found
    if os.geteuid() != 0:
        raise HubnodeError(
            "Chromium is needed for the portal's browser tests",
            fix="install it (Debian: apt-get install chromium fonts-dejavu-core) or run `sudo hubnode bootstrap`",
        )
    progress.note("installing Debian's chromium (the browser tests drive it with Playwright)")
    apt_install(CHROMIUM, "fonts-dejavu-core")
    return shutil.which(CHROMIUM) or f"/usr/bin/{CHROMIUM}"


def ensure_base_image(client: docker.DockerClient, progress: Progress, tag: str = DEFAULT_BASE_IMAGE) -> None:
    """Build the minimal Debian base image with debootstrap unless `tag` already exists."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        pass
    else:
        progress.note(f"base image {tag} already present")
        return
    if os.geteuid() != 0:
        raise HubnodeError(
            f"base image {tag} is missing and making it (debootstrap) needs root",
            fix="run `sudo hubnode bootstrap` once, or set hubnode:images.base to an image you have",
        )
    if shutil.which("debootstrap") is None:
        progress.note("installing Debian's debootstrap package")
        apt_install("debootstrap")
    repository, _, image_tag = tag.partition(":")
    with tempfile.TemporaryDirectory(prefix="hubnode-base-", dir="/var/tmp") as work:
        rootfs = Path(work) / "rootfs"
        progress.note(f"debootstrap {DEBIAN_SUITE} from {DEBIAN_MIRROR} (about a minute)")
        _run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
            "debootstrap",
        )
        _trim(rootfs)
        archive = Path(work) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], "tar rootfs")
        progress.note(f"importing the root file system as {tag}")
        client.api.import_image_from_file(
            str(archive),
            repository=repository,
            tag=image_tag or "latest",
            changes=["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]'],
        )


def _trim(rootfs: Path) -> None:
    """Remove documentation and caches, keeping the directories apt expects to exist."""
    for pattern in _BASE_IMAGE_TRIM:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def apt_install(*packages: str) -> None:
    """Install Debian packages non-interactively, without recommends (root only); fails with apt's output."""
    _run(["apt-get", "update", "-q"], "apt-get update")
    _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        f"apt-get install {' '.join(packages)}",
    )


def _run(command: list[str], what: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise HubnodeError(
            f"{what} failed (exit {result.returncode}):\n{tail}",
            fix=f"run `{' '.join(command)}` by hand to see the whole output",
        )


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
