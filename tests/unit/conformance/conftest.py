"""A node that is up, for the tests of `hubnode check` and the pytest plugin: the preflight must pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from tests.unit.local_http import serving


class Node(BaseHTTPRequestHandler):
    """A node that is up: any GET gets an empty searchset, unless the bearer token is `wrong` (401)."""

    def do_GET(self) -> None:
        refused = self.headers.get("Authorization") == "Bearer wrong"
        body = {"resourceType": "OperationOutcome"} if refused else {"resourceType": "Bundle", "type": "searchset"}
        data = json.dumps(body).encode()
        self.send_response(401 if refused else 200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        """Quiet."""


@pytest.fixture
def node_url() -> Iterator[str]:
    with serving(Node) as url:
        yield url
