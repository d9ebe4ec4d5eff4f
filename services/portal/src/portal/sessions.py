"""Server-side sessions: the browser holds only a random id; everything else stays in the portal's database.

Tokens never reach the browser. The cookie is `Secure`, `HttpOnly`, `SameSite=Lax` (Lax, not Strict:
the identity provider's redirect back to the callback is a cross-site navigation that must carry it)
and scoped to the portal's path. A session ends after its idle time, at logout, and is replaced by a
new id at sign-in, so an id seen before sign-in is worth nothing after it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from portal.db import sessions

COOKIE = "hubnode_portal"
#: The form field and header a state-changing request carries its CSRF token in.
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass
class Session:
    """One browser's session: its id (only in the cookie), and what the portal keeps for it."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)
    #: Set when the id was made for this request and the cookie must be sent.
    new: bool = False

    @property
    def csrf_token(self) -> str:
        """The token every form of this session carries; made on first use."""
        token = self.data.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            self.data["csrf"] = token
        return token

    def csrf_valid(self, presented: str | None) -> bool:
        """Whether a request carried this session's CSRF token (compared in constant time)."""
        token = self.data.get("csrf")
        return isinstance(token, str) and isinstance(presented, str) and hmac.compare_digest(token, presented)


class SessionStore:
    """Sessions in the portal's database, ended after `idle` without a request."""

    def __init__(self, engine: Engine, idle: timedelta) -> None:
        self._engine = engine
        self.idle = idle

    def load(self, cookie: str | None) -> Session:
        """The session a cookie names, or a new empty one (unknown, expired or missing cookie)."""
        now = datetime.now(UTC)
        if cookie:
            with self._engine.begin() as connection:
                row = connection.execute(select(sessions).where(sessions.c.id_sha256 == _hashed(cookie))).first()
                if row is not None and _aware(row.last_seen) > now - self.idle:
                    return Session(cookie, dict(row.data))
                if row is not None:
                    connection.execute(delete(sessions).where(sessions.c.id_sha256 == _hashed(cookie)))
        return Session(secrets.token_urlsafe(32), new=True)

    def save(self, session: Session) -> None:
        """Store the session's data and note this request as its last activity."""
        now = datetime.now(UTC)
        with self._engine.begin() as connection:
            changed = connection.execute(
                update(sessions)
                .where(sessions.c.id_sha256 == _hashed(session.id))
                .values(last_seen=now, data=session.data)
            ).rowcount
            if not changed:
                connection.execute(
                    insert(sessions).values(
                        id_sha256=_hashed(session.id), created=now, last_seen=now, data=session.data
                    )
                )
            connection.execute(delete(sessions).where(sessions.c.last_seen < now - self.idle))

    def renew(self, session: Session) -> Session:
        """The same data under a new id (at sign-in): the old id is dropped."""
        self.end(session)
        return Session(secrets.token_urlsafe(32), dict(session.data), new=True)

    def end(self, session: Session) -> None:
        """Forget the session."""
        with self._engine.begin() as connection:
            connection.execute(delete(sessions).where(sessions.c.id_sha256 == _hashed(session.id)))


def _hashed(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
