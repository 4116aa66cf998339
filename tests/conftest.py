"""Suite-wide collection order and grouping for `make test`'s two workers (pytest-xdist).

Each test module is one group (its module fixtures are built once, on one worker), and the whole
API folder is one group (its session fixture, a served demo run, is built once). The heaviest
groups go first so that neither worker is left running a long one alone at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Longest first: the demo-world acceptance run, the CLI's demo runs, the served demo run,
# the cluster-trained models.
HEAVY_FIRST = (
    "tests/labs/test_acceptance.py",
    "tests/labs/test_cli.py",
    "tests/api/",
    "tests/fusion/test_distributed_training.py",
    "tests/fusion/reports/test_models.py",
)


def _group(item: pytest.Item) -> str:
    path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
    return "tests/api/" if path.startswith("tests/api/") else path


def _rank(item: pytest.Item) -> int:
    group = _group(item)
    return next(
        (i for i, heavy in enumerate(HEAVY_FIRST) if group.startswith(heavy)), len(HEAVY_FIRST)
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: a module's tests keep their order
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
