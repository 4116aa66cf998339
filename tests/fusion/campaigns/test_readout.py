"""A campaign's readout on a hand-made campaign whose every number is known, and in simulation."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from contracts.errors import CampaignError, ConfigError
from fusion.campaigns.declaration import Campaign, load_declaration
from fusion.campaigns.readout import Readout, read_out, write_readout
from fusion.campaigns.statistics import SampleSize, achieved_power, sample_size
from tests.support.coverage import Cell, Identities, audit

ASSIGNED = datetime(2026, 10, 1, 9)
WHITELIST = [900001, 900002]
# Ids no output could contain by chance: a leak of any of them is a leak.
T_BASE, C_BASE = 7_100_000_000, 7_200_000_000
# The arms' published totals: the margin every breakdown is protected against.
MARGIN = {"n_treatment": 200, "successes_treatment": 40, "n_control": 200, "successes_control": 20}

DECLARATION = {
    "name": "rescue-call-test",
    "priority": 1,
    "control_share": 0.5,
    "objective": {"event": "converted", "value": 100.0, "cost_per_contact": 2.0},
    "audience": {"source": "model", "model": "rescue", "top_share": 0.2},
    "channel": {"kind": "call_centre", "capacity_per_branch_per_day": 40},
    "stages": {
        "whitelist": WHITELIST,
        "ab": {"baseline_rate": 0.1, "minimum_detectable_effect": 0.1},
    },
}

ASSIGNMENT_SCHEMA = {
    "campaign_id": pl.String,
    "customer_id": pl.Int64,
    "stage": pl.String,
    "arm": pl.String,
    "branch_id": pl.String,
    "decile": pl.Int8,
    "stratum": pl.String,
    "segment": pl.String,
    "assigned_at": pl.Datetime("us"),
}
EVENT_SCHEMA = {
    "campaign_id": pl.String,
    "customer_id": pl.Int64,
    "event": pl.String,
    "amount": pl.Float64,
    "occurred_at": pl.Datetime("us"),
}


def campaign() -> Campaign:
    return load_declaration(DECLARATION)


def _branch(i: int, small_from: int) -> str:
    if i >= small_from:
        return "B03"
    return "B01" if i % 2 == 0 else "B02"


def _segment(i: int) -> str | None:
    return {0: "V1", 1: "V1", 2: "V2"}.get(i % 4)


def hand_made() -> tuple[Campaign, pl.DataFrame, pl.DataFrame]:
    """Return a campaign, its assignments and events, 200 customers per arm in the ab stage.

    Treatment i = 0..199: delivered i < 170 (i < 10 twice), contacted i < 150, reached i < 120,
    responded i < 60, converted i < 40 (amount 50 each). Control: responded i < 35, converted
    i < 20 (amount 40 each). Decile 1 for even i, none for odd. Branch B03 holds treatment
    i >= 196 and control i >= 197: 7 customers, no success; B01 the other even i, B02 the odd.
    Noise that must not count: whitelist rows with conversions, a conversion before its
    customer's assignment, another campaign's rows.
    """
    name = DECLARATION["name"]
    rows, events = [], []

    def event(cid: int, what: str, amount: float | None = None, hours: int = 24) -> None:
        events.append((name, cid, what, amount, ASSIGNED + timedelta(hours=hours)))

    for arm, base, small_from in (("treatment", T_BASE, 196), ("control", C_BASE, 197)):
        for i in range(200):
            cid = base + i
            decile = 1 if i % 2 == 0 else None
            rows.append(
                (name, cid, "ab", arm, _branch(i, small_from), decile, "S1", _segment(i), ASSIGNED)
            )
    for i in range(200):
        cid = T_BASE + i
        steps = [("delivered", 170), ("contacted", 150), ("reached", 120), ("responded", 60)]
        for what, limit in steps:
            if i < limit:
                event(cid, what)
        if i < 10:
            event(cid, "delivered", hours=48)
        if i < 40:
            event(cid, "converted", 50.0)
        cid = C_BASE + i
        if i < 35:
            event(cid, "responded")
        if i < 20:
            event(cid, "converted", 40.0)
    event(C_BASE + 150, "converted", 40.0, hours=-1)  # before the assignment
    for cid in WHITELIST:
        rows.append((name, cid, "whitelist", "treatment", "B01", 1, "S1", "V1", ASSIGNED))
        event(cid, "delivered")
        event(cid, "converted", 999.0)
    rows.append(("other-campaign", T_BASE + 100, "ab", "control", "B01", 1, "S1", None, ASSIGNED))
    events.append(("other-campaign", T_BASE + 100, "converted", 5.0, ASSIGNED))
    assignments = pl.DataFrame(rows, schema=ASSIGNMENT_SCHEMA, orient="row")
    return campaign(), assignments, pl.DataFrame(events, schema=EVENT_SCHEMA, orient="row")


def _wilson(s: int, n: int) -> tuple[float, float]:
    z = stats.norm.ppf(0.975)
    p = s / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def _newcombe(s_t: int, n_t: int, s_c: int, n_c: int) -> tuple[float, float]:
    p_t, p_c = s_t / n_t, s_c / n_c
    (l_t, u_t), (l_c, u_c) = _wilson(s_t, n_t), _wilson(s_c, n_c)
    d = p_t - p_c
    return d - math.hypot(p_t - l_t, u_c - p_c), d + math.hypot(u_t - p_t, p_c - l_c)


@pytest.fixture(scope="module")
def readout() -> Readout:
    return read_out(*hand_made())


def test_arms_count_each_customer_once_and_ignore_the_noise(readout: Readout):
    arms = {row["arm"]: row for row in readout.arms_frame().iter_rows(named=True)}
    t, c = arms["treatment"], arms["control"]
    assert (t["n"], t["delivered"], t["contacted"], t["reached"]) == (200, 170, 150, 120)
    assert (t["responded"], t["converted"]) == (60, 40)
    assert (c["n"], c["responded"], c["converted"]) == (200, 35, 20)
    # Counts of 0 describe fewer than k customers: withheld, with the rates made from them.
    assert t["complained"] is None and t["opted_out"] is None
    assert c["delivered"] is None and c["contacted"] is None and c["reached"] is None
    assert c["contact_rate"] is None and c["reach_rate"] is None
    assert set(c["suppressed_cells"]) >= {"delivered", "contacted", "reached", "contact_rate"}
    assert (t["contact_rate"], t["reach_rate"], t["response_rate"]) == (0.75, 0.6, 0.3)
    assert (t["conversion_rate"], t["success_rate"]) == (0.2, 0.2)
    assert (c["response_rate"], c["conversion_rate"], c["success_rate"]) == (0.175, 0.1, 0.1)
    assert (t["amount"], c["amount"]) == (2000.0, 800.0)  # the whitelist's 999s are not in


def test_lift_p_value_and_money_by_hand(readout: Readout):
    c = readout.comparison
    assert c is not None
    assert (c.n_t, c.successes_t, c.n_c, c.successes_c) == (200, 40, 200, 20)
    assert (c.rate_t, c.rate_c) == (0.2, 0.1)
    assert c.diff == pytest.approx(0.1, abs=1e-15)
    low, high = _newcombe(40, 200, 20, 200)
    assert (c.diff_ci_low, c.diff_ci_high) == (pytest.approx(low), pytest.approx(high))
    assert c.ratio == pytest.approx(2.0)
    spread = stats.norm.ppf(0.975) * math.sqrt(1 / 40 - 1 / 200 + 1 / 20 - 1 / 200)
    assert c.ratio_ci_low == pytest.approx(2 * math.exp(-spread))
    assert c.ratio_ci_high == pytest.approx(2 * math.exp(spread))
    z = 0.1 / math.sqrt(0.15 * 0.85 * (2 / 200))
    assert c.p_value == pytest.approx(2 * stats.norm.sf(z))

    money = readout.incremental
    assert money.successes == pytest.approx(20.0)  # 0.1 x 200 treated
    assert money.successes_low == pytest.approx(low * 200)
    assert money.successes_high == pytest.approx(high * 200)
    assert money.value == pytest.approx(2000.0)  # x 100 declared
    assert money.value_low == pytest.approx(low * 200 * 100)
    assert money.cost == pytest.approx(360.0)  # 180 delivered contacts x 2.0
    assert money.roi == pytest.approx((2000 - 360) / 360)
    assert money.roi_low == pytest.approx((low * 200 * 100 - 360) / 360)
    assert money.amount == pytest.approx((2000 / 200 - 800 / 200) * 200)


def test_decided_at_the_planned_size_with_power_and_sample_ratio(readout: Readout):
    planned = sample_size(baseline_rate=0.1, minimum_detectable_effect=0.1)
    assert readout.planned == planned and planned.treatment <= 200
    assert readout.status == "decided"
    assert readout.decision == "significant"  # p = 0.005 < 0.05
    assert readout.ab == readout.comparison  # the A/B test is the whole readout here
    assert readout.power == pytest.approx(
        achieved_power(
            baseline_rate=0.1, minimum_detectable_effect=0.1, n_treatment=200, n_control=200
        )
    )
    srm = readout.srm
    assert srm is not None and readout.srm_mismatch is False
    assert (srm.n_treatment, srm.n_control, srm.expected_control_share) == (200, 200, 0.5)
    assert (srm.statistic, srm.p_value) == (0.0, 1.0)


def test_interim_until_the_planned_size_carries_no_decision():
    campaign_, assignments, events = hand_made()
    interim = read_out(campaign_, assignments, events, planned=SampleSize(201, 200, 401, 0.28))
    assert (interim.status, interim.decision) == ("interim", None)
    assert interim.horizon() == "interim: fixed horizon, judged at 201 treated and 200 control"
    assert interim.comparison is not None  # the lift is shown, only not judged
    decided = read_out(campaign_, assignments, events, planned=(200, 200))
    assert (decided.status, decided.decision) == ("decided", "significant")
    assert decided.horizon().startswith("decided at the fixed horizon of 200 per arm")
    full_only = read_out(
        campaign_, assignments.with_columns(stage=pl.lit("full")), events, stages=("full",)
    )
    assert (full_only.status, full_only.decision, full_only.ab) == ("not judged", None, None)


def test_decile_breakdown_by_hand(readout: Readout):
    table = readout.breakdown_frames()["by_decile"]
    assert table["decile"].to_list() == [1, None]
    assert not table["suppressed"].any()
    for row in table.iter_rows(named=True):
        assert (row["n_treatment"], row["successes_treatment"]) == (100, 20)
        assert (row["n_control"], row["successes_control"]) == (100, 10)
        assert (row["rate_treatment"], row["rate_control"]) == (0.2, 0.1)
        low, high = _newcombe(20, 100, 10, 100)
        assert row["lift"] == pytest.approx(0.1)
        assert (row["lift_low"], row["lift_high"]) == (pytest.approx(low), pytest.approx(high))
    stage = readout.breakdown_frames()["by_stage"].row(0, named=True)
    assert (stage["stage"], stage["n_treatment"], stage["successes_control"]) == ("ab", 200, 20)


def _truth(column: str) -> dict[object, dict[str, int]]:
    """Return the hand-made campaign's true breakdown counts (the whitelist left out)."""
    _, assignments, events = hand_made()
    converted = events.filter(
        pl.col("campaign_id") == DECLARATION["name"],
        pl.col("event") == "converted",
        pl.col("occurred_at") >= ASSIGNED,
    )
    success = set(converted["customer_id"].to_list())
    truth: dict[object, dict[str, int]] = {}
    for row in assignments.filter(
        pl.col("campaign_id") == DECLARATION["name"], pl.col("stage") != "whitelist"
    ).iter_rows(named=True):
        counts = truth.setdefault(
            row[column],
            dict.fromkeys(
                ("n_treatment", "successes_treatment", "n_control", "successes_control"), 0
            ),
        )
        counts[f"n_{row['arm']}"] += 1
        counts[f"successes_{row['arm']}"] += row["customer_id"] in success
    return truth


