"""Emergency access ("break the glass"): a clinician sees a patient's record outside their consent, openly.

Without the patient's treatment consent the summary is refused; in an emergency a clinician may open
it anyway by stating a reason. The access is theirs alone, for that patient, for `VALIDITY`; every read
under it goes to the connector as purpose `emergency` with the reason (`servicekit.purpose`), so each
record of it (here, at the connector, in the patient's ledger on any node) is flagged and says why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, select

from portal.db import emergency_accesses
from servicekit.purpose import MAX_REASON, MIN_REASON

VALIDITY = timedelta(hours=1)


def stated_reason(text: str) -> str | None:
    """The reason as it will be recorded (one line), or None if it is too short, too long or not plain text."""
    reason = " ".join(text.split())
    return reason if MIN_REASON <= len(reason) <= MAX_REASON and reason.isprintable() else None


def start(engine: Engine, clinician: str, person_id: str, reason: str) -> datetime:
    """Open the patient's record to `clinician` for `VALIDITY`; when it closes again."""
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            emergency_accesses.insert().values(
                clinician=clinician, person_id=person_id, reason=reason, started=now, expires=now + VALIDITY
            )
        )
    return now + VALIDITY


def current_reason(engine: Engine, clinician: str, person_id: str) -> str | None:
    """The reason of `clinician`'s emergency access to the person still open now, if any."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(emergency_accesses.c.reason, emergency_accesses.c.expires)
            .where(and_(emergency_accesses.c.clinician == clinician, emergency_accesses.c.person_id == person_id))
            .order_by(emergency_accesses.c.started.desc())
        ).all()
    now = datetime.now(UTC)
    return next((row.reason for row in rows if row.expires.replace(tzinfo=row.expires.tzinfo or UTC) > now), None)
