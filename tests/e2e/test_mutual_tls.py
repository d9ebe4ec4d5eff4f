"""Issue 4's mutual-TLS negatives against a real gateway and connector: every refusal is a 4xx with an
OperationOutcome, and the refused node audits it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connector.tasks import Process, parameter, request_task
from infra import pki
from infra.pki_store import ca_key_file
from tests.e2e.conftest import Federation

Certificate = tuple[Path, Path] | None
ICD10GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"


def written(issued: pki.Issued, folder: Path, name: str) -> tuple[Path, Path]:
    certificate, key = folder / f"{name}.crt", folder / f"{name}.key"
    certificate.write_bytes(pki.certificate_pem(issued.certificate))
    key.write_bytes(pki.key_pem(issued.key))
    return certificate, key


def federation_ca(federation: Federation) -> pki.Issued:
    folder = federation.state / "pki"
    return pki.Issued(
        pki.load_certificate((folder / "ca.crt").read_bytes()), pki.load_key(ca_key_file(folder).read_bytes())
    )


def no_certificate(_federation: Federation, _folder: Path) -> Certificate:
    return None


def another_ca(_federation: Federation, folder: Path) -> Certificate:
    stranger = pki.issue_ca("hubnode-local", datetime.now(UTC))
    return written(pki.issue_node(stranger, "practice", ["practice.hubnode.test"], datetime.now(UTC)), folder, "other")


def expired(federation: Federation, folder: Path) -> Certificate:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    issued = pki.issue_node(
        federation_ca(federation), "practice", ["practice.hubnode.test"], long_ago, validity=timedelta(days=1)
    )
    return written(issued, folder, "expired")


def not_on_the_allow_list(federation: Federation, folder: Path) -> Certificate:
    issued = pki.issue_node(federation_ca(federation), "intruder", ["intruder.hubnode.test"], datetime.now(UTC))
    return written(issued, folder, "intruder")


def wrong_role(federation: Federation, _folder: Path) -> Certificate:
    """The practice's own, valid certificate: but a practice may not start feasibility."""
    folder = federation.state / "pki"
    return folder / "practice.crt", folder / "practice.key"


def refusals(federation: Federation) -> list[dict[str, Any]]:
    """The dic connector's audit records of requests it did not serve."""
    return [event for event in federation.search("dic", "AuditEvent") if event["outcome"] != "0"]


@pytest.mark.parametrize(
    ("presented", "status", "reason"),
    [
        (no_certificate, 401, "NONE"),
        (another_ca, 401, "unable to verify"),
        (expired, 401, "expired"),
        (not_on_the_allow_list, 403, "not on the allow list"),
        (wrong_role, 403, "may not"),
    ],
)
def test_the_peer_door_refuses_and_audits(
    federation: Federation,
    tmp_path: Path,
    presented: Callable[[Federation, Path], Certificate],
    status: int,
    reason: str,
) -> None:
    certificate = presented(federation, tmp_path)
    task = request_task(
        Process.FEASIBILITY,
        [parameter("condition-code", "valueCoding", {"system": ICD10GM, "code": "C50"})],
        requester="practice",
        idempotency_key=f"e2e-mtls-{presented.__name__}",
    )
    # The audit search answers the newest records (a bounded page), so the new refusal is told by its id.
    before = {event["id"] for event in refusals(federation)}
    with federation.peer_client("dic", certificate) as peer:
        answer = peer.post("/fhir/Task", json=task, headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == status, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert reason in outcome["issue"][0]["diagnostics"]
    new = [event for event in refusals(federation) if event["id"] not in before]
    assert len(new) == 1, "the refusal is audited once"
    assert reason in new[0].get("outcomeDesc", "")


def test_an_identity_header_sent_to_the_public_door_is_not_trusted(federation: Federation) -> None:
    """A caller may not claim a peer's identity through the public door: its headers are dropped."""
    practice = (federation.state / "pki" / "practice.crt").read_text()
    with federation.client("dic") as public:
        answer = public.post(
            "/peer/fhir/Task",
            json=request_task(Process.PING, [], requester="practice"),
            headers={
                "Content-Type": "application/fhir+json",
                "X-Hubnode-Client-Verify": "SUCCESS",
                "X-Hubnode-Client-Cert": practice.replace("\n", "%0A"),
            },
        )
    assert answer.status_code == 404, answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
