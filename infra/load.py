"""`hubnode load`: NDJSON files into a node through its connector's `$import`, resumable, bad lines reported.

A pipeline: while the connector validates and links one chunk (infra/chunks.py) and HAPI writes
another, `parallel` chunks are in flight and the next is being read; memory holds a few chunks, never
a file. Files go in the order given, each after the one before is answered, as a file may refer to
resources of those before it (a bulk export's Observation.ndjson to its Patient.ndjson).

Resumable: a state file (`.hubnode/<stack>/loads/<key>.json`, the key a hash of the site and the files'
paths and sizes) records per file the line below which every chunk was answered 2xx, written atomically
after each answer; a rerun of the same command continues there, `--restart` starts over. Nothing is
stored twice: the connector's ingest is idempotent (every resource is a conditional write keyed by the
source's id, the trust centre gives the same person the same id), so a chunk sent again after an
interruption, a timeout or a 504 finds what its first sending stored and changes nothing.

Bad lines: the connector refuses a request with a bad line whole (422 naming the line). Unless
`all_or_nothing`, the loader writes each named line to the report (JSON lines: file, line, message)
and sends the rest again; a refusal that names no line (HAPI's) is split in halves until it does, so
good lines are never lost to a bad one. A busy or unreachable node (409, 429, 5xx, no answer) is asked
again after its `Retry-After`, else a backoff; if it stays so, the load stops, resumable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx

from infra.chunks import Chunk, Limits, Line, body, chunked, read_lines
from infra.errors import HubnodeError, UsageError
from infra.load_state import FileState, LoadState, Report
from infra.progress import Progress
from infra.state import StackState

NDJSON = "application/fhir+ndjson"
FHIR_JSON = "application/fhir+json"
#: The connector token the loader sends as: the site admin's (role ingest).
CREDENTIAL_FILE = "cn-admin-token"
#: Answers that say "not now": asked again after Retry-After or a backoff.
TRANSIENT = frozenset({409, 429, 500, 502, 503, 504})
#: Answers that refuse the lines sent (422 naming them; 400 and 413 naming none): split, report, send the rest.
REFUSED = frozenset({400, 413, 422})
#: Longest wait between two tries, whatever a Retry-After asks.
MAX_WAIT_S = 300.0
PROGRESS_EVERY_S = 5.0
_LINE = re.compile(r"line (\d+)\b")


@dataclass(frozen=True)
class Door:
    """Where a node's connector answers, through its gateway: FHIR base URL, bearer token, CA to trust."""

    site: str
    fhir_url: str
    token: str
    ca_file: Path | None = None


def node_door(state: StackState, site: str | None, doing: str = "the load") -> Door:
    """The door of node `site` (None: the stack's only node) as `hubnode up` brought it up here.

    Its gateway from the endpoints file, the site admin's connector token, the federation CA.
    """
    stack = state.stack
    if not state.endpoints_file.is_file():
        raise HubnodeError(f"stack {stack} has no {state.endpoints_file}", fix=f"run: hubnode up --stack {stack}")
    try:
        nodes = list(json.loads(state.endpoints_file.read_text(encoding="utf-8"))["nodes"])
    except (ValueError, KeyError, TypeError) as error:
        raise HubnodeError(
            f"{state.endpoints_file} is unreadable ({error})", fix=f"run: hubnode up --stack {stack}"
        ) from None
    sites = [str(n.get("site")) for n in nodes]
    if site is None and len(sites) != 1:
        raise UsageError(f"stack {stack} has nodes {', '.join(sites)}", fix="name one of them with --site")
    node = next((n for n in nodes if site in (None, n.get("site"))), None)
    if node is None:
        raise UsageError(
            f"stack {stack} has no node {site!r} (its nodes: {', '.join(sites)})", fix="name one with --site"
        )
    site = str(node.get("site"))
    gateway = node.get("endpoints", {}).get("gateway")
    token_file = state.secrets_dir(site) / CREDENTIAL_FILE
    if gateway is None or not token_file.is_file():
        missing = "gateway" if gateway is None else f"connector (no {token_file})"
        raise HubnodeError(
            f"node {site} of stack {stack} has no {missing}; {doing} goes to its connector through its gateway",
            fix="choose a node whose components include connector and gateway",
        )
    ca = state.pki_dir / "ca.crt"
    return Door(site, f"{gateway}/fhir", token_file.read_text(encoding="utf-8").strip(), ca if ca.is_file() else None)


