"""Measured runs: a failed run reports its log and leaves no process; the bench runs both engines.

The bench runs at 5,000 customers on both engines, each in its own process, as `make bench` runs
it at 10M.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pytest

from contracts.errors import ConfigError, FusionError
from labs.bench import SCALE_SIZES, bench_scale, scale_sizes
from labs.scale import ScaleConfig, measure_scale, scale_inputs


def _children() -> set[int]:
    """This process's descendants (other fixtures of the session, e.g. servers, may hold some)."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


@pytest.mark.slow  # ~2.5 s: it starts a scale run in a process of its own
def test_a_failed_run_reports_its_log_and_leaves_no_process(tmp_path: Path):
    inputs = scale_inputs(ScaleConfig(customers=1_000, seed=5), tmp_path / "cache")
    (inputs.root / "manifest.json").write_text("{}")
    before = _children()
    with pytest.raises(FusionError, match=r"(?s)exited with 1; its log ends:.*WorldError"):
        measure_scale(inputs, tmp_path / "run", progress=False)
    assert _children() <= before


def test_sizes_come_from_the_option_or_the_issue():
    assert scale_sizes(None) == scale_sizes("") == SCALE_SIZES == (100_000, 1_000_000, 10_000_000)
    assert scale_sizes("1000000, 100_000") == (100_000, 1_000_000)
    for bad in ("10", "a,b", ","):
        with pytest.raises(ConfigError, match="--scale-sizes"):
            scale_sizes(bad)


@pytest.mark.slow
def test_the_bench_runs_both_engines_in_their_own_processes(tmp_path: Path):
    before = _children()
    figures = {
        f.name: f
        for f in bench_scale(
            tmp_path / "work", sizes=(5_000,), cache=tmp_path / "cache", progress=False
        )
    }
    assert sorted(figures) == [
        "scale.5k.matches",
        "scale.in_process.5k.peak_rss_gb",
        "scale.in_process.5k.total_s",
        "scale.local2.5k.peak_rss_gb",
        "scale.local2.5k.total_s",
    ]
    matches = figures["scale.5k.matches"]
    assert matches.met is True and matches.value == matches.baseline > 3_000
    assert "identical" in matches.note and "DIFFER" not in matches.note
    assert "as the join found" in matches.note and "NOT" not in matches.note
    for engine in ("in_process", "local2"):
        assert figures[f"scale.{engine}.5k.total_s"].value > 0
        for stage in ("bank-keys", "vendor-partition", "psi-join", "features", "score"):
            assert stage in figures[f"scale.{engine}.5k.total_s"].note
        peak = figures[f"scale.{engine}.5k.peak_rss_gb"]
        assert 0.1 < peak.value < 8 and peak.met is True
    # The cluster's nannies and workers count: its tree holds more than the lone process.
    assert (
        figures["scale.local2.5k.peak_rss_gb"].value
        > figures["scale.in_process.5k.peak_rss_gb"].value
    )
    assert _children() <= before
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
    assert np.isfinite([f.value for f in figures.values()]).all()
