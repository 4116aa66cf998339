"""`fusion monitor` and `fusion cycle` on a trained run: a drifted later snapshot alerts, a stable
one does not; a repeated cycle changes nothing; two cycles never overlap."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import Result
from scipy import stats

from api.metrics import monitoring_lines
from fusion.pipeline.bank import open_bank
from fusion.pipeline.monitoring import latest_monitoring
from fusion.runfolder import RunFolder
from labs.world import WorldFiles
from labs.world.drift import Later
from tests.support.cli import first_line, fusion
from tests.support.monitored_runs import SNAPSHOT, add_later_snapshot, trained_run

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


# --- realised performance: a campaign's control customers against the training rates ----------

_CAMPAIGN = """
name = "realised-check"
priority = 1
window_days = 28

[objective]
event = "converted"
value = 100.0
cost_per_contact = 1.0

[audience]
source = "model"
model = "acquisition"
top_share = 0.6

[channel]
kind = "call_centre"
capacity_per_branch_per_day = 5000

[stages]
whitelist = {whitelist}
pilot_share = 0.5

[stages.ab]
baseline_rate = 0.05
minimum_detectable_effect = 0.02
"""


def _events(path: Path, rows: list[tuple[int, str]]) -> Path:
    stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    pl.DataFrame(
        {
            "campaign_id": ["realised-check"] * len(rows),
            "customer_id": [c for c, _ in rows],
            "event": [e for _, e in rows],
            "occurred_at": [stamp] * len(rows),
        },
        schema={"campaign_id": pl.String, "customer_id": pl.Int64, "event": pl.String,
                "occurred_at": pl.String},
    ).write_csv(path)  # fmt: skip
    return path


def _ok(root: Path, *args: str) -> Result:
    result = fusion(root, *args)
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result


def _controls(folder: RunFolder) -> pl.DataFrame:
    with open_bank(folder, read_only=True) as bank:
        return bank.store.execute(
            "SELECT customer_id, decile FROM assignments WHERE campaign_id = 'realised-check' "
            "AND arm = 'control'"
        ).pl()


def _direct(folder: RunFolder, controls: pl.DataFrame, converted: set[int]) -> dict[str, float]:
    """The realised figures computed here: training rates of each share stratum (top 60%)."""
    version = (folder.models / "acquisition" / "CURRENT").read_text().strip()
    profile = json.loads(
        (folder.models / "acquisition" / version / "monitoring_profile.json").read_text()
    )
    rates = np.array(profile["decile_rates"], dtype=float)
    # Stratum d of a top 60% is the slice ((d-1) 6%, d 6%] of the ranking; training decile k
    # is ((k-1) 10%, k 10%]: the stratum's rate is the rates averaged over the overlap.
    fine = np.repeat(rates, 60)  # 600 slices of the ranking, each 1/600
    stratum = np.array([fine[(d - 1) * 36 : d * 36].mean() for d in range(1, 11)])
    p = stratum[controls["decile"].to_numpy() - 1]
    observed = sum(c in converted for c in controls["customer_id"].to_list())
    expected = float(p.sum())
    z = (observed - expected) / math.sqrt(float((p * (1 - p)).sum()))
    return {"control": controls.height, "observed": observed, "expected": expected,
            "ratio": observed / expected, "p_value": float(2 * stats.norm.sf(abs(z)))}  # fmt: skip


@pytest.fixture(scope="module")
def campaigned(trained: RunFolder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A campaign of the acquisition model's top 60% through whitelist and pilot to its close,
    `fusion monitor` run before the controls' conversions arrive and after."""
    tmp = tmp_path_factory.mktemp("realised")
    root = tmp / "run"
    shutil.copytree(trained.root, root, symlinks=True)
    folder = RunFolder(root)
    ids = pl.read_parquet(folder.scores / "acquisition.parquet")["customer_id"].sort().to_list()
    (tmp / "c.toml").write_text(_CAMPAIGN.format(whitelist=ids[:2]))
    window = ("--window-start", "2026-10-05")
    _ok(root, "campaign", "create", str(tmp / "c.toml"))
    _ok(root, "campaign", "promote", "realised-check")
    _ok(root, "campaign", "plan", "realised-check", *window)
    _ok(root, "campaign", "deliver", "realised-check")
    named = _events(tmp / "w.csv", [(c, "delivered") for c in ids[:2]])
    _ok(root, "campaign", "outcomes", str(named))
    _ok(root, "campaign", "promote", "realised-check")
    _ok(root, "campaign", "plan", "realised-check", *window)
    _ok(root, "campaign", "deliver", "realised-check")
    controls = _controls(folder)
    snapshot = ("monitor", "--snapshot", SNAPSHOT.isoformat())
    silent_control = fusion(root, *snapshot)  # no control converted yet
    before = pl.read_parquet(folder.reports / f"monitoring-{SNAPSHOT}" / "realised.parquet")
    # Now the controls convert as training says they should: in each stratum, its rate.
    version = (folder.models / "acquisition" / "CURRENT").read_text().strip()
    profile = json.loads(
        (folder.models / "acquisition" / version / "monitoring_profile.json").read_text()
    )
    # Rounded cumulatively, not per stratum: ten strata of a few expected conversions each, each
    # rounded on its own, could drift together by up to 5 conversions (a ratio of 0.888 was seen
    # once); the running total stays within half a conversion of what training expects.
    fine = np.repeat(np.array(profile["decile_rates"], dtype=float), 60)
    converted: list[int] = []
    expected = 0.0
    for d, part in controls.sort("customer_id").group_by("decile", maintain_order=True):
        rate = fine[(int(d[0]) - 1) * 36 : int(d[0]) * 36].mean()  # type: ignore[arg-type]
        already = round(expected)
        expected += rate * part.height
        converted += part["customer_id"].to_list()[: round(expected) - already]
    _ok(
        root,
        "campaign",
        "outcomes",
        str(_events(tmp / "c.csv", [(c, "converted") for c in converted])),
    )
    _ok(root, "campaign", "close", "realised-check")
    after_result = fusion(root, *snapshot)
    after = pl.read_parquet(folder.reports / f"monitoring-{SNAPSHOT}" / "realised.parquet")
    return {
        "folder": folder, "controls": controls, "converted": set(converted),
        "before": (silent_control, before), "after": (after_result, after),
    }  # fmt: skip


