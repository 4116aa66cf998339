"""The run folder a benchmark serves: a demo run, trained, scored and published."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fusion.pipeline.bank import open_bank, publish_snapshots
from labs.demo import run_demo

if TYPE_CHECKING:
    from fusion.runfolder import RunFolder

__all__ = ["demo_run_folder"]


def demo_run_folder(run: Path, *, customers: int, seed: int) -> RunFolder:
    """Return the run folder of a demo of `customers` from `seed`, published for serving."""
    summary = run_demo(run, customers=customers, seed=seed)
    with open_bank(summary.folder) as bank:
        publish_snapshots(bank)
    return summary.folder
