"""Console sign-in sessions: a random id in an HttpOnly cookie, the session kept in memory.

Signing in with an API token starts a session whose id is 32 random bytes (`secrets`); the
browser holds the id in a cookie (HttpOnly, SameSite=Strict, Secure over TLS) and the book keeps
only its SHA-256, so a copy of the book names no live cookie. The token stays beside the session
in this process's memory, never in the cookie, a URL, a page or a log: every console request is
authenticated by the service's token gate exactly as an API call is, so a revoked token ends its
sessions at once and a token's role and branches are the session's. Each session has its own
CSRF token, which every form carries and every POST must return.

A session ends on sign-out, after `idle` seconds without a request, and `lifetime` seconds after
sign-in. The book holds at most `limit` sessions (the oldest goes first), so sign-ins cannot
grow it without bound. A restart of the service signs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Session", "SessionBook", "csrf_matches"]

_ID_BYTES = 32
_LIMIT = 10_000


@dataclass
class Session:
    """One signed-in browser: its token (memory only), CSRF token, and times (monotonic)."""

    token: str = field(repr=False)
    csrf: str = field(repr=False)
    started: float
    seen: float


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("ascii", "replace")).digest()


def csrf_matches(session: Session, sent: str | None) -> bool:
    """Return whether a form's CSRF token is the session's (compared in constant time)."""
    return sent is not None and hmac.compare_digest(
        session.csrf.encode("ascii"), sent.encode("utf-8", "replace")
    )


class SessionBook:
    """The live console sessions of this process, by the SHA-256 of their cookie."""

    def __init__(
        self,
        *,
        idle: float,
        lifetime: float,
        limit: int = _LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Sessions end `idle` seconds after their last request, `lifetime` after sign-in."""
        if not (idle > 0 and lifetime > 0 and limit >= 1):
            raise ValueError(
                f"idle and lifetime must be > 0 seconds and limit >= 1; got idle={idle}, "
                f"lifetime={lifetime}, limit={limit}"
            )
        self._idle = idle
        self._lifetime = lifetime
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def start(self, token: str) -> tuple[str, Session]:
        """Return a new session's cookie value and the session, for a verified `token`."""
        session_id = secrets.token_urlsafe(_ID_BYTES)
        now = self._clock()
        session = Session(token=token, csrf=secrets.token_urlsafe(_ID_BYTES), started=now,
                          seen=now)  # fmt: skip
        with self._lock:
            self._sessions[_digest(session_id)] = session
            while len(self._sessions) > self._limit:
                self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """Return the live session of a cookie value and mark it seen; None when there is none.

        An expired session is dropped on the way.
        """
        if not session_id:
            return None
        key = _digest(session_id)
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.seen > self._idle or now - session.started > self._lifetime:
                del self._sessions[key]
                return None
            session.seen = now
            return session

    def end(self, session_id: str | None) -> None:
        """End the session of a cookie value (sign-out); nothing when there is none."""
        if session_id:
            with self._lock:
                self._sessions.pop(_digest(session_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
