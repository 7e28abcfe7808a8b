"""Console sign-ins: server-side sessions with an idle and an absolute limit, and a CSRF token.

The browser holds only a random token (HttpOnly, SameSite=Strict, Secure under TLS); the table
holds its SHA-256, the person, when it began and was last used, and the session's CSRF token,
so a stolen copy of the index cannot be replayed as a cookie and a sign-out or a disabled
account ends the session on the server.  Times are passed in (`now`), so expiry is tested
without waiting.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from storage.index import connect

__all__ = ["Session", "SessionStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS web_sessions (
    token_sha256 TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    csrf TEXT NOT NULL,
    started REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    account: str
    csrf: str
    started: float
    last_seen: float

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf, presented)


class SessionStore:
    def __init__(self, index_path: Path, idle_seconds: float, max_seconds: float) -> None:
        self._db = connect(index_path)
        self._db.executescript(SCHEMA)
        self.idle_seconds, self.max_seconds = idle_seconds, max_seconds

    def close(self) -> None:
        self._db.close()

    def begin(self, account: str, now: float) -> tuple[str, Session]:
        """A new session; returns the cookie's token (never stored) and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(account, secrets.token_urlsafe(32), now, now)
        self._db.execute("INSERT INTO web_sessions (token_sha256, account, csrf, started, last_seen) "
                         "VALUES (?, ?, ?, ?, ?)", (_digest(token), account, session.csrf, now, now))
        return token, session

    def resume(self, token: str | None, now: float) -> Session | None:
        """The live session behind a cookie, touched; None when absent or expired (and then gone)."""
        if not token:
            return None
        key = _digest(token)
        row = self._db.execute("SELECT account, csrf, started, last_seen FROM web_sessions WHERE token_sha256 = ?",
                               (key,)).fetchone()
        if row is None:
            return None
        session = Session(row["account"], row["csrf"], row["started"], row["last_seen"])
        if now - session.last_seen > self.idle_seconds or now - session.started > self.max_seconds:
            self.end(token)
            return None
        self._db.execute("UPDATE web_sessions SET last_seen = ? WHERE token_sha256 = ?", (now, key))
        return Session(session.account, session.csrf, session.started, now)

    def end(self, token: str) -> None:
        self._db.execute("DELETE FROM web_sessions WHERE token_sha256 = ?", (_digest(token),))

    def end_all(self, account: str) -> None:
        self._db.execute("DELETE FROM web_sessions WHERE account = ?", (account,))

    def sweep(self, now: float) -> None:
        """Forget expired sessions (they are refused anyway; this keeps the table small)."""
        self._db.execute("DELETE FROM web_sessions WHERE last_seen < ? OR started < ?",
                         (now - self.idle_seconds, now - self.max_seconds))
