"""Federation benchmarks (issues 4 and 5): the connector and the processes against their baselines.

One three-node federation like `Pulumi.federation.yaml` (stack `bench-fed`, free ports, the dic on
PostgreSQL and also publishing its HAPI port so the baseline can write to it directly) is brought up
once with `hubnode up` from a scratch project folder and taken down with `down --volumes` at the
end, so a developer's or a test's federation is never touched. Every ratio compares two paths
measured in the same run, interleaved: a shared, noisy machine slows both alike.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from conformance.actions import SUITE_CREDENTIAL
from conformance.check import resolve_targets
from conformance.http import Call, Http, StepLog
from connector.tasks import Process, parameter, request_task
from fixtures.consents import broad_consent
from fixtures.corpora import CorpusBundle, mii_kds_bundles
from fixtures.synthetic import ICD10GM_SYSTEM, MEASUREMENTS, PatientProfile, PatientRecord, patient_record
from infra.stackfile import read_named_files
from servicekit.kvnr import KVNR_SYSTEM
from servicekit.timing import parse_server_timing

PROJECT_DIR = Path(__file__).resolve().parent.parent
#: In the order they run. The suite goes first: its scenarios expect a federation holding only what
#: they ingest (a feasibility count of `<5` at the practice), which the other benchmarks' patients break.
BENCHMARKS = ("redeploy", "suite", "connector-ingest", "care-summary", "feasibility")
STACK = "bench-fed"
#: The dic's HAPI runs on PostgreSQL, as at a site. On the embedded H2, HAPI's write of a resource at
#: a client-assigned id slows as the tables grow (31 resources: 92 ms empty, 216 ms after 60,000
#: more), while a conditional write does not, so an H2 baseline flatters whichever path the bench's
#: volume happens to favour.
DIC_DATABASE = "postgres"
SITES = ("dic", "practice", "research")
FHIR_JSON = "application/fhir+json"
TIMEOUT_S = 600.0
#: connector-ingest: an untimed warm-up round (re-keyed) lets both paths' JVM code compile first; the
#: first fresh round sends the bundles as they are, later ones re-keyed (new ids).
WARM_UP_ROUNDS = 1
FRESH_ROUNDS = 2
REPLAY_ROUNDS = 2
JOURNEY_RESOURCES = 1000
JOURNEY_ROUNDS = 3
JOURNEY_SEED = 77_000
FEASIBILITY_REQUESTS = 30
FEASIBILITY_CODE = "C50"
SUITE_REPLAY_ROUNDS = 2
TREATMENT_CONSENT = ("2", "3", "5")
TARGETS = {
    "connector_throughput_ratio_min": 0.8,
    "connector_p95_ratio_max": 1.25,
    "care_summary_ratio_max": 1.5,
    "redeploy_ratio_max": 0.1,
}


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(values: Sequence[float], percent: int) -> float:
    """The `percent`th percentile, interpolated between samples (so 30 samples give a real p95)."""
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def announce(message: str) -> None:
    """One progress line on stderr, so long bench runs show where they are while stdout stays the table."""
    print(f"federation: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BenchFederation:
    """The running bench federation: its project folder, published ports and secrets."""

    project: Path
    gateway_ports: Mapping[str, int]
    dic_fhir_port: int
    #: How long its first `hubnode up` took, from empty volumes to every health check passed.
    up_seconds: float

    @property
    def state(self) -> Path:
        """Where `hubnode` keeps the stack's secrets and PKI."""
        return self.project / ".hubnode" / STACK

    def client(self, site: str, credential: str = "cn-admin-token") -> httpx.Client:
        """The node's public door, with the bearer token in its secret file `credential`."""
        return httpx.Client(**self.door(site, credential), timeout=TIMEOUT_S)

    def door(self, site: str, credential: str = "cn-admin-token") -> dict[str, Any]:
        """How a client reaches the node's public door: its base URL, the federation CA, the bearer token."""
        token = (self.state / "secrets" / site / credential).read_text(encoding="utf-8").strip()
        return {
            "base_url": f"https://127.0.0.1:{self.gateway_ports[site]}",
            "verify": ssl.create_default_context(cafile=self.state / "pki" / "ca.crt"),
            "headers": {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON},
        }

    def dic_hapi(self) -> httpx.Client:
        """The dic's HAPI itself, bypassing gateway and connector: the baseline of ingest."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.dic_fhir_port}",
            headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON},
            timeout=TIMEOUT_S,
        )


#: A benchmark run on the bench federation: its results as JSON.
Bench = Callable[["BenchFederation"], dict[str, Any]]


def run(chosen: Sequence[str], later: Mapping[str, Bench]) -> dict[str, Any]:
    """Bring the federation up, run the `chosen` benchmarks (ours in order, then `later` ones), take it down."""
    benches: dict[str, Bench] = {
        "redeploy": bench_redeploy,
        "connector-ingest": bench_connector_ingest,
        "care-summary": bench_care_summary,
        "feasibility": bench_feasibility,
        "suite": bench_suite,
        **later,
    }
    results: dict[str, Any] = {}
    with bench_federation() as federation:
        for name, bench in benches.items():
            if name in chosen:
                announce(f"{name}: running")
                results[name] = bench(federation)
    return results


@contextmanager
def bench_federation() -> Iterator[BenchFederation]:
    """`hubnode up` of the bench stack from a scratch project; `down --volumes` whatever happens."""
    with tempfile.TemporaryDirectory(prefix="hubnode-bench-fed-") as folder:
        project = Path(folder)
        (project / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
        config = yaml.safe_load((PROJECT_DIR / "Pulumi.federation.yaml").read_text())
        config["config"] = read_named_files(config["config"], PROJECT_DIR)  # the catalogues, written in place
        gateway_ports = {site: free_port() for site in SITES}
        dic_fhir_port = free_port()
        for node in config["config"]["hubnode:nodes"]:
            node["ports"] = {"gateway": gateway_ports[node["site"]], "peer": free_port()}
            if node["site"] == "dic":
                node["ports"]["fhir"] = dic_fhir_port
                node["database"] = DIC_DATABASE
                # Every KDS bundle validated against its profiles and stored, five of them with errors.
                node["validation"] = "warn"
        (project / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(config))
        try:
            announce(f"hubnode up --stack {STACK} (gateways {gateway_ports}, dic HAPI {dic_fhir_port})")
            up_seconds = timed_hubnode("bench federation", project, "up", "--stack", STACK)
            announce(f"up in {up_seconds:.0f} s")
            yield BenchFederation(project, gateway_ports, dic_fhir_port, up_seconds)
        finally:
            announce(f"hubnode down --stack {STACK} --volumes")
            run_hubnode(project, "down", "--stack", STACK, "--volumes")


def run_hubnode(project: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
    """The `hubnode` command on the bench project; its progress lines go to our stderr."""
    command = [sys.executable, "-m", "infra.cli", "--project-dir", str(project), *args]
    subprocess.run(command, check=True, cwd=PROJECT_DIR, stdout=sys.stderr, env=env)


def timed_hubnode(bench: str, project: Path, *args: str, env: Mapping[str, str] | None = None) -> float:
    """Seconds `hubnode ARGS` took on the scratch project (which must succeed), announced as part of `bench`."""
    print(f"{bench}: hubnode {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    run_hubnode(project, *args, env=env)
    return time.perf_counter() - started


def timed_post(client: httpx.Client, path: str, body: bytes) -> float:
    """Seconds one POST of `body` took; anything but success stops the benchmark (a figure of errors is no figure)."""
    started = time.perf_counter()
    response = client.post(path, content=body)
    elapsed = time.perf_counter() - started
    if response.status_code not in (200, 201):
        raise RuntimeError(f"POST {client.base_url}{path} answered {response.status_code}: {response.text[:500]}")
    return elapsed


def latency_figures(seconds: Sequence[float]) -> dict[str, float]:
    """Count, rate and percentiles of one path's timings, as every benchmark's table shows them."""
    return {
        "n": len(seconds),
        "per_s": len(seconds) / sum(seconds),
        "p50_s": statistics.median(seconds),
        "p95_s": percentile(seconds, 95),
    }


# --- connector-ingest ------------------------------------------------------------------------------


def bench_redeploy(federation: BenchFederation) -> dict[str, Any]:
    """`hubnode up` again with nothing changed against the first bring-up (issue 16: a re-deploy is a no-op).

    The dry run that tells site IT what an `up` would change is timed too: it reads the same plan.
    """
    dry_run = timed_hubnode("redeploy", federation.project, "up", "--stack", STACK, "--dry-run")
    unchanged = timed_hubnode("redeploy", federation.project, "up", "--stack", STACK)
    return {
        "first_up_s": federation.up_seconds,
        "unchanged_up_s": unchanged,
        "dry_run_s": dry_run,
        "ratio": unchanged / federation.up_seconds,
        "target_ratio_max": TARGETS["redeploy_ratio_max"],
    }


def bench_connector_ingest(federation: BenchFederation) -> dict[str, Any]:
    """The MII KDS bundles through gateway + connector vs a transaction POST straight to the same HAPI.

    After an untimed warm-up, fresh rounds write resources neither path has stored yet (round 1:
    the bundles as published; later rounds: every id re-keyed). Replay rounds send the published
    bundles again, which the connector turns into conditional updates that change nothing and HAPI
    into no-op PUTs.
    """
    corpora = mii_kds_bundles()
    rounds: list[tuple[str, str | None]] = [("warm-up", f"w{number}") for number in range(WARM_UP_ROUNDS)]
    rounds += [("fresh", f"f{number}" if number else None) for number in range(FRESH_ROUNDS)]
    rounds += [("replay", None)] * REPLAY_ROUNDS
    with federation.client("dic") as connector, federation.dic_hapi() as hapi:
        replay = _replay("connector-ingest", corpora, {"connector": _sender(connector), "hapi": _sender(hapi)}, rounds)
    results: dict[str, Any] = {
        "bundles": len(corpora),
        "measured_bundles": len(corpora) - len(replay.refused),
        "refused": replay.refused,
        "warm_up_rounds": WARM_UP_ROUNDS,
        "fresh_rounds": FRESH_ROUNDS,
        "replay_rounds": REPLAY_ROUNDS,
    }
    for kind in ("fresh", "replay"):
        connector_figures = latency_figures(replay.seconds(kind, "connector"))
        hapi_figures = latency_figures(replay.seconds(kind, "hapi"))
        throughput = connector_figures["per_s"] / hapi_figures["per_s"]
        p95 = connector_figures["p95_s"] / hapi_figures["p95_s"]
        results[kind] = {
            "connector": connector_figures,
            "hapi": hapi_figures,
            "throughput_ratio": throughput,
            "p95_ratio": p95,
            "connector_phases_ms": replay.phases_ms(kind, "connector"),
            "met": throughput >= TARGETS["connector_throughput_ratio_min"]
            and p95 <= TARGETS["connector_p95_ratio_max"],
        }
    return results


@dataclass(frozen=True)
class Sent:
    """One bundle sent: seconds taken (serialising included), HTTP status, answer excerpt, server phases (ms)."""

    seconds: float
    status: int
    excerpt: str
    phases: Mapping[str, float]


#: One way of sending a bundle to a node.
Sender = Callable[[Mapping[str, Any]], Sent]


def _sender(client: httpx.Client) -> Sender:
    """POST a bundle to `/fhir` of `client`: the connector's ingest, or HAPI's own transaction endpoint."""

    def send(bundle: Mapping[str, Any]) -> Sent:
        started = time.perf_counter()
        response = client.post("/fhir", content=json.dumps(bundle).encode())
        elapsed = time.perf_counter() - started
        phases = parse_server_timing(response.headers.get("server-timing", ""))
        return Sent(elapsed, response.status_code, response.text[:300], phases)

    return send


@dataclass(frozen=True)
class Replay:
    """Bundles sent by round kind and path; a bundle some path refused is left out of every path."""

    sent: dict[str, dict[str, list[Sent]]]
    refused: dict[str, str]

    def seconds(self, kind: str, path: str) -> list[float]:
        """Seconds per bundle of one round kind and path."""
        return [sent.seconds for sent in self.sent[kind][path]]

    def phases_ms(self, kind: str, path: str) -> dict[str, float]:
        """Mean milliseconds per bundle of each phase the server reported, and `unaccounted` for the rest.

        Phases that ran side by side (the profiles beside the store, under `warn`) add up to more than the
        request took: the excess is reported as `overlapped` instead.
        """
        sent = self.sent[kind][path]
        names = list(dict.fromkeys(name for one in sent for name in one.phases))
        if not names:
            return {}
        means = {name: statistics.mean(one.phases.get(name, 0.0) for one in sent) for name in names}
        rest = statistics.mean(one.seconds * 1000 - sum(one.phases.values()) for one in sent)
        means["unaccounted" if rest >= 0 else "overlapped"] = abs(rest)
        return means


def _replay(
    name: str, corpora: Sequence[CorpusBundle], senders: Mapping[str, Sender], rounds: Sequence[tuple[str, str | None]]
) -> Replay:
    """Each round (kind, re-key tag or None) sends every bundle by every path, the order alternating per bundle."""
    sent: dict[str, dict[str, list[Sent]]] = {kind: {path: [] for path in senders} for kind, _ in rounds}
    refused: dict[str, str] = {}
    paths = list(senders)
    for index, (kind, tag) in enumerate(rounds, start=1):
        announce(f"{name} round {index}/{len(rounds)} ({kind}): {len(corpora) - len(refused)} bundles by each path")
        for position, corpus in enumerate(corpora):
            if corpus.name in refused:
                continue
            bundle = rekeyed(corpus.bundle, tag) if tag else corpus.bundle
            order = paths if (index + position) % 2 else paths[::-1]
            answers = {path: senders[path](bundle) for path in order}
            failed = [f"{path} {one.status}: {one.excerpt}" for path, one in answers.items() if one.status != 200]
            if failed:
                refused[corpus.name] = "; ".join(failed)
                announce(f"{corpus.name} refused, left out: {refused[corpus.name][:200]}")
                continue
            for path, one in answers.items():
                sent[kind][path].append(one)
    return Replay(sent, refused)


def rekeyed(bundle: Mapping[str, Any], tag: str) -> dict[str, Any]:
    """`bundle` with every resource id replaced by a new one (at most 64 characters) and references following.

    A reference is any string equal to, or ending in `/`, `<Type>/<old id>` (relative references,
    full URLs, request URLs). Identifiers stay: the connector still links the Patient to the person
    the trust centre already knows, so in its path the Patient is updated while all else is new.
    """
    renamed = {
        f"{entry['resource']['resourceType']}/{entry['resource']['id']}": (
            f"{entry['resource']['resourceType']}/{tag}-{uuid.uuid5(uuid.NAMESPACE_URL, entry['resource']['id']).hex}"
        )
        for entry in bundle["entry"]
    }

    def rewrite(value: Any) -> Any:  # noqa: ANN401 -- any JSON value
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        if isinstance(value, str):
            for old, new in renamed.items():
                if value == old or value.endswith(f"/{old}"):
                    return value.removesuffix(old) + new
        return value

    copy: dict[str, Any] = rewrite(bundle)
    for entry in copy["entry"]:
        resource = entry["resource"]
        resource["id"] = renamed[f"{resource['resourceType']}/{resource['id']}"].split("/", 1)[1]
    return copy


# --- care-summary ----------------------------------------------------------------------------------


def journey(seed: int) -> PatientRecord:
    """One synthetic patient of exactly JOURNEY_RESOURCES resources: a record padded with Observations."""
    profile = PatientProfile(seed=seed, conditions=("C50.4",), procedures=("5-870.a2",))
    padding = JOURNEY_RESOURCES - len(patient_record(profile).resources)
    observations = tuple(itertools.islice(itertools.cycle(MEASUREMENTS), padding))
    return patient_record(
        PatientProfile(
            seed=seed, conditions=profile.conditions, procedures=profile.procedures, observations=observations
        )
    )


def bench_care_summary(federation: BenchFederation) -> dict[str, Any]:
    """A careSummary dic -> practice of a 1,000-resource journey vs ingesting the same bundle at the practice.

    Each round is a new patient (ingested at the dic and consented first, untimed), so both paths write
    resources the practice has not seen; the two run in alternating order, and whichever goes second
    finds the practice's Patient (one per person, keyed by the MPI id) already there.
    """
    care: list[float] = []
    local: list[float] = []
    dic_ingest: list[float] = []
    sent: list[int] = []
    with federation.client("dic") as dic, federation.client("practice") as practice:
        for number in range(JOURNEY_ROUNDS):
            record = journey(JOURNEY_SEED + number)
            body = json.dumps(record.bundle()).encode()
            announce(f"care-summary round {number + 1}/{JOURNEY_ROUNDS}: ingest {len(record.resources)} at dic")
            dic_ingest.append(timed_post(dic, "/fhir", body))
            grant_consent(federation, record)
            inputs = [
                parameter("target", "valueString", "practice"),
                parameter("patient", "valueIdentifier", {"system": KVNR_SYSTEM, "value": record.person.kvnr}),
            ]
            task = json.dumps(request_task(Process.CARE_SUMMARY, inputs, idempotency_key=uuid.uuid4().hex)).encode()

            def send(task: bytes = task) -> None:
                care.append(_timed_task(dic, task, sent))

            def ingest(body: bytes = body) -> None:
                local.append(timed_post(practice, "/fhir", body))

            for step in (send, ingest) if number % 2 == 0 else (ingest, send):
                step()
    return {
        "resources": JOURNEY_RESOURCES,
        "rounds": JOURNEY_ROUNDS,
        "resources_sent": sent,
        "dic_ingest_s": dic_ingest,
        "care_summary_s": care,
        "practice_ingest_s": local,
        "median_care_summary_s": statistics.median(care),
        "median_practice_ingest_s": statistics.median(local),
        "ratio": statistics.median(care) / statistics.median(local),
        "target_ratio_max": TARGETS["care_summary_ratio_max"],
    }


def grant_consent(federation: BenchFederation, record: PatientRecord) -> None:
    """Treatment consent for the record's person at the trust centre (gICS `$addConsent`, dic gateway)."""
    consent = broad_consent(record.person.identifier(), "2024-01-02T10:00:00+01:00", *TREATMENT_CONSENT)
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "domain", "valueString": "MII"}, {"name": "resource", "resource": consent}],
    }
    with federation.client("dic", "tc-admin-token") as trustcentre:
        timed_post(trustcentre, "/ttp-fhir/fhir/gics/$addConsent", json.dumps(body).encode())


