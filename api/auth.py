"""Who is calling: bearer tokens checked against the store's token book, kept fresh.

The book is read once at start and reloaded from the store when it is older than a few
seconds, and on a miss when it is older than a second: a token made by `fusion token create`
works within a second, and a revocation by any writer stops it within a few. A revocation
through the running service (DELETE /v1/tokens) takes effect at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Literal

import duckdb

from fusion.store import Store
from fusion.tokens import Principal, TokenBook, revoke_token

__all__ = ["TokenGate"]

_RELOAD_SECONDS = 1.0  # on a miss: a new token works within a second
_REFRESH_SECONDS = 5.0  # on any request: a revocation by any writer stops the token


class TokenGate:
    """The token book of the running service: authenticate callers, revoke tokens."""

    def __init__(
        self,
        store: Store,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        *,
        clock: Callable[[], datetime],
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the book from `store`; later reloads read through `cursor()` (this thread's).

        `clock` dates revocations; `timer` (seconds, monotonic) ages the book.
        """
        self._cursor = cursor
        self._clock = clock
        self._timer = timer
        # Its own lock, taken only after the cursor is made: the service's other locks guard
        # what the event loop updates, and must never wait on a store read.
        self._lock = threading.Lock()
        self._book = TokenBook.load(store)
        self._loaded = self._timer()

    def authenticate(self, token: str | None) -> Principal | None:
        """Return the caller, or None.

        The token book is reloaded from the store when it is older than a few seconds, and on
        a miss when it is older than a second.
        """
        self._reload(older_than=_REFRESH_SECONDS)
        principal = self._book.verify(token)
        if principal is None and self._reload(older_than=_RELOAD_SECONDS):
            principal = self._book.verify(token)
        return principal

    def known(self, token: str | None) -> Principal | Literal[False] | None:
        """Return the caller as the book in memory says, without touching the store.

        False when the book cannot say: it is due for its refresh, or `token` is not in it and
        the book is old enough to reload on a miss. `authenticate` then decides (it reads the
        store, so an event loop hands it to a thread). Never slower than a miss: one digest.
        """
        age = self._timer() - self._loaded
        if age > _REFRESH_SECONDS:
            return False
        principal = self._book.verify(token)
        if principal is None and age > _RELOAD_SECONDS:
            return False
        return principal

    def revoke(self, token_id: str) -> bool:
        """Revoke a token in the store and drop it from memory at once; False if none was live."""
        cur = self._cursor()
        with self._lock:
            revoked = revoke_token(cur, token_id, now=self._clock())
            self._book = TokenBook.load(cur)
            self._loaded = self._timer()
        return revoked

    def _reload(self, *, older_than: float) -> bool:
        """Reload the token book if it is older than `older_than` seconds; return whether."""
        if self._timer() - self._loaded <= older_than:
            return False
        cur = self._cursor()
        with self._lock:
            if self._timer() - self._loaded > older_than:
                self._book = TokenBook.load(cur)
                self._loaded = self._timer()
        return True
