"""Fixtures of the unit tier's Pulumi tests (the Docker and Kubernetes adapters, the program)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pulumi
import pytest

from tests.unit.pulumi_mocks import RecordingMocks


@pytest.fixture(scope="module")
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One current loop for a module: Pulumi needs one, and `asyncio.run` in other tests unsets it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def mocks(event_loop: asyncio.AbstractEventLoop) -> RecordingMocks:
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, project="hubnode", stack="dev", preview=False)
    return recording
