"""The patient's pages: linking the login, consents (grant, withdraw, receipt), ledger, record, questionnaires."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.responses import Response

from portal import consent_modules, receipts
from portal.identity import PATIENT
from portal.ledger import ledger
from portal.patients import own
from portal.upstream import UpstreamError
from portal.web import Page, RefusalError

#: Enrolment codes as printed (`ABCD-EFGH-JKMN`); anything else is refused before the trust centre is asked.
_CODE = re.compile(r"^[A-Za-z0-9]{4}-?[A-Za-z0-9]{4}-?[A-Za-z0-9]{4}$")
#: The portal's aftercare questionnaire (journeys 3 and 5): item, answer range.
QUESTIONNAIRE = "https://hubnode.org/fhir/Questionnaire/aftercare-quality-of-life|1.0"
QUESTIONS = ("wellbeing", "pain", "fatigue")
MAX_NOTE = 1000


async def enrol(page: Page) -> Response:
    """Show the enrolment form, or redeem a code: the service account binds the login to the person."""
    user = page.require(PATIENT)
    if page.request.method == "GET":
        return page.render("enrol.html", done=False)
    form = await page.form()
    if user.patient:
        raise RefusalError(409, "reason_already_enrolled", f"{user.audit_name} is enrolled already", [user.patient])
    code = form.get("code", "").strip()
    if not _CODE.match(code):
        raise RefusalError(400, "reason_enrolment", "a malformed enrolment code")
    try:
        person = await page.state.trustcentre.redeem_enrolment(code, user.username or user.subject)
    except UpstreamError as exc:
        raise RefusalError(400 if exc.status == 404 else exc.status, "reason_enrolment", exc.message) from None
    await page.state.keycloak.bind_patient(user.subject, person)
    page.session.data["user"] = {**user.as_data(), "patient": person}
    await page.audit("enrol", [person])
    return page.render("enrol.html", done=True)


async def consents(page: Page) -> Response:
    """Each policy's state today and the history of the patient's decisions."""
    subject = await own(page.state, page.require(PATIENT))
    states = await page.state.trustcentre.policy_states(subject.person_id)
    history = await page.state.trustcentre.consents(subject.person_id)
    await page.audit("view-consents", [subject.person_id])
    return page.render(
        "consents.html",
        policies=consent_modules.POLICIES,
        states=states,
        history=list(reversed(history)),
        processes=consent_modules.PROCESSES,
    )


async def decide(page: Page) -> Response:
    """Grant or withdraw one policy; the receipt says what changed and what it now blocks."""
    user = page.require(PATIENT)
    form = await page.form()
    subject = await own(page.state, user)
    chosen = consent_modules.policy(page.request.path_params["code"])
    action = form.get("action", "")
    if chosen is None or action not in ("grant", "withdraw"):
        detail = f"{action[:20]!r} of policy {page.request.path_params['code'][:40]!r}"
        raise RefusalError(400, "reason_policy", detail, [subject.person_id])
    if action == "withdraw":
        consent_id, since = await page.state.trustcentre.withdraw(subject.person_id, chosen.code)
    else:
        consent_id, since = await page.state.trustcentre.grant(subject.person_id, chosen.code)
    await page.audit(f"consent-{action}", [subject.person_id], detail=f"policy {chosen.oid}, consent {consent_id}")
    receipt = {
        "consent": consent_id,
        "policy": chosen.oid,
        "decision": action,
        "from": since,
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "node": page.state.settings.site,
    }
    signed = page.state.signer.sign(receipt) if page.state.signer else ""
    return page.render(
        "receipt.html", receipt=receipt, policy=chosen, signed=signed, processes=consent_modules.PROCESSES
    )


async def verify_receipt(page: Page) -> Response:
    """Check a receipt someone shows: signed by a node of this federation, and what it says."""
    if page.request.method == "GET":
        return page.render("verify.html", checked=None)
    form = await page.form()
    if page.state.ca is None:
        raise RefusalError(503, "reason_upstream", "no federation CA to check receipts against")
    try:
        receipt, node = receipts.verify(form.get("receipt", "")[:20000], page.state.ca)
    except receipts.ReceiptInvalidError as exc:
        await page.audit("verify-receipt", [], "refused", detail=str(exc)[:300])
        return page.render("verify.html", 400, checked={"valid": False, "reason": str(exc)})
    await page.audit("verify-receipt", [], detail=f"signed by {node}")
    return page.render("verify.html", checked={"valid": True, "node": node, "receipt": receipt})


async def ledger_page(page: Page) -> Response:
    """Who used the patient's data, when, why."""
    subject = await own(page.state, page.require(PATIENT))
    found = await ledger(page.state, subject)
    await page.audit("view-ledger", [subject.person_id])
    return page.render(
        "ledger.html", entries=found.entries, unreachable=found.unreachable, projects=page.state.settings.projects
    )


async def record(page: Page) -> Response:
    """The patient's data at this node, each entry with the site that recorded it."""
    subject = await own(page.state, page.require(PATIENT))
    entries = await page.state.records.record(subject.patient)
    await page.audit("view-record", [subject.person_id], purpose=None)
    return page.render("record.html", entries=entries, subject=subject)


async def questionnaires(page: Page) -> Response:
    """The aftercare questionnaire; answers are stored at this node as a QuestionnaireResponse."""
    user = page.require(PATIENT)
    subject = await own(page.state, user)
    saved = False
    if page.request.method == "POST":
        form = await page.form()
        answers = {}
        for question in QUESTIONS:
            value = form.get(question, "")
            if value not in ("0", "1", "2", "3", "4"):
                raise RefusalError(400, "reason_input", f"answer {question}={value[:10]!r}", [subject.person_id])
            answers[question] = int(value)
        note = form.get("note", "").strip()[:MAX_NOTE]
        await page.state.records.store_questionnaire(subject.patient, questionnaire_response(answers, note))
        await page.audit("answer-questionnaire", [subject.person_id])
        saved = True
    earlier = await page.state.records.of_type(subject.patient, "QuestionnaireResponse")
    return page.render("questionnaires.html", questions=QUESTIONS, saved=saved, earlier=earlier)


def questionnaire_response(answers: dict[str, int], note: str) -> dict[str, object]:
    """A completed QuestionnaireResponse of the portal's questionnaire (subject set when stored)."""
    items: list[dict[str, object]] = [
        {"linkId": question, "answer": [{"valueInteger": value}]} for question, value in answers.items()
    ]
    if note:
        items.append({"linkId": "note", "answer": [{"valueString": note}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": QUESTIONNAIRE,
        "status": "completed",
        "authored": datetime.now(UTC).isoformat(timespec="seconds"),
        "item": items,
    }