def _audit(table: pl.DataFrame, column: str, margin: dict[str, int], k: int) -> list[str]:
    """Return what an attacker who knows the margin and the identities could recover."""
    truth = _truth(column)
    published = {row[column]: row for row in table.iter_rows(named=True)}
    values: dict[Cell, int] = {}
    shown: dict[Cell, bool] = {}
    identities: Identities = []
    for group, counts in truth.items():
        for name, value in counts.items():
            values[group, name] = value
            shown[group, name] = published[group][name] is not None
            assert published[group][name] in (None, value)
        for arm in ("treatment", "control"):
            values[group, f"f_{arm}"] = counts[f"n_{arm}"] - counts[f"successes_{arm}"]
            shown[group, f"f_{arm}"] = False
            identities.append(
                ((group, f"n_{arm}"), [(group, f"successes_{arm}"), (group, f"f_{arm}")])
            )
    for name in margin:
        identities.append((None, [(group, name) for group in truth]))
    return audit(values, shown, identities, k)


@pytest.mark.parametrize("column", ["branch_id", "segment", "decile"])
def test_breakdowns_leave_no_small_cell_recoverable(readout: Readout, column: str):
    name = {"branch_id": "by_branch", "segment": "by_segment", "decile": "by_decile"}[column]
    table = readout.breakdown_frames()[name]
    assert _audit(table, column, MARGIN, readout.k) == []


