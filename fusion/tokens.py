"""API tokens: 32 random bytes shown once, kept only as SHA-256, checked in constant time.

A token reads `bf_<token_id>_<secret>`: the id (8 random bytes, hex) names the row for audit
and revocation, the secret is 32 random bytes (URL-safe base64). The store keeps
SHA-256(token); a request's token is hashed, the row with that id is fetched, and the stored
hash compared with `hmac.compare_digest`. An unknown id or a malformed token is compared against
a fixed dummy hash in the same way, so a miss costs what a hit costs and timing tells nothing.
Tokens have high entropy, so a plain (unsalted) SHA-256 cannot be reversed by guessing.

Roles: vendor (pushes and reads its own batches; tied to a vendor id), analyst (queries its
branches, or every branch when made with `head_office=True`), campaign_tool (scores, lists,
outcomes), admin.

Every function takes the store or a cursor on it: the running service writes through a request
thread's cursor, never through the store's own connection (its ingest worker's).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

import duckdb

from contracts.errors import ConfigError
from fusion.store import Store

__all__ = [
    "ROLES",
    "IssuedToken",
    "Principal",
    "TokenBook",
    "TokenListing",
    "create_token",
    "list_tokens",
    "revoke_token",
]

ROLES = ("vendor", "analyst", "campaign_tool", "marketer", "admin")
_FORMAT = re.compile(r"^bf_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_BRANCH = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DUMMY = hashlib.sha256(b"bankfusion/unknown-token").digest()
_Db = Store | duckdb.DuckDBPyConnection  # the store, or a cursor on it (the service's threads)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id and role, with its branch scope or vendor."""

    token_id: str
    role: str
    branches: frozenset[str] | None  # analysts: None = every branch (head office)
    vendor_id: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `secret` is shown once and never stored."""

    principal: Principal
    secret: str

    def __repr__(self) -> str:
        return f"IssuedToken(token_id={self.principal.token_id!r}, role={self.principal.role!r})"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def _check(
    role: str, branches: Iterable[str] | None, vendor_id: str | None, head_office: bool
) -> str | None:
    """Return the branch list as stored (comma-separated, sorted), after checking the grant."""
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}; got {role!r}", setting="role")
    chosen = sorted(set(branches)) if branches is not None else None
    if chosen is not None and role != "analyst":
        raise ConfigError("only analyst tokens have branches", setting="branches")
    if head_office and (role != "analyst" or chosen is not None):
        raise ConfigError(
            "--head-office is for an analyst of every branch: give it without --branches, "
            "and only with --role analyst",
            setting="head_office",
        )
    if role == "analyst" and chosen is None and not head_office:
        # An omitted option must never widen a grant to the whole bank.
        raise ConfigError(
            "an analyst token needs --branches B001,B002 (the branches it may read), or "
            "--head-office for one that reads every branch",
            setting="branches",
        )
    if chosen is not None and (not chosen or not all(_BRANCH.match(b) for b in chosen)):
        raise ConfigError(
            "branches must be one or more branch ids (letters, digits, '-', '_'); use "
            "--head-office instead for an analyst of every branch",
            setting="branches",
        )
    if (role == "vendor") != (vendor_id is not None):
        raise ConfigError(
            "a vendor token needs --vendor (the vendor id its batches are signed with), and only "
            "a vendor token takes one",
            setting="vendor_id",
        )
    return ",".join(chosen) if chosen is not None else None


def _check_known(
    store: _Db, branch_text: str | None, vendor_id: str | None, vendors: Collection[str] | None
) -> None:
    """Refuse branches the bank's customers do not have and vendors its keyring does not trust."""
    if branch_text:
        rows = store.execute("SELECT DISTINCT branch_id FROM customers").fetchall()
        known = {str(branch) for (branch,) in rows}
        unknown = sorted(set(branch_text.split(",")) - known)
        if known and unknown:
            near = {b.upper() for b in unknown} & known
            raise ConfigError(
                f"no customer is in branch {', '.join(unknown)}"
                + (f" (branch ids are case-sensitive: {', '.join(sorted(near))}?)" if near else "")
                + f"; the branches are {_first(sorted(known))}",
                setting="branches",
            )
    if vendor_id is not None and vendors is not None and vendor_id not in vendors:
        raise ConfigError(
            f"the bank trusts no vendor {vendor_id!r}; trusted: {_first(sorted(vendors))} "
            "(trust a new vendor's signing key first: `fusion keys pair-vendor`)",
            setting="vendor_id",
        )


