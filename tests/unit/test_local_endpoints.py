"""`hubnode up` waits a while for a published endpoint to answer, then says which one does not."""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra import local
from infra.errors import HubnodeError
from infra.local import LocalLauncher
from infra.plan import NodePlan, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack


class SlowToWake(BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then 200, like HAPI's first `/metadata`."""

    failures = 2

    def do_GET(self) -> None:
        status = 503 if type(self).failures > 0 else 200
        type(self).failures -= 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


class Clock:
    """Time that passes only when the launcher sleeps, so its one-second waits cost the test nothing."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(local, "time", clock)
    return clock


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowToWake)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def plan_probing(url: str) -> NodePlan:
    [plan] = plan_stack(parse_stack("dev", {"hubnode:site": "dev"}))
    return dataclasses.replace(plan, probes={"fhir": url})


def launcher(tmp_path: Path, stream: io.StringIO) -> LocalLauncher:
    return LocalLauncher(client=None, progress=Progress(stream), state_dir=tmp_path)  # type: ignore[arg-type]


def test_an_endpoint_that_answers_after_a_while_is_waited_for(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    SlowToWake.failures = 2
    stream = io.StringIO()
    url = f"http://127.0.0.1:{server.server_port}/fhir/metadata"
    launcher(tmp_path, stream)._check_endpoints(plan_probing(url))
    assert stream.getvalue().count(f"waiting for {url} to answer") == 2


def test_an_endpoint_that_never_answers_is_named_with_what_to_do(
    tmp_path: Path, server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    SlowToWake.failures = 10_000
    monkeypatch.setattr(local, "ENDPOINT_BUDGET_S", 2.0)
    url = f"http://127.0.0.1:{server.server_port}/fhir/metadata"
    with pytest.raises(HubnodeError) as refused:
        launcher(tmp_path, io.StringIO())._check_endpoints(plan_probing(url))
    assert clock.now >= 2.0, "gave up before its budget"
    assert f"{url} does not answer within 2 s" in str(refused.value)
    assert "NO_PROXY" in refused.value.fix
