"""Planning on a real store: overlapping campaigns compete, counts add up, reruns change nothing,
and a SIGKILL mid-plan leaves the store as it was and a rerun gives the same assignment."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import CampaignError
from fusion.campaigns.stages import promote
from fusion.pipeline.campaigns import plan_window
from fusion.runfolder import RunFolder
from tests.support.campaign_banks import (
    T0,
    campaign_bank,
    declaration,
    declare,
    killed_mid_commit,
    open_campaign_bank,
)

DAY = date(2026, 10, 2)


def _two_live(bank, *, stage_to: str = "pilot") -> None:
    """Declare two overlapping campaigns (one acquisition, one uplift) and promote them."""
    declare(bank, declaration("calls", priority=1))
    declare(
        bank,
        declaration(
            "sms",
            priority=2,
            channel={"kind": "sms", "capacity_per_branch_per_day": 500},
            audience={"source": "model", "model": "uplift", "top_share": 0.8},
            objective={"event": "responded", "value": 10.0, "uplift_model": "uplift"},
        ),
    )
    order = ["whitelist", "pilot", "ab", "full"]
    for name in ("calls", "sms"):
        for stage in order[: order.index(stage_to) + 1]:
            bank.store.execute(
                "UPDATE campaigns SET stage = ? WHERE campaign_id = ?", [stage, name]
            )


@pytest.fixture
def folder(tmp_path: Path, ext_dir: Path) -> RunFolder:
    return campaign_bank(tmp_path / "run", ext_dir)


def _assignments(bank) -> pl.DataFrame:
    return bank.store.execute(
        "SELECT campaign_id, customer_id, arm, stratum, stage, contact_day FROM assignments "
        "ORDER BY campaign_id, customer_id"
    ).pl()


def test_overlapping_campaigns_share_no_customer_and_counts_add_up(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        _two_live(bank, stage_to="full")
        result = plan_window(bank, ["calls", "sms"], window_start=DAY, actor="t", now=T0)
        rows = _assignments(bank)
    assert rows.height > 0
    assert rows.group_by("customer_id").len()["len"].max() == 1
    for plan in result.plans:
        assert plan.audience == plan.assigned + sum(plan.removed.values())
        assert plan.treatment + plan.control == plan.assigned
    calls = next(p for p in result.plans if p.campaign_id == "calls")
    sms = next(p for p in result.plans if p.campaign_id == "sms")
    # The higher-priority call campaign loses nobody to arbitration; the SMS one does.
    assert calls.removed["lost_arbitration"] == 0
    assert sms.removed["lost_arbitration"] > 0
    # Call capacity: 50 per branch per day over 28 days; treated calls per branch within it.
    per_branch = rows.filter((pl.col("campaign_id") == "calls") & (pl.col("arm") == "treatment"))
    assert per_branch.group_by("stratum").len().height > 0
    days = rows.filter(pl.col("arm") == "treatment")["contact_day"]
    assert days.min() >= DAY and days.max() < DAY + timedelta(days=28)


def test_replanning_the_same_window_returns_the_stored_plan(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        _two_live(bank)
        first = plan_window(bank, ["calls", "sms"], window_start=DAY, actor="t", now=T0)
        before = _assignments(bank)
        again = plan_window(bank, ["calls", "sms"], window_start=DAY, actor="t", now=T0)
        after = _assignments(bank)
    assert all(p.stored_before for p in again.plans)
    assert [p.assigned for p in again.plans] == [p.assigned for p in first.plans]
    assert before.equals(after)


def test_pilot_takes_its_share_and_the_ab_stage_adds_to_it(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls"))
        bank.store.execute("UPDATE campaigns SET stage = 'pilot'")
        pilot = plan_window(bank, ["calls"], window_start=DAY, actor="t", now=T0).plans[0]
        bank.store.execute("UPDATE campaigns SET stage = 'ab'")
        later = DAY + timedelta(days=30)
        ab = plan_window(bank, ["calls"], window_start=later, actor="t", now=T0).plans[0]
        rows = _assignments(bank)
    assert pilot.assigned == round(0.1 * pilot.audience)
    assert ab.removed["already_assigned"] == pilot.assigned
    assert set(rows["stage"].unique()) == {"pilot", "ab"}
    assert rows["customer_id"].is_unique().all()


def test_a_draft_or_closed_campaign_has_nothing_to_plan(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls"))
        with pytest.raises(CampaignError, match="nothing to plan"):
            plan_window(bank, ["calls"], window_start=DAY, actor="t", now=T0)
        promote(bank.store, "calls", actor="t", now=T0)
        bank.store.execute("UPDATE campaigns SET stage = 'closed'")
        with pytest.raises(CampaignError, match="closed"):
            plan_window(bank, ["calls"], window_start=DAY, actor="t", now=T0)


@pytest.mark.slow  # a subprocess killed mid-commit, two stores
def test_sigkill_mid_plan_leaves_the_store_as_before_and_a_rerun_assigns_the_same(
    tmp_path: Path, ext_dir: Path
):
    folders = [campaign_bank(tmp_path / name, ext_dir) for name in ("killed", "clean")]
    for each in folders:
        with open_campaign_bank(each, ext_dir) as bank:
            _two_live(bank)
    killed_mid_commit(
        folders[0],
        ext_dir,
        'plan_window(bank, ["calls", "sms"], window_start=date(2026, 10, 2), actor="t", '
        "now=datetime(2026, 10, 1, 9))",
    )
    results = []
    for each in folders:
        with open_campaign_bank(each, ext_dir) as bank:
            plans = bank.store.execute("SELECT count(*) FROM plans").fetchone()
            if each is folders[0]:
                assert plans == (0,)  # the killed plan left nothing
                assert bank.store.execute("SELECT count(*) FROM assignments").fetchone() == (0,)
            plan_window(bank, ["calls", "sms"], window_start=DAY, actor="t", now=T0)
            results.append(_assignments(bank))
    assert results[0].height > 0
    assert results[0].equals(results[1])
