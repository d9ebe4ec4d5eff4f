"""Shared test set-up: hypothesis profiles, where the test data lives, the guard that keeps the fast tier
away from Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from hypothesis import HealthCheck, settings

from fixtures.corpora import CORPORA
from infra.stackfile import read_named_files

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# Shared 2-core machines are noisy: judge properties, not the speed of drawing examples.
# `ci` (./dev tests) draws hypothesis's usual 100 examples; `dev` (./dev unit, the default) fewer, to stay fast.
NOISY_MACHINE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=100, **NOISY_MACHINE)
settings.register_profile("dev", max_examples=20, **NOISY_MACHINE)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(HYPOTHESIS_PROFILE)

PROJECT_DIR = Path(__file__).resolve().parent.parent
MII_KDS_DIR = CORPORA["mii-kds"]
#: The MII's test bundles whose resources break the very profiles they declare (HAPI's validator with the
#: vendored packages, as `scripts/check-profile-validation` reports): a node validating strictly refuses them.
MII_BUNDLES_BREAKING_THEIR_PROFILES = frozenset({"icu-1", "molgen-1", "mtb-1", "onkologie-1", "seltene-1"})
#: The team's shared folder beside the clone; only tests that compare with it use it (`shared_dir`).
SHARED_DIR = PROJECT_DIR.parent / "shared"


def stack_config(stack: str) -> dict[str, Any]:
    """The project's `Pulumi.<stack>.yaml` config as `infra.spec` takes it: files its keys name read in."""
    config = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return read_named_files(config, PROJECT_DIR)


def examples(ci: int) -> int:
    """A test's own example count: all `ci` of them under the `ci` profile, no more than `dev` draws under `dev`."""
    return min(ci, settings().max_examples) if HYPOTHESIS_PROFILE == "dev" else ci


@pytest.fixture
def shared_dir() -> Path:
    """`../shared`; without it the test skips, saying so, except in `./dev tests` (CI), where that is a failure."""
    if not SHARED_DIR.is_dir():
        message = f"no {SHARED_DIR} beside the clone to compare with"
        if os.environ.get("HUBNODE_REQUIRE_SHARED") == "1":
            pytest.fail(f"{message}; CI runs with it (`./dev unit` skips this test without it)")
        pytest.skip(f"{message} (`./dev tests` requires it)")
    return SHARED_DIR


@pytest.fixture(autouse=True)
def _forbid_docker_outside_docker_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked `docker` fails the moment it reaches for a Docker engine."""
    if request.node.get_closest_marker("docker"):
        return

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        pytest.fail("this test is not marked `docker` but tried to reach a Docker engine")

    monkeypatch.setattr(docker.APIClient, "__init__", refuse)
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family == socket.AF_UNIX and "docker" in str(address):
            refuse()
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


#: What `meta` says about a stored version rather than about the resource.
VOLATILE_META = ("versionId", "lastUpdated")


def content_digest(resources: list[dict[str, Any]]) -> tuple[int, str]:
    """How many resources, and a hash of their content in id order (meta's version and time left out).

    Two nodes, or one node before and after a restore or an upgrade, hold the same resources when
    their digests per type are equal.
    """
    canonical = []
    for resource in sorted(resources, key=lambda r: str(r.get("id"))):
        meta = {k: v for k, v in resource.get("meta", {}).items() if k not in VOLATILE_META}
        canonical.append(json.dumps({**resource, "meta": meta}, sort_keys=True, separators=(",", ":")))
    return len(canonical), hashlib.sha256("\n".join(canonical).encode()).hexdigest()
