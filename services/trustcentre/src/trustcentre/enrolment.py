"""Enrolment: binding a portal login to a person without trusting anything the user types.

A site's staff look the patient up by the site's own number (or the KVNR) and issue a one-time code,
the way hospital portals send a PIN letter; the patient, signed in to the node's portal, redeems it,
and the portal learns the id its node knows the person by (never the MPI, never a name or a birth
date). A code is valid for `VALIDITY`, once, at the site that issued it; what is stored is its hash.
An unknown, used, expired or foreign code is refused alike, so a guess learns nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS
from trustcentre.aliases import mpis_of
from trustcentre.auth import Role
from trustcentre.db import audit_log, enrolments
from trustcentre.fhir import Parameters, parameters
from trustcentre.linkage import Asserter, Identifier, check_identifiers
from trustcentre.persons import PERSON_SYSTEM, PersonIds
from trustcentre.web import Context, Endpoint, operation

VALIDITY = timedelta(days=30)
#: No 0/O, 1/I/L: codes are read off paper and typed in.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 12
REFUSED = "this enrolment code is not valid: unknown, already used, expired or issued by another site"


def new_code() -> str:
    """A fresh code, grouped for reading: `ABCD-EFGH-JKMN` (about 59 bits)."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def code_hash(code: str) -> str:
    """What is stored of a code: its hash, after dropping the reader's spaces, dashes and case."""
    normalised = "".join(c for c in code.upper() if c.isalnum())
    return hashlib.sha256(normalised.encode()).hexdigest()


def _site(context: Context) -> str:
    site = context.caller.site
    if site is None:
        raise FhirError(403, "forbidden", "enrolment codes are issued and redeemed by a node's portal, for its site")
    return site


def _short(params: Parameters, name: str) -> str:
    value = (params.string(name, required=False) or "").strip()
    if len(value) > 128:
        raise FhirError(400, "invalid", f"{name}: at most 128 characters", (name,))
    return value


def enrolment_endpoints(persons: PersonIds) -> Mapping[str, Endpoint]:
    """`$issueEnrolment` and `$redeemEnrolment`, both for a node's portal (role `enrolment`)."""

    def issue(context: Context, params: Parameters) -> dict[str, Any]:
        site = _site(context)
        found = [Identifier(system, value) for system, value in params.identifiers("identifier")]
        if len(found) != 1:
            raise FhirError(400, "invalid", "name the person by exactly one identifier", ("identifier",))
        [named] = found
        check_identifiers(found)
        if not Asserter(site, context.caller.identifier_systems).may_link(named):
            raise FhirError(
                403,
                "forbidden",
                f"{site!r} names persons here only by its own patient numbers or a KVNR",
                ("identifier",),
            )
        issued_by = _short(params, "issuedBy") or context.caller.name
        code, now = new_code(), datetime.now(UTC)
        with context.engine.begin() as connection:
            mpis = mpis_of(connection, [(named.system, named.value)])
            if len(mpis) != 1:
                raise FhirError(
                    404,
                    "not-found",
                    "no person with this identifier: ingest the patient's record first",
                    ("identifier",),
                )
            [mpi] = mpis
            connection.execute(
                enrolments.insert().values(
                    code_sha256=code_hash(code),
                    mpi=mpi,
                    site=site,
                    issued_by=issued_by,
                    issued=now,
                    expires=now + VALIDITY,
                )
            )
            person = persons.of(connection, site, [mpi])[mpi]
            detail = f"enrolment code issued by {issued_by}, valid until {(now + VALIDITY).date()}"
            audit_log.record(
                connection, context.success("$issueEnrolment", [mpi, named.value, person], OPERATIONS, detail)
            )
        return parameters(
            {"name": "code", "valueString": code},
            {"name": "expires", "valueDateTime": (now + VALIDITY).isoformat(timespec="seconds")},
        )

    def redeem(context: Context, params: Parameters) -> dict[str, Any]:
        site = _site(context)
        code = params.string("code") or ""
        account = _short(params, "account")
        now = datetime.now(UTC)
        with context.engine.begin() as connection:
            row = connection.execute(
                select(enrolments).where(enrolments.c.code_sha256 == code_hash(code), enrolments.c.site == site)
            ).first()
            expires = None if row is None else row.expires.replace(tzinfo=row.expires.tzinfo or UTC)
            if row is None or row.redeemed is not None or expires is None or expires < now:
                raise FhirError(404, "not-found", REFUSED, ("code",))
            connection.execute(
                update(enrolments)
                .where(enrolments.c.code_sha256 == row.code_sha256)
                .values(redeemed=now, account=account or None)
            )
            person = persons.of(connection, site, [row.mpi])[row.mpi]
            detail = f"enrolment redeemed by login {account or 'unnamed'}"
            audit_log.record(connection, context.success("$redeemEnrolment", [row.mpi, person], OPERATIONS, detail))
        return parameters({"name": "person", "valueIdentifier": {"system": PERSON_SYSTEM, "value": person}})

    return {
        "$issueEnrolment": operation("$issueEnrolment", Role.ENROLMENT, issue),
        "$redeemEnrolment": operation("$redeemEnrolment", Role.ENROLMENT, redeem),
    }