@dataclass(frozen=True)
class Options:
    """How to load: chunk limits, chunks in flight, what a refusal does, how long a busy node is asked again."""

    limits: Limits = field(default_factory=lambda: Limits(resources=100, bytes=8 * 1024 * 1024))
    parallel: int = 4
    all_or_nothing: bool = False
    restart: bool = False
    #: Tries of a chunk while the node is busy or unreachable: with its Retry-After of 10 s, some two minutes.
    attempts: int = 12
    timeout_s: float = 600.0


@dataclass(frozen=True)
class Result:
    """Lines and resources this run had stored, and how long it took; lines refused, this run and before."""

    lines: int
    resources: int
    refused: int
    seconds: float
    report: Path

    @property
    def resources_per_s(self) -> float:
        """Resources stored per second of this run."""
        return self.resources / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Job:
    """What to load, the file recording how far the load is, and the report of refused lines."""

    files: tuple[Path, ...]
    state_file: Path
    report: Path


def job_for(state: StackState, door: Door, files: Sequence[Path], report: Path | None = None) -> Job:
    """A load of `files` through `door`: its state in `.hubnode/<stack>/loads/<key>.json`, the report beside it.

    The key is a hash of the site and the files' paths and sizes: the same command finds its state again.
    """
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise UsageError(f"no file {', '.join(missing)}", fix="name NDJSON files (.ndjson or .ndjson.gz) that exist")
    named = [[str(path.resolve()), path.stat().st_size] for path in files]
    key = hashlib.sha256(json.dumps([door.site, named]).encode()).hexdigest()[:16]
    folder = state.folder / "loads"
    return Job(tuple(files), folder / f"{key}.json", report or folder / f"{key}.report.jsonl")