def test_a_branch_of_seven_customers_is_withheld_and_not_derivable(readout: Readout):
    table = readout.breakdown_frames()["by_branch"]
    b03 = table.filter(pl.col("branch_id") == "B03").row(0, named=True)
    for cell in (
        "n_treatment",
        "successes_treatment",
        "n_control",
        "successes_control",
        "rate_treatment",
        "rate_control",
        "lift",
        "lift_low",
        "lift_high",
    ):
        assert b03[cell] is None, cell
    # Complementary disclosure: with the arms' totals published, one withheld cell in a column
    # would be its total minus the rest; every column with a withheld cell has two.
    for column in ("n_treatment", "successes_treatment", "n_control", "successes_control"):
        assert table[column].null_count() in (0, 2, 3), column
        published = table[column].drop_nulls().sum()
        assert MARGIN[column] - published != 0 or table[column].null_count() == 0


def test_whitelist_customers_never_count():
    campaign_, assignments, events = hand_made()
    whitelisted_in_ab = pl.DataFrame(
        [(DECLARATION["name"], WHITELIST[0], "ab", "control", "B01", 1, "S1", "V1", ASSIGNED)],
        schema=ASSIGNMENT_SCHEMA,
        orient="row",
    )
    readout = read_out(
        campaign_,
        pl.concat([assignments.filter(pl.col("customer_id") != WHITELIST[0]), whitelisted_in_ab]),
        events,
    )
    arms = {row["arm"]: row for row in readout.arms.iter_rows(named=True)}
    assert (arms["treatment"]["n"], arms["control"]["n"]) == (200, 200)
    assert arms["control"]["converted"] == 20


