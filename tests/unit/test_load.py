"""`hubnode load` against a stand-in `$import` (httpx.MockTransport): chunks, resumption, bad lines, retries."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra import cli
from infra.chunks import Limits, Line
from infra.errors import HubnodeError, UsageError
from infra.load import Door, Job, Options, halves, job_for, load, node_door, refusals, retry_after
from infra.progress import Progress
from infra.state import StackState
from tests.conftest import examples

DOOR = Door("dic", "https://gateway.test/fhir", "token-of-admin")


class FakeImport:
    """`POST /fhir/$import` as the connector answers it: all or nothing per request, bad lines named.

    Answers take 0 to 2 ms, so that they come out of order. A line holding `bad` is refused;
    `names_lines=False` refuses it without naming it (as HAPI's refusals reach the client). `answers`
    are given first, in order (an exception is raised as the transport's). After `fail_after`
    successful requests, every request is refused 403 (the load stops there).
    """

    def __init__(self, *, names_lines: bool = True, fail_after: int | None = None) -> None:
        self.names_lines = names_lines
        self.fail_after = fail_after
        self.answers: list[httpx.Response | Exception] = []
        self.stored: list[bytes] = []
        self.stored_requests: list[int] = []
        self.requests: list[list[bytes]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        lines = request.content.decode().splitlines()
        self.requests.append([line.encode() for line in lines])
        await asyncio.sleep(zlib.crc32(request.content) % 3 / 1000)  # answers come out of order, as a node's do
        assert request.url.path == "/fhir/$import"
        assert request.headers["authorization"] == "Bearer token-of-admin"
        assert request.headers["content-type"] == "application/fhir+ndjson"
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        if self.fail_after is not None and len(self.stored_requests) >= self.fail_after:
            return outcome(403, "the caller may not ingest")
        bad = [number for number, line in enumerate(lines, start=1) if "bad" in line]
        if bad and self.names_lines:
            return outcome(422, *(f"line {number}.code: is bad (also line {bad[0]})" for number in bad))
        if bad:
            return outcome(422, "HAPI-0550: a conditional reference matched nothing")
        self.stored += [line.encode() for line in lines]
        self.stored_requests.append(len(lines))
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"})


def outcome(status: int, *diagnostics: str, headers: dict[str, str] | None = None) -> httpx.Response:
    issues = [{"severity": "error", "code": "invalid", "diagnostics": text} for text in diagnostics]
    return httpx.Response(status, json={"resourceType": "OperationOutcome", "issue": issues}, headers=headers)


def ndjson(count: int, bad: set[int] = frozenset(), every: int = 4) -> bytes:
    """`count` lines: a Patient every `every` lines, the others its Observations; lines in `bad` say so."""
    lines = []
    for number in range(1, count + 1):
        kind = "Patient" if (number - 1) % every == 0 else "Observation"
        mark = ',"note":"bad"' if number in bad else ""
        lines.append(f'{{"resourceType":"{kind}","id":"r{number}"{mark}}}')
    return ("\n".join(lines) + "\n").encode()


def job(folder: Path, *files: Path) -> Job:
    return job_for(StackState(folder, "dev"), DOOR, files)


def run(
    server: FakeImport,
    job: Job,
    options: Options | None = None,
    sleeps: list[float] | None = None,
    progress: Progress | None = None,
) -> Any:
    async def sleep(seconds: float) -> None:
        (sleeps if sleeps is not None else []).append(seconds)

    chosen = options or Options(Limits(resources=5, bytes=10_000), parallel=3)
    return load(DOOR, job, chosen, progress or Progress(quiet=True), transport=server.transport(), sleep=sleep)


def report_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def state_of(job: Job) -> dict[str, Any]:
    return json.loads(job.state_file.read_text())


def test_every_line_is_sent_once_in_chunks_of_whole_patients(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson(40))
    server, chosen = FakeImport(), job(tmp_path, path)
    result = run(server, chosen)
    assert sorted(server.stored) == sorted(path.read_bytes().splitlines())
    assert all(request[0].startswith(b'{"resourceType":"Patient"') for request in server.requests)
    assert len(server.requests) == 10
    assert (result.lines, result.resources, result.refused) == (40, 40, 0)
    assert state_of(chosen)["files"] == [
        {"path": str(path.resolve()), "size": path.stat().st_size, "done_below": 41, "complete": True}
    ]
    assert chosen.state_file.parent == tmp_path / ".hubnode" / "dev" / "loads"


def test_files_load_in_order_and_a_gzip_one_like_a_plain_one(tmp_path: Path) -> None:
    plain, packed = tmp_path / "a.ndjson", tmp_path / "b.ndjson.gz"
    plain.write_bytes(ndjson(6))
    packed.write_bytes(gzip.compress(ndjson(9).replace(b'"r', b'"z')))
    server = FakeImport()
    run(server, job(tmp_path, plain, packed))
    assert sorted(server.stored[:6]) == sorted(plain.read_bytes().splitlines()), "the first file goes first"
    assert sorted(server.stored[6:]) == sorted(gzip.decompress(packed.read_bytes()).splitlines())


@pytest.mark.parametrize("names_lines", [True, False], ids=["named", "split-until-alone"])
def test_bad_lines_are_reported_and_every_good_line_is_stored(tmp_path: Path, names_lines: bool) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson(30, bad={7, 8, 23}))
    server, chosen = FakeImport(names_lines=names_lines), job(tmp_path, path)
    result = run(server, chosen, Options(Limits(resources=10, bytes=10_000), parallel=2))
    good = [line for line in path.read_bytes().splitlines() if b"bad" not in line]
    assert sorted(server.stored) == sorted(good)
    assert result.refused == 3
    reported = report_lines(chosen.report)
    assert sorted((r["file"], r["line"]) for r in reported) == [(str(path), n) for n in (7, 8, 23)]
    if names_lines:
        assert {r["line"]: r["message"] for r in reported}[8] == "code: is bad (also line 7)", "file line numbers"
    else:
        assert all(r["message"] == "refused: HAPI-0550: a conditional reference matched nothing" for r in reported)
        assert len(server.requests) <= 3 + 3 * 2 * 4, "halving finds a bad line in a few requests"


def test_all_or_nothing_stops_at_the_refused_chunk_and_stores_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson(20, bad={12}))
    server, chosen = FakeImport(), job(tmp_path, path)
    options = Options(Limits(resources=4, bytes=10_000), parallel=1, all_or_nothing=True)
    with pytest.raises(HubnodeError, match=r"in\.ndjson lines 9-12 were refused and none of them stored") as caught:
        run(server, chosen, options)
    assert "a changed file loads from its start, storing nothing twice" in caught.value.fix
    assert sorted(int(json.loads(line)["id"][1:]) for line in server.stored) == list(range(1, 9))
    assert state_of(chosen)["files"][0]["done_below"] == 9
    assert [(r["line"], r["message"]) for r in report_lines(chosen.report)] == [(12, "code: is bad (also line 12)")]


def test_an_interrupted_load_continues_where_it_stopped_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson(40))
    chosen = job(tmp_path, path)
    with pytest.raises(HubnodeError, match="answered 403"):
        run(FakeImport(fail_after=3), chosen, Options(Limits(resources=4, bytes=10_000), parallel=1))
    assert state_of(chosen)["files"][0]["done_below"] == 13
    notes: list[str] = []
    server = FakeImport()
    run(server, chosen, progress=Recorder(notes))
    assert server.requests[0][0] == path.read_bytes().splitlines()[12]
    assert len(server.stored) == 40 - 12
    assert any("from line 13, 0 file(s) done before; --restart starts over" in note for note in notes)
    again = FakeImport()
    run(again, chosen, progress=Recorder(notes))
    assert again.requests == []
    assert "every line was loaded before" in notes[-1]
    restarted = FakeImport()
    run(restarted, chosen, Options(Limits(resources=5, bytes=10_000), restart=True))
    assert len(restarted.stored) == 40


class Recorder(Progress):
    def __init__(self, notes: list[str]) -> None:
        super().__init__()
        self.notes = notes

    def note(self, message: str) -> None:
        self.notes.append(message)


@settings(max_examples=examples(60))
@given(
    kill_after=st.integers(0, 12),
    parallel=st.integers(1, 4),
    chunk=st.integers(1, 9),
    every=st.integers(1, 6),
    bad=st.sets(st.integers(1, 45), max_size=4),
)
def test_a_load_killed_after_any_chunk_and_rerun_stores_every_good_line_and_reports_each_bad_one_once(
    kill_after: int, parallel: int, chunk: int, every: int, bad: set[int]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.ndjson"
        path.write_bytes(ndjson(45, bad=bad, every=every))
        chosen = job(Path(folder), path)
        options = Options(Limits(resources=chunk, bytes=10_000), parallel=parallel)
        first = FakeImport(fail_after=kill_after)
        with contextlib.suppress(HubnodeError):
            run(first, chosen, options)
        below = state_of(chosen)["files"][0]["done_below"]
        second = FakeImport()
        run(second, chosen, options)
        lines = path.read_bytes().splitlines()
        if second.requests:
            assert min(lines.index(line) + 1 for request in second.requests for line in request) == below
        good = {line for line in lines if b"bad" not in line}
        assert set(first.stored) | set(second.stored) == good, "nothing skipped"
        reported = [(r["file"], r["line"]) for r in report_lines(chosen.report)]
        assert sorted(reported) == [(str(path), n) for n in sorted(bad)]


def test_a_busy_node_is_asked_again_after_its_retry_after_else_a_backoff(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson(3))
    server, sleeps = FakeImport(), []
    server.answers = [
        outcome(503, "HAPI unreachable", headers={"Retry-After": "7"}),
        outcome(429, "slow down", headers={"Retry-After": "2"}),
        httpx.ConnectError("refused"),
        outcome(409, "the person's record changed meanwhile"),
    ]
    result = run(server, job(tmp_path, path), sleeps=sleeps)
    assert sleeps == [7.0, 2.0, 4.0, 8.0]
    assert (result.lines, len(server.stored)) == (3, 3)


def test_a_node_that_stays_down_stops_the_load_resumably(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson(3))
    server, sleeps, chosen = FakeImport(), [], job(tmp_path, path)
    server.answers = [outcome(503, "HAPI unreachable", headers={"Retry-After": "10"})] * 3
    with pytest.raises(HubnodeError) as caught:
        run(server, chosen, Options(attempts=3), sleeps=sleeps)
    assert "answered 503: HAPI unreachable to in.ndjson lines 1-3, 3 times" in caught.value.message
    assert "rerun the same command" in caught.value.fix
    assert sleeps == [10.0, 10.0]
    assert state_of(chosen)["files"][0] == {**state_of(chosen)["files"][0], "done_below": 1, "complete": False}


def test_a_refused_caller_stops_the_load_at_once(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(ndjson(3))
    server, sleeps = FakeImport(), []
    server.answers = [outcome(403, "role ingest needed")]
    with pytest.raises(HubnodeError, match=r"answered 403 to in\.ndjson lines 1-3: role ingest needed") as caught:
        run(server, job(tmp_path, path), sleeps=sleeps)
    assert "cn-admin-token" in caught.value.fix
    assert sleeps == []


def test_refusals_name_the_lines_sent_by_their_numbers_in_the_file() -> None:
    lines = [Line(10, b"a"), Line(12, b"b"), Line(15, b"c")]
    answer = {
        "issue": [
            {"diagnostics": "line 2 Bundle.entry[1].resource.code: is required"},
            {"diagnostics": "line 3.id: Patient/p appears twice (also line 2 Bundle.entry[0].resource)"},
            {"diagnostics": "line 3: is not valid JSON"},
            {"diagnostics": "line 9: beyond the request"},
            {"diagnostics": "the trust centre is down"},
        ]
    }
    assert refusals(answer, lines) == {
        1: "Bundle.entry[1].resource.code: is required",
        2: "id: Patient/p appears twice (also line 12 Bundle.entry[0].resource); is not valid JSON",
    }
    assert refusals("not an outcome", lines) == {}


@settings(max_examples=examples(100))
@given(st.lists(st.booleans(), min_size=2, max_size=40))
def test_halving_loses_no_line_and_keeps_a_quarter_on_each_side(starts: list[bool]) -> None:
    lines = [Line(n, b"x", 1, start) for n, start in enumerate(starts, start=1)]
    first, second = halves(lines)
    assert [*first, *second] == lines
    assert min(len(first), len(second)) >= max(1, len(lines) // 4)


def test_halving_cuts_at_the_patient_nearest_the_middle() -> None:
    lines = [Line(n, b"x", 1, n in (2, 5, 8)) for n in range(1, 11)]
    assert [line.number for line in halves(lines)[1]] == [5, 6, 7, 8, 9, 10]


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("1e9", 300.0), ("-3", 0.0), ("soon", None), ("", None)])
def test_retry_after_is_seconds_within_bounds(header: str, seconds: float | None) -> None:
    assert retry_after(httpx.Response(503, headers={"Retry-After": header} if header else {})) == seconds


def stack_state(tmp_path: Path, nodes: list[dict[str, Any]]) -> StackState:
    state = StackState(tmp_path, "dev")
    state.folder.mkdir(parents=True)
    state.endpoints_file.write_text(json.dumps({"stack": "dev", "nodes": nodes}))
    return state


def test_the_door_is_the_gateway_with_the_site_admins_token_and_the_federation_ca(tmp_path: Path) -> None:
    state = stack_state(tmp_path, [{"site": "dic", "endpoints": {"gateway": "https://127.0.0.1:8443"}}])
    (state.secrets_dir("dic")).mkdir(parents=True)
    (state.secrets_dir("dic") / "cn-admin-token").write_text("t0ken\n")
    assert node_door(state, None) == Door("dic", "https://127.0.0.1:8443/fhir", "t0ken")
    state.pki_dir.mkdir()
    (state.pki_dir / "ca.crt").write_text("CA")
    assert node_door(state, "dic").ca_file == state.pki_dir / "ca.crt"


@pytest.mark.parametrize(
    ("nodes", "site", "error", "message"),
    [
        ([{"site": "dic", "endpoints": {}}, {"site": "ttp", "endpoints": {}}], None, UsageError, "has nodes dic, ttp"),
        ([{"site": "dic", "endpoints": {}}], "lab", UsageError, "no node 'lab' (its nodes: dic)"),
        ([{"site": "dic", "endpoints": {"fhir": "http://x"}}], "dic", HubnodeError, "has no gateway"),
        ([{"site": "dic", "endpoints": {"gateway": "https://x"}}], "dic", HubnodeError, "has no connector"),
    ],
)
def test_a_node_the_loader_cannot_reach_is_named_with_the_fix(
    tmp_path: Path, nodes: list[dict[str, Any]], site: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        node_door(stack_state(tmp_path, nodes), site)


def test_without_a_stack_brought_up_the_fix_is_hubnode_up(tmp_path: Path) -> None:
    with pytest.raises(HubnodeError) as caught:
        node_door(StackState(tmp_path, "dev"), "dic")
    assert caught.value.fix == "run: hubnode up --stack dev"


def cli_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeImport) -> Callable[..., int]:
    (tmp_path / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    state = stack_state(tmp_path, [{"site": "dic", "endpoints": {"gateway": "https://gateway.test"}}])
    state.secrets_dir("dic").mkdir(parents=True)
    (state.secrets_dir("dic") / "cn-admin-token").write_text("token-of-admin")
    monkeypatch.setattr(cli, "load", functools.partial(load, transport=server.transport()))
    return lambda *args: cli.main(["--project-dir", str(tmp_path), "load", *args])


def test_the_command_exits_0_when_every_line_is_stored_and_1_naming_the_report_and_the_refusals_when_some_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good, broken = tmp_path / "good.ndjson", tmp_path / "broken.ndjson"
    good.write_bytes(ndjson(5))
    broken.write_bytes(ndjson(5, bad={2}).replace(b'"r', b'"s'))
    hubnode = cli_project(tmp_path, monkeypatch, FakeImport())
    assert hubnode(str(good), "--chunk", "2") == 0
    assert "loaded 5 lines (5 resources) into dic" in capsys.readouterr().out
    assert hubnode(str(broken), "--parallel", "1") == 1
    out = capsys.readouterr().out
    said, shown = out.strip().splitlines()[-2:]
    assert said.startswith("1 line(s) refused, each with its reason, in ")
    assert said.endswith(".report.jsonl; the first:")
    assert shown == "  broken.ndjson line 2: code: is bad (also line 2)"


def test_a_missing_file_or_a_bad_option_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hubnode = cli_project(tmp_path, monkeypatch, FakeImport())
    assert hubnode(str(tmp_path / "nothing.ndjson")) == 2
    assert "hubnode: error: no file " in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        hubnode(str(tmp_path / "x"), "--chunk", "0")
    assert exited.value.code == 2
