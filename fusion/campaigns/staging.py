"""Declared, staged things in the store: campaigns and journey strategies kept the same way.

Each kind has a `Book`: a table of declarations and a table of promotions with the same columns

    <key>, version, declaration (canonical JSON), salt, stage, created_at, created_by, updated_at
    <key>, from_stage, to_stage, promoted_at, actor, checks (JSON)

A declaration is stored as a `draft`, version 1, with a random 32-byte salt that keys its
assignment (never shown, never exported). While it is a draft, declaring it again replaces it
(version + 1); the same document again changes nothing; past the draft it is fixed, since what
was planned or run under it read those rules. Stage changes record who, when and the gate's
checks, and refuse when another change got there first. `fusion.campaigns.book` and
`fusion.journeys.book` call these with their own `Book`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from contracts.errors import CampaignError
from fusion.campaigns.declaration import STAGES
from fusion.store import Store

__all__ = [
    "SALT_BYTES",
    "Book",
    "Declared",
    "Promotion",
    "Stored",
    "declaration_salts",
    "move_stage",
    "promotions",
    "read_declaration",
    "read_declarations",
    "store_declaration",
]

SALT_BYTES = 32
_COLUMNS = "version, declaration, stage, created_at, created_by, updated_at"


class Declared(Protocol):
    """What a book stores: a named declaration with one canonical JSON text."""

    @property
    def name(self) -> str: ...

    def canonical_json(self) -> str: ...


D = TypeVar("D", bound=Declared)


@dataclass(frozen=True)
class Book(Generic[D]):
    """Where one kind of declaration lives, how it loads, and how messages name it."""

    noun: str  # "campaign", "strategy"
    table: str
    key: str
    history_table: str
    load: Callable[[Any], D]  # the parsed stored JSON -> the validated declaration
    made_under: str  # why a declaration is fixed past its draft: "its plans and readouts"
    declare_hint: str = ""  # after "declare it first"
    close_hint: str = ""  # after "or closed"


@dataclass(frozen=True)
class Stored(Generic[D]):
    """A declaration as the store holds it (its salt stays in the store)."""

    declared: D
    version: int
    stage: str
    created_at: datetime
    created_by: str
    updated_at: datetime


@dataclass(frozen=True)
class Promotion:
    """One stage change: from, to, when, who, and the gate's checks."""

    from_stage: str
    to_stage: str
    promoted_at: datetime
    actor: str
    checks: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Return the promotion as JSON-ready data."""
        return {
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "promoted_at": self.promoted_at.isoformat(),
            "actor": self.actor,
            "checks": self.checks,
        }


def _stored(book: Book[D], row: tuple[Any, ...]) -> Stored[D]:
    version, declaration, stage, created_at, created_by, updated_at = row
    declared = book.load(json.loads(declaration))
    return Stored(declared, int(version), stage, created_at, created_by, updated_at)


def _row(store: Store, book: Book[D], name: str) -> tuple[Any, ...] | None:
    return store.execute(
        f"SELECT {_COLUMNS} FROM {book.table} WHERE {book.key} = ?",  # noqa: S608
        [name],
    ).fetchone()


def store_declaration(
    store: Store, book: Book[D], declared: D, *, actor: str, now: datetime, salt: bytes | None
) -> tuple[Stored[D], bool]:
    """Return the stored declaration and whether this call changed the store.

    A new name is stored as a draft, version 1. The same document again changes nothing. A new
    document for a draft replaces it (version + 1); past its draft it raises CampaignError.
    """
    noun, name = book.noun, declared.name
    if salt is not None and len(salt) != SALT_BYTES:
        raise CampaignError(f"a {noun} salt is {SALT_BYTES} bytes", campaign=name)
    document = declared.canonical_json()
    stamp = now.replace(tzinfo=None)
    with store.transaction():
        row = _row(store, book, name)
        if row is None:
            store.execute(
                f"INSERT INTO {book.table} VALUES (?, 1, ?, ?, 'draft', ?, ?, ?)",  # noqa: S608
                [name, document, salt or secrets.token_bytes(SALT_BYTES), stamp, actor, stamp],
            )
            return read_declaration(store, book, name), True
        existing = _stored(book, row)
        if existing.declared.canonical_json() == document:
            return existing, False
        if existing.stage != "draft":
            raise CampaignError(
                f"{noun} {name!r} is in stage {existing.stage!r}: its declaration is fixed once "
                f"it leaves the draft, because {book.made_under} were made under it. Declare "
                f"the change as a new {noun} (another name), or close this one.",
                campaign=name,
            )
        store.execute(
            f"UPDATE {book.table} SET declaration = ?, version = version + 1, "  # noqa: S608
            f"updated_at = ? WHERE {book.key} = ?",
            [document, stamp, name],
        )
    return read_declaration(store, book, name), True


def read_declaration(store: Store, book: Book[D], name: str) -> Stored[D]:
    """Return the stored declaration; CampaignError naming the known ones when there is none."""
    row = _row(store, book, name)
    if row is None:
        known = [
            r[0]
            for r in store.execute(
                f"SELECT {book.key} FROM {book.table} ORDER BY 1"  # noqa: S608
            ).fetchall()
        ]
        listed = ", ".join(known[:20]) if known else "none yet"
        raise CampaignError(
            f"there is no {book.noun} {name!r} (known: {listed}); declare it first"
            f"{book.declare_hint}",
            campaign=name,
        )
    return _stored(book, row)


def read_declarations(store: Store, book: Book[D]) -> list[Stored[D]]:
    """Return every stored declaration, by name."""
    rows = store.execute(
        f"SELECT {_COLUMNS} FROM {book.table} ORDER BY {book.key}"  # noqa: S608
    ).fetchall()
    return [_stored(book, row) for row in rows]


def declaration_salts(store: Store, book: Book[D], names: list[str]) -> dict[str, bytes]:
    """Return the salt of each named declaration (for its planner or engine; never shown)."""
    rows = store.execute(
        f"SELECT {book.key}, salt FROM {book.table} WHERE list_contains(?, {book.key})",  # noqa: S608
        [names],
    ).fetchall()
    return {name: bytes(salt) for name, salt in rows}


def move_stage(
    store: Store,
    book: Book[D],
    name: str,
    *,
    from_stage: str,
    to_stage: str,
    actor: str,
    now: datetime,
    checks: Mapping[str, Any],
) -> None:
    """Move the declaration from `from_stage` to `to_stage` and record who did it and why.

    Raises CampaignError when the stored stage is no longer `from_stage` (another promotion got
    there first), so two promotions cannot both pass one gate.
    """
    if to_stage not in STAGES:
        raise CampaignError(f"unknown stage {to_stage!r}; one of {', '.join(STAGES)}")
    stamp = now.replace(tzinfo=None)
    with store.transaction():
        changed = store.execute(
            f"UPDATE {book.table} SET stage = ?, updated_at = ? "  # noqa: S608
            f"WHERE {book.key} = ? AND stage = ? RETURNING {book.key}",
            [to_stage, stamp, name, from_stage],
        ).fetchall()
        if not changed:
            current = read_declaration(store, book, name).stage
            raise CampaignError(
                f"{book.noun} {name!r} is in stage {current!r}, not {from_stage!r}: another "
                "promotion changed it; read its stage again and retry",
                campaign=name,
            )
        store.execute(
            f"INSERT INTO {book.history_table} VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
            [name, from_stage, to_stage, stamp, actor,
             json.dumps(dict(checks), sort_keys=True, default=str)],
        )  # fmt: skip


def promotions(store: Store, book: Book[D], name: str) -> list[Promotion]:
    """Return the declaration's promotions, oldest first."""
    rows = store.execute(
        "SELECT from_stage, to_stage, promoted_at, actor, checks "  # noqa: S608
        f"FROM {book.history_table} WHERE {book.key} = ? ORDER BY promoted_at, rowid",
        [name],
    ).fetchall()
    return [
        Promotion(a, b, at, actor, json.loads(checks) if checks else {})
        for a, b, at, actor, checks in rows
    ]
