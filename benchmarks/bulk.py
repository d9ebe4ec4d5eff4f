"""Bulk loading (issue 15): `hubnode load` of generated journeys vs the same patients POSTed straight to HAPI.

On the bench federation's dic (HAPI on PostgreSQL, its port published for the baseline): PATIENTS
journeys from fixtures/volume.py (some 60 resources each), in rounds of growing size. Each round is
written twice, a resource per line for the loader and a transaction Bundle per patient for the
baseline, and sent both ways, the order alternating from round to round:

- `hubnode load`: infra/load.py's `load` with the command's defaults, in a process of its own
  (benchmarks/loader_child.py), so that the peak RSS it reads with getrusage is the loader's; its time
  is what `load` measured (the interpreter's start is not the loader's work);
- BASELINE_CLIENTS clients POSTing one bundle per patient to HAPI's own transaction endpoint;
- the same clients validating as they go: each patient's resources to `Bundle/$validate` first, then
  the bundle. This is the naive loader that checks what it stores, as the loader does. Its patients
  are of a seed of their own: sent after the baseline's same bundles, its PUTs would change nothing.

Beside them, HAPI's profile validator alone: the same clients POSTing the round's resources to
`Bundle/$validate` in the batches the connector sends. The loader validates every resource it stores
on the same two cores, so no loader can outrun this: its resources/s over the baseline's is the
ceiling of the ratio. An untimed warm-up round lets every path's JVM code compile first. Goals: the
loader's resources/s at least the baseline's; its peak RSS flat in file size (the largest round's over
the smallest's, beside the ratio of their file sizes). The loader against the validating baseline
says what batching and pipelining gain where both do the same work.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.federation import PROJECT_DIR, STACK, Bench, BenchFederation, announce
from connector.profiles import VALIDATE_BATCH, validation_bundle
from fixtures.volume import write_volume

BENCHMARKS = ("bulk",)
#: Patients per timed round, growing (1,000 in all, some 60,000 resources): peak RSS against file size.
ROUNDS = (100, 300, 600)
WARM_UP_PATIENTS = 20
SEED = 15_000
#: Added to a round's seed for the validating baseline's patients, so no two rounds' patients meet.
VALIDATED_SEED_OFFSET = 500
SITE = "dic"
BASELINE_CLIENTS = 4
THROUGHPUT_RATIO_MIN = 1.0
VALIDATE_URL = "/fhir/Bundle/$validate"
PATHS = ("loader", "direct", "validated", "validator")

#: What one client sends in a row, each request after the answer to the one before: (URL, body) pairs.
Requests = Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Round:
    """One round: its name, how many patients, the seed of their volume, which path goes first."""

    name: str
    patients: int
    seed: int
    loader_first: bool
    warm_up: bool = False


def plan(rounds: Sequence[int] = ROUNDS, warm_up: int = WARM_UP_PATIENTS) -> list[Round]:
    """The warm-up, then the timed rounds, each of new patients, the order alternating."""
    planned = [Round("warm-up", warm_up, SEED, loader_first=True, warm_up=True)]
    planned += [
        Round(f"round {number}", patients, SEED + number, loader_first=number % 2 == 0)
        for number, patients in enumerate(rounds, start=1)
    ]
    return planned


def bench_bulk(federation: BenchFederation) -> dict[str, Any]:
    """Every round both ways; the figures per round and over the timed ones."""
    with tempfile.TemporaryDirectory(prefix="hubnode-bench-bulk-") as folder, ExitStack() as stack:
        clients = [stack.enter_context(federation.dic_hapi()) for _ in range(BASELINE_CLIENTS)]
        return summary([_round(federation.project, Path(folder), one, clients) for one in plan()])


def _round(project: Path, folder: Path, one: Round, clients: Sequence[httpx.Client]) -> dict[str, Any]:
    resources_file, bundles_file = folder / f"{one.seed}.ndjson", folder / f"{one.seed}-bundles.ndjson"
    written = write_volume(resources_file, one.patients, one.seed, site=SITE)
    write_volume(bundles_file, one.patients, one.seed, site=SITE, bundles=True)
    validated_file = folder / f"{one.seed}-validated.ndjson"
    validated = write_volume(validated_file, one.patients, one.seed + VALIDATED_SEED_OFFSET, site=SITE, bundles=True)
    paths: dict[str, Callable[[], dict[str, Any]]] = {
        "loader": lambda: run_loader(project, resources_file),
        "direct": lambda: {"seconds": post_each(each_to("/fhir", lines(bundles_file)), clients)},
        "validated": lambda: {
            "seconds": post_each(validated_transactions(validated_file), clients),
            "resources": validated.resources,
        },
        "validator": lambda: {"seconds": post_each(each_to(VALIDATE_URL, validation_batches(resources_file)), clients)},
    }
    figures: dict[str, Any] = {
        "name": one.name,
        "warm_up": one.warm_up,
        "patients": one.patients,
        "resources": written.resources,
        "file_bytes": resources_file.stat().st_size,
    }
    for path in PATHS if one.loader_first else PATHS[::-1]:
        announce(f"bulk {one.name}: {one.patients} patients ({written.resources} resources) by {path}")
        figures[path] = paths[path]()
    return figures


def run_loader(project: Path, path: Path) -> dict[str, Any]:
    """`load` of `path` into the bench federation's dic in a process of its own (benchmarks/loader_child.py)."""
    command = [sys.executable, "-m", "benchmarks.loader_child", str(project), STACK, SITE, str(path)]
    done = subprocess.run(command, check=True, cwd=PROJECT_DIR, capture_output=True, text=True)
    figures: dict[str, Any] = json.loads(done.stdout)
    if figures["refused"]:
        raise RuntimeError(f"the loader had {figures['refused']} lines refused; see {figures['report']}")
    return figures