def test_sample_ratio_expects_each_stages_own_share():
    """Pilot 50 / 50 at share 0.5, full 900 / 100 at 0.05: 100 control expected of 1,100."""
    campaign_, _, _ = hand_made()
    rows = [
        (DECLARATION["name"], 1000 + i, stage, arm, "B01", None, "S1", None, ASSIGNED)
        for i, (stage, arm) in enumerate(
            [("pilot", "treatment")] * 50
            + [("pilot", "control")] * 50
            + [("full", "treatment")] * 900
            + [("full", "control")] * 100
        )
    ]
    assignments = pl.DataFrame(rows, schema=ASSIGNMENT_SCHEMA, orient="row")
    readout = read_out(campaign_, assignments, pl.DataFrame(schema=EVENT_SCHEMA))
    srm = readout.srm
    assert srm is not None
    assert (srm.n_treatment, srm.n_control) == (950, 150)
    assert srm.expected_control_share == pytest.approx(100 / 1100)
    by_hand = (950 - 1000) ** 2 / 1000 + (150 - 100) ** 2 / 100  # 27.5
    assert srm.statistic == pytest.approx(by_hand)
    assert srm.p_value == pytest.approx(stats.chi2.sf(by_hand, 1))
    assert readout.srm_mismatch is True
    given = read_out(
        campaign_, assignments, pl.DataFrame(schema=EVENT_SCHEMA), expected_control_share=150 / 1100
    )
    assert given.srm is not None and given.srm.statistic == pytest.approx(0.0)
    # No success anywhere: every success count is 0, withheld, and so is the lift.
    assert readout.comparison is None and readout.incremental.successes is None


def test_outputs_hold_no_customer_id(readout: Readout, tmp_path: Path):
    paths = write_readout(readout, tmp_path)
    document = json.loads(paths["json"].read_text(), parse_constant=_no_constant)
    assert document["decision"] == "significant"
    ids = [T_BASE + i for i in range(200)] + [C_BASE + i for i in range(200)] + WHITELIST
    for key in ("json", "parquet", "html"):
        data = paths[key].read_bytes()
        assert b"customer_id" not in data, key
        for cid in ids:
            assert str(cid).encode() not in data, key
            assert cid.to_bytes(8, "little", signed=True) not in data, key
    long = pl.read_parquet(paths["parquet"])
    assert set(long["table"].unique()) == {
        "arms",
        "by_stage",
        "by_branch",
        "by_decile",
        "by_segment",
        "summary",
    }
    assert long.filter(pl.col("suppressed"))["value"].null_count() == long["suppressed"].sum()
    b03 = long.filter(pl.col("table") == "by_branch", pl.col("group") == "B03")
    assert b03["value"].null_count() == b03.height


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} in the JSON")


