"""The roles a local caller of the connector may hold; callers and tokens are the service kit's."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a local caller (a source system, a user, the conformance suite) may do."""

    INGEST = "ingest"
    READ = "read"
    PROCESS = "process"
    AUDIT_READ = "audit-read"
