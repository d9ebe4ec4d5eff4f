"""`./dev chaos`: load, fault and busy-start campaigns against a local three-node federation (issue 16).

Load: many concurrent clients for a bounded time mix ingest (a synthetic MII-shaped patient per
bundle, at the dic or the practice), reads (a stored patient by its source identifier) and processes
(ping practice -> dic, feasibility research -> dic and practice); per operation the error rate and
p50/p95/p99, and every container's memory sampled throughout (flat, or a leak).

Faults: the same load while each kind of container is killed with SIGKILL and started again in turn
(HAPI, PostgreSQL, trust centre, connector, gateway). Afterwards the ledger of what clients were
told is held against what the nodes hold: an ingest answered 200 is there, each resource exactly
once; one refused with an OperationOutcome is absent; one with no answer (a dropped connection, a
gateway's 502/504) is all there or not at all, never a part; every process started is completed or
failed with a reason.

Busy start: the federation brought up from empty volumes while a spinning process per core keeps every
core busy (`cpu_hogs`); `hubnode up` must not give up, and every node must then answer through its
gateway.

Only this machine's own containers are touched: the campaign brings up its own stack (the bench
federation's machinery, `bench-fed`) and takes it down. Results: `.hubnode/chaos/<time>.json`,
`latest.json`, and a printed table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Self

import httpx

from benchmarks.cpu_hogs import CpuHogs
from benchmarks.federation import STACK, BenchFederation, bench_federation, percentile
from connector.tasks import Process, parameter, request_task
from fixtures.synthetic import PatientProfile, patient_record

RESULTS_DIR = Path(__file__).resolve().parent.parent / ".hubnode" / "chaos"
SOURCE_BASE = "https://hubnode.org/fhir/sid/source"
ICD10GM_SYSTEM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
#: How long a throttled client waits before it sends again (jittered).
THROTTLED_WAIT_S = 0.5
#: Answers that say the node did nothing: its own refusals (4xx) and "unavailable, try again" (503).
REFUSALS = frozenset(range(400, 500)) | {HTTPStatus.SERVICE_UNAVAILABLE}
#: How often each operation is drawn (ingest at two sites, reads, two processes).
MIX = {"ingest": 4, "read": 5, "process": 1}
#: Processes are started as FHIR's asynchronous pattern has it: accepted at once, then followed (`settled_tasks`).
RESPOND_ASYNC = {"Prefer": "respond-async"}
#: A start is sent again after the gateway's 429 and after the connector's 503 "as many processes run as it runs
#: at once": nothing was started, and a caller that does not wait for the end must wait for room.
BUSY = frozenset({HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE})
INGEST_SITES = ("dic", "practice")
#: Container kinds killed in turn, as `<prefix>-<component>` names of the dic (PostgreSQL: HAPI's `db`).
FAULTS = ("fhir", "db", "trustcentre", "connector", "gateway")
#: How long a killed container stays down before it is started again.
DOWN_S = 5.0
MEMORY_SAMPLE_S = 15.0
CLIENT_TIMEOUT_S = 120.0
#: How long processes may take to finish after the campaign (retries with backoff included).
SETTLE_S = 300.0
#: Verdicts that break the promise of issue 16: nothing lost, nothing twice, no part of a bundle.
BROKEN = ("duplicated", "stored_but_missing", "partial", "refused_but_present")
#: The campaigns `--only` can choose; all run by default, busy-start first on a federation of its own.
CAMPAIGNS = ("busy-start", "load", "faults")
#: Identifiers asked per search when checking what the nodes hold.
SEARCH_BATCH = 40


@dataclass
class Ingest:
    """One bundle sent and what its client was told: stored (200), refused (an OperationOutcome), or unknown."""

    site: str
    keys: dict[str, str]  # resource type/id -> its source identifier "system|value"
    outcome: str = "unknown"
    status: int | None = None


@dataclass
class Ledger:
    """Everything the clients did and were told, per operation."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    ingests: list[Ingest] = field(default_factory=list)
    tasks: list[tuple[str, str]] = field(default_factory=list)  # (site, Task id)
    throttled: list[int] = field(default_factory=list)  # one entry per 429 a client waited out
    stored_patients: list[tuple[str, str]] = field(default_factory=list)  # (site, source identifier)

    def record(self, operation: str, seconds: float, error: str | None) -> None:
        """One operation's time, and its error if it had one."""
        self.latencies[operation].append(seconds)
        if error is not None:
            self.errors[operation].append(error)


