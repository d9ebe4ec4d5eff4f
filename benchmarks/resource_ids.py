"""HAPI's cost of the connector's writes at derived ids against writes by identifier (`connector.resource_ids`).

A one-node HAPI on PostgreSQL, as a site runs it. Each round, the connector's own transactions
(`connector.transform.to_transaction`, one per generated patient, without the trust centre's linkage)
are POSTed by CLIENTS clients both ways, the order alternating: at ids derived from their keys, and as
conditional updates on their source identifiers. Every round and way has patients of a seed of its own:
a PUT of what HAPI already holds changes nothing. The first WARM_UP_ROUNDS are not counted, while
HAPI's JIT compiles. Goal: derived ids no slower (the ratio at least 1).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import docker
import httpx

from benchmarks.bulk import each_to, post_each
from connector.transform import to_transaction
from fixtures.volume import journeys
from infra.local import LocalLauncher
from infra.plan import NodePlan
from infra.progress import Progress

PATIENTS = 100
ROUNDS = 5
WARM_UP_ROUNDS = 2
CLIENTS = 4
SEED = 71_000
SOURCE_SYSTEM = "https://hubnode.org/fhir/sid/source/dic"
#: The two ways, by the `derived_ids` of `to_transaction`.
WAYS = {"derived": True, "identifier": False}
RATIO_MIN = 1.0
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def bench_resource_ids(client: docker.DockerClient, plan: NodePlan) -> dict[str, Any]:
    """Bring `plan` (one HAPI on PostgreSQL) up, time both ways round by round, take it down."""
    launcher = LocalLauncher(client, Progress(), Path(tempfile.mkdtemp(prefix="hubnode-bench-")))
    try:
        launcher.up([plan])
        rounds = [timed_round(plan.endpoints["fhir"], number) for number in range(WARM_UP_ROUNDS + ROUNDS)]
    finally:
        launcher.down(plan.stack, remove_volumes=True)
    return summary(rounds)


def transactions(seed: int, *, derived_ids: bool, patients: int = PATIENTS) -> Iterator[dict[str, Any]]:
    """The connector's transaction of each of `patients` patients drawn with `seed`."""
    for record in journeys(patients, seed):
        entries = [{"resource": resource} for resource in record.resources]
        yield to_transaction(entries, SOURCE_SYSTEM, derived_ids=derived_ids)


def order(number: int) -> list[str]:
    """The ways in the order round `number` (from 0) takes them: alternating, so neither always goes first."""
    return list(WAYS) if number % 2 == 0 else list(reversed(WAYS))


def seed_of(number: int, way: str) -> int:
    """The seed of round `number`'s patients sent `way`: no two rounds or ways share one."""
    return SEED + len(WAYS) * number + list(WAYS).index(way)


def timed_round(base: str, number: int) -> dict[str, Any]:
    """Round `number`: seconds and resources each way."""
    figures: dict[str, Any] = {"round": number + 1, "warm_up": number < WARM_UP_ROUNDS}
    for way in order(number):
        bundles = list(transactions(seed_of(number, way), derived_ids=WAYS[way]))
        resources = sum(len(bundle["entry"]) for bundle in bundles)
        bodies = [json.dumps(bundle).encode() for bundle in bundles]
        print(f"resource-ids: round {number + 1}, {resources} resources {way}", file=sys.stderr)
        with ExitStack() as stack:
            clients = [
                stack.enter_context(httpx.Client(base_url=base, timeout=300.0, headers=HEADERS)) for _ in range(CLIENTS)
            ]
            figures[way] = {"resources": resources, "seconds": post_each(each_to("", bodies), clients)}
    return figures


def summary(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Resources/s each way over the counted rounds, and derived over identifier."""
    counted = [r for r in rounds if not r["warm_up"]]
    rate = {way: sum(r[way]["resources"] for r in counted) / sum(r[way]["seconds"] for r in counted) for way in WAYS}
    ratio = rate["derived"] / rate["identifier"]
    return {
        "rounds": list(rounds),
        "patients_per_round": PATIENTS,
        "derived_resources_per_s": rate["derived"],
        "identifier_resources_per_s": rate["identifier"],
        "ratio": ratio,
        "target_ratio_min": RATIO_MIN,
        "met": ratio >= RATIO_MIN,
    }


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table, if the benchmark ran."""
    if "resource-ids" not in results:
        return []
    figures = results["resource-ids"]
    verdict = "met" if figures["met"] else "NOT met"
    return [
        (
            "resource-ids: HAPI writes, derived vs identifier",
            f"{figures['derived_resources_per_s']:.0f} vs {figures['identifier_resources_per_s']:.0f}",
            f"resources/s, {ROUNDS} rounds of {PATIENTS} patients each way, {CLIENTS} clients",
        ),
        ("resource-ids: ratio", f"{figures['ratio']:.2f}", f"target >= {RATIO_MIN}: {verdict}"),
    ]
