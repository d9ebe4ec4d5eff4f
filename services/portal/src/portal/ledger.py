"""A patient's ledger: every recorded use of their data, at the trust centre and at every node of the federation.

The trust centre answers for the person under all their names and hands the portal the research
pseudonyms its own connector's extracts were sent under; so a research use shows with its project,
while the research node never learns who the patient is. The other nodes are asked through this
node's connector with the trust centre's tickets, one per node that knows the person
(`connector.federation_ledger`): they answer what they did, never how they name the patient. Each
entry keeps who recorded it and where; a node that could not answer is named, not silently left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from portal.db import audit_log
from portal.patients import Subject
from portal.portal_state import PortalState

PROJECT_SYSTEM = "urn:hubnode:project"


@dataclass(frozen=True)
class LedgerEntry:
    """One use of the patient's data as the ledger shows it."""

    when: str
    who: str
    what: str
    purpose: str
    project: str
    #: Why the glass was broken, for an emergency access outside the patient's consent; else "".
    reason: str
    outcome: str
    #: Which service recorded it (`trustcentre`, `connector`, `portal`), at which site ("" for the trust centre).
    recorder: str
    site: str
    event: dict[str, Any]


@dataclass(frozen=True)
class Ledger:
    """The entries, newest first, and the sites whose entries could not be read just now."""

    entries: list[LedgerEntry]
    unreachable: list[str]


async def ledger(state: PortalState, subject: Subject) -> Ledger:
    """Every entry about the patient, newest first."""
    central = await state.trustcentre.ledger(subject.person_id)
    pseudonyms = sorted(
        {
            str(entity.get("what", {}).get("identifier", {}).get("value"))
            for event in central
            for entity in event.get("entity", [])
            if isinstance(entity, dict) and "what" in entity
        }
        - {subject.person_id, "None"}
    )
    names = [subject.person_id, subject.reference, *pseudonyms]
    local = [_only(event, names) for event in await state.records.audit(names)]
    rows, subjects = await run_in_threadpool(audit_log.rows, state.engine, [subject.person_id], None, None)
    own = [audit_log.as_audit_event(row, subjects[row["id"]]) for row in rows]
    site = state.settings.site
    tickets = await state.trustcentre.ledger_tickets(subject.person_id)
    remote, unreachable = await state.records.federation_ledger(tickets) if tickets else ([], [])
    entries = [
        *(entry(event, "trustcentre", "") for event in central),
        *(entry(event, "connector", site) for event in local),
        *(entry(event, "portal", site) for event in own),
        *(entry(event, "connector", str(event.get("source", {}).get("site", ""))) for event in remote),
    ]
    return Ledger(sorted(entries, key=lambda e: e.when, reverse=True), unreachable)


def _only(event: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The event naming only this patient: one extract or read may name others, whom this ledger must not show."""
    kept = [
        entity
        for entity in event.get("entity", [])
        if not isinstance(entity, dict)
        or "what" not in entity
        or entity.get("what", {}).get("identifier", {}).get("value") in names
    ]
    return {**event, "entity": kept}


def entry(event: dict[str, Any], recorder: str, site: str) -> LedgerEntry:
    """An AuditEvent as a ledger line."""
    codings = [
        coding
        for concept in event.get("purposeOfEvent", [])
        if isinstance(concept, dict)
        for coding in concept.get("coding", [])
        if isinstance(coding, dict)
    ]
    purpose = next((str(c.get("code")) for c in codings if c.get("system") != PROJECT_SYSTEM), "")
    concepts = [c for c in event.get("purposeOfEvent", []) if isinstance(c, dict)]
    reason = str(concepts[0].get("text", "")) if purpose == "ETREAT" and concepts else ""
    project = next((str(c.get("code")) for c in codings if c.get("system") == PROJECT_SYSTEM), "")
    agents = event.get("agent", [])
    who = str(agents[0].get("who", {}).get("display", "")) if agents and isinstance(agents[0], dict) else ""
    subtype = event.get("subtype", [])
    what = str(subtype[0].get("code", "")) if subtype and isinstance(subtype[0], dict) else ""
    return LedgerEntry(
        when=str(event.get("recorded", ""))[:19].replace("T", " "),
        who=who.removeprefix("peer:"),
        what=what,
        purpose=purpose,
        project=project,
        reason=reason,
        outcome="success" if event.get("outcome") == "0" else "refused",
        recorder=recorder,
        site=site,
        event=event,
    )
