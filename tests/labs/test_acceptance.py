"""The models' acceptance figures on the default demo world (100k customers, seed 7, held out).

This is what `make demo` prints and the model report shows: the test runs `fusion demo` and
pins its figures, so a change to the world, the features or the models that loses the data's
proven worth fails CI.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fusion.reports.coverage import coverage_report
from fusion.runfolder import RunFolder
from fusion.store import Store
from labs.cli import app
from labs.world import WorldFiles
from matcher.keyring import Keyring

pytestmark = pytest.mark.slow

SNAPSHOT = date(2026, 9, 30)  # the demo's snapshot


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo's run folder on the default world (100k customers, seed 7) and its summary."""
    run: Path = tmp_path_factory.mktemp("acceptance") / "run"
    args = ["demo", "--out", str(run), "--customers", "100000", "--seed", "7"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run, json.loads((run / "demo-summary.json").read_text())


@pytest.fixture(scope="module")
def summary(demo: tuple[Path, dict]) -> dict:
    return demo[1]


def test_the_match_is_the_worlds_true_best_identifier_intersection(demo: tuple[Path, dict]):
    """Exact, and each identifier adds some, published at k = 10 (multi-identifier match)."""
    run, _ = demo
    folder = RunFolder(run)
    keyring = Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key(), read_only=True) as store:
        got = store.execute("SELECT customer_id, id_type FROM matches ORDER BY customer_id").pl()
        conflicts = store.execute("SELECT max(conflicts) FROM match_runs").fetchone()
        report = coverage_report(
            store, snapshot_date=SNAPSHOT, salt_epoch=keyring.current_salt().epoch_id, k=10
        )
    truth = pl.read_parquet(WorldFiles(run / "world").intersection)
    assert got.equals(truth.select("customer_id", "id_type"))
    gains = dict(report.by_identifier.select("id_type", "matched").iter_rows())
    assert set(gains) == {"mobile", "id_number", "device_id"}
    assert all(n is not None and n >= 10 for n in gains.values())
    assert conflicts is not None and conflicts[0] > 0


def test_fused_acquisition_beats_in_bank_by_four_points(summary: dict):
    acquisition = summary["models"]["acquisition"]
    assert 0.78 <= acquisition["in_bank"]["auc"] <= 0.86
    assert acquisition["fused"]["auc"] >= acquisition["in_bank"]["auc"] + 0.04
    # Stable pruning cut the in-bank model down, as the real case cut 71 variables to 40.
    assert acquisition["in_bank"]["inputs"] < acquisition["in_bank"]["candidates"] == 71


def test_rescued_list_answers_three_times_the_random_control(summary: dict):
    rescue = summary["models"]["rescue"]
    assert rescue["ratio"] >= 3.0
    low, high = rescue["ratio_ci"]
    assert 1.0 < low < rescue["ratio"] < high  # the 95% CI excludes "no better than random"
    assert rescue["diff_ci"][0] > 0
    # The control is half the held-out pool at random; its rate estimates the pool's rate.
    assert rescue["control"] == round(0.5 * rescue["pool_test"])
    assert abs(rescue["control_rate"] - rescue["pool_rate"]) < 0.01
    assert rescue["ratio_to_pool"] >= 3.0


def test_uplift_targeting_buys_more_incremental_conversions_than_response(summary: dict):
    uplift = summary["models"]["uplift"]
    assert uplift["incremental_ratio"] >= 1.2
    best = uplift["learners"][uplift["best"]]
    assert best["correlation_with_true_uplift"] is not None
    assert best["correlation_with_true_uplift"] > 0.2
    assert best["qini"] > 0


def test_both_campaigns_ran_every_stage_and_their_readouts_meet_the_truth(summary: dict):
    campaigns = summary["campaigns"]
    log = "\n".join(campaigns["log"])
    for name in ("rescue-call", "food-coupon-sms"):
        for step in ("draft -> whitelist", "whitelist -> pilot", "pilot -> ab", "ab -> full"):
            assert f"{name}: {step}" in log
        assert f"{name}: closed" in log
        readout, truth = campaigns[name]["readout"], campaigns[name]["truth"]
        assert readout["status"] == "decided" and readout["decision"] == "significant"
        assert readout["sample_ratio"]["mismatch"] is False
        comparison = readout["comparison"]
        # The measured lift's 95% interval holds the world's true lift.
        assert comparison["diff_ci_low"] <= truth["true_lift"] <= comparison["diff_ci_high"]
    # The rescue call: reached customers open several times as often as the control.
    rescue = campaigns["rescue-call"]
    assert rescue["readout"]["comparison"]["ratio"] >= 2.5
    assert rescue["truth"]["true_ratio"] >= 2.5
    # The coupon: incremental responses within their interval of the truth.
    coupon = campaigns["food-coupon-sms"]["readout"]["incremental"]
    true_incremental = campaigns["food-coupon-sms"]["truth"]["true_incremental"]
    assert coupon["successes_low"] <= true_incremental <= coupon["successes_high"]
    # No customer id in the readouts the demo wrote.
    for name in ("rescue-call", "food-coupon-sms"):
        page = Path(campaigns[name]["files"]["html"]).read_text()
        assert "customer_id" not in page and "10000000" not in page


