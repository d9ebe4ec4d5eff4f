"""Every workflow is a session here; CI runs the same sessions as developers (`./dev SESSION`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "tests"]

PYTEST_ENV = {"TESTCONTAINERS_RYUK_DISABLED": "true"}
#: CI draws every example hypothesis would and runs with ../shared beside the clone: a test that compares
#: with it fails there instead of skipping.
CI_ENV = {**PYTEST_ENV, "HYPOTHESIS_PROFILE": "ci", "HUBNODE_REQUIRE_SHARED": "1"}


#: Editable installs, so only these files change what a session's virtualenv needs.
PROJECTS = (".", "services/servicekit", "services/trustcentre", "services/connector", "services/portal")
INSTALL = ("-e", ".[dev]", *(arg for project in PROJECTS[1:] for arg in ("-e", project)))
#: uv writes no bytecode, and where PYTHONDONTWRITEBYTECODE is set nothing else does: without this every
#: run compiles some 4,000 installed modules again (3 s of CPU in the unit tier). A file that does not
#: compile is simply imported from source, so the result is not checked.
COMPILE = "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path('purelib'), quiet=1, workers=0)"


def _install(session: nox.Session) -> None:
    """Install the project and services, unless this virtualenv already holds them as their pyproject.toml say.

    uv rebuilds a local directory on every install: seconds each run, many more on a loaded machine.
    """
    declared = hashlib.sha256(repr((INSTALL, COMPILE)).encode())
    for project in PROJECTS:
        declared.update(Path(project, "pyproject.toml").read_bytes())
    stamp = Path(session.virtualenv.location, "hubnode-installed.sha256")
    if stamp.is_file() and stamp.read_text() == declared.hexdigest():
        return
    session.install(*INSTALL)
    session.run("python", "-c", COMPILE)
    stamp.write_text(declared.hexdigest())


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy --strict."""
    _install(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def package(session: nox.Session) -> None:
    """The root package alone in a clean venv: the CLI and the suite work without the services."""
    session.install(".")
    session.chdir(session.create_tmp())  # import what was installed, not the sources of this folder
    session.run("hubnode", "--help", silent=True)
    session.run("hubnode", "check", "--help", silent=True)
    session.run("python", "-m", "conformance.check", "--help", silent=True)
    session.run("python", "-c", "import conformance.plugin, infra.cli, infra.local, fixtures.synthetic")
    services = "('connector', 'trustcentre', 'servicekit', 'portal')"
    session.run(
        "python",
        "-c",
        f"import importlib.util, sys; leaked = [m for m in {services} if importlib.util.find_spec(m)];"
        " sys.exit(f'the root package brought the services along: {leaked}' if leaked else 0)",
    )


@nox.session
def unit(session: nox.Session) -> None:
    """The fast tier: no Docker, under a minute (fewer hypothesis examples; `HYPOTHESIS_PROFILE=ci` for all)."""
    _install(session)
    profile = os.environ.get("HYPOTHESIS_PROFILE", "dev")
    session.run("pytest", "-m", "not docker", *session.posargs, env={**PYTEST_ENV, "HYPOTHESIS_PROFILE": profile})


@nox.session
def tests(session: nox.Session) -> None:
    """All tiers: unit, integration and end-to-end against real containers, and the cluster tier.

    The cluster's and Pulumi's programs are built first, with progress (about 15 minutes on two cores
    the first time, nothing once cached), so the cluster tier's tests do not sit silent while they build.
    """
    _install(session)
    session.run("hubnode", "bootstrap")
    session.run("hubnode", "cluster", "toolchain")
    session.run("pytest", "--junitxml=.hubnode/reports/junit.xml", *session.posargs, env=CI_ENV)


@nox.session
def cluster(session: nox.Session) -> None:
    """The cluster tier alone (it is part of `tests` too): `hubnode cluster up`, `hubnode deploy`, `down`."""
    _install(session)
    session.run("hubnode", "bootstrap")
    session.run("pytest", "tests/cluster", *session.posargs, env=PYTEST_ENV)


@nox.session
def images(session: nox.Session) -> None:
    """Bootstrap this host and build the images of a stack (`./dev images -- STACK`)."""
    _install(session)
    stack = session.posargs[0] if session.posargs else "dev"
    session.run("hubnode", "bootstrap")
    session.run("hubnode", "images", "--stack", stack)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: bring up the local federation and replay every scenario (it keeps running; `hubnode down`)."""
    _install(session)
    session.run("hubnode", "bootstrap")
    session.run("hubnode", "up", "--stack", "federation")
    session.run("hubnode", "check", "--stack", "federation")


@nox.session
def mutants(session: nox.Session) -> None:
    """Prove the suite fails faulty nodes: each mutant on the local federation in turn (`--mutant NAME` for one)."""
    _install(session)
    session.run("hubnode", "bootstrap")
    session.run("python", "-m", "infra.mutation", "--stack", "federation", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """Load and fault campaigns on a local federation: JSON under .hubnode/chaos/ and a table (`./dev chaos`)."""
    _install(session)
    session.run("hubnode", "bootstrap")
    session.run("python", "-m", "benchmarks.chaos", *session.posargs, env=PYTEST_ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: JSON under .hubnode/bench/ and a printed table (`./dev bench`)."""
    _install(session)
    session.run("hubnode", "bootstrap")
    session.run("python", "-m", "benchmarks", *session.posargs, env=PYTEST_ENV)
