"""The portal's FHIR API (`/portal/fhir/...`): what the pages show, for programs, with a bearer token.

A token from the node's realm issued to the portal's client (checked against the realm's keys: an
expired or foreign token gets 401) carries the user's roles; the same rules as for the pages decide
what they may read (`portal.patients`: a wrong role or another patient gets 403). Searches name the
patient by `patient.identifier=<system>|<value>` (a patient may leave it out):

- `Consent?...` the patient's consents, oldest first (their history);
- `AuditEvent?...` the patient's ledger;
- `QuestionnaireResponse?...` their answers at this node; `POST QuestionnaireResponse` stores one
  (its `subject.identifier` names the patient);
- `DetectedIssue?...` interaction warnings over their medication at this node.

Every request is audited in the portal's trail, refusals included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portal.db import audit_log
from portal.identity import User
from portal.interactions import detected_issues
from portal.ledger import ledger
from portal.oidc import TokenRejectedError, roles_of
from portal.patients import CLINICAL, CONSENTS, LEDGER, Subject, named, own
from portal.portal_state import PortalState
from portal.upstream import UpstreamError
from portal.web import RefusalError
from servicekit.audit import AuditRecord
from servicekit.fhir import FhirError
from servicekit.web import error_response, fhir_response, read_body

MAX_BODY = 256 * 1024
#: What a search of each type needs to be allowed to read.
NEEDS = {"Consent": CONSENTS, "AuditEvent": LEDGER, "QuestionnaireResponse": CLINICAL, "DetectedIssue": CLINICAL}


async def fhir_endpoint(request: Request) -> Response:
    """`GET /portal/fhir/<Type>?patient.identifier=...` and `POST /portal/fhir/QuestionnaireResponse`."""
    state: PortalState = request.app.state.portal
    resource_type = request.path_params["type"]
    user: User | None = None
    try:
        user = await _bearer(state, request)
        _check_interaction(request.method, resource_type)
        if request.method == "POST":
            return await _store(state, request, user)
        subject = await _subject(state, user, request.query_params.get("patient.identifier"), NEEDS[resource_type])
        found = await _search(state, resource_type, subject)
        await _audit(state, request, user, f"fhir-{resource_type}", [subject.person_id], "success")
        return fhir_response({"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": found})
    except RefusalError as refused:
        await _audit(state, request, user, f"fhir-{resource_type}", refused.subjects, "refused", refused.detail)
        return error_response(FhirError(refused.status, _issue(refused.status), refused.detail or refused.reason))
    except FhirError as error:
        await _audit(state, request, user, f"fhir-{resource_type}", [], "refused", error.diagnostics)
        return error_response(error)
    except UpstreamError as error:
        await _audit(state, request, user, f"fhir-{resource_type}", [], "failed", error.message)
        return error_response(FhirError(error.status, "transient" if error.status >= 500 else "processing", str(error)))


def _check_interaction(method: str, resource_type: str) -> None:
    if resource_type not in NEEDS:
        raise FhirError(404, "not-supported", f"the portal serves {', '.join(NEEDS)}")
    if method == "POST" and resource_type != "QuestionnaireResponse":
        raise FhirError(405, "not-supported", "only QuestionnaireResponse can be stored here")


async def _bearer(state: PortalState, request: Request) -> User:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise FhirError(401, "login", "authenticate with 'Authorization: Bearer <token>' from this node's realm")
    try:
        claims = await state.oidc.verify(token.strip())
    except TokenRejectedError as exc:
        raise FhirError(401, "security", str(exc)) from None
    return User(
        subject=str(claims["sub"]),
        username=str(claims.get("preferred_username", "")),
        name=str(claims.get("name", "")),
        roles=roles_of(claims),
        patient=str(claims.get("patient", "")),
    )


async def _subject(state: PortalState, user: User, named_by: str | None, need: str) -> Subject:
    if not named_by:
        return await own(state, user)
    system, bar, value = named_by.rpartition("|")
    if not bar or not system or not value:
        raise FhirError(400, "invalid", "patient.identifier: <system>|<value>", ("patient.identifier",))
    return await named(state, user, system, value, need)


async def _search(state: PortalState, resource_type: str, subject: Subject) -> list[dict[str, Any]]:
    if resource_type == "Consent":
        found = await state.trustcentre.consents(subject.person_id)
    elif resource_type == "AuditEvent":
        found = [entry.event for entry in (await ledger(state, subject)).entries]
    elif resource_type == "QuestionnaireResponse":
        found = await state.records.of_type(subject.patient, "QuestionnaireResponse")
    else:
        statements = await state.records.of_type(subject.patient, "MedicationStatement")
        found = detected_issues(subject.reference, statements)
    return [{"resource": resource} for resource in found]


async def _store(state: PortalState, request: Request, user: User) -> Response:
    try:
        response = json.loads(await read_body(request, MAX_BODY))
    except ValueError:
        raise FhirError(400, "structure", "the body is not JSON") from None
    if not isinstance(response, dict) or response.get("resourceType") != "QuestionnaireResponse":
        raise FhirError(400, "invalid", "expected a QuestionnaireResponse")
    named_by = response.get("subject", {}).get("identifier") if isinstance(response.get("subject"), dict) else None
    reference = f"{named_by.get('system')}|{named_by.get('value')}" if isinstance(named_by, dict) else None
    subject = await _subject(state, user, reference, CLINICAL)
    stored = await state.records.store_questionnaire(subject.patient, {k: v for k, v in response.items() if k != "id"})
    await _audit(state, request, user, "fhir-store-QuestionnaireResponse", [subject.person_id], "success")
    return fhir_response(stored, 201)


async def _audit(  # noqa: PLR0913, PLR0917 -- the fields of one record
    state: PortalState,
    request: Request,
    user: User | None,
    operation: str,
    subjects: Sequence[str],
    outcome: str,
    detail: str = "",
) -> None:
    caller = user.audit_name if user else "portal:anonymous"
    record = AuditRecord(caller, operation, list(subjects), outcome, None, detail, str(request.url.query))
    await run_in_threadpool(audit_log.record_alone, state.engine, record)


def _issue(status: int) -> str:
    return {401: "login", 403: "forbidden", 404: "not-found"}.get(status, "invalid")