@dataclass
class Campaign:
    """A bounded run of `clients` concurrent clients against the federation, with or without faults."""

    federation: BenchFederation
    clients: int
    seconds: float
    seed: int
    ledger: Ledger = field(default_factory=Ledger)
    memory: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    faults: list[dict[str, Any]] = field(default_factory=list)
    _next_patient: int = 0

    async def run(self, with_faults: bool) -> None:
        """The clients, the memory sampler and (`with_faults`) the killer, until the campaign's time is up."""
        deadline = time.monotonic() + self.seconds
        async with self._clients() as http:
            workers = [self._worker(http, number, deadline) for number in range(self.clients)]
            background = [self._sample_memory(deadline)]
            if with_faults:
                background.append(self._inject_faults(deadline))
            await asyncio.gather(*workers, *background)

    def _clients(self) -> _Clients:
        return _Clients(self.federation)

    async def _worker(self, http: _Clients, number: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + number)  # noqa: S311 -- a reproducible mix, not a secret
        operations: dict[str, Callable[[_Clients, random.Random], Awaitable[None]]] = {
            "ingest": self._ingest,
            "read": self._read,
            "process": self._process,
        }
        names, weights = zip(*MIX.items(), strict=True)
        while time.monotonic() < deadline:
            await operations[rng.choices(names, weights)[0]](http, rng)

    async def _ingest(self, http: _Clients, rng: random.Random) -> None:
        site = rng.choice(INGEST_SITES)
        self._next_patient += 1
        record = patient_record(PatientProfile(seed=self.seed * 1_000_000 + self._next_patient, site=site))
        bundle = record.bundle()
        system = f"{SOURCE_BASE}/{site}"
        keys = {
            f"{e['resource']['resourceType']}/{e['resource']['id']}": f"{system}|{e['resource']['resourceType']}/"
            f"{e['resource']['id']}"
            for e in bundle["entry"]
        }
        sent = Ingest(site, keys)
        self.ledger.ingests.append(sent)
        body = json.dumps(bundle)
        seconds, response, error = await _timed(
            lambda: http.of(site).post("/fhir", content=body), self.ledger.throttled
        )
        sent.status = response.status_code if response is not None else None
        if response is not None and response.status_code == HTTPStatus.OK:
            sent.outcome = "stored"
            self.ledger.stored_patients.append((site, keys[f"Patient/{record.person.patient_id}"]))
        elif response is not None and response.status_code in REFUSALS and _operation_outcome(response):
            sent.outcome = "refused"
        self.ledger.record("ingest", seconds, error)

    async def _read(self, http: _Clients, rng: random.Random) -> None:
        if not self.ledger.stored_patients:
            await asyncio.sleep(0.5)
            return
        site, key = rng.choice(self.ledger.stored_patients)
        seconds, response, error = await _timed(
            lambda: http.of(site).get("/fhir/Patient", params={"identifier": key}), self.ledger.throttled
        )
        if error is None and response is not None and not response.json().get("entry"):
            error = f"a stored patient {key} was not found at {site}"
        self.ledger.record("read", seconds, error)

    async def _process(self, http: _Clients, rng: random.Random) -> None:
        if rng.random() < 0.5:
            site, task = "practice", request_task(Process.PING, [parameter("target", "valueString", "dic")])
        else:
            criteria = [parameter("condition-code", "valueCoding", {"system": ICD10GM_SYSTEM, "code": "C50"})]
            site, task = "research", request_task(Process.FEASIBILITY, criteria, idempotency_key=uuid.uuid4().hex)
        body = json.dumps(task)
        seconds, response, error = await _timed(
            lambda: http.of(site).post("/fhir/Task", content=body, headers=RESPOND_ASYNC),
            self.ledger.throttled,
            BUSY,
        )
        if response is not None and response.status_code in (200, 202):
            self.ledger.tasks.append((site, str(response.json().get("id"))))
        self.ledger.record("process", seconds, error)

    async def _sample_memory(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            for name, mebibytes in (await asyncio.to_thread(container_memory)).items():
                self.memory[name].append(mebibytes)
            await asyncio.sleep(MEMORY_SAMPLE_S)

    async def _inject_faults(self, deadline: float) -> None:
        """Each kind of the dic's containers killed and started again, spread over the campaign."""
        spacing = self.seconds / (len(FAULTS) + 1)
        for kind in FAULTS:
            await asyncio.sleep(spacing)
            if time.monotonic() >= deadline:
                return
            name = f"hubnode-{STACK}-dic-{kind}"
            started = time.monotonic()
            await asyncio.to_thread(_docker, "kill", "--signal", "KILL", name)
            await asyncio.sleep(DOWN_S)
            await asyncio.to_thread(_docker, "start", name)
            self.faults.append({"container": name, "killed_after_s": round(started - (deadline - self.seconds), 1)})


class _Clients:
    """One async client per node's public door, sized for the campaign's concurrency."""

    def __init__(self, federation: BenchFederation) -> None:
        self._federation = federation
        self._clients: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> Self:
        for site in self._federation.gateway_ports:
            self._clients[site] = httpx.AsyncClient(
                **self._federation.door(site), timeout=CLIENT_TIMEOUT_S, limits=httpx.Limits(max_connections=200)
            )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for client in self._clients.values():
            await client.aclose()

    def of(self, site: str) -> httpx.AsyncClient:
        return self._clients[site]


async def _timed(
    call: Callable[[], Awaitable[httpx.Response]],
    throttled: list[int],
    send_again: frozenset[int] = frozenset({HTTPStatus.TOO_MANY_REQUESTS}),
) -> tuple[float, httpx.Response | None, str | None]:
    """How long a request took, its answer, and what went wrong (None: a 2xx).

    A 429 is the gateway's limit per client address (all clients here share 127.0.0.1): the client
    waits and sends again, as a well-behaved client does, and the wait counts in its time; likewise
    every status in `send_again`.
    """
    started = time.perf_counter()
    try:
        response = await call()
        while response.status_code in send_again:
            throttled.append(1)
            await asyncio.sleep(THROTTLED_WAIT_S * (0.5 + random.random()))  # noqa: S311 -- jitter
            response = await call()
    except httpx.HTTPError as exc:
        return time.perf_counter() - started, None, f"{type(exc).__name__}: {exc}"[:300]
    seconds = time.perf_counter() - started
    if response.status_code >= 300:
        return seconds, response, f"{response.status_code}: {response.text[:200]}"
    return seconds, response, None


def _operation_outcome(response: httpx.Response) -> bool:
    """Whether the node itself answered (an OperationOutcome), not a proxy that lost its upstream."""
    try:
        return bool(response.json().get("resourceType") == "OperationOutcome")
    except ValueError:
        return False


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=120)
    return done.stdout


