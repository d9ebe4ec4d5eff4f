"""A patient's ledger at the other nodes: each asked with a ticket the trust centre gave the patient's portal.

Starting side (`POST /fhir/$federationLedger`, the node's portal): the portal hands over its tickets,
one per node that knows the person (`trustcentre.ledger_tickets`); each goes to its node's peer door
at once, and the answers come back as one Bundle, every AuditEvent marked with the site that recorded
it (`source.site`), and an OperationOutcome entry for each node that could not answer, so the portal
can say whose entries are missing.

Receiving side (`POST /peer/fhir/$ledger`): the calling node is identified by its certificate; the
ticket is redeemed at the trust centre, which says whom it was issued to (it must be the caller) and
the one name this node knows the person by. The answer holds this node's audit records about that
name, stripped of every identifier, query and internal detail: what was done, when, by whom, why,
with which outcome. Answering is itself recorded, under that name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from connector.audit import exchange_record, record_alone
from connector.db import audit_log
from connector.peers import PeerError
from connector.processes import Node
from connector.transform import PERSON_SYSTEM
from connector.upstream import UpstreamRefused
from servicekit.fhir import FhirError, operation_outcome, parse_json_resource
from servicekit.purpose import OPERATIONS

OPERATION = "ledger"
#: The most tickets one request may carry: one per node and research pseudonym of one person.
MAX_TICKETS = 100
#: What an AuditEvent keeps on its way to another node.
SHARED_ELEMENTS = ("resourceType", "type", "subtype", "action", "recorded", "outcome", "agent", "purposeOfEvent")


def tickets_of(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (site, ticket) pairs of a `$federationLedger` request; 400 naming what is wrong."""
    found = []
    for index, parameter in enumerate(resource.get("parameter") or []):
        if not isinstance(parameter, dict) or parameter.get("name") != "ticket":
            raise FhirError(
                400, "invalid", "only `ticket` parameters are expected", (f"Parameters.parameter[{index}]",)
            )
        parts = {p.get("name"): p.get("valueString") for p in parameter.get("part") or [] if isinstance(p, dict)}
        site, ticket = parts.get("site"), parts.get("ticket")
        if not isinstance(site, str) or not isinstance(ticket, str) or not site or not ticket:
            where = (f"Parameters.parameter[{index}].part",)
            raise FhirError(400, "required", "each ticket needs the parts `site` and `ticket` (strings)", where)
        found.append((site, ticket))
    if len(found) > MAX_TICKETS:
        raise FhirError(413, "too-costly", f"{len(found)} tickets in one request; at most {MAX_TICKETS}")
    return found


async def gather(node: Node, tickets: list[tuple[str, str]]) -> dict[str, Any]:
    """Every ticket's node asked at once; their AuditEvents, and an outcome for each that did not answer."""
    answers = await asyncio.gather(*(_ask(node, site, ticket) for site, ticket in tickets))
    entries = [entry for answer in answers for entry in answer]
    events = sum(1 for entry in entries if entry["search"]["mode"] == "match")
    return {"resourceType": "Bundle", "type": "searchset", "total": events, "entry": entries}


async def _ask(node: Node, site: str, ticket: str) -> list[dict[str, Any]]:
    peer = node.federation.allow_list.by_site(site)
    if peer is None or site == node.site:
        return [_missing(site, f"{site!r} is not another node of this federation")]
    try:
        answer = await node.peers.ledger(peer, ticket)
    except PeerError as error:
        return [_missing(site, str(error))]
    events = [e.get("resource") for e in answer.get("entry") or [] if isinstance(e, dict)]
    return [
        {"resource": _shared(event, site), "search": {"mode": "match"}}
        for event in events
        if isinstance(event, dict) and event.get("resourceType") == "AuditEvent"
    ]


def _missing(site: str, why: str) -> dict[str, Any]:
    outcome = operation_outcome("transient", f"the ledger of node {site} could not be read: {why}")
    return {"resource": {**outcome, "id": site}, "search": {"mode": "outcome"}}


async def answer(node: Node, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """A peer's ledger request: this node's records about the ticket's person, without identifiers."""
    peer_site = "unknown"
    try:
        peer = node.federation.identify(headers)
        peer_site = peer.site
        system, value = await _redeemed(node, peer_site, _ticket(parse_json_resource(body, "Parameters")))
    except FhirError as error:
        await run_in_threadpool(
            record_alone, node.engine, exchange_record(OPERATION, peer_site, (), "refused", str(error))
        )
        raise
    names = [value]
    if system == PERSON_SYSTEM:
        patients = await node.hapi.search("Patient", {"identifier": f"{PERSON_SYSTEM}|{value}", "_elements": "id"})
        names += [f"Patient/{p['id']}" for p in patients if isinstance(p.get("id"), str)]
    rows, _ = await run_in_threadpool(audit_log.rows, node.engine, names, None, None)
    events = [_shared(audit_log.as_audit_event(row, []), node.site) for row in rows]
    detail = f"{len(events)} entries of the ledger read by {peer.site}"
    await run_in_threadpool(
        record_alone, node.engine, exchange_record(OPERATION, peer.site, [value], "success", detail, OPERATIONS)
    )
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(events),
        "entry": [{"resource": event, "search": {"mode": "match"}} for event in events],
    }


async def _redeemed(node: Node, peer_site: str, ticket: str) -> tuple[str, str]:
    """The name the ticket's person goes by here; 403 unless the trust centre issued it to the calling node."""
    try:
        requester, name = await node.trustcentre.redeem_ledger_ticket(ticket)
    except UpstreamRefused:
        raise FhirError(403, "forbidden", "this ledger ticket is not valid here", ("ticket",)) from None
    if requester != peer_site:
        raise FhirError(403, "forbidden", f"this ledger ticket was issued to another node, not {peer_site!r}")
    return name


def _ticket(parameters: Mapping[str, Any]) -> str:
    values = [
        p.get("valueString")
        for p in parameters.get("parameter") or []
        if isinstance(p, dict) and p.get("name") == "ticket"
    ]
    if len(values) != 1 or not isinstance(values[0], str) or not values[0]:
        raise FhirError(400, "required", "exactly one `ticket` parameter (valueString)", ("Parameters.parameter",))
    return values[0]


def _shared(event: Mapping[str, Any], site: str) -> dict[str, Any]:
    """What of an AuditEvent leaves a node: no ids, entities, queries or details; the site that recorded it."""
    kept = {key: event[key] for key in SHARED_ELEMENTS if key in event}
    return {**kept, "source": {"site": site, "observer": {"display": f"connector {site}"}}}
