"""Posting a process Task (or a ledger ticket) to another node's peer door, over mutual TLS with the node certificate.

A peer that is briefly down (connection refused, timeout, a 5xx from its gateway) is retried with
backoff, always with the same Task and so the same idempotency key: the receiver does the work at most
once. When it stays down, or refuses, the error names the peer and its address, and that sentence becomes
the local Task's `statusReason`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx

from connector.settings import ClientCertificate
from connector.tasks import ProcessTask, parse_task
from servicekit.allowlist import Peer
from servicekit.fhir import FHIR_JSON, FhirError

TIMEOUT = httpx.Timeout(120.0, connect=10.0)


class PeerError(Exception):
    """A peer could not be reached or refused the Task; the message says which and why."""


class PeerUnreachableError(PeerError):
    """The peer did not answer (no connection, a timeout, its gateway or connector failing): waiting may cure it."""


def mutual_tls_context(certificate: ClientCertificate) -> ssl.SSLContext:
    """Trust only the federation CA; present the node certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificate.ca))
    context.load_cert_chain(str(certificate.certificate), str(certificate.key))
    return context


@dataclass
class PeerClient:
    """Sends Tasks to peers; `client` carries the TLS set-up (or, in tests, an in-process transport)."""

    client: httpx.AsyncClient
    attempts: int = 4
    backoff_seconds: float = 0.5
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    @classmethod
    def mutual_tls(cls, certificate: ClientCertificate) -> PeerClient:
        """A client presenting the node certificate to peers signed by the federation CA."""
        return cls(httpx.AsyncClient(verify=mutual_tls_context(certificate), timeout=TIMEOUT))

    async def send(self, peer: Peer, task: Mapping[str, Any]) -> ProcessTask:
        """POST `task` to `<peer address>/Task`; the peer's answering Task, or PeerError."""
        url = f"{peer.address}/Task"
        response = await self._post(peer, url, task, "the Task")
        try:
            return parse_task(response.json())
        except (ValueError, FhirError) as exc:
            raise PeerError(f"peer {peer.site!r} at {url} answered with no valid Task: {exc}") from None

    async def ledger(self, peer: Peer, ticket: str) -> dict[str, Any]:
        """POST a ledger ticket to `<peer address>/$ledger`; the peer's Bundle of AuditEvents, or PeerError."""
        url = f"{peer.address}/$ledger"
        body = {"resourceType": "Parameters", "parameter": [{"name": "ticket", "valueString": ticket}]}
        response = await self._post(peer, url, body, "the ledger request")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle":
            raise PeerError(f"peer {peer.site!r} at {url} answered the ledger request with no Bundle")
        return answer

    async def _post(self, peer: Peer, url: str, body: Mapping[str, Any], what: str) -> httpx.Response:
        """POST `body`, trying again while the peer is down; its 200 answer, or PeerError saying why not."""
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                await self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = await self.client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
                continue
            if response.status_code >= 500 or response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
                problem = f"HTTP {response.status_code} {_diagnostics(response)}".rstrip()  # busy or down: later
                continue
            if response.status_code != 200:
                status = response.status_code
                raise PeerError(f"peer {peer.site!r} at {url} refused {what}: HTTP {status} {_diagnostics(response)}")
            return response
        raise PeerUnreachableError(
            f"peer {peer.site!r} unreachable at {url}: {problem} (after {self.attempts} attempts)"
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self.client.aclose()


def _diagnostics(response: httpx.Response) -> str:
    """The diagnostics of an OperationOutcome answer, or the start of the body."""
    try:
        issues = response.json().get("issue", [])
        return "; ".join(str(issue.get("diagnostics", "")) for issue in issues if isinstance(issue, dict))
    except (ValueError, AttributeError):
        return response.text[:200]