def _timed_task(client: httpx.Client, task: bytes, sent: list[int] | None = None) -> float:
    """Seconds a process took from `POST /fhir/Task` to its answer; a Task that did not complete is an error."""
    started = time.perf_counter()
    response = client.post("/fhir/Task", content=task)
    elapsed = time.perf_counter() - started
    answer = response.json()
    if response.status_code != 201 or answer.get("status") != "completed":
        raise RuntimeError(f"Task answered {response.status_code}: {json.dumps(answer)[:500]}")
    if sent is not None:
        sent += [
            o["valueInteger"] for o in answer.get("output", []) if o["type"]["coding"][0]["code"] == "resources-sent"
        ]
    return elapsed


# --- feasibility -----------------------------------------------------------------------------------


def bench_feasibility(federation: BenchFederation) -> dict[str, Any]:
    """FEASIBILITY_REQUESTS feasibility queries started at the research node (dic and practice answer)."""
    criteria = [parameter("condition-code", "valueCoding", {"system": ICD10GM_SYSTEM, "code": FEASIBILITY_CODE})]
    seconds: list[float] = []
    with federation.client("research") as research:
        for _ in range(FEASIBILITY_REQUESTS):
            task = request_task(Process.FEASIBILITY, criteria, idempotency_key=uuid.uuid4().hex)
            seconds.append(_timed_task(research, json.dumps(task).encode()))
    return {
        "requests": len(seconds),
        "criteria": f"condition-code {FEASIBILITY_CODE}",
        "p50_s": statistics.median(seconds),
        "p95_s": percentile(seconds, 95),
        "seconds": seconds,
    }


