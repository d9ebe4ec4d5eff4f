"""The suite's side of the wire: one request (`Call`), what came back (`Response`), and a logged client.

Every exchange a step makes is logged (`StepLog`), so a report shows the requests behind a failure;
a transport failure is `CannotRunError`, an error of the run rather than a failure of the target.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from conformance.contract import FHIR_JSON
from conformance.results import Exchange, excerpt
from conformance.targets import ClientCertificate, NodeTarget


class CannotRunError(Exception):
    """A step (or a check it needs) could not be carried out: an error, not a failure of the target."""


@dataclass(frozen=True)
class Call:
    """One HTTP request the runner makes, kept so a `wait` step can make it again.

    Public doors take a bearer `token`; a peer door takes a client `certificate` (or none) instead.
    `body` is a JSON resource, or text sent as it is (NDJSON) with `content_type`.
    """

    node: NodeTarget
    method: str
    url: str
    token: str | None
    body: Mapping[str, Any] | str | None = None
    certificate: ClientCertificate | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = FHIR_JSON


@dataclass(frozen=True)
class Response:
    """What came back, as expectations and invariants look at it."""

    call: Call
    status: int
    content_type: str
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    def where(self) -> str:
        """The request, for messages about one of several responses."""
        return f"{self.call.method} {self.call.url}"


@dataclass
class StepLog:
    """The HTTP exchanges of one step: its action's, and those of the checks the runner made for it.

    The checks' exchanges (audit logs, trust-centre look-ups) are long and beside the point unless a
    check found a problem or broke, so only then are they kept in the report.
    """

    action: list[Exchange] = field(default_factory=list)
    checks: list[Exchange] = field(default_factory=list)
    checking: bool = False
    checks_matter: bool = False

    def add(self, exchange: Exchange) -> None:
        """Note an exchange of the action, or of a check while one runs."""
        (self.checks if self.checking else self.action).append(exchange)

    @contextmanager
    def check(self) -> Iterator[None]:
        """Exchanges made inside belong to the runner's own checks; a check that breaks makes them matter."""
        self.checking = True
        try:
            yield
        except CannotRunError:
            self.checks_matter = True
            raise
        finally:
            self.checking = False

    def kept(self) -> tuple[Exchange, ...]:
        """What the report shows of a step that did not pass."""
        return (*self.action, *(self.checks if self.checks_matter else ()))


class Http:
    """One httpx client per node and client certificate (TLS checked against the node's CA), every exchange logged."""

    def __init__(self, transport: httpx.BaseTransport | None, timeout_s: float) -> None:
        self._transport = transport
        self._timeout = timeout_s
        self._clients: dict[tuple[str, ClientCertificate | None], httpx.Client] = {}

    def send(self, call: Call, log: StepLog) -> Response:
        """Make `call`; a transport failure is `CannotRunError` naming the request."""
        headers = {"Accept": FHIR_JSON, **call.headers}
        if call.token is not None:
            headers["Authorization"] = f"Bearer {call.token}"
        content = None
        if call.body is not None:
            headers["Content-Type"] = call.content_type
            text = call.body if isinstance(call.body, str) else json.dumps(call.body, ensure_ascii=False)
            content = text.encode()
        try:
            client = self._client(call.node, call.certificate)
            answer = client.request(call.method, call.url, headers=headers, content=content)
        except httpx.HTTPError as exc:
            log.add(Exchange(call.method, call.url, None, shown(call.body), f"{type(exc).__name__}"))
            raise CannotRunError(f"{call.method} {call.url}: {type(exc).__name__}: {exc}") from None
        content_type = answer.headers.get("content-type", "").split(";")[0].strip()
        try:
            body = answer.json()
        except ValueError:
            body = None
        log.add(
            Exchange(
                call.method,
                call.url,
                answer.status_code,
                shown(call.body),
                excerpt(f"content-type: {content_type}\n{answer.text}"),
            )
        )
        return Response(call, answer.status_code, content_type, body, dict(answer.headers))

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, node: NodeTarget, certificate: ClientCertificate | None) -> httpx.Client:
        key = (node.site, certificate)
        if key not in self._clients:
            verify: ssl.SSLContext | bool = True
            if self._transport is None and (node.ca_file is not None or certificate is not None):
                verify = ssl.create_default_context(cafile=str(node.ca_file) if node.ca_file else None)
                if certificate is not None:
                    try:
                        verify.load_cert_chain(certificate.cert, certificate.key)
                    except OSError as exc:
                        raise CannotRunError(f"cannot present {certificate.cert}: {exc}") from None
            self._clients[key] = httpx.Client(transport=self._transport, verify=verify, timeout=self._timeout)
        return self._clients[key]


def shown(body: Mapping[str, Any] | str | None) -> str:
    """A request body as a report shows it."""
    if body is None:
        return ""
    return excerpt(body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, indent=1))
