"""Cluster tier: a real single-node Kubernetes from `hubnode cluster up`, on this host (root, Docker, Go).

Part of `./dev test`, whose nox session builds the toolchain first (about 16 minutes on a fresh machine, then
cached); `./dev cluster` runs this tier alone.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder needs the cluster: mark it so, rather than trusting each file to."""
    for item in items:
        if "/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.slow)