def test_realised_performance_matches_a_direct_computation(campaigned: dict[str, Any]):
    folder, controls = campaigned["folder"], campaigned["controls"]
    assert controls.height >= 100, controls.height  # judged: at least min_customers
    for key, converted in (("before", set()), ("after", campaigned["converted"])):
        table = campaigned[key][1]
        assert table.height == 1, table
        row = table.row(0, named=True)
        direct = _direct(folder, controls, converted)
        assert row["campaign"] == "realised-check" and row["model"] == "acquisition"
        assert row["control"] == direct["control"] and row["observed"] == direct["observed"]
        assert row["expected"] == pytest.approx(direct["expected"], rel=1e-9)
        assert row["ratio"] == pytest.approx(direct["ratio"], rel=1e-9)
        assert row["p_value"] == pytest.approx(direct["p_value"], rel=1e-6, abs=1e-300)


def test_realised_performance_alerts_far_under_training_and_is_silent_at_it(
    campaigned: dict[str, Any],
):
    result, table = campaigned["before"]
    assert table["status"].to_list() == ["alert"], table
    assert result.exit_code == 1 and "campaign realised-check (acquisition)" in result.output
    result, table = campaigned["after"]
    assert table["status"].to_list() == ["ok"], table
    assert float(table["ratio"][0]) == pytest.approx(1.0, abs=0.1)
    assert result.exit_code == 0, result.output


# --- `fusion features` on a later snapshot: the CURRENT models' training columns ---------------


def test_features_of_a_later_snapshot_take_the_training_columns_and_score(
    trained: RunFolder, tmp_path: Path
):
    root = tmp_path / "run"
    shutil.copytree(trained.root, root, symlinks=True)
    folder = RunFolder(root)
    later, world = add_later_snapshot(folder, Later.DRIFTED)  # the Banking apps are gone
    _ok(root, "ingest")
    _ok(root, "match", "--extract", str(world.customers), "--snapshot", later.isoformat())
    own = _ok(root, "features", "--snapshot", later.isoformat(), "--own-columns")
    assert "training table" not in own.output
    own_manifest = json.loads((folder.features / later.isoformat() / "manifest.json").read_text())
    built = _ok(root, "features", "--snapshot", later.isoformat(), "--replace")
    assert f"of the models' training table ({SNAPSHOT})" in " ".join(built.output.split())
    training = json.loads((folder.features / SNAPSHOT.isoformat() / "manifest.json").read_text())
    aligned = json.loads((folder.features / later.isoformat() / "manifest.json").read_text())
    assert own_manifest["top_apps"] != training["top_apps"]  # what the snapshot alone picks
    assert aligned["top_apps"] == training["top_apps"] and aligned["codes"] == training["codes"]
    assert [c["name"] for c in aligned["columns"]] == [c["name"] for c in training["columns"]]
    scored = _ok(root, "score", "--snapshot", later.isoformat())
    assert "list food-coupon" in scored.output and "targeting by" in scored.output
    scores = pl.read_parquet(folder.scores / "acquisition.parquet")
    table = pl.read_parquet(folder.features / later.isoformat() / "features.parquet")
    assert set(scores["customer_id"].to_list()) <= set(table["customer_id"].to_list())
