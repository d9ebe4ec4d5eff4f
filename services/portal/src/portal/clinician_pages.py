"""The clinician's pages: find a patient of the site, the cross-sector summary, and sending the journey on."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from portal import emergency
from portal.identity import CLINICIAN, User
from portal.interactions import detected_issues
from portal.patients import CLINICAL, Subject, named, person_id_of
from portal.records import KVNR_SYSTEM, Entry
from portal.web import Page, RefusalError, redirect
from servicekit.purpose import EMERGENCY, TREATMENT

LOG = logging.getLogger("portal.emergency")

_VALUE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Findings from another site younger than this are worth a look before an order is repeated.
RECENT_DAYS = 365
EXAMINATIONS = ("Observation", "Procedure")


def system_of(page: Page, kind: str) -> str:
    """The identifier system a URL's kind names: the KVNR, or this site's own patient numbers."""
    systems = {"kvnr": KVNR_SYSTEM, "local": page.state.settings.local_system}
    if kind not in systems:
        raise RefusalError(404, "reason_not_found", f"no identifier kind {kind[:20]!r}")
    return systems[kind]


async def find(page: Page) -> Response:
    """The search form; a search goes on to the patient's summary."""
    page.require(CLINICIAN)
    kind, value = page.request.query_params.get("kind"), page.request.query_params.get("value", "").strip()
    if kind is None:
        return page.render("find.html")
    system_of(page, kind)
    if not _VALUE.match(value):
        raise RefusalError(400, "reason_input", f"patient number {value[:70]!r}")
    return redirect(f"{page.state.base_path}/patients/{kind}/{value}")


async def summary(page: Page) -> Response:
    """The patient's journey at this node from every site that sent it, with warnings and hints.

    Refused without the patient's treatment consent; the refusal offers a clinician emergency access.
    """
    user = page.require(CLINICIAN)
    try:
        subject = await _subject(page, user)
    except RefusalError as refused:
        if refused.reason == "reason_no_consent":
            refused.emergency_action = f"{page.request.url.path}/emergency"
        raise
    entries = await page.state.records.record(subject.patient, subject.emergency)
    statements = [e.resource for e in entries if e.kind == "MedicationStatement"]
    issues = detected_issues(subject.reference, statements)
    purpose = EMERGENCY if subject.emergency else TREATMENT
    await page.audit("view-summary", [subject.person_id], purpose=purpose, detail=subject.emergency)
    return page.render(
        "summary.html",
        subject=subject,
        entries=entries,
        issues=issues,
        elsewhere=examined_elsewhere(entries, page.state.settings.site, datetime.now(UTC).date()),
        peers=page.state.settings.peers,
        kind=page.request.path_params["kind"],
        value=page.request.path_params["value"],
        result=None,
    )


async def send_summary(page: Page) -> Response:
    """Start a careSummary of the patient to another site; the connector checks the consent again."""
    user = page.require(CLINICIAN)
    form = await page.form()
    subject = await _subject(page, user)
    target = form.get("target", "")
    if target not in page.state.settings.peers:
        raise RefusalError(400, "reason_input", f"careSummary to {target[:40]!r}", [subject.person_id])
    identifier = {"system": KVNR_SYSTEM, "value": subject.kvnr} if subject.kvnr else _named_identifier(page)
    task = await page.state.records.care_summary(target, identifier)
    await page.audit("start-careSummary", [subject.person_id], purpose="treatment", detail=f"to {target}")
    entries = await page.state.records.record(subject.patient, subject.emergency)
    statements = [e.resource for e in entries if e.kind == "MedicationStatement"]
    return page.render(
        "summary.html",
        subject=subject,
        entries=entries,
        issues=detected_issues(subject.reference, statements),
        elsewhere=examined_elsewhere(entries, page.state.settings.site, datetime.now(UTC).date()),
        peers=page.state.settings.peers,
        kind=page.request.path_params["kind"],
        value=page.request.path_params["value"],
        result=_task_result(task, target),
    )


async def start_emergency(page: Page) -> Response:
    """Open a patient's record outside their consent, with a stated reason, for an hour; recorded and flagged."""
    user = page.require(CLINICIAN)
    form = await page.form()
    identifier = _named_identifier(page)
    patient = await page.state.records.patient_by(identifier["system"], identifier["value"])
    if patient is None or not person_id_of(patient):
        raise RefusalError(404, "reason_no_patient", f"no patient {identifier['system']}|{identifier['value']}")
    person_id = person_id_of(patient)
    reason = emergency.stated_reason(form.get("reason", ""))
    if reason is None or form.get("confirm") != "yes":
        raise RefusalError(400, "reason_emergency", f"emergency access without a stated reason by {user.audit_name}")
    until = await run_in_threadpool(emergency.start, page.state.engine, user.audit_name, person_id, reason)
    await page.audit("emergency-access", [person_id], purpose=EMERGENCY, detail=reason)
    LOG.warning("emergency access by %s to person %s until %s", user.audit_name, person_id, until.isoformat())
    return redirect(f"{page.state.base_path}/patients/{page.request.path_params['kind']}/{identifier['value']}")


async def _subject(page: Page, user: User) -> Subject:
    identifier = _named_identifier(page)
    return await named(page.state, user, identifier["system"], identifier["value"], CLINICAL)


def _named_identifier(page: Page) -> dict[str, str]:
    kind, value = page.request.path_params["kind"], page.request.path_params["value"]
    system = system_of(page, kind)
    if not _VALUE.match(value):
        raise RefusalError(400, "reason_input", f"patient number {value[:70]!r}")
    return {"system": system, "value": value}


def examined_elsewhere(entries: list[Entry], site: str, today: date) -> list[tuple[Entry, int]]:
    """The newest finding per code that another site recorded recently, with its age in days."""
    newest: dict[str, tuple[Entry, int]] = {}
    for entry in entries:
        if entry.kind not in EXAMINATIONS or not entry.source or entry.source == site:
            continue
        when = _day(entry.resource)
        if when is None or (age := (today - when).days) > RECENT_DAYS:
            continue
        code = _code(entry.resource)
        if code not in newest or age < newest[code][1]:
            newest[code] = (entry, age)
    return sorted(newest.values(), key=lambda found: found[1])


def _day(resource: dict[str, Any]) -> date | None:
    for key in ("effectiveDateTime", "performedDateTime", "issued"):
        value = resource.get(key)
        if isinstance(value, str) and len(value) >= 10:
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                return None
    return None


def _code(resource: dict[str, Any]) -> str:
    codings = resource.get("code", {}).get("coding", []) if isinstance(resource.get("code"), dict) else []
    return next((f"{c.get('system')}|{c.get('code')}" for c in codings if isinstance(c, dict)), "")


def _task_result(task: dict[str, Any], target: str) -> dict[str, Any]:
    sent = next(
        (
            output.get("valueInteger")
            for output in task.get("output", [])
            if isinstance(output, dict)
            and output.get("type", {}).get("coding", [{}])[0].get("code") == "resources-sent"
        ),
        0,
    )
    reason = task.get("statusReason", {}).get("text", "") if isinstance(task.get("statusReason"), dict) else ""
    return {"completed": task.get("status") == "completed", "count": sent, "target": target, "reason": reason}
