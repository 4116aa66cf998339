"""Suite-wide collection order for `make test`'s two workers (pytest-xdist, --dist loadscope).

Each worker takes a whole test module at a time (its module fixtures are built once), and the
heaviest modules go first so that neither worker is left running a long one alone at the end.
Tests that use a slow fixture are marked slow here, so `make test-fast` leaves them out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Longest first: the demo-world acceptance run, the CLI's demo runs, the served demo run,
# the cluster-trained models. The readout-truth module sits between the two model-world modules:
# the first to start trains the shared model world (`model_world`, seconds), and a worker that
# asked for it at the same moment would only wait for it.
HEAVY_FIRST = (
    "tests/labs/test_acceptance.py",
    "tests/labs/test_cli.py",
    "tests/labs/test_cli_mistakes.py",
    "tests/api/",
    "tests/fusion/test_distributed_training.py",
    "tests/labs/world/test_readout_truth.py",
    "tests/fusion/reports/test_models.py",
    # The longest of `make test-fast` (nothing above runs there).
    "tests/fusion/test_query.py",
    "tests/fusion/test_ingest.py",
)


def _group(item: pytest.Item) -> str:
    path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
    return "tests/api/" if path.startswith("tests/api/") else path


def _rank(item: pytest.Item) -> int:
    group = _group(item)
    return next(
        (i for i, heavy in enumerate(HEAVY_FIRST) if group.startswith(heavy)), len(HEAVY_FIRST)
    )


# Fixtures that make a test slow: a trained model world, a Dask LocalCluster, a demo run (and the
# service serving it). `make test-fast` leaves out every test that uses one.
SLOW_FIXTURES = frozenset({"model_world", "cluster", "demo_run", "served"})


def _is_slow(item: pytest.Item) -> bool:
    uses = set(getattr(item, "fixturenames", ()))
    return bool(uses & SLOW_FIXTURES) or "local-cluster" in item.name


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: a module's tests keep their order
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
