"""Portal benchmark (issue 13): a patient's ledger through the portal vs the connector's own audit search.

The ledger (`/portal/fhir/AuditEvent`) asks the trust centre, the node's connector and the portal's own
trail, merges and sorts: it should cost little more than one plain FHIR `AuditEvent` search that returns
the same connector entries. A patient at the dic is read `LEDGER_READS` times through the connector (each
read an audit entry about them), then both paths are timed in interleaved rounds on the bench federation.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from typing import Any

import httpx

from benchmarks.federation import FHIR_JSON, TIMEOUT_S, BenchFederation, _grant, _latency, _post, _progress
from conformance.logins import Login, access_token
from fixtures.synthetic import PatientProfile, patient_record
from servicekit.kvnr import KVNR_SYSTEM

BENCHMARKS = ("portal-ledger",)
LEDGER_READS = 500
ROUNDS = 30
LEDGER_SEED = 91_000
#: The site-admin demo user of the dic in Pulumi.federation.yaml: staff may read a patient's ledger.
STAFF = "desk.dic"
LEDGER_P95_RATIO_MAX = 1.5


def bench_ledger(federation: BenchFederation) -> dict[str, Any]:
    """p50/p95 of the ledger through the portal and of the connector's search for the same patient."""
    record = patient_record(PatientProfile(seed=LEDGER_SEED, site="dic", consent=()))
    kvnr = f"{KVNR_SYSTEM}|{record.person.kvnr}"
    with federation.client("dic") as connector, _staff(federation) as portal:
        _post(connector, "/fhir", json.dumps(record.bundle()).encode())
        _grant(federation, record)
        _progress(f"portal-ledger: {LEDGER_READS} reads of one patient, each an audit entry")
        for _ in range(LEDGER_READS):
            _get(connector, "/fhir/Patient", {"identifier": kvnr})
        ledger = _get(portal, "/portal/fhir/AuditEvent", {"patient.identifier": kvnr})
        names = sorted(
            {
                str(entity["what"]["identifier"]["value"])
                for entry in ledger.get("entry", [])
                for entity in entry["resource"].get("entity", [])
                if "identifier" in entity.get("what", {})
            }
        )
        plain = _get(connector, "/fhir/AuditEvent", {"entity": ",".join(names)})
        timings: dict[str, list[float]] = {"portal": [], "connector": []}
        paths = {
            "portal": lambda: _get(portal, "/portal/fhir/AuditEvent", {"patient.identifier": kvnr}),
            "connector": lambda: _get(connector, "/fhir/AuditEvent", {"entity": ",".join(names)}),
        }
        _progress(f"portal-ledger: {ROUNDS} interleaved rounds of both searches")
        for number in range(ROUNDS):
            for path in list(paths) if number % 2 else list(paths)[::-1]:
                started = time.perf_counter()
                paths[path]()
                timings[path].append(time.perf_counter() - started)
    figures = {path: _latency(seconds) for path, seconds in timings.items()}
    p95_ratio = figures["portal"]["p95_s"] / figures["connector"]["p95_s"]
    return {
        "reads": LEDGER_READS,
        "rounds": ROUNDS,
        "entries": {"portal": len(ledger.get("entry", [])), "connector": len(plain.get("entry", []))},
        **figures,
        "p95_ratio": p95_ratio,
        "target_p95_ratio_max": LEDGER_P95_RATIO_MAX,
        "met": p95_ratio <= LEDGER_P95_RATIO_MAX,
    }


def _staff(federation: BenchFederation) -> httpx.Client:
    """The dic's portal API as its desk, signed in at the node's Keycloak (password grant of local stacks)."""
    secrets = federation.state / "secrets" / "dic"
    base = f"https://127.0.0.1:{federation.gateway_ports['dic']}"
    login = Login(
        token_url=f"{base}/idp/realms/hubnode/protocol/openid-connect/token",
        client_id="portal",
        client_secret=secrets / "idp-portal-secret",
        username=STAFF,
        password=secrets / f"idp-user-{STAFF}",
    )
    ca_file = federation.state / "pki" / "ca.crt"
    token = access_token(login, ca_file)
    return httpx.Client(
        base_url=base,
        verify=ssl.create_default_context(cafile=ca_file),
        headers={"Authorization": f"Bearer {token}", "Accept": FHIR_JSON},
        timeout=TIMEOUT_S,
    )


def _get(client: httpx.Client, path: str, params: Mapping[str, str]) -> dict[str, Any]:
    """A search's Bundle; anything but 200 stops the benchmark (a figure of errors is no figure)."""
    response = client.get(path, params=dict(params))
    if response.status_code != 200:
        raise RuntimeError(f"GET {client.base_url}{path} answered {response.status_code}: {response.text[:500]}")
    answer: dict[str, Any] = response.json()
    return answer


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows for the printed table: both paths and the ratio against its target."""
    if "portal-ledger" not in results:
        return []
    ledger = results["portal-ledger"]
    rows = [
        (
            f"portal-ledger: {path} p50, p95",
            f"{ledger[path]['p50_s'] * 1000:.0f}, {ledger[path]['p95_s'] * 1000:.0f} ms",
            f"{ledger['entries'][path]} entries, {ledger['rounds']} rounds",
        )
        for path in ("portal", "connector")
    ]
    verdict = "met" if ledger["met"] else "NOT met"
    rows.append(
        ("portal-ledger: p95 ratio", f"{ledger['p95_ratio']:.2f}", f"target <= {LEDGER_P95_RATIO_MAX}: {verdict}")
    )
    return rows
