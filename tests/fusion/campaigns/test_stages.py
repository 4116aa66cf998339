"""Gates: every wrong promotion is refused with its reason, every right one is recorded."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import CampaignError, GateRefused
from fusion.campaigns.book import get_campaign, stage_history
from fusion.campaigns.outcomes import record_events
from fusion.campaigns.stages import close_campaign, promote
from fusion.pipeline.campaigns import deliver_campaign, plan_window
from fusion.runfolder import RunFolder
from tests.support.campaign_banks import (
    T0,
    campaign_bank,
    declaration,
    declare,
    open_campaign_bank,
)

DAY = date(2026, 10, 2)
LATER = datetime(2026, 12, 1, 9)


@pytest.fixture
def folder(tmp_path: Path, ext_dir: Path) -> RunFolder:
    return campaign_bank(tmp_path / "run", ext_dir)


def _events(bank, event: str, *, stage: str, share: float = 1.0) -> int:
    """Record `event` for a share of the treated customers of `stage`; return how many."""
    treated = bank.store.execute(
        "SELECT campaign_id, customer_id FROM assignments WHERE stage = ? AND arm = 'treatment' "
        "ORDER BY customer_id",
        [stage],
    ).pl()
    chosen = treated.head(max(1, int(share * treated.height)))
    frame = chosen.with_columns(
        pl.lit(event).alias("event"),
        pl.lit(datetime(2026, 10, 5, 12)).alias("occurred_at"),
        pl.lit(None, dtype=pl.Float64).alias("amount"),
        pl.lit(None, dtype=pl.String).alias("event_key"),
    )
    recorded = record_events(bank.store, frame, source="test", now=LATER)
    assert recorded.refused.height == 0, recorded.refused
    return chosen.height


def _refused(bank, gate: str) -> GateRefused:
    with pytest.raises(GateRefused) as caught:
        promote(bank.store, "calls", actor="t", now=T0)
    assert caught.value.gate == gate, caught.value
    return caught.value


def test_the_whole_ladder_refuses_each_wrong_promotion_with_its_reason(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls"))
        with pytest.raises(GateRefused, match="never skipped") as skipped:
            promote(bank.store, "calls", actor="t", now=T0, to_stage="pilot")
        assert skipped.value.gate == "order"
        promote(bank.store, "calls", actor="t", now=T0)  # draft -> whitelist

        plan_window(bank, ["calls"], window_start=DAY, actor="t", now=T0)
        _refused(bank, "whitelist_delivered")
        deliver_campaign(bank, "calls", now=T0)
        refusal = _refused(bank, "whitelist_confirmed")
        assert "0 of 2" in str(refusal)
        _events(bank, "delivered", stage="whitelist")
        promote(bank.store, "calls", actor="t", now=T0)  # -> pilot

        plan_window(bank, ["calls"], window_start=DAY + timedelta(days=1), actor="t", now=T0)
        deliver_campaign(bank, "calls", now=T0)
        _refused(bank, "pilot_delivered")  # nothing confirmed yet
        _events(bank, "delivered", stage="pilot")
        _events(bank, "complained", stage="pilot", share=0.05)  # over the 1% limit
        refusal = _refused(bank, "complaints")
        assert "limit 1.00%" in str(refusal)
        assert get_campaign(bank.store, "calls").stage == "pilot"


def test_pilot_under_its_guardrails_moves_on_and_the_ab_waits_for_its_size(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls"))
        bank.store.execute("UPDATE campaigns SET stage = 'pilot'")
        plan_window(bank, ["calls"], window_start=DAY, actor="t", now=T0)
        deliver_campaign(bank, "calls", now=T0)
        _events(bank, "delivered", stage="pilot")
        promoted = promote(bank.store, "calls", actor="t", now=T0)
        assert promoted.to_stage == "ab"
        assert {c.name for c in promoted.checks} >= {"complaints", "opt_outs", "sample_ratio"}
        refusal = _refused(bank, "ab_size")
        assert "power calculation" in str(refusal)
        history = stage_history(bank.store, "calls")
    assert [(h.from_stage, h.to_stage) for h in history] == [("pilot", "ab")]
    assert history[0].checks["complaints"]["passed"] is True


def test_an_altered_assignment_is_caught_by_the_sample_ratio_gate(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls", stages={
            "whitelist": [1_000_001], "pilot_share": 0.5,
            "ab": {"baseline_rate": 0.05, "minimum_detectable_effect": 0.05}}))  # fmt: skip
        bank.store.execute("UPDATE campaigns SET stage = 'pilot'")
        plan_window(bank, ["calls"], window_start=DAY, actor="t", now=T0)
        deliver_campaign(bank, "calls", now=T0)
        _events(bank, "delivered", stage="pilot")
        # Someone moves a fifth of the control arm into treatment.
        bank.store.execute(
            "UPDATE assignments SET arm = 'treatment' WHERE arm = 'control' AND customer_id % 5 = 0"
        )
        refusal = _refused(bank, "sample_ratio")
    assert "altered" in str(refusal)


def test_a_closed_campaign_cannot_move(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        declare(bank, declaration("calls"))
        close_campaign(bank.store, "calls", actor="t", now=T0)
        with pytest.raises(CampaignError, match="closed"):
            promote(bank.store, "calls", actor="t", now=T0)
        with pytest.raises(CampaignError, match="already closed"):
            close_campaign(bank.store, "calls", actor="t", now=T0)
