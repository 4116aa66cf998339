"""The house's floors, read from the source: imports flow one way, no cycle, nothing private shared.

contracts <- matcher <- fusion <- labs, api. Every import counts, a lazy one inside a function too
(it is a dependency all the same); imports only for type checkers (`if TYPE_CHECKING:`) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contracts", "matcher", "fusion", "labs", "api")
# What each package may import from the project (itself included).
ALLOWED = {
    "contracts": {"contracts"},
    "matcher": {"contracts", "matcher"},
    "fusion": {"contracts", "matcher", "fusion"},
    "labs": {"contracts", "matcher", "fusion", "labs"},
    "api": {"contracts", "matcher", "fusion", "api"},
}
# The command line is the composition root: `fusion serve` starts the service.
ROOT_MAY_ALSO = {"labs.cli": {"api"}}
WEB = ("fastapi", "starlette", "uvicorn")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """Return (imported module, names taken from it, line) for every runtime import."""
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


SOURCES = _sources()
IMPORTS = {
    name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
    for name, path in SOURCES.items()
}


def _project_target(imported: str, names: list[str]) -> list[str]:
    """Return the project modules an import statement loads."""
    if imported.split(".")[0] not in PACKAGES:
        return []
    targets = [imported] if imported in SOURCES else []
    targets += [f"{imported}.{n}" for n in names if f"{imported}.{n}" in SOURCES]
    if not targets:  # a name of a module not found on disk: keep the nearest parent
        parts = imported.split(".")
        while parts and ".".join(parts) not in SOURCES:
            parts.pop()
        targets = [".".join(parts)] if parts else []
    return targets


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_imports_flow_one_way(module: str):
    floor = module.split(".")[0]
    allowed = set(ALLOWED[floor])
    for root, extra in ROOT_MAY_ALSO.items():
        if module == root or module.startswith(f"{root}."):
            allowed |= extra
    wrong = [
        f"line {line}: {imported}"
        for imported, _, line in IMPORTS[module]
        if imported.split(".")[0] in PACKAGES and imported.split(".")[0] not in allowed
    ]
    web = [f"line {line}: {imported}" for imported, _, line in IMPORTS[module] if floor != "api"
           and imported.split(".")[0] in WEB]  # fmt: skip
    assert not wrong, f"{module} imports above its floor: {wrong}"
    assert not web, f"{module} imports the web stack outside api/: {web}"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_private_name_is_imported_from_another_module(module: str):
    private = [
        f"line {line}: {imported}.{name}"
        for imported, names, line in IMPORTS[module]
        if imported.split(".")[0] in PACKAGES and imported != module
        for name in names
        if name.startswith("_") and f"{imported}.{name}" not in SOURCES
    ]
    private += [
        f"line {line}: {imported}"
        for imported, _, line in IMPORTS[module]
        if imported.split(".")[0] in PACKAGES
        and any(part.startswith("_") and part != "__init__" for part in imported.split("."))
    ]
    assert not private, f"{module} imports private names: {private}"


def test_no_import_cycle():
    graph = {
        module: {
            target
            for imported, names, _ in IMPORTS[module]
            for target in _project_target(imported, names)
            if target != module and not module.startswith(f"{target}.")
        }
        for module in SOURCES
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
