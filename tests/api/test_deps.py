"""Role checks: `require()` knows every role of fusion.tokens.ROLES, and a typo fails at import."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from api.deps import require
from fusion.tokens import ROLES

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
