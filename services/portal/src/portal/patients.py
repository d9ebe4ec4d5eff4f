"""Whose data a request is about, and whether the asker may see it: decided here, on the server, every time.

A patient sees only the person their login is enrolled as. A clinician sees patients of their site
(the node holds a record of them) whose treatment consent (policy .5) is given, or whose record they
opened in an emergency with a stated reason (`portal.emergency`); a consent's own state they may always
see, since it is the reason for what they are shown. Site staff see a patient's
consents and ledger (to answer a request for information), never clinical data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from portal import emergency
from portal.consent_modules import TREATMENT
from portal.identity import CLINICIAN, PATIENT, SITE_ADMIN, User
from portal.portal_state import PortalState
from portal.records import KVNR_SYSTEM, PERSON_SYSTEM
from portal.web import RefusalError

#: What each role may read about a patient: consent state, the ledger, clinical data.
CONSENTS, LEDGER, CLINICAL = "consents", "ledger", "clinical"
MAY_READ = {PATIENT: {CONSENTS, LEDGER, CLINICAL}, CLINICIAN: {CONSENTS, CLINICAL}, SITE_ADMIN: {CONSENTS, LEDGER}}


@dataclass(frozen=True)
class Subject:
    """The patient a request is about: the node's Patient and the id the node knows the person by."""

    patient: dict[str, Any]
    person_id: str
    #: The stated reason when a clinician sees the record outside the patient's consent, else "".
    emergency: str = ""

    @property
    def reference(self) -> str:
        """`Patient/<id>` at this node."""
        return f"Patient/{self.patient['id']}"

    @property
    def kvnr(self) -> str:
        """The patient's KVNR, if the node knows it."""
        return next((str(i.get("value")) for i in _identifiers(self.patient) if i.get("system") == KVNR_SYSTEM), "")


def person_id_of(patient: dict[str, Any]) -> str:
    """The id the node knows a Patient's person by (its connector added it at ingest)."""
    return next((str(i.get("value")) for i in _identifiers(patient) if i.get("system") == PERSON_SYSTEM), "")


async def own(state: PortalState, user: User) -> Subject:
    """The enrolled patient's own record at this node; refused while the login is not enrolled."""
    if not user.patient:
        raise RefusalError(403, "reason_not_enrolled", f"{user.audit_name} is not enrolled")
    patient = await state.records.patient_by(PERSON_SYSTEM, user.patient)
    if patient is None:
        raise RefusalError(404, "reason_no_patient", f"no record of enrolled person {user.patient}", [user.patient])
    return Subject(patient, user.patient)


async def named(state: PortalState, user: User, system: str, value: str, need: str) -> Subject:
    """The patient `system|value` names, if `user` may read `need` about them; refused (and why) otherwise."""
    roles = [role for role in (PATIENT, CLINICIAN, SITE_ADMIN) if user.has(role)]
    if not any(need in MAY_READ[role] for role in roles):
        raise RefusalError(403, "reason_role", f"{user.audit_name} ({', '.join(roles)}) may not read {need}")
    if user.has(PATIENT) and not (user.has(CLINICIAN) or user.has(SITE_ADMIN)):
        mine = await own(state, user)
        if not any(i.get("system") == system and i.get("value") == value for i in _identifiers(mine.patient)):
            raise RefusalError(
                403, "reason_not_yours", f"{user.audit_name} asked for {system}|{value}", [mine.person_id]
            )
        return mine
    patient = await state.records.patient_by(system, value)
    if patient is None or not person_id_of(patient):
        raise RefusalError(404, "reason_no_patient", f"no patient {system}|{value} at this node")
    subject = Subject(patient, person_id_of(patient))
    if need == CLINICAL and not await state.trustcentre.is_consented(subject.person_id, TREATMENT):
        reason = await run_in_threadpool(emergency.current_reason, state.engine, user.audit_name, subject.person_id)
        if reason is None or not user.has(CLINICIAN):
            raise RefusalError(
                403, "reason_no_consent", f"no treatment consent for {subject.reference}", [subject.person_id]
            )
        return Subject(patient, subject.person_id, reason)
    return subject


def _identifiers(patient: dict[str, Any]) -> list[dict[str, Any]]:
    found = patient.get("identifier")
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []
