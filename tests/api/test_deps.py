"""Role checks: `require()` knows every role of fusion.tokens.ROLES, and a typo fails at import;
the token gate answers from memory only while its book is fresh enough to."""

from __future__ import annotations

import importlib.util
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from api.auth import TokenGate
from api.deps import require
from fusion.store import Store
from fusion.tokens import ROLES, create_token

ROUTE_MODULE = """
from typing import Annotated

from fastapi import APIRouter, Depends

from api.deps import require
from fusion.tokens import Principal

router = APIRouter()


@router.get("/ledger")
def ledger(_: Annotated[Principal, Depends(require("admin", {role!r}))]) -> dict[str, str]:
    return {{}}
"""


def _import(path: Path) -> ModuleType:
    """Import the module at `path` under a name of its own; return it."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(path.stem, None)
    return module


def test_a_route_module_naming_an_unknown_role_fails_at_import(tmp_path: Path):
    typo = tmp_path / "typo_routes.py"
    typo.write_text(ROUTE_MODULE.format(role="analsyt"))
    with pytest.raises(ValueError, match=r"unknown role 'analsyt' given to require\(\)"):
        _import(typo)
    fine = tmp_path / "fine_routes.py"
    fine.write_text(ROUTE_MODULE.format(role="analyst"))
    assert len(_import(fine).router.routes) == 1


def test_require_takes_every_role_and_refuses_none():
    assert callable(require(*ROLES))
    with pytest.raises(ValueError, match="at least one role"):
        require()
    roles = "roles are vendor, analyst, campaign_tool, marketer, admin"
    with pytest.raises(ValueError, match=roles):
        require("vendor", "Admin")


def test_the_gate_answers_from_memory_only_while_its_book_may_still_be_trusted(tmp_path: Path):
    now = datetime(2026, 12, 8, tzinfo=UTC)
    with Store.open(tmp_path / "s.duckdb", key=secrets.token_hex(32)) as store:
        old = create_token(store, role="campaign_tool", now=now, label="old")
        ages = [0.0]
        gate = TokenGate(store, store.cursor, clock=lambda: now, timer=lambda: ages[-1])
        assert gate.known(old.secret) == old.principal
        assert gate.known("not a token") is None and gate.known(None) is None
        # Made after the book was read: a fresh book's miss is a miss, an older one reloads.
        new = create_token(store, role="marketer", now=now, label="new")
        assert gate.known(new.secret) is None
        ages.append(1.5)
        assert gate.known(new.secret) is False and gate.known(old.secret) == old.principal
        assert gate.authenticate(new.secret) == new.principal
        assert gate.known(new.secret) == new.principal
        # Past the refresh, even a known token waits for the reload (a revocation elsewhere).
        ages.append(ages[-1] + 6)  # 6 s after the reload above
        assert gate.known(old.secret) is False
        assert gate.authenticate(old.secret) == old.principal