# --- suite -----------------------------------------------------------------------------------------


def bench_suite(federation: BenchFederation) -> dict[str, Any]:
    """`python -m conformance.check` on the bench stack: wall time and steps/s; its ingest path vs the connector's.

    Without its opening `checking <name>: N scenarios, M steps` line the command did not run the suite,
    and there is no figure to give.
    """
    report_dir = federation.project / "suite-report"
    command = [sys.executable, "-m", "conformance.check", "--stack", STACK, "--project-dir", str(federation.project)]
    started = time.perf_counter()
    check = subprocess.run(
        [*command, "--report-dir", str(report_dir)], capture_output=True, text=True, check=False, cwd=PROJECT_DIR
    )
    wall = time.perf_counter() - started
    announced = [line for line in check.stdout.splitlines() if line.startswith("checking ")]
    if not announced:
        said = (check.stderr or check.stdout).strip()[-300:] or "no output at all"
        raise RuntimeError(f"the suite did not run (exit {check.returncode}): {said}")
    steps = int(announced[0].rsplit(", ", 1)[1].split()[0])
    return {
        "command": " ".join(command[1:]),
        "exit_status": check.returncode,
        "summary": [line for line in check.stdout.splitlines() if line.startswith(("certificate:", "report:"))],
        "wall_s": wall,
        "steps": steps,
        "steps_per_s": steps / wall,
        "ingest_path": _suite_ingest_path(federation),
    }


