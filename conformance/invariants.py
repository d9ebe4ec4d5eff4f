"""The invariants every journey checks, by name, and the pure part of checking them.

Scenario steps name invariants (`expect: {invariants: [no-identifying-data]}`); each name stands for a
requirement id, so a step that checks an invariant verifies that requirement. The checks that need only
the data in hand (does this extract leak who the patient is?) live here without I/O; those that need
the federation's state (audit records, pseudonyms across nodes) belong to the runner.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connector.pseudonymise import PSEUDONYM_SYSTEM_BASE
from fixtures.synthetic import Person


@dataclass(frozen=True)
class Invariant:
    """An invariant's name in scenario files, the requirement it verifies, and what it means."""

    name: str
    requirement: str
    meaning: str


INVARIANTS = {
    invariant.name: invariant
    for invariant in (
        Invariant(
            "no-identifying-data",
            "HUB-INV-01",
            "the response holds none of the patients' names, birth dates, addresses, KVNR or source identifiers",
        ),
        Invariant(
            "one-pseudonym-per-domain",
            "HUB-INV-02",
            "each patient has exactly one pseudonym in the domain, the same one as on every earlier step and node",
        ),
        Invariant(
            "consent-enforced",
            "HUB-INV-03",
            "nothing about a patient without the process's consent arrived at the target node",
        ),
        Invariant(
            "cross-node-audited",
            "HUB-INV-04",
            "both ends of the step's exchange hold an AuditEvent naming the process, the peer and the outcome",
        ),
    )
}

#: Keys whose values identify a person however they are spelled.
_IDENTIFYING_KEYS = ("name", "address", "telecom", "photo", "contact")


def identifying_leaks(data: object, persons: list[Person]) -> list[str]:
    """Where `data` (a pseudonymised resource or bundle) still identifies one of `persons`; empty if nowhere.

    A birth date may keep its year only, so a full date of any person is a leak even in another field.
    """
    leaks = []
    for location, key, value in _walk(data, "$"):
        if key in _IDENTIFYING_KEYS and value:
            leaks.append(f"{location}: identifying element `{key}` present")
        if not isinstance(value, str):
            continue
        for person in persons:
            hits = [part for part in person.identifying_values() if part and part in value]
            if hits:
                leaks.append(f"{location}: {value!r} contains {', '.join(sorted(set(hits)))} of {person.patient_id}")
    return leaks


def names_exchange(event: Mapping[str, Any], process: str, peers: Sequence[str], outcome: str) -> bool:
    """Whether an AuditEvent records `process` with one of `peers` (any peer if none given) and `outcome`."""
    codes = {subtype.get("code") for subtype in event.get("subtype", []) if isinstance(subtype, dict)}
    agents = {agent.get("who", {}).get("display") for agent in event.get("agent", []) if isinstance(agent, dict)}
    wanted = {f"peer:{peer}" for peer in peers}
    peer_named = bool(agents & wanted) if wanted else any(str(a).startswith("peer:") for a in agents)
    return process in codes and peer_named and event.get("outcome") == outcome


def pseudonyms_of(patient: Mapping[str, Any]) -> dict[str, list[str]]:
    """Domain -> the pseudonyms a Patient carries as identifiers in it."""
    found: dict[str, list[str]] = {}
    for identifier in patient.get("identifier", []):
        system, value = identifier.get("system", ""), identifier.get("value")
        if isinstance(system, str) and system.startswith(PSEUDONYM_SYSTEM_BASE) and isinstance(value, str):
            found.setdefault(system.removeprefix(PSEUDONYM_SYSTEM_BASE), []).append(value)
    return found


def _walk(data: object, location: str) -> Iterator[tuple[str, str, object]]:
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{location}.{key}"
            yield here, key, value
            yield from _walk(value, here)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _walk(value, f"{location}[{index}]")
