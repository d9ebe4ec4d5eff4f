"""The trust centre's roles: what a caller may do. Callers and tokens are the service kit's (`servicekit.auth`).

A node's connector needs few of them: `linkage` (its own identifiers), `consent-check` (a yes or no
for one policy), `pseudonymize` in the domains of the projects it sends for. Reading a person's
consents, resolving pseudonyms and reviewing links are for the site's own staff. A node's portal
(`enrolment`, and consents and audit of the persons it names by its own person ids) acts for the
patients enrolled there. `ledger` lets a connector redeem a ticket another node's portal was given for
one of its patients' ledgers (`trustcentre.ledger_tickets`).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a caller may do; each operation requires one."""

    PSEUDONYMIZE = "pseudonymize"
    DEPSEUDONYMIZE = "depseudonymize"
    MANAGE_DOMAINS = "manage-domains"
    CONSENT_CHECK = "consent-check"
    CONSENT_READ = "consent-read"
    CONSENT_WRITE = "consent-write"
    LINKAGE = "linkage"
    LINKAGE_REVIEW = "linkage-review"
    AUDIT_READ = "audit-read"
    ENROLMENT = "enrolment"
    LEDGER = "ledger"
