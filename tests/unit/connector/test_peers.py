"""Sending Tasks to peers: retries with the same key while a peer is down, clear errors when it stays down."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from connector.peers import PeerClient, PeerError
from connector.tasks import Process, completed, request_task
from servicekit.allowlist import NodeRole, Peer

PEER = Peer(
    "practice", NodeRole.PRACTICE, "a" * 128, "https://practice.hubnode.test:9443/fhir", "practice.hubnode.test"
)
TASK = request_task(Process.PING, [], requester="dic", idempotency_key="k-7")


def send(handler: object, attempts: int = 3) -> tuple[object, list[float]]:
    waits: list[float] = []

    async def wait(seconds: float) -> None:
        waits.append(seconds)

    async def run() -> object:
        client = PeerClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), attempts=attempts, sleep=wait)
        try:
            return await client.send(PEER, TASK)
        except PeerError as error:
            return error
        finally:
            await client.aclose()

    return anyio.run(run), waits


def test_a_peer_that_comes_back_gets_the_same_task_and_key_again() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if len(seen) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(seen) == 2:
            return httpx.Response(503, json={"resourceType": "OperationOutcome", "issue": [{"diagnostics": "busy"}]})
        if len(seen) == 3:  # its gateway's limit per address: busy, not a refusal
            return httpx.Response(429, json={"resourceType": "OperationOutcome", "issue": [{"code": "throttled"}]})
        assert str(request.url) == "https://practice.hubnode.test:9443/fhir/Task"
        return httpx.Response(200, json=completed(seen[-1], []))

    answer, waits = send(handler, attempts=4)
    assert answer.status.value == "completed"
    assert seen == [TASK, TASK, TASK, TASK]
    assert waits == [0.5, 1.0, 2.0]


def test_a_peer_that_stays_down_is_named_with_its_address() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    error, _ = send(handler)
    address = "https://practice.hubnode.test:9443/fhir/Task"
    assert str(error) == f"peer 'practice' unreachable at {address}: connection refused (after 3 attempts)"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(
                403, json={"resourceType": "OperationOutcome", "issue": [{"diagnostics": "not on the allow list"}]}
            ),
            "refused the Task: HTTP 403 not on the allow list",
        ),
        (httpx.Response(200, json={"resourceType": "Patient"}), "answered with no valid Task"),
    ],
)
def test_a_refusal_or_a_nonsense_answer_is_not_retried(response: httpx.Response, message: str) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return response

    error, _ = send(handler)
    assert isinstance(error, PeerError)
    assert message in str(error)
    assert len(calls) == 1
