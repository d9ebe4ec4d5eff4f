"""Who is using the portal: the signed-in user as the portal keeps them in their session.

Roles are the realm's (`patient`, `clinician`, `site-admin`); each page names the role it needs and
the server refuses anyone else, whatever the browser shows. A patient is bound to a person only by
an enrolment (the `patient` claim, set by the portal's service account), never by what they type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PATIENT = "patient"
CLINICIAN = "clinician"
SITE_ADMIN = "site-admin"


@dataclass(frozen=True)
class User:
    """A signed-in user: their login (`subject`), names, realm roles and, for an enrolled patient, their person id."""

    subject: str
    username: str
    name: str
    roles: tuple[str, ...]
    patient: str = ""

    def has(self, role: str) -> bool:
        """Whether the user holds the realm role `role`."""
        return role in self.roles

    @property
    def audit_name(self) -> str:
        """How the user appears in audit records: the portal, then their login name."""
        return f"portal:{self.username or self.subject}"

    def as_data(self) -> dict[str, Any]:
        """The user as the session stores them."""
        return asdict(self)

    @classmethod
    def from_data(cls, data: object) -> User | None:
        """The user a session holds, None if it holds none (or something malformed)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                subject=str(data["subject"]),
                username=str(data["username"]),
                name=str(data["name"]),
                roles=tuple(str(r) for r in data["roles"]),
                patient=str(data.get("patient", "")),
            )
        except (KeyError, TypeError):
            return None
