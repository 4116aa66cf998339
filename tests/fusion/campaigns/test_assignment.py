"""Assignment: entry order, stage entrants, exact stratified arms and the sample-ratio check."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ConfigError
from fusion.campaigns.assignment import (
    assign_arms,
    entry_order,
    take_entrants,
    treated_count,
)
from fusion.campaigns.statistics import SampleRatio, sample_ratio
from matcher.keyed_hash import hmac_sha256

SALT_A = bytes(range(32))
SALT_B = bytes(range(1, 33))
SALTS = {"a": SALT_A, "b": SALT_B}


def frame(n: int, *, seed: int = 3, campaigns: tuple[str, ...] = ("a",)) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    decile = pl.Series("decile", rng.integers(1, 11, n), dtype=pl.Int8)
    decile = decile.scatter(np.flatnonzero(rng.random(n) < 0.1), None)
    return pl.DataFrame(
        {
            "campaign_id": rng.choice(list(campaigns), n),
            "customer_id": np.arange(1, n + 1, dtype=np.int64) * 7 + 100_000,
            "branch_id": rng.choice(["B01", "B02", "B03", "B04"], n),
            "decile": decile,
            "expected_uplift": rng.random(n),
        }
    )


def sorted_rows(f: pl.DataFrame) -> pl.DataFrame:
    return f.sort("campaign_id", "customer_id")


def test_treated_count_is_an_exact_floor():
    assert treated_count(10, 0.9) == 1  # int((1 - 0.9) * 10) is 0: the float lands below 1
    assert treated_count(20, 0.05) == 19
    assert treated_count(7, 0.5) == 3
    assert treated_count(0, 0.3) == 0
    assert treated_count(5, 0.0) == 5 and treated_count(5, 1.0) == 0
    with pytest.raises(ConfigError):
        treated_count(5, 1.5)


def test_arms_are_reproducible_and_independent_of_row_order():
    f = frame(3_000, campaigns=("a", "b"))
    shares = {"a": 0.5, "b": 0.05}
    first = assign_arms(f, SALTS, shares)
    again = assign_arms(f, SALTS, shares)
    shuffled = assign_arms(f.sample(fraction=1.0, shuffle=True, seed=9), SALTS, shares)
    assert first.equals(again)
    assert sorted_rows(first).equals(sorted_rows(shuffled))
    assert first.select(f.columns).equals(f)  # rows and columns kept as they came


def test_strata_and_exact_counts_per_stratum():
    f = frame(5_000, campaigns=("a", "b"))
    shares = {"a": 0.3, "b": 0.9}
    arms = assign_arms(f, SALTS, shares)
    assert arms.filter(pl.col("decile").is_null())["stratum"].str.ends_with("|dna").all()
    assert arms.row(0, named=True)["stratum"].startswith(
        arms.row(0, named=True)["branch_id"] + "|d"
    )
    for keys in (["campaign_id", "stratum"], ["campaign_id", "branch_id"], ["campaign_id"]):
        sizes = arms.group_by(keys).agg(n=pl.len(), control=(pl.col("arm") == "control").sum())
        for row in sizes.iter_rows(named=True):
            c, n = shares[row["campaign_id"]], row["n"]
            # Systematic sampling: every stratum, branch and campaign within one customer.
            assert n - treated_count(n, c) - 1 <= row["control"] <= n - treated_count(n, c)


def test_strata_of_one_are_control_at_the_declared_share():
    # 4,000 strata of one customer each: a per-stratum floor would make all of them control.
    f = frame(4_000).with_columns(branch_id=pl.format("B{}", pl.col("customer_id")))
    arms = assign_arms(f, SALTS, {"a": 0.25})
    control = int((arms["arm"] == "control").sum())
    assert control in (999, 1_000, 1_001)


def test_a_different_salt_gives_different_arms():
    f = frame(2_000)
    one = assign_arms(f, {"a": SALT_A}, {"a": 0.5})["arm"]
    other = assign_arms(f, {"a": SALT_B}, {"a": 0.5})["arm"]
    assert (one != other).sum() > 500


def test_balance_on_100k_in_one_stratum():
    n = 100_001
    f = pl.DataFrame(
        {
            "campaign_id": ["a"] * n,
            "customer_id": np.arange(n, dtype=np.int64),
            "branch_id": ["B01"] * n,
            "decile": pl.Series([3] * n, dtype=pl.Int8),
        }
    )
    arms = assign_arms(f, SALTS, {"a": 0.5})
    assert arms["stratum"].unique().to_list() == ["B01|d3"]
    assert int((arms["arm"] == "control").sum()) in (n // 2, n - n // 2)


def test_assignment_refusals():
    f = frame(10)
    with pytest.raises(ConfigError, match="control share"):
        assign_arms(f, SALTS, {})
    with pytest.raises(ConfigError, match="32-byte salt"):
        assign_arms(f, {"a": b"short"}, {"a": 0.5})
    with pytest.raises(ConfigError, match="32-byte salt"):
        entry_order(f, {})
    with pytest.raises(ConfigError, match="repeats"):
        assign_arms(pl.concat([f, f]), SALTS, {"a": 0.5})
    with pytest.raises(ConfigError, match="decile"):
        assign_arms(f.drop("decile"), SALTS, {"a": 0.5})


def test_empty_frames_pass_through():
    empty = frame(0)
    assert assign_arms(empty, SALTS, {}).columns == [*empty.columns, "stratum", "arm"]
    assert take_entrants(empty, SALTS, {}).height == 0
    assert entry_order(empty, SALTS)["entry"].dtype == pl.Binary


def test_entry_is_the_keyed_hash_of_the_customer():
    f = frame(50, campaigns=("a", "b"))
    ordered = entry_order(f, SALTS)
    for campaign, salt in SALTS.items():
        mine = ordered.filter(pl.col("campaign_id") == campaign)
        expected = hmac_sha256(pl.Series([f"entry|{i}" for i in mine["customer_id"]]), salt.hex())
        assert mine["entry"].to_list() == expected.to_list()
        assert all(len(value) == 32 for value in mine["entry"])


@settings(max_examples=40, deadline=None)
@given(
    first=st.sets(st.integers(1, 10**12), min_size=1, max_size=60),
    more=st.sets(st.integers(1, 10**12), max_size=60),
)
def test_entry_rank_relative_to_others_never_changes_when_more_arrive(first, more):
    def order(ids: set[int]) -> list[int]:
        f = pl.DataFrame({"campaign_id": "a", "customer_id": sorted(ids)})
        return entry_order(f, SALTS).sort("entry")["customer_id"].to_list()

    before = order(first)
    after = [i for i in order(first | more) if i in first]
    assert after == before


def test_take_entrants_takes_the_earliest_in_entry_order():
    f = frame(600, campaigns=("a", "b"))
    chosen = take_entrants(f, SALTS, {"a": 25, "b": None})
    assert chosen.columns == f.columns
    assert chosen.filter(pl.col("campaign_id") == "b").height == (f["campaign_id"] == "b").sum()
    mine = entry_order(f.filter(pl.col("campaign_id") == "a"), SALTS).sort("entry")
    expected = set(mine["customer_id"].head(25).to_list())
    assert set(chosen.filter(pl.col("campaign_id") == "a")["customer_id"]) == expected
    shuffled = take_entrants(
        f.sample(fraction=1.0, shuffle=True, seed=2), SALTS, {"a": 25, "b": None}
    )
    assert sorted_rows(shuffled).equals(sorted_rows(chosen))
    # A larger quota keeps the smaller quota's entrants: the pilot stays inside the A/B test.
    larger = take_entrants(f, SALTS, {"a": 60, "b": 0})
    assert expected <= set(larger.filter(pl.col("campaign_id") == "a")["customer_id"])
    assert larger.filter(pl.col("campaign_id") == "b").height == 0
    assert take_entrants(f, SALTS, {"a": 10**9, "b": None}).height == f.height


def test_take_entrants_refusals():
    f = frame(20, campaigns=("a", "b"))
    with pytest.raises(ConfigError, match="no quota"):
        take_entrants(f, SALTS, {"a": 3})
    with pytest.raises(ConfigError, match="negative"):
        take_entrants(f, SALTS, {"a": -1, "b": None})


def _srm(arms: pl.Series, share: float) -> SampleRatio:
    control = int((arms == "control").sum())
    return sample_ratio(arms.len() - control, control, expected_control_share=share)


def test_an_injected_52_48_split_is_flagged():
    arms = pl.Series(["treatment"] * 52_000 + ["control"] * 48_000)
    result = _srm(arms, 0.5)
    assert result.mismatch and result.p_value < 1e-30


def test_real_assignment_on_100k_is_not_flagged():
    f = frame(100_000, seed=5)
    arms = assign_arms(f, SALTS, {"a": 0.5})
    result = _srm(arms["arm"], 0.5)
    assert result.statistic < 1e-3 and not result.mismatch


def test_many_small_strata_keep_the_declared_share():
    # 500 strata of 3 customers at c = 0.5: the whole campaign is still half control.
    f = frame(1_500).with_columns(
        branch_id=pl.format("B{}", pl.int_range(pl.len()) // 3), decile=pl.lit(1, pl.Int8)
    )
    arms = assign_arms(f, SALTS, {"a": 0.5})
    assert int((arms["arm"] == "control").sum()) in (749, 750, 751)
    assert not _srm(arms["arm"], 0.5).mismatch