def _first(names: list[str], shown: int = 12) -> str:
    """Return up to `shown` names, comma-separated, and how many more there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(names[:shown]) or "none") + more


def create_token(
    store: _Db,
    *,
    role: str,
    now: datetime,
    branches: Iterable[str] | None = None,
    head_office: bool = False,
    vendor_id: str | None = None,
    label: str | None = None,
    known_vendors: Collection[str] | None = None,
) -> IssuedToken:
    """Return a new token for `role`, its hash recorded in the store (the secret is not).

    An analyst gets `branches`, or every branch with `head_office=True`; never by omission.
    Once the store holds customers, every branch must be one of theirs; a vendor id must be one
    of `known_vendors` (the vendors the bank's keyring trusts) when they are given. A token for
    a branch or vendor that does not exist is a typo that would fail later, silently.
    """
    branch_text = _check(role, branches, vendor_id, head_office)
    _check_known(store, branch_text, vendor_id, known_vendors)
    token_id = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    token = f"bf_{token_id}_{secret}"
    store.execute(
        "INSERT INTO api_tokens VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        [token_id, _digest(token), role, branch_text, vendor_id, label, now.replace(tzinfo=None)],
    )
    principal = Principal(
        token_id,
        role,
        frozenset(branch_text.split(",")) if branch_text else None,
        vendor_id,
        label,
    )
    return IssuedToken(principal, token)


def revoke_token(store: _Db, token_id: str, *, now: datetime) -> bool:
    """Revoke a token by id; return whether it existed and was live."""
    row = store.execute(
        "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL "
        "RETURNING token_id",
        [now.replace(tzinfo=None), token_id],
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class TokenListing:
    """One token as an admin sees it: never its secret nor its hash."""

    token_id: str
    role: str
    scope: str  # the analyst's branches, the vendor's id, or "" (every branch / no scope)
    label: str
    created_at: datetime
    revoked_at: datetime | None


def list_tokens(store: _Db) -> list[TokenListing]:
    """Return every token, oldest first (id, role, scope, label, created, revoked)."""
    rows = store.execute(
        "SELECT token_id, role, coalesce(branches, vendor_id, ''), coalesce(label, ''), "
        "created_at, revoked_at FROM api_tokens ORDER BY created_at"
    ).fetchall()
    return [TokenListing(*row) for row in rows]


class TokenBook:
    """The live tokens, read from the store once and refreshed on `reload()`.

    The service verifies every request against memory (no store round trip) and reloads the
    book from the store: at once when its admin route revokes a token, on a miss at most once a
    second (a new token works within a second), and every few seconds on any request.
    """

    def __init__(self, rows: Iterable[tuple[str, bytes, str, str | None, str | None, str | None]]):
        self._by_id: dict[str, tuple[bytes, Principal]] = {}
        for token_id, digest, role, branches, vendor_id, label in rows:
            scope = frozenset(branches.split(",")) if branches else None
            self._by_id[token_id] = (
                bytes(digest),
                Principal(token_id, role, scope, vendor_id, label),
            )

    @classmethod
    def load(cls, store: _Db) -> TokenBook:
        """Return the book of every live (unrevoked) token in the store."""
        rows = store.execute(
            "SELECT token_id, token_sha256, role, branches, vendor_id, label FROM api_tokens "
            "WHERE revoked_at IS NULL"
        ).fetchall()
        return cls(rows)

    def __len__(self) -> int:
        return len(self._by_id)

    def verify(self, token: str | None) -> Principal | None:
        """Return the principal of `token`, or None; the same work for every kind of miss."""
        text = token or ""
        found = _FORMAT.match(text)
        entry = self._by_id.get(found.group(1)) if found else None
        expected = entry[0] if entry else _DUMMY
        matches = hmac.compare_digest(_digest(text), expected)
        return entry[1] if entry is not None and matches else None