def lines(path: Path) -> Iterator[bytes]:
    """The non-blank lines of `path`, one request body each."""
    with path.open("rb") as stream:
        yield from (line for line in stream if line.strip())


def validation_batches(path: Path) -> Iterator[bytes]:
    """The resources of `path` as the connector asks HAPI about them: collections of VALIDATE_BATCH."""
    stream = lines(path)
    while batch := list(itertools.islice(stream, VALIDATE_BATCH)):
        yield json.dumps(validation_bundle([json.loads(line) for line in batch])).encode()


def each_to(url: str, bodies: Iterable[bytes]) -> Iterator[Requests]:
    """Every one of `bodies` as a POST to `url` of its own."""
    return (((url, body),) for body in bodies)


def validated_transactions(path: Path) -> Iterator[Requests]:
    """Each transaction Bundle of `path`, after its resources are sent to `Bundle/$validate` as the connector does."""
    for line in lines(path):
        resources = [entry["resource"] for entry in json.loads(line)["entry"]]
        yield (VALIDATE_URL, json.dumps(validation_bundle(resources)).encode()), ("/fhir", line)


def post_each(work: Iterable[Requests], clients: Sequence[httpx.Client]) -> float:
    """Seconds the clients, side by side, took to send every item of `work`, each once and in its order.

    Items are taken as the clients ask for them. Anything but 200 or 201 stops the benchmark: a figure
    of errors is no figure.
    """
    lock = threading.Lock()
    pending = iter(work)

    def send(client: httpx.Client) -> None:
        while True:
            with lock:
                requests = next(pending, None)
            if requests is None:
                return
            for url, content in requests:
                response = client.post(url, content=content)
                if response.status_code not in (200, 201):
                    answer = f"{response.status_code}: {response.text[:300]}"
                    raise RuntimeError(f"POST {client.base_url}{url} answered {answer}")

    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        for future in [pool.submit(send, client) for client in clients]:
            future.result()
    return time.perf_counter() - started


def summary(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Throughput of every path over the timed rounds, the loader's ratios, and its peak RSS against file size."""
    timed = [r for r in rounds if not r["warm_up"]]
    resources = sum(r["resources"] for r in timed)
    loader_s = sum(r["loader"]["seconds"] for r in timed)
    direct_s = sum(r["direct"]["seconds"] for r in timed)
    validated_per_s = sum(r["validated"]["resources"] for r in timed) / sum(r["validated"]["seconds"] for r in timed)
    validator_s = sum(r["validator"]["seconds"] for r in timed)
    ratio = direct_s / loader_s
    smallest, largest = min(timed, key=lambda r: r["file_bytes"]), max(timed, key=lambda r: r["file_bytes"])
    return {
        "rounds": list(rounds),
        "patients": sum(r["patients"] for r in timed),
        "resources": resources,
        "loader_resources_per_s": resources / loader_s,
        "direct_resources_per_s": resources / direct_s,
        "validated_resources_per_s": validated_per_s,
        "validator_resources_per_s": resources / validator_s,
        "throughput_ratio": ratio,
        "ceiling_ratio": direct_s / validator_s,
        "validated_ratio": resources / loader_s / validated_per_s,
        "target_ratio_min": THROUGHPUT_RATIO_MIN,
        "met": ratio >= THROUGHPUT_RATIO_MIN,
        "peak_rss_mib": {r["name"]: r["loader"]["peak_rss_kib"] / 1024 for r in timed},
        "imports_rss_mib": {r["name"]: r["loader"]["imports_rss_kib"] / 1024 for r in timed},
        "peak_rss_growth": largest["loader"]["peak_rss_kib"] / smallest["loader"]["peak_rss_kib"],
        "file_growth": largest["file_bytes"] / smallest["file_bytes"],
    }


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table, if the bulk benchmark ran."""
    if "bulk" not in results:
        return []
    bulk = results["bulk"]
    verdict = "met" if bulk["met"] else "NOT met"
    return [
        (
            "bulk: hubnode load vs direct HAPI, resources/s",
            f"{bulk['loader_resources_per_s']:.0f} vs {bulk['direct_resources_per_s']:.0f}",
            f"{bulk['patients']} patients, {bulk['resources']} resources, {BASELINE_CLIENTS} direct clients",
        ),
        ("bulk: throughput ratio", f"{bulk['throughput_ratio']:.2f}", f"target >= {THROUGHPUT_RATIO_MIN}: {verdict}"),
        (
            "bulk: hubnode load vs direct HAPI validating first",
            f"{bulk['validated_ratio']:.2f}",
            f"{bulk['validated_resources_per_s']:.0f} resources/s: each patient to Bundle/$validate, then its bundle",
        ),
        (
            "bulk: HAPI's validator alone, resources/s",
            f"{bulk['validator_resources_per_s']:.0f}",
            f"the same resources in batches of {VALIDATE_BATCH}: ceiling of the ratio {bulk['ceiling_ratio']:.2f}",
        ),
        (
            "bulk: loader peak RSS, smallest to largest file",
            ", ".join(f"{mib:.0f}" for mib in bulk["peak_rss_mib"].values()) + " MiB",
            f"x{bulk['peak_rss_growth']:.2f} for files x{bulk['file_growth']:.1f} (flat: near x1)",
        ),
    ]


#: The benchmark run on the bench federation, after its own and before the portal's.
FEDERATED: Mapping[str, Bench] = {"bulk": bench_bulk}