def _suite_ingest_path(federation: BenchFederation) -> dict[str, Any]:
    """Replays of the MII KDS bundles through the runner's `Http.send` vs a plain client, interleaved.

    Both serialise the bundle and go through the dic's gateway and connector; the difference is what
    the suite adds around a request (its own client, logging and excerpts of every exchange).
    """
    corpora = mii_kds_bundles()
    node = resolve_targets(STACK, None, federation.project).nodes["dic"]
    token = node.token(SUITE_CREDENTIAL)
    suite_http = Http(None, TIMEOUT_S)

    def through_suite(bundle: Mapping[str, Any]) -> Sent:
        started = time.perf_counter()
        answer = suite_http.send(Call(node, "POST", node.fhir_url, token, bundle), StepLog())
        return Sent(time.perf_counter() - started, answer.status, json.dumps(answer.body)[:300], {})

    try:
        with federation.client("dic") as client:
            senders = {"suite": through_suite, "connector": _sender(client)}
            replay = _replay("suite ingest path", corpora, senders, [("replay", None)] * SUITE_REPLAY_ROUNDS)
    finally:
        suite_http.close()
    suite, direct = replay.seconds("replay", "suite"), replay.seconds("replay", "connector")
    return {
        "bundles": len(corpora) - len(replay.refused),
        "refused": replay.refused,
        "rounds": SUITE_REPLAY_ROUNDS,
        "suite_total_s": sum(suite),
        "connector_total_s": sum(direct),
        "ratio": sum(suite) / sum(direct),
    }


