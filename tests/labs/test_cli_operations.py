"""`fusion monitor` and `fusion cycle` on a trained run: a drifted later snapshot alerts, a stable
one does not; a repeated cycle changes nothing; two cycles never overlap."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result

from api.metrics import monitoring_lines
from fusion.pipeline.monitoring import latest_monitoring
from fusion.runfolder import RunFolder
from labs.world import WorldFiles
from labs.world.drift import Later
from tests.support.cli import first_line, fusion
from tests.support.monitored_runs import add_later_snapshot, trained_run

pytestmark = pytest.mark.slow  # one trained run, two later snapshots through a cycle each


@dataclass(frozen=True)
class LaterRun:
    folder: RunFolder
    snapshot: date
    world: WorldFiles
    lists_before: dict[str, str]
    cycle: Result


def list_targets(folder: RunFolder) -> dict[str, str]:
    return {p.name: os.readlink(p) for p in sorted(folder.lists.iterdir()) if p.is_symlink()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    return trained_run(tmp_path_factory.mktemp("operations") / "trained")


def cycled(trained: RunFolder, root: Path, kind: Later) -> LaterRun:
    shutil.copytree(trained.root, root, symlinks=True)
    folder = RunFolder(root)
    snapshot, world = add_later_snapshot(folder, kind)
    before = list_targets(folder)
    result = fusion(
        root, "cycle", "--snapshot", snapshot.isoformat(), "--extract", str(world.customers)
    )
    return LaterRun(folder, snapshot, world, before, result)


@pytest.fixture(scope="module")
def drifted(trained: RunFolder, tmp_path_factory: pytest.TempPathFactory) -> LaterRun:
    return cycled(trained, tmp_path_factory.mktemp("drifted") / "run", Later.DRIFTED)


@pytest.fixture(scope="module")
def stable(trained: RunFolder, tmp_path_factory: pytest.TempPathFactory) -> LaterRun:
    return cycled(trained, tmp_path_factory.mktemp("stable") / "run", Later.STABLE)


def stability(later: LaterRun) -> pl.DataFrame:
    report = later.folder.reports / f"monitoring-{later.snapshot.isoformat()}"
    return pl.read_parquet(report / "stability.parquet")


def test_training_wrote_a_profile_beside_every_monitored_model(trained: RunFolder):
    for name in ("acquisition", "rescue", "uplift"):
        version = (trained.models / name / "CURRENT").read_text().strip()
        profile = json.loads(
            (trained.models / name / version / "monitoring_profile.json").read_text()
        )
        assert profile["version"] == version and profile["features"]


def test_the_drifted_snapshot_alerts_and_its_lists_are_withheld(drifted: LaterRun):
    assert drifted.cycle.exit_code == 1, drifted.cycle.output
    assert "finding:" in drifted.cycle.output and "withheld" in drifted.cycle.output
    alerts = stability(drifted).filter(pl.col("status") == "alert")
    assert {"age", "ext_banking_share"} <= set(alerts["name"])
    report = drifted.folder.reports / f"monitoring-{drifted.snapshot.isoformat()}"
    vendor = pl.read_parquet(report / "vendor.parquet")
    banking = vendor.filter(pl.col("metric") == "penetration: Banking").row(0, named=True)
    assert banking["after"] == 0.0 and banking["status"] == "alert"
    assert (report / "monitoring.html").read_text().count("<img") == 3
    assert list_targets(drifted.folder) == drifted.lists_before  # branches see the old lists
    staged = drifted.folder.root / "cycles" / drifted.snapshot.isoformat() / "lists"
    assert sorted(p.name for p in staged.iterdir() if not p.name.startswith(".")) == [
        "food-coupon",
        "mobile-banking",
        "rescue",
    ]


def test_the_stable_snapshot_is_silent_and_its_lists_are_published(stable: LaterRun):
    assert stable.cycle.exit_code == 0, stable.cycle.output
    frame = stability(stable)
    assert frame.filter(pl.col("status") != "ok").is_empty()
    assert float(frame["index"].max()) < 0.1  # type: ignore[arg-type]
    assert list_targets(stable.folder) != stable.lists_before


def files_of(folder: RunFolder) -> dict[str, tuple[int, int]]:
    # The lock file records the pid of the last cycle; everything else must stay as it was.
    return {
        str(p.relative_to(folder.root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.root.rglob("*")
        if p.is_file() and p.name != "cycle.lock"
    }


def test_a_second_cycle_for_the_same_snapshot_writes_nothing(stable: LaterRun):
    before = files_of(stable.folder)
    again = fusion(
        stable.folder.root,
        "cycle",
        "--snapshot",
        stable.snapshot.isoformat(),
        "--extract",
        str(stable.world.customers),
    )
    assert again.exit_code == 0, again.output
    assert "nothing to do, nothing written" in again.output
    assert files_of(stable.folder) == before


def test_monitor_exits_1_on_the_drifted_snapshot_and_0_on_the_stable_one(
    drifted: LaterRun, stable: LaterRun
):
    alert = fusion(drifted.folder.root, "monitor", "--snapshot", drifted.snapshot.isoformat())
    assert alert.exit_code == 1 and "verdict: alert" in alert.output
    quiet = fusion(stable.folder.root, "monitor", "--snapshot", stable.snapshot.isoformat())
    assert quiet.exit_code == 0 and "verdict: ok" in quiet.output
    lines = monitoring_lines(latest_monitoring(drifted.folder))
    assert f'bankfusion_monitoring_status{{snapshot="{drifted.snapshot}"}} 2' in lines
    assert 'bankfusion_vendor_drift_status{metric="penetration: Banking"} 2' in lines
    assert any(line.startswith('bankfusion_model_score_psi{model="rescue"}') for line in lines)
    assert monitoring_lines(None) == []
    # Looser thresholds: the same drift warns instead (a threshold is a setting, not a constant).
    loose = fusion(
        drifted.folder.root,
        "monitor",
        "--snapshot",
        drifted.snapshot.isoformat(),
        "--psi-warn",
        "5",
        "--psi-alert",
        "9",
    )
    assert "CSI" not in loose.output.split("finding:")[-1]


def test_usage_errors_exit_2_and_create_nothing(drifted: LaterRun, tmp_path: Path):
    wrong = fusion(drifted.folder.root, "monitor", "--snapshot", "2026-13-01")
    assert wrong.exit_code == 2 and "snapshot must be a date" in first_line(wrong.output)
    unbuilt = fusion(drifted.folder.root, "monitor", "--snapshot", "2027-01-31")
    assert unbuilt.exit_code == 2 and "fusion features" in unbuilt.output
    nothing = tmp_path / "nothing"
    cycle = fusion(nothing, "cycle", "--snapshot", "2026-10-31")
    assert cycle.exit_code == 2 and not nothing.exists()


@pytest.fixture
def lock_holder(stable: LaterRun) -> Iterator[subprocess.Popen[str]]:
    """A process holding the run's cycle lock, as a running cycle does."""
    lock = stable.folder.root / "cycles" / "cycle.lock"
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    try:
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_two_cycles_never_overlap_and_a_killed_one_leaves_no_lock(
    stable: LaterRun, lock_holder: subprocess.Popen[str]
):
    command = [
        sys.executable, "-m", "labs.cli", "cycle", "--snapshot", stable.snapshot.isoformat(),
        "--run", str(stable.folder.root),
    ]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert f"another cycle (pid {lock_holder.pid})" in refused.stderr
    lock_holder.send_signal(signal.SIGKILL)
    lock_holder.wait()
    # The kernel dropped the killed holder's lock: the next cycle runs (and finds nothing to do).
    after = fusion(stable.folder.root, "cycle", "--snapshot", stable.snapshot.isoformat())
    assert after.exit_code == 0, after.output
    assert "nothing to do" in after.output
