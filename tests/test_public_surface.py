"""Each module says what it exports, derived rather than pinned (one test for the whole tree).

A module's `__all__` must name every public function, class and constant it defines itself (not
the names it imports), and every name it lists must exist. A package's `__all__` names its public
submodules. Nothing is pinned as a literal list: adding a public name means exporting it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

PACKAGES = ("contracts", "matcher", "fusion", "labs", "api")


def _modules() -> list[str]:
    names: list[str] = []
    for package in PACKAGES:
        names.append(package)
        loaded = importlib.import_module(package)
        for info in pkgutil.walk_packages(loaded.__path__, prefix=f"{package}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                names.append(info.name)
    return names


def _defined_here(module: ModuleType) -> set[str]:
    """Public functions and classes whose home is `module` (imports excluded)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if (inspect.isfunction(value) or inspect.isclass(value)) and (
            value.__module__ == module.__name__
        ):
            names.add(name)
    return names


def _submodules(package: ModuleType) -> set[str]:
    return {
        info.name
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    }


@pytest.mark.parametrize("name", _modules())
def test_module_exports_what_it_defines(name: str):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    if hasattr(module, "__path__"):  # a package lists its public submodules, or re-exports
        missing_modules = _submodules(module) - set(exported)
        reexports = [n for n in exported if n not in _submodules(module)]
        if not reexports:
            assert not missing_modules, f"{name}.__all__ leaves out {sorted(missing_modules)}"
    for listed in exported:
        if not hasattr(module, listed):
            importlib.import_module(f"{name}.{listed}")  # a submodule named in a package
    unexported = _defined_here(module) - set(exported)
    assert not unexported, f"{name} defines public {sorted(unexported)} but does not export them"
