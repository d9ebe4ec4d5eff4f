"""The trust centre's roles: what a caller may do. Callers and tokens are the service kit's (`servicekit.auth`)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a caller may do; each operation requires one."""

    PSEUDONYMIZE = "pseudonymize"
    DEPSEUDONYMIZE = "depseudonymize"
    MANAGE_DOMAINS = "manage-domains"
    CONSENT_READ = "consent-read"
    CONSENT_WRITE = "consent-write"
    LINKAGE = "linkage"
    LINKAGE_REVIEW = "linkage-review"
    AUDIT_READ = "audit-read"
