"""examples/analyst_snapshot.ipynb, executed on a kernel against a published demo snapshot.

A small world goes through the real bank steps (sealed batch, ingest, extract, match:
`tests.support.coverage.MatchedStore`), is scored with a seeded ranking and published; the
notebook opens the head-office file as an analyst would, and every table it hands back is
checked: no published count under k = 10.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import nbformat
import numpy as np
import polars as pl
import pytest
from nbclient import NotebookClient

from labs.world.config import WorldConfig
from labs.world.files import WorldFiles
from labs.world.generate import generate_world
from tests.support.coverage import SNAPSHOT, MatchedStore

pytestmark = pytest.mark.slow  # a world, a match, a publish and a Jupyter kernel: ~10 s

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "analyst_snapshot.ipynb"
K = 10


def _scores(extract: pl.DataFrame, seed: int) -> pl.DataFrame:
    """A seeded acquisition ranking of the extract, shaped like `fusion score` writes it."""
    rng = np.random.default_rng(seed)
    score = rng.random(extract.height)
    decile = 10 - np.floor(pl.Series(score).rank("ordinal").to_numpy() * 10 / (len(score) + 1))
    return extract.select("customer_id", "branch_id").with_columns(
        pl.lit("acquisition").alias("ranking"),
        pl.Series("score", score),
        pl.Series("decile", decile.astype(np.int8)),
        *(pl.lit(None, pl.String).alias(c) for c in ("reason_1", "reason_2", "reason_3")),
        pl.lit("test").alias("model_version"),
    ).select("ranking", "customer_id", "branch_id", "score", "decile", "reason_1",
             "reason_2", "reason_3", "model_version")  # fmt: skip


@pytest.fixture(scope="module")
def head_office(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Return the published head-office snapshot of a 2,000-customer world and its key file."""
    root = tmp_path_factory.mktemp("notebook")
    generate_world(WorldConfig(customers=2_000, seed=5, snapshot_date=SNAPSHOT), root / "world")
    world = WorldFiles(root / "world")
    extract = pl.read_parquet(world.customers)
    bank = MatchedStore(root, extract, pl.read_parquet(world.vendor_users))
    key = secrets.token_urlsafe(32)
    with bank.store() as store:
        written = store.publish(
            root / "snapshots",
            head_office_key=key,
            branch_keys={},
            tables={"published_scores": _scores(extract, seed=5)},
        )
    key_file = root / "head_office.key"
    key_file.write_text(key + "\n")
    return written["head_office"], key_file


def test_the_notebook_runs_on_a_snapshot_and_publishes_no_cell_under_k(
    head_office: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    snapshot, key_file = head_office
    monkeypatch.setenv("BANKFUSION_SNAPSHOT", str(snapshot))
    monkeypatch.setenv("BANKFUSION_SNAPSHOT_KEY", str(key_file))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()

    tables = {
        output["data"]["application/json"]["table"]: output["data"]["application/json"]["counts"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "application/json" in output.get("data", {})
    }
    assert sorted(tables) == ["app_penetration", "coverage_by_age_band", "value_demand"]
    for name, counts in tables.items():
        cells = [v for column in counts.values() for v in column]
        shown = [v for v in cells if v is not None]
        assert shown, f"{name} publishes nothing"
        assert min(shown) >= K, f"{name} publishes a cell under k = {K}"
    dictionary = notebook.cells[3].outputs[0]["data"]["text/plain"]
    assert "The bank's customer id" in dictionary
