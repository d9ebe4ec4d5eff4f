"""A stand-in for the services behind the gateway: answers every request with what it received.

Runs inside a container from Debian's python3 (no packages needed): the JSON answer lists the
method, the path as sent, every header in order (repeats included) and the body's length.
`/peer/refused` answers 401, as the connector does, so tests see whose status reaches the client.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = json.dumps(
            {"method": self.command, "path": self.path, "headers": list(self.headers.items()), "body": len(body)}
        ).encode()
        self.send_response(401 if self.path == "/peer/refused" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815


if __name__ == "__main__":
    ThreadingHTTPServer(("", int(sys.argv[1])), Echo).serve_forever()