def test_bad_input_is_refused():
    campaign_, assignments, events = hand_made()
    with pytest.raises(ConfigError):
        read_out(campaign_, assignments, events, stages=("whitelist",))
    with pytest.raises(ConfigError):
        read_out(campaign_, assignments, events, k=0)
    with pytest.raises(CampaignError, match="lacks segment"):
        read_out(campaign_, assignments.drop("segment"), events)
    with pytest.raises(CampaignError, match="more than once"):
        read_out(campaign_, pl.concat([assignments, assignments.head(1)]), events)
    with pytest.raises(CampaignError, match=r"events\.event"):
        bad = events.with_columns(event=pl.lit("clicked"))
        read_out(campaign_, assignments, bad)
    with pytest.raises(CampaignError, match="nobody assigned"):
        read_out(campaign_, assignments, events, stages=("pilot",))


def _simulated(seed: int, n: int = 20_000) -> tuple[Campaign, pl.DataFrame, pl.DataFrame]:
    """Return a simple experiment: n customers split evenly, p_c = 0.02 and p_t = 0.035."""
    rng = np.random.default_rng(seed)
    treated = rng.random(n) < 0.5
    converted = rng.random(n) < np.where(treated, 0.035, 0.02)
    ids = np.arange(n, dtype=np.int64) + 10_000_000
    assignments = pl.DataFrame(
        {
            "campaign_id": DECLARATION["name"],
            "customer_id": ids,
            "stage": "ab",
            "arm": np.where(treated, "treatment", "control"),
            "branch_id": np.where(rng.random(n) < 0.5, "B01", "B02"),
            "decile": pl.Series(rng.integers(1, 11, n), dtype=pl.Int8),
            "stratum": "S1",
            "segment": None,
            "assigned_at": ASSIGNED,
        },
        schema=ASSIGNMENT_SCHEMA,
    )
    events = pl.DataFrame(
        {
            "campaign_id": DECLARATION["name"],
            "customer_id": ids[converted],
            "event": "converted",
            "amount": None,
            "occurred_at": ASSIGNED + timedelta(days=3),
        },
        schema=EVENT_SCHEMA,
    )
    return campaign(), assignments, events


def test_the_lift_interval_covers_the_truth_in_simulation():
    """20 experiments of 20,000 customers: the 95% interval of the lift covers 0.015 in >= 17."""
    covered = 0
    for seed in range(20):
        result = read_out(*_simulated(seed))
        c = result.comparison
        assert c is not None and result.incremental.amount is None
        covered += c.diff_ci_low <= 0.015 <= c.diff_ci_high
    assert covered >= 17


def test_cost_shows_when_every_treated_customer_was_delivered():
    """All 200 delivered: '0 not delivered' is a cell under k, so `delivered` is withheld; the
    cost counts delivered events, not customers, and stays (its customers number >= k)."""
    campaign_, assignments, events = hand_made()
    treated = assignments.filter(pl.col("arm") == "treatment", pl.col("stage") == "ab")
    delivered = treated.select(
        pl.col("campaign_id"),
        pl.col("customer_id"),
        event=pl.lit("delivered"),
        amount=pl.lit(None, pl.Float64),
        occurred_at=pl.col("assigned_at") + timedelta(hours=1),
    )
    readout = read_out(campaign_, assignments, pl.concat([events, delivered]))
    t = readout.arms.filter(pl.col("arm") == "treatment").row(0, named=True)
    assert t["delivered"] is None and "delivered" in t["suppressed_cells"]
    assert readout.incremental.cost == pytest.approx((180 + 200) * 2.0)


def test_zone_aware_times_are_compared_in_utc():
    campaign_, assignments, events = hand_made()
    # The same instants written at +08:00: nothing changes.
    shifted = events.with_columns(
        pl.col("occurred_at").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Singapore")
    )
    readout = read_out(campaign_, assignments, shifted)
    assert readout.comparison is not None
    assert (readout.comparison.successes_t, readout.comparison.successes_c) == (40, 20)


