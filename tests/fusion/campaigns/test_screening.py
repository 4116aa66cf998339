"""Screening: each rule on hand-made frames, its boundary days, and counts that add up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import polars as pl
import pytest

from contracts.errors import ConfigError
from fusion.campaigns.declaration import FrequencyCap, Screening
from fusion.campaigns.screening import ScreeningContext, rule_keys, screen

DAY = date(2026, 3, 31)
# Every rule off but the one a test turns on.
OFF = Screening(
    suppression_lists=[],
    complaint_months=0,
    frequency_cap=FrequencyCap(contacts=100, days=30),
    cooling_off_days=0,
)


def candidates(*rows: tuple[str, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "campaign_id": [c for c, _ in rows],
            "customer_id": [i for _, i in rows],
            "branch_id": ["B1"] * len(rows),
            "decile": [1] * len(rows),
            "expected_uplift": [0.01] * len(rows),
        },
        schema={
            "campaign_id": pl.String,
            "customer_id": pl.Int64,
            "branch_id": pl.String,
            "decile": pl.Int8,
            "expected_uplift": pl.Float64,
        },
    )


def context(
    *,
    suppressions: Sequence[tuple[str, int, date, date | None]] = (),
    contacts: Sequence[tuple[int, date]] = (),
    complaints: Sequence[tuple[int, datetime]] = (),
    holders: pl.DataFrame | None = None,
) -> ScreeningContext:
    return ScreeningContext(
        day=DAY,
        suppressions=pl.DataFrame(
            list(suppressions),
            schema={
                "list_name": pl.String,
                "customer_id": pl.Int64,
                "since": pl.Date,
                "until": pl.Date,
            },
            orient="row",
        ),
        contacts=pl.DataFrame(
            [(i, "other", "sms", d) for i, d in contacts],
            schema={
                "customer_id": pl.Int64,
                "source": pl.String,
                "channel": pl.String,
                "day": pl.Date,
            },
            orient="row",
        ),
        complaints=pl.DataFrame(
            list(complaints),
            schema={"customer_id": pl.Int64, "occurred_at": pl.Datetime("us", "UTC")},
            orient="row",
        ),
        holders=holders
        if holders is not None
        else pl.DataFrame(schema={"customer_id": pl.Int64, "mb_registered": pl.Boolean}),
    )


def kept_ids(result_frame: pl.DataFrame, campaign: str = "a") -> list[int]:
    return result_frame.filter(pl.col("campaign_id") == campaign)["customer_id"].to_list()


def test_active_suppressions_only_and_the_first_named_list_counts():
    ago = DAY - timedelta(days=10)
    ctx = context(
        suppressions=[
            ("opt-out", 1, ago, None),  # active, open-ended
            ("opt-out", 2, DAY, None),  # starts today: active
            ("opt-out", 3, DAY + timedelta(days=1), None),  # not yet
            ("opt-out", 4, ago, DAY),  # ended today: day < until fails
            ("opt-out", 5, ago, DAY + timedelta(days=1)),  # ends tomorrow: active
            ("vip-only", 6, ago, None),  # a list the campaign does not name
            ("do-not-disturb", 7, ago, None),
            ("opt-out", 7, ago, None),  # on both: the campaign's first list counts
        ]
    )
    rules = {"a": OFF.model_copy(update={"suppression_lists": ["do-not-disturb", "opt-out"]})}
    result = screen(candidates(*(("a", i) for i in range(1, 9))), rules, ctx)
    assert kept_ids(result.frame) == [3, 4, 6, 8]
    assert result.removed["a"]["suppressed:opt-out"] == 3
    assert result.removed["a"]["suppressed:do-not-disturb"] == 1


def test_complaint_boundary_is_the_calendar_day_months_before():
    # 31 March less 6 months is 30 September (the month has no 31st).
    cutoff = datetime(2025, 9, 30)
    ctx = context(
        complaints=[
            (1, cutoff),  # exactly 6 months ago: within
            (2, cutoff - timedelta(microseconds=1)),  # the day before: out of reach
            (3, datetime(2026, 3, 30, 23, 0)),
            (4, datetime(2026, 3, 31, 9, 0)),  # the plan's own morning counts
        ]
    )
    rules = {"a": OFF.model_copy(update={"complaint_months": 6})}
    result = screen(candidates(*(("a", i) for i in range(1, 6))), rules, ctx)
    assert kept_ids(result.frame) == [2, 5]
    assert result.removed["a"]["complaint"] == 3
    off = screen(candidates(("a", 1)), {"a": OFF}, ctx)
    assert kept_ids(off.frame) == [1] and off.removed["a"]["complaint"] == 0


def test_frequency_cap_counts_contacts_in_the_window_before_the_day():
    cap = FrequencyCap(contacts=2, days=30)
    edge, outside = DAY - timedelta(days=30), DAY - timedelta(days=31)
    ctx = context(
        contacts=[
            (1, edge),
            (1, DAY - timedelta(days=1)),  # 2 in the window: one more would exceed the cap
            (2, outside),
            (2, DAY - timedelta(days=1)),  # only 1 in the window
            (3, DAY),
            (3, DAY + timedelta(days=2)),  # planned on/after the day: not before it
            (3, DAY - timedelta(days=2)),
            (4, DAY - timedelta(days=2)),
            (4, DAY - timedelta(days=3)),
            (4, DAY - timedelta(days=4)),
        ]
    )
    rules = {"a": OFF.model_copy(update={"frequency_cap": cap})}
    result = screen(candidates(*(("a", i) for i in range(1, 6))), rules, ctx)
    assert kept_ids(result.frame) == [2, 3, 5]
    assert result.removed["a"]["frequency_cap"] == 2


def test_cooling_off_boundary_is_exactly_n_days_ago():
    ctx = context(
        contacts=[
            (1, DAY - timedelta(days=14)),  # exactly 14 days ago: still cooling
            (2, DAY - timedelta(days=15)),
            (3, DAY),  # today's contact is not before the day
            (4, DAY - timedelta(days=1)),
        ]
    )
    rules = {"a": OFF.model_copy(update={"cooling_off_days": 14})}
    result = screen(candidates(*(("a", i) for i in range(1, 5))), rules, ctx)
    assert kept_ids(result.frame) == [2, 3]
    assert result.removed["a"]["cooling_off"] == 2
    off = screen(candidates(("a", 1)), {"a": OFF}, ctx)
    assert kept_ids(off.frame) == [1]


def test_holders_numeric_and_boolean_null_is_not_a_holder():
    holders = pl.DataFrame(
        {
            "customer_id": [1, 2, 3, 4, 5],
            "mb_registered": [True, False, None, False, False],
            "card_count": [0, 2, None, 0, -1],
        }
    )
    rules = {"a": OFF.model_copy(update={"exclude_holders": ["mb_registered", "card_count"]})}
    result = screen(candidates(*(("a", i) for i in range(1, 7))), rules, context(holders=holders))
    assert kept_ids(result.frame) == [3, 4, 5, 6]
    assert result.removed["a"]["holder:mb_registered"] == 1
    assert result.removed["a"]["holder:card_count"] == 1


def test_a_missing_holder_column_is_named():
    rules = {"a": OFF.model_copy(update={"exclude_holders": ["loan_balance"]})}
    with pytest.raises(ConfigError, match="loan_balance") as raised:
        screen(candidates(("a", 1)), rules, context())
    assert raised.value.setting == "screening.exclude_holders"


def test_a_text_holder_column_is_refused():
    holders = pl.DataFrame({"customer_id": [1], "segment": ["gold"]})
    rules = {"a": OFF.model_copy(update={"exclude_holders": ["segment"]})}
    with pytest.raises(ConfigError, match="segment"):
        screen(candidates(("a", 1)), rules, context(holders=holders))


def test_duplicates_counted_once_and_the_kept_copy_is_order_free():
    frame = candidates(("a", 1), ("a", 1), ("a", 2), ("b", 1)).with_columns(
        expected_uplift=pl.Series([0.05, 0.01, 0.01, 0.01])
    )
    rules = {"a": OFF, "b": OFF}
    forward = screen(frame, rules, context())
    backward = screen(frame.reverse(), rules, context())
    assert forward.removed["a"]["duplicate"] == 1 and forward.removed["b"]["duplicate"] == 0
    assert forward.frame.equals(backward.frame)
    assert forward.frame.height == 3


def test_first_rule_wins_and_counts_add_up_per_campaign():
    rules = {
        "a": Screening(exclude_holders=["mb_registered"]),
        "b": Screening(suppression_lists=["opt-out"], cooling_off_days=0, complaint_months=0),
    }
    holders = pl.DataFrame({"customer_id": [1, 2, 3], "mb_registered": [True, True, False]})
    ctx = context(
        suppressions=[("opt-out", 1, DAY - timedelta(days=1), None)],
        contacts=[(2, DAY - timedelta(days=3))],
        complaints=[(3, datetime(2026, 1, 1))],
        holders=holders,
    )
    rows = [(c, i) for c in ("a", "b") for i in (1, 2, 3, 4)] + [("a", 4)]
    result = screen(candidates(*rows), rules, ctx)
    a, b = result.removed["a"], result.removed["b"]
    # Customer 1 is suppressed and a holder: counted as suppressed only.
    assert a == {
        "duplicate": 1,
        "suppressed:do-not-disturb": 0,
        "suppressed:opt-out": 1,
        "complaint": 1,
        "frequency_cap": 0,
        "cooling_off": 1,
        "holder:mb_registered": 0,
    }
    assert b == dict.fromkeys(rule_keys(rules["b"]), 0) | {"suppressed:opt-out": 1}
    for campaign, rule_counts in result.removed.items():
        inputs = sum(1 for c, _ in rows if c == campaign)
        assert inputs == len(kept_ids(result.frame, campaign)) + sum(rule_counts.values())


def test_every_rule_key_is_present_even_for_campaigns_without_candidates():
    rules = {"a": OFF, "idle": Screening(exclude_holders=["mb_registered"])}
    result = screen(candidates(("a", 1)), rules, context())
    assert result.removed["idle"] == dict.fromkeys(rule_keys(rules["idle"]), 0)
    assert list(result.removed["a"]) == rule_keys(OFF)


def test_output_is_sorted_and_keeps_the_input_columns():
    frame = candidates(("b", 5), ("a", 9), ("a", 2), ("b", 1)).with_columns(extra=pl.lit("x"))
    result = screen(frame, {"a": OFF, "b": OFF}, context())
    assert result.frame.columns == frame.columns
    assert result.frame.select("campaign_id", "customer_id").rows() == [
        ("a", 2),
        ("a", 9),
        ("b", 1),
        ("b", 5),
    ]


def test_empty_candidates_give_an_empty_frame():
    result = screen(candidates(), {"a": OFF}, context())
    assert result.frame.height == 0 and result.frame.columns == candidates().columns
    assert result.removed == {"a": dict.fromkeys(rule_keys(OFF), 0)}


def test_a_campaign_without_rules_is_refused():
    with pytest.raises(ConfigError, match="ghost") as raised:
        screen(candidates(("a", 1), ("ghost", 2)), {"a": OFF}, context())
    assert raised.value.setting == "rules"


def test_a_customer_repeated_in_holders_holds_if_any_row_says_so():
    holders = pl.DataFrame({"customer_id": [1, 1, 2], "card_count": [0, 3, 0]})
    rules = {"a": OFF.model_copy(update={"exclude_holders": ["card_count"]})}
    result = screen(candidates(("a", 1), ("a", 2)), rules, context(holders=holders))
    assert kept_ids(result.frame) == [2]
    assert result.removed["a"]["holder:card_count"] == 1