def test_adjusted_readouts_narrow_the_aum_interval_and_keep_the_truth(summary: dict):
    campaigns = summary["campaigns"]
    for name in ("rescue-call", "food-coupon-sms"):
        readout, truth = campaigns[name]["readout"], campaigns[name]["truth"]
        adjusted = {a["metric"]: a for a in readout["adjusted"]}
        # The AUM month average against its own pre-period (CUPED): a far narrower interval
        # that still holds the world's true effect.
        aum = adjusted["aum"]
        assert aum["interval_narrowing"] >= 0.2 and aum["control_saved"] > 0
        assert aum["adjusted"]["ci_low"] <= truth["true_aum_effect"] <= aum["adjusted"]["ci_high"]
        # Success against the acquisition score (CUPAC): the unadjusted figure beside it, and
        # the readout says plainly that the score buys little here.
        success = adjusted[readout["objective"]["event"]]
        assert abs(success["unadjusted"]["estimate"] - readout["comparison"]["diff"]) < 1e-9
        assert success["buys_little"] and "buys little" in success["verdict"]
        # The always-valid test's looks and boundary are in the readout.
        looks = readout["sequential"]["ab"]["looks"]
        assert looks and all(look["boundary_z"] > 1.96 for look in looks)


def test_every_scenario_is_judged_fused_against_in_bank_with_delongs_interval(summary: dict):
    scenarios = {s["scenario"]: s for s in summary["scenarios"]}
    assert set(scenarios) == {"mb-activation", "credit-card", "aum-growth"}
    for found in scenarios.values():
        low, high = found["auc_gain_ci"]
        assert low < found["auc_gain"] < high and found["test_rows"] > 5_000
        # Persona-driven outcomes: the vendor's data adds to what the bank's own data sees.
        assert found["fused_auc"] > found["in_bank_auc"] and low > 0
    report = Path(summary["model_report"]).read_text(encoding="utf-8")
    assert "Scenarios: fused against in-bank" in report and "credit-card" in report


def test_a_model_learnt_from_the_coupon_campaign_is_judged_on_the_worlds_truth(summary: dict):
    learning = summary["learning"]
    assert learning["campaign"] == "food-coupon-sms"
    # The campaign's arms, each row weighed by its inverse propensity: a few thousand rows.
    assert 2_000 < learning["rows"]["train"] < 10_000 and learning["rows"]["test"] > 500
    past, learnt = learning["past_ab"], learning["learnt"]
    # Judged on customers neither model trained on, against the world's true uplift: the
    # past A/B file's model ranks them; what the campaign taught is reported beside it.
    assert past["correlation_with_true_uplift"] > 0.2
    assert past["true_incremental_top_30"] > 0 and learnt["true_incremental_top_30"] > 0
    assert learnt["correlation_with_true_uplift"] is None or (
        -1 <= learnt["correlation_with_true_uplift"] <= 1
    )


def test_each_journey_strategys_measured_lift_holds_the_worlds_true_effect(summary: dict):
    journeys = summary["journeys"]
    log = "\n".join(journeys["log"])
    for name in ("activation-push", "idle-sms"):
        for step in ("draft -> whitelist", "whitelist -> pilot", "pilot -> ab"):
            assert f"{name}: {step}" in log
        readout, truth = journeys[name]["readout"], journeys[name]["truth"]
        assert readout["stage"] == "ab" and truth["treated"] > 500
        # Stage conversion (the readout's `converted`): the 95% interval holds the true effect
        # the world's replay of the treatment arm without the strategy's touches gives.
        converted = readout["comparisons"]["converted"]
        true_effect = truth["true_conversion_effect"]
        assert converted["diff_ci_low"] <= true_effect <= converted["diff_ci_high"]
    # The push works: its lift clears zero, as its truth does.
    push = journeys["activation-push"]
    assert push["readout"]["comparisons"]["converted"]["diff_ci_low"] > 0
    assert push["truth"]["true_conversion_effect"] > 0.03
    assert Path(push["readout"]["files"]["html"]).is_file()


def test_the_annoying_sms_journey_reads_out_as_harmful_by_its_opt_outs(summary: dict):
    sms = summary["journeys"]["idle-sms"]
    opt_outs, truth = sms["readout"]["opt_outs"], sms["truth"]
    # Opted out from entry on, treatment against the held-out control: significantly above 0,
    # and the interval holds the opt-out rate the world says the SMS caused.
    assert opt_outs["harmful"] and opt_outs["diff_ci_low"] > 0
    assert opt_outs["diff_ci_low"] <= truth["true_opt_out_effect"] <= opt_outs["diff_ci_high"]
    assert truth["true_opt_out_effect"] > 0.02