def _adjusting_inputs(assignments: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return a flat propensity score (CUPAC) and an AUM metric with its pre-period (CUPED)."""
    rng = np.random.default_rng(seed)
    n = assignments.height
    treated = (assignments["arm"] == "treatment").to_numpy()
    pre = rng.lognormal(9.0, 1.0, n)
    ids = assignments["customer_id"]
    covariates = pl.DataFrame({"customer_id": ids, "acquisition_score": rng.uniform(0, 0.05, n)})
    metrics = pl.DataFrame(
        {
            "customer_id": ids,
            "metric": "aum",
            "value": pre * rng.lognormal(0.0, 0.1, n) + 100.0 * treated,
            "pre_value": pre,
        }
    )
    return covariates, metrics


def test_adjusted_figures_sit_beside_the_unadjusted_ones(tmp_path: Path):
    campaign_, assignments, events = _simulated(1)
    covariates, metrics = _adjusting_inputs(assignments, 1)
    readout = read_out(campaign_, assignments, events, covariates=covariates, metrics=metrics)
    by = {a.metric: a for a in readout.adjusted}
    assert set(by) == {"converted", "aum"}
    aum, converted = by["aum"], by["converted"]
    assert aum.covariate == "pre-period aum" and converted.covariate == "acquisition score"
    # The unadjusted figure is the plain difference; the adjustment narrows it a lot for an
    # amount against its pre-period, and buys little for a conversion against a flat score.
    assert readout.comparison is not None
    assert converted.unadjusted.estimate == pytest.approx(readout.comparison.diff, abs=1e-12)
    treated = (assignments["arm"] == "treatment").to_numpy()
    value = metrics["value"].to_numpy()
    assert aum.unadjusted.estimate == pytest.approx(value[treated].mean() - value[~treated].mean())
    assert aum.interval_narrowing > 0.5 and not aum.buys_little and aum.control_saved > 0
    assert aum.adjusted.ci_low <= 100.0 <= aum.adjusted.ci_high
    assert converted.buys_little and "buys little" in converted.verdict()
    assert readout.sequential["ab"].looks  # weekly looks of the A/B test
    data = readout.to_dict()
    json.dumps(data, allow_nan=False)
    assert {a["metric"] for a in data["adjusted"]} == {"converted", "aum"}
    assert data["sequential"]["ab"]["look_days"] == 7
    assert data["sequential"]["ab"]["looks"][0]["boundary_z"] > 1.96
    paths = write_readout(readout, tmp_path)
    page = paths["html"].read_text()
    assert "Adjusted by what the bank knew before assignment" in page
    assert "Always-valid p" in page and "buys little" in page
    long = pl.read_parquet(paths["parquet"])
    assert {"adjusted.aum.adjusted.estimate", "adjusted.aum.stratified.estimate"} <= set(
        long["metric"].to_list()
    )
    for text in (page, paths["json"].read_text()):
        assert str(assignments["customer_id"][0]) not in text


def test_no_covariate_no_adjusted_figure_and_the_old_readout_unchanged():
    campaign_, assignments, events = _simulated(2)
    plain = read_out(campaign_, assignments, events)
    assert plain.adjusted == ()
    covariates, metrics = _adjusting_inputs(assignments, 2)
    adjusted = read_out(campaign_, assignments, events, covariates=covariates, metrics=metrics)
    assert adjusted.comparison == plain.comparison and adjusted.decision == plain.decision
    assert adjusted.arms.equals(plain.arms)
    with pytest.raises(CampaignError, match="one score column"):
        read_out(campaign_, assignments, events, covariates=metrics)


def test_a_sequential_campaign_is_decided_at_the_first_crossing_look():
    _, assignments, events = _simulated(3)
    sequential = load_declaration(DECLARATION | {"analysis": "sequential"})
    far = (10**6, 10**6)  # a fixed horizon this test never reaches
    fixed = read_out(campaign(), assignments, events, planned=far)
    assert fixed.status == "interim" and fixed.decision is None
    early = read_out(sequential, assignments, events, planned=far)
    test = early.sequential["ab"]
    assert test.crossed_at is not None
    assert early.status == "decided" and early.decision == "significant"
    assert early.horizon().startswith("sequential (mSPRT, weekly looks): significant")
    assert early.to_dict()["analysis"] == "sequential"