def container_memory() -> dict[str, float]:
    """MiB in use per container of the campaign's stack (`docker stats`, one sample)."""
    lines = _docker("stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}").splitlines()
    found = {}
    for line in lines:
        name, _, usage = line.partition("\t")
        if name.startswith(f"hubnode-{STACK}-"):
            found[name] = mebibytes(usage.split("/")[0].strip())
    return found


def mebibytes(text: str) -> float:
    """MiB from `docker stats`' memory figure (`512MiB`, `1.5GiB`, `900kB`)."""
    units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "kB": 1 / 1024, "MB": 1.0, "GB": 1024.0}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * units[unit]
    return float("nan")


def summary(ledger: Ledger) -> dict[str, Any]:
    """Per operation: how many, the error rate, p50/p95/p99, and the first errors seen."""
    found = {}
    for operation, seconds in sorted(ledger.latencies.items()):
        errors = ledger.errors.get(operation, [])
        found[operation] = {
            "n": len(seconds),
            "errors": len(errors),
            "error_rate": len(errors) / len(seconds) if seconds else 0.0,
            "p50_s": percentile(seconds, 50),
            "p95_s": percentile(seconds, 95),
            "p99_s": percentile(seconds, 99),
            "first_errors": errors[:5],
        }
    return found


def memory_trend(memory: Mapping[str, Sequence[float]]) -> dict[str, dict[str, float]]:
    """Per container: the mean of each third of its samples; last / first, and last / middle.

    A JVM or a cache fills up in the first third and then holds (`settled` near 1); a leak grows on
    through the last (`settled` above 1 as well as `ratio`).
    """
    trend = {}
    for name, samples in sorted(memory.items()):
        third = max(1, len(samples) // 3)
        first, last = sum(samples[:third]) / third, sum(samples[-third:]) / third
        middle_samples = samples[third:-third] or samples
        middle = sum(middle_samples) / len(middle_samples)
        trend[name] = {
            "first_mib": round(first, 1),
            "middle_mib": round(middle, 1),
            "last_mib": round(last, 1),
            "ratio": round(last / first, 3),
            "settled": round(last / middle, 3),
        }
    return trend


def held(federation: BenchFederation, ledger: Ledger) -> dict[str, Any]:
    """What the nodes hold against what the clients were told (see the module's docstring)."""
    counts: dict[str, int] = {}
    by_site: dict[str, list[str]] = defaultdict(list)
    for ingest in ledger.ingests:
        by_site[ingest.site] += ingest.keys.values()
    for site, keys in by_site.items():
        with federation.client(site) as client:
            for kind in sorted({key.split("|", 1)[1].split("/", 1)[0] for key in keys}):
                wanted = [key for key in keys if key.split("|", 1)[1].startswith(f"{kind}/")]
                for start in range(0, len(wanted), SEARCH_BATCH):
                    counts.update(_count_by_identifier(client, kind, wanted[start : start + SEARCH_BATCH]))
    return judge(ledger.ingests, counts)


def judge(ingests: Sequence[Ingest], counts: Mapping[str, int]) -> dict[str, Any]:
    """Each ingest's verdict from how many resources each of its source identifiers names now."""
    verdicts: dict[str, int] = defaultdict(int)
    problems = []
    for ingest in ingests:
        present = [counts.get(key, 0) for key in ingest.keys.values()]
        if any(n > 1 for n in present):
            verdict = "duplicated"
        elif ingest.outcome == "stored":
            verdict = "stored" if all(present) else "stored_but_missing"
        elif any(present) and not all(present):
            verdict = "partial"
        elif ingest.outcome == "refused":
            verdict = "refused_but_present" if any(present) else "refused"
        else:
            verdict = "unanswered_and_stored" if all(present) else "unanswered_and_absent"
        verdicts[verdict] += 1
        if verdict in BROKEN:
            problems.append(f"{verdict} (answered {ingest.status}): {ingest.site} {sorted(ingest.keys)}")
    return {
        "ingests": len(ingests),
        "verdicts": dict(verdicts),
        "broken": sum(verdicts[v] for v in BROKEN),
        "problems": problems[:20],
    }


def _count_by_identifier(client: httpx.Client, kind: str, keys: Sequence[str]) -> dict[str, int]:
    """How many resources of `kind` each source identifier names (one search for the batch, all pages)."""
    found: dict[str, int] = dict.fromkeys(keys, 0)
    bundle = _patiently(client, f"/fhir/{kind}", {"identifier": ",".join(keys), "_count": "500"})
    while True:
        for entry in bundle.get("entry", []):
            for identifier in entry["resource"].get("identifier", []):
                key = f"{identifier.get('system')}|{identifier.get('value')}"
                if key in found:
                    found[key] += 1
        following = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        if following is None:
            return found
        bundle = _patiently(client, following, None)


def _patiently(client: httpx.Client, url: str, params: Mapping[str, str] | None) -> dict[str, Any]:
    """A search's page, asked again while the node is still recovering (5xx, 429, no connection)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            answer = client.get(url, params=params)
            if answer.status_code == HTTPStatus.OK:
                return dict(answer.json())
            problem = f"{answer.status_code}: {answer.text[:200]}"
            transient = answer.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR
            if not transient and answer.status_code != HTTPStatus.TOO_MANY_REQUESTS:
                raise RuntimeError(f"GET {url} answered {problem}")
        except httpx.HTTPError as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"GET {url} still failing after {SETTLE_S:.0f} s: {problem}")
        time.sleep(5)


def settled_tasks(federation: BenchFederation, ledger: Ledger) -> dict[str, Any]:
    """Every Task started, once finished: completed, failed with a reason, or still open after `SETTLE_S`.

    Also how long the finished ones took from start to end, as their Tasks record it (whole seconds).
    """
    deadline = time.monotonic() + SETTLE_S
    open_tasks = list(ledger.tasks)
    states: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    unexplained = []
    took: list[float] = []
    while open_tasks and time.monotonic() < deadline:
        still = []
        for site, task_id in open_tasks:
            with federation.client(site) as client:
                task = client.get(f"/fhir/Task/{task_id}").json()
            status = task.get("status")
            if status in ("completed", "failed"):
                took.append(_seconds_between(task["authoredOn"], task["lastModified"]))
            if status == "completed":
                states["completed"] += 1
            elif status == "failed":
                states["failed"] += 1
                reason = task.get("statusReason", {}).get("text")
                if not reason:
                    unexplained.append(f"{site} Task/{task_id}")
                reasons[str(reason)[:200]] += 1
            else:
                still.append((site, task_id))
        open_tasks = still
        if open_tasks:
            time.sleep(10)
    states["open"] = len(open_tasks)
    common = sorted(reasons.items(), key=lambda item: -item[1])[:5]
    return {
        "started": len(ledger.tasks),
        "states": dict(states),
        "failed_without_reason": unexplained,
        "commonest_reasons": dict(common),
        "start_to_end_s": {f"p{q}": round(percentile(took, q), 1) for q in (50, 95, 99)} if len(took) > 1 else {},
    }


def _seconds_between(start: str, end: str) -> float:
    """Seconds from one FHIR dateTime to another (a Task's authoredOn to its lastModified)."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def campaign(federation: BenchFederation, clients: int, seconds: float, *, with_faults: bool) -> dict[str, Any]:
    """One campaign and its verdicts."""
    run = Campaign(federation, clients, seconds, seed=7 if with_faults else 3)
    started = time.perf_counter()
    asyncio.run(run.run(with_faults))
    result: dict[str, Any] = {
        "clients": clients,
        "seconds": round(time.perf_counter() - started, 1),
        "operations": summary(run.ledger),
        "throttled_and_sent_again": len(run.ledger.throttled),
        "memory": memory_trend(run.memory),
    }
    if with_faults:
        result["faults"] = run.faults
        _wait_healthy(federation)
    result["held"] = held(federation, run.ledger)
    result["processes"] = settled_tasks(federation, run.ledger)
    return result


def busy_start(hogs: int) -> dict[str, Any]:
    """The federation brought up from empty volumes while `hogs` processes spin; then every node must answer."""
    with contextlib.ExitStack() as stack:
        spinning = stack.enter_context(CpuHogs(hogs))
        federation = stack.enter_context(bench_federation())
        share = spinning.stop()
        _wait_healthy(federation)
        return {"hogs": hogs, "up_s": round(federation.up_seconds, 1), "hogs_core_share": round(share, 3)}


def _wait_healthy(federation: BenchFederation) -> None:
    """Until every node answers a search through its gateway again (the killed parts are back)."""
    for site in federation.gateway_ports:
        with federation.client(site) as client:
            _patiently(client, "/fhir/Patient", {"_count": "1"})


def table(results: Mapping[str, Any]) -> list[str]:
    """The campaigns' figures as printed lines."""
    lines = [
        f"{'campaign':<8} {'operation':<9} {'n':>6} {'errors':>7} {'rate':>8} {'p50 s':>7} {'p95 s':>7} {'p99 s':>7}"
    ]
    if "busy-start" in results:
        busy = results["busy-start"]
        quiet = f", {busy['up_s'] / results['up_s']:.2f} x the quiet bring-up" if "up_s" in results else ""
        lines.append(
            f"busy-start: up in {busy['up_s']:.0f} s{quiet} while {busy['hogs']} spinning processes held"
            f" {busy['hogs_core_share']:.0%} of their cores; every node answered"
        )
    for name in ("load", "faults"):
        if name not in results:
            continue
        for operation, figures in results[name]["operations"].items():
            lines.append(
                f"{name:<8} {operation:<9} {figures['n']:>6} {figures['errors']:>7} {figures['error_rate']:>8.4f}"
                f" {figures['p50_s']:>7.2f} {figures['p95_s']:>7.2f} {figures['p99_s']:>7.2f}"
            )
        processes = results[name]["processes"]
        lines.append(f"{name:<8} held: {results[name]['held']['verdicts']}; processes: {processes['states']}")
        lines.append(f"{name:<8} processes from start to end (s): {processes.get('start_to_end_s', {})}")
        trend = results[name]["memory"].values()
        growth = max((t["ratio"] for t in trend), default=float("nan"))
        settled = max((t.get("settled", float("nan")) for t in trend), default=float("nan"))
        lines.append(
            f"{name:<8} largest memory growth: last third / first third {growth:.2f}, last / middle {settled:.2f}"
        )
    return lines


def _write(results: Mapping[str, Any]) -> Path:
    """The results as `.hubnode/chaos/<start>.json` and `latest.json`."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    written = RESULTS_DIR / f"{results['started'].replace(':', '-')}.json"
    written.write_text(json.dumps(results, indent=2))
    (RESULTS_DIR / "latest.json").write_text(json.dumps(results, indent=2))
    return written


def _keep_logs(started: str) -> Path:
    """The last lines of every container's log of the campaign's stack, kept before it is taken down."""
    folder = RESULTS_DIR / f"{started.replace(':', '-')}-logs"
    folder.mkdir(parents=True, exist_ok=True)
    for name in _docker("ps", "--all", "--filter", f"name=hubnode-{STACK}-", "--format", "{{.Names}}").split():
        done = subprocess.run(["docker", "logs", "--tail", "2000", name], capture_output=True, text=True, check=False)
        (folder / f"{name}.log").write_text(done.stdout + done.stderr)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """Bring up the campaign's federation, run the campaigns, write the results, take it down."""
    parser = argparse.ArgumentParser(prog="./dev chaos", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (default 100)")
    parser.add_argument("--seconds", type=float, default=600.0, help="length of each campaign (default 600)")
    parser.add_argument("--only", choices=CAMPAIGNS, help="run one campaign (default all)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat()}
    if args.only in (None, "busy-start"):
        hogs = os.cpu_count() or 2
        print(f"chaos: busy-start campaign, {hogs} spinning processes", file=sys.stderr, flush=True)
        results["busy-start"] = busy_start(hogs)
        _write(results)
    if args.only != "busy-start":
        _load_and_faults(args, results)
    print("\n".join(table(results)))
    print(f"results: {_write(results)}")
    return 0


def _load_and_faults(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The load and fault campaigns chosen, in turn on one federation; each one's figures written as it ends."""
    with bench_federation() as federation:
        results["up_s"] = round(federation.up_seconds, 1)
        for name in ("load", "faults"):
            if args.only in (None, name):
                print(
                    f"chaos: {name} campaign, {args.clients} clients, {args.seconds:.0f} s", file=sys.stderr, flush=True
                )
                try:
                    results[name] = campaign(federation, args.clients, args.seconds, with_faults=name == "faults")
                except Exception:
                    print(f"chaos: {name} campaign failed; logs: {_keep_logs(results['started'])}", file=sys.stderr)
                    raise
                _write(results)  # each campaign's figures kept, whatever the next one does


if __name__ == "__main__":
    sys.exit(main())