# --- table -----------------------------------------------------------------------------------------


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table, each ratio with its target and whether it was met."""
    rows: list[tuple[str, str, str]] = []
    if "redeploy" in results:
        redeploy = results["redeploy"]
        rows += [
            (
                "redeploy: hubnode up first / unchanged / --dry-run",
                f"{redeploy['first_up_s']:.1f} / {redeploy['unchanged_up_s']:.1f} / {redeploy['dry_run_s']:.1f} s",
                f"{len(SITES)} nodes",
            ),
            (
                "redeploy: unchanged / first",
                f"{redeploy['ratio']:.3f}",
                _verdict(redeploy["ratio"] <= redeploy["target_ratio_max"], f"<= {redeploy['target_ratio_max']}"),
            ),
        ]
    if "connector-ingest" in results:
        ingest = results["connector-ingest"]
        rows.append(
            (
                "connector-ingest: bundles measured",
                f"{ingest['measured_bundles']} of {ingest['bundles']}",
                f"refused by a path, left out: {', '.join(ingest['refused']) or 'none'}",
            )
        )
        for kind in ("fresh", "replay"):
            figures = ingest[kind]
            rounds = ingest[f"{kind}_rounds"]
            rows.extend(
                (
                    f"connector-ingest {kind}: {path} bundles/s, p95",
                    f"{figures[path]['per_s']:.2f}, {figures[path]['p95_s']:.2f} s",
                    f"{figures[path]['n']} posts ({rounds} x {ingest['measured_bundles']} bundles)",
                )
                for path in ("connector", "hapi")
            )
            rows.append(
                (
                    f"connector-ingest {kind}: throughput ratio",
                    f"{figures['throughput_ratio']:.2f}",
                    _verdict(figures["throughput_ratio"] >= TARGETS["connector_throughput_ratio_min"], ">= 0.8"),
                )
            )
            rows.append(
                (
                    f"connector-ingest {kind}: p95 ratio",
                    f"{figures['p95_ratio']:.2f}",
                    _verdict(figures["p95_ratio"] <= TARGETS["connector_p95_ratio_max"], "<= 1.25"),
                )
            )
            phases = figures["connector_phases_ms"]
            if phases:
                rows.append(
                    (
                        f"connector-ingest {kind}: connector ms per bundle",
                        ", ".join(f"{name} {ms:.0f}" for name, ms in phases.items()),
                        f"HAPI direct {1000 / figures['hapi']['per_s']:.0f} ms per bundle",
                    )
                )
    if "care-summary" in results:
        care = results["care-summary"]
        rows += [
            (
                "care-summary: careSummary dic->practice (median)",
                f"{care['median_care_summary_s']:.2f} s",
                f"{care['resources']} resources, {care['rounds']} rounds, sent {care['resources_sent']}",
            ),
            ("care-summary: ingest at practice (median)", f"{care['median_practice_ingest_s']:.2f} s", ""),
            (
                "care-summary: ratio",
                f"{care['ratio']:.2f}",
                _verdict(care["ratio"] <= care["target_ratio_max"], "<= 1.5"),
            ),
        ]
    if "feasibility" in results:
        feasibility = results["feasibility"]
        rows.append(
            (
                "feasibility at research: p50 / p95",
                f"{feasibility['p50_s']:.2f} / {feasibility['p95_s']:.2f} s",
                f"{feasibility['requests']} requests, {feasibility['criteria']}",
            )
        )
    if "suite" in results:
        suite = results["suite"]
        rows += [
            (
                "suite: check wall time",
                f"{suite['wall_s']:.1f} s",
                f"target <= 300 s: {'met' if suite['wall_s'] <= 300 else 'NOT met'}; exit {suite['exit_status']}",
            ),
            ("suite: steps/s", f"{suite['steps_per_s']:.2f}", f"{suite['steps']} steps"),
        ]
        path = suite["ingest_path"]
        rows.append(
            (
                "suite: ingest path / connector (replay)",
                f"{path['ratio']:.2f}",
                f"{path['rounds']} x {path['bundles']} bundles, runner's Http.send vs plain client",
            )
        )
    return rows


def _verdict(met: bool, target: str) -> str:
    return f"target {target}: {'met' if met else 'NOT met'}"