def load(  # noqa: PLR0913 -- where, what, how, who hears of it, and the two seams tests replace
    door: Door,
    job: Job,
    options: Options,
    progress: Progress,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Result:
    """Load the job's files through `door`, continuing where its state says unless `options.restart`.

    HubnodeError when the node keeps failing or refuses the caller, or on the first refused chunk with
    `all_or_nothing`; the state then says where a rerun continues.
    """
    state = LoadState.begin(job.state_file, job.files, job.report, options.restart)
    return asyncio.run(_Loader(door, state, options, progress, sleep).run(transport))


def refusals(outcome: Any, lines: Sequence[Line]) -> dict[int, str]:  # noqa: ANN401 -- decoded JSON
    """Index in `lines` -> what the connector's OperationOutcome says is wrong with it (request line n = index n-1).

    Line numbers inside a message (`appears twice (also line 2)`) are rewritten to the file's.
    """
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    found: dict[int, list[str]] = {}
    for issue in issues if isinstance(issues, list) else []:
        text = str(issue.get("diagnostics", "")) if isinstance(issue, dict) else ""
        named = _LINE.match(text)
        if named is None or not 1 <= int(named.group(1)) <= len(lines):
            continue
        message = _LINE.sub(lambda m: f"line {_file_line(m, lines)}", text[named.end() :].lstrip(" .:"))
        found.setdefault(int(named.group(1)) - 1, []).append(message)
    return {index: "; ".join(messages) for index, messages in found.items()}


def _file_line(match: re.Match[str], lines: Sequence[Line]) -> str:
    number = int(match.group(1))
    return str(lines[number - 1].number) if 1 <= number <= len(lines) else match.group(1)


def diagnostics(response: httpx.Response) -> str:
    """The diagnostics of an answer's OperationOutcome, else the start of its body."""
    try:
        outcome = response.json()
    except ValueError:
        return response.text[:300] or "an empty answer"
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    texts = [str(i.get("diagnostics", "")) for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []
    return "; ".join(t for t in texts if t) or response.text[:300]


def halves(lines: Sequence[Line]) -> tuple[Sequence[Line], Sequence[Line]]:
    """`lines` in two: at the group start nearest the middle if one is in the middle half, else in the middle.

    Either part is at least a quarter (rounded down, at least one line), so halving finds a line in few steps.
    """
    middle, quarter = len(lines) // 2, max(1, len(lines) // 4)
    starts = [
        index for index, line in enumerate(lines) if line.starts_group and quarter <= index <= len(lines) - quarter
    ]
    cut = min(starts, key=lambda index: abs(index - middle)) if starts else middle
    return lines[:cut], lines[cut:]


def retry_after(response: httpx.Response) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds; a date is not honoured), at most MAX_WAIT_S."""
    try:
        return min(MAX_WAIT_S, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return None


def backoff(attempt: int) -> float:
    """Seconds before try `attempt + 1` when the node named none: 1, 2, 4, ... at most 60."""
    return float(min(60, 2 ** (attempt - 1)))


#: A chunk on its way to a sender: the chunk, the answer it must wait for (it continues a patient), its own answer.
_Sending = tuple[Chunk, asyncio.Event | None, asyncio.Event]


class _Stopped(HubnodeError):  # noqa: N818 -- reads as the state it reports
    """The load cannot go on; the state says where a rerun continues."""


@dataclass
class _File:
    """A file being loaded: chunks not answered yet (by first line) and the end of the last one read."""

    path: Path
    state: FileState
    outstanding: dict[int, Chunk] = field(default_factory=dict)
    read_end: int = 1
    read_to: int = 0


class _Loader:
    """One run of a load: reads, sends, splits refusals, reports, records progress and state."""

    def __init__(
        self,
        door: Door,
        state: LoadState,
        options: Options,
        progress: Progress,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.door, self.state, self.options, self.progress, self.sleep = door, state, options, progress, sleep
        self.report = Report(state.report)
        self.lines = self.resources = 0
        self.total_bytes = sum(f.size for f in state.files)
        self.done_bytes = self.start_bytes = sum(f.size for f in state.files if f.complete)
        self.started = self.noted = time.monotonic()

    async def run(self, transport: httpx.AsyncBaseTransport | None) -> Result:
        files = [_File(Path(f.path), f) for f in self.state.files if not f.complete]
        if self.state.resumed:
            self._say_resumed(files)
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=self.door.ca_file) if self.door.ca_file else True
        )
        async with httpx.AsyncClient(
            base_url=self.door.fhir_url,
            headers={
                "Authorization": f"Bearer {self.door.token}",
                "Content-Type": NDJSON,
                "Accept": FHIR_JSON,
            },
            timeout=httpx.Timeout(self.options.timeout_s, connect=30.0),
            limits=httpx.Limits(max_connections=self.options.parallel),
            verify=verify,
            transport=transport,
        ) as client:
            for file in files:
                await self._load_file(client, file)
        seconds = time.monotonic() - self.started
        return Result(self.lines, self.resources, len(self.report), seconds, self.state.report)

    def _say_resumed(self, files: Sequence[_File]) -> None:
        if not files:
            self.progress.note(f"every line was loaded before ({self.state.path}); --restart loads them again")
            return
        first = files[0]
        self.progress.note(
            f"continuing the load recorded in {self.state.path}: {first.path.name} from line"
            f" {first.state.done_below}, {len(self.state.files) - len(files)} file(s) done before;"
            " --restart starts over"
        )

    async def _load_file(self, client: httpx.AsyncClient, file: _File) -> None:
        """Read, send and answer one file; every chunk is answered (or the load stopped) before it returns."""
        queue: asyncio.Queue[_Sending | None] = asyncio.Queue(self.options.parallel)
        tasks = [asyncio.create_task(self._send_chunks(client, file, queue)) for _ in range(self.options.parallel)]
        tasks.append(asyncio.create_task(self._read_chunks(file, queue)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
            if failed is not None:
                raise failed
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        file.state.complete = True
        self.done_bytes += file.state.size - file.read_to
        self.state.save()
        self.progress.note(f"{file.path.name} loaded")

    async def _read_chunks(self, file: _File, queue: asyncio.Queue[_Sending | None]) -> None:
        """Chunks of the file, read in a thread while chunks are sent; each waits its turn in the queue."""
        chunks = chunked(read_lines(file.path, file.state.done_below), self.options.limits)
        before: asyncio.Event | None = None
        resumed = file.state.done_below > 1
        while True:
            try:
                chunk = await asyncio.to_thread(next, chunks, None)
            except (OSError, EOFError) as error:
                raise _Stopped(
                    f"{file.path}: cannot read on after line {file.read_end - 1} ({error})",
                    fix="check the file (a .gz cut short?); a rerun continues where the load stopped",
                ) from None
            if chunk is None:
                break
            if resumed:  # what a rerun skipped counts as done before it began
                resumed, file.read_to = False, max(0, chunk.lines[0].read_to - chunk.lines[0].size)
                self.done_bytes += file.read_to
                self.start_bytes += file.read_to
            file.outstanding[chunk.first] = chunk
            file.read_end = chunk.end
            answered = asyncio.Event()
            await queue.put((chunk, before if chunk.continues else None, answered))
            before = answered
        for _ in range(self.options.parallel):
            await queue.put(None)

    async def _send_chunks(
        self,
        client: httpx.AsyncClient,
        file: _File,
        queue: asyncio.Queue[_Sending | None],
    ) -> None:
        while (item := await queue.get()) is not None:
            chunk, before, answered = item
            if before is not None:  # it carries on a patient: the lines it refers to must be stored first
                await before.wait()
            await self._deliver(client, file, chunk)
            answered.set()
            self._answered(file, chunk)

    async def _deliver(self, client: httpx.AsyncClient, file: _File, chunk: Chunk) -> None:
        """Send the chunk; of a refused part, report the lines named and send the rest, or split it in halves."""
        pending: list[Sequence[Line]] = [chunk.lines]
        while pending:
            lines = pending.pop()
            response = await self._post(client, body(lines), file, lines)
            if response.is_success:
                self.lines += len(lines)
                self.resources += sum(line.resources for line in lines)
                continue
            bad = refusals(_json(response), lines)
            if self.options.all_or_nothing:
                self._refuse_all(file, chunk, lines, bad, diagnostics(response))
            for index, message in sorted(bad.items()):
                self._refuse(file, lines[index], message)
            if bad:
                rest = [line for index, line in enumerate(lines) if index not in bad]
                pending += [rest] if rest else []
            elif len(lines) > 1:
                first, second = halves(lines)
                pending += [second, first]  # the first half goes first: the second may refer to it
            else:
                self._refuse(file, lines[0], f"refused: {diagnostics(response)}")

    async def _post(
        self, client: httpx.AsyncClient, content: bytes, file: _File, lines: Sequence[Line]
    ) -> httpx.Response:
        """One `$import` of `content`, asked again while the node is busy or unreachable; a 2xx or a refusal."""
        where = f"{file.path.name} lines {lines[0].number}-{lines[-1].number}"
        for attempt in range(1, self.options.attempts + 1):
            try:
                response = await client.post("/$import", content=content)
            except httpx.TransportError as error:
                problem, wait = f"no answer ({error or type(error).__name__})", backoff(attempt)
            else:
                status = response.status_code
                if response.is_success or status in REFUSED:
                    return response
                if status not in TRANSIENT:
                    raise _Stopped(
                        f"{self.door.fhir_url}/$import answered {status} to {where}: {diagnostics(response)}",
                        fix=f"check that the token in {CREDENTIAL_FILE} may ingest; a rerun continues where it stopped",
                    )
                asked = retry_after(response)
                problem = f"answered {status}: {diagnostics(response)[:200]}"
                wait = backoff(attempt) if asked is None else asked
            if attempt == self.options.attempts:
                raise _Stopped(
                    f"{self.door.fhir_url}/$import {problem} to {where}, {attempt} times",
                    fix="once the node is healthy (hubnode status), rerun the same command: it goes on from there",
                )
            self.progress.note(f"{where}: {problem}; asking again in {wait:.0f} s")
            await self.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _refuse(self, file: _File, line: Line, message: str) -> None:
        self.report.add(str(file.path), line.number, message)

    def _refuse_all(
        self, file: _File, chunk: Chunk, lines: Sequence[Line], bad: Mapping[int, str], why: str
    ) -> NoReturn:
        for index, message in bad.items():
            self._refuse(file, lines[index], message)
        if not bad:
            self._refuse(file, lines[0], f"lines {lines[0].number}-{lines[-1].number} refused together: {why}")
        raise _Stopped(
            f"{file.path.name} lines {chunk.first}-{chunk.end - 1} were refused and none of them stored"
            f" (--all-or-nothing); the refused lines are in {self.report.path}",
            fix="fix those lines and run the same command again: a changed file loads from its start,"
            " storing nothing twice",
        )

    def _answered(self, file: _File, chunk: Chunk) -> None:
        """Move the file's mark past every chunk answered in a row; save it; say how far the load is."""
        first = next(iter(file.outstanding))
        del file.outstanding[chunk.first]
        if chunk.first == first:
            file.state.done_below = next(iter(file.outstanding), file.read_end)
            self.state.save()
        read_to = chunk.lines[-1].read_to
        if read_to > file.read_to:
            self.done_bytes += read_to - file.read_to
            file.read_to = read_to
        now = time.monotonic()
        if now - self.noted >= PROGRESS_EVERY_S:
            self.noted = now
            self.progress.note(self._how_far(now))

    def _how_far(self, now: float) -> str:
        elapsed = now - self.started
        share = self.done_bytes / self.total_bytes if self.total_bytes else 1.0
        gained = self.done_bytes - self.start_bytes
        eta = (self.total_bytes - self.done_bytes) * elapsed / gained if gained > 0 else None
        return (
            f"{self.lines:,} lines, {self.resources:,} resources ({self.resources / elapsed:,.0f}/s),"
            f" {share:.0%} read, ETA {_duration(eta)}"
        )


def _json(response: httpx.Response) -> Any:  # noqa: ANN401 -- decoded JSON
    try:
        return response.json()
    except ValueError:
        return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
