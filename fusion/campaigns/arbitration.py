"""Arbitration: one campaign per customer per window, within each channel's capacity per branch.

Every screened row gets exactly one outcome, so per campaign the input rows = the kept rows + the
sum of `removed`:

    assigned_elsewhere  the customer is already assigned to another campaign whose window
                        overlaps this one (`taken`, from earlier plans)
    lost_arbitration    another of the customer's rows ranks first
    capacity            the row ranks first for its customer, but its (channel, branch) has no
                        slot left for it

Rows rank by (priority ascending, expected_value descending, tiebreak ascending), where the
tiebreak is the first 8 bytes (big-endian) of HMAC-SHA256(tiebreak_key, campaign_id "|"
customer_id). A keyed hash rather than campaign_id ascending: ties on priority and value are the
common case (a declared constant uplift where no model scores), and by name the same campaign
would win every tie and, within a branch, the lowest customer ids would take every slot; the
keyed hash orders ties pseudo-randomly, reproducibly, and independently of row order and ids.
(campaign_id and customer_id stay as the last sort keys, so even a 64-bit collision is ordered.)

A customer's first-ranked row is chosen before capacity: a customer whose best campaign has no
slot left is not handed to their next campaign in the same plan (their other rows are
`lost_arbitration`); the next plan sees them again.

Capacity: for each (channel, branch) the window has slots = capacity_per_branch_per_day x
window_days - used (never below 0). Campaigns sharing a channel share its slots; when their
declarations differ the smallest capacity x window among them applies, so that no campaign's
declared limit is exceeded. Rows of a (channel, branch) are taken in rank order while the
sum over its campaigns of the most each can treat, ceil((1 - control_share) x rows taken), stays
<= slots; the rest are `capacity`. Assignment treats at most that many of a branch's rows
(`fusion.campaigns.assignment`), in the same integer millionths, so the real treated count never
exceeds the slots and no float rounding can tip a row over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from contracts.errors import ConfigError
from fusion.campaigns.assignment import SHARE_SCALE, treated_units
from fusion.campaigns.screening import by_campaign_and_customer
from matcher.keyed_hash import hmac_sha256

__all__ = ["OUTCOMES", "Arbitrated", "ArbitrationPolicy", "arbitrate"]

OUTCOMES = ("assigned_elsewhere", "lost_arbitration", "capacity")
"""The keys of `Arbitrated.removed[campaign]`, in the order a row meets them."""

_POLICY = "__arb_"
_TIEBREAK = "__arb_tiebreak"
_VALUE = "__arb_value"
_BRANCH = "__arb_branch"
_ELSEWHERE = "__arb_elsewhere"
_OUTCOME = "__arb_outcome"
_CUMULATIVE = "__arb_cumulative"
_LIMIT = "__arb_limit"


@dataclass(frozen=True)
class ArbitrationPolicy:
    """One campaign's terms in arbitration (built by the planner from declaration and stage)."""

    priority: int
    channel: str
    capacity_per_branch_per_day: int
    window_days: int
    control_share: float
    value: float
    cost_per_contact: float


@dataclass(frozen=True)
class Arbitrated:
    """The rows kept (screened columns + expected_value) and per campaign the rows removed."""

    frame: pl.DataFrame
    removed: dict[str, dict[str, int]]


def arbitrate(
    screened: pl.DataFrame,
    policies: Mapping[str, ArbitrationPolicy],
    *,
    taken: pl.DataFrame,
    used_slots: pl.DataFrame,
    tiebreak_key: str,
) -> Arbitrated:
    """Return the rows that win their customer and a slot, sorted by (campaign_id, customer_id).

    Args:
        screened: campaign_id str, customer_id i64, branch_id str, expected_uplift f64 (+ any
            further columns, kept), one row per (campaign_id, customer_id).
        policies: every screened campaign's policy.
        taken: customer_id i64, campaign_id str of earlier plans whose windows overlap.
        used_slots: channel str, branch_id str, used i64 (missing = 0).
        tiebreak_key: the HMAC key of the tiebreak, as text.

    Raises ConfigError when a campaign has no policy, a policy is out of range, a frame lacks a
    column or a (campaign_id, customer_id) pair repeats.
    """
    _check(screened, policies)
    value = pl.col("expected_uplift") * pl.col(f"{_POLICY}value") - pl.col(f"{_POLICY}cost")
    work = (
        screened.select(
            "campaign_id",
            "customer_id",
            pl.col("branch_id").fill_null("").alias(_BRANCH),
            pl.col("expected_uplift").cast(pl.Float64),
        )
        .join(_policy_frame(policies), on="campaign_id", how="left", maintain_order="left")
        .with_columns(value.alias("expected_value"))
    )
    # NaN sorts above every number and null wherever nulls go: both rank last, as -inf.
    rank_value = pl.col("expected_value").fill_nan(None).fill_null(float("-inf"))
    _check_unique(work, len(policies))
    work = _mark_elsewhere(work, taken).with_columns(rank_value.alias(_VALUE))
    tiebreak, total = _tiebreak(work, tiebreak_key)
    order = _rank_order(work.with_columns(tiebreak), total=total)
    # Outcomes are decided on the rows in rank order, then put back in the input's order.
    ranked = work.select(
        "campaign_id", "customer_id", _ELSEWHERE, f"{_POLICY}channel", _BRANCH,
        f"{_POLICY}units",
    ).gather(order)  # fmt: skip
    first = pl.col("customer_id").is_first_distinct()
    ranked = ranked.with_columns(
        pl.when(pl.col(_ELSEWHERE))
        .then(pl.lit("assigned_elsewhere"))
        .when(~first)
        .then(pl.lit("lost_arbitration"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias(_OUTCOME)
    )
    ranked_outcome = _apply_capacity(ranked, policies, used_slots).get_column(_OUTCOME)
    outcome = pl.repeat(None, work.height, dtype=pl.String, eager=True)
    outcome = outcome.scatter(order, ranked_outcome).alias(_OUTCOME)
    removed = {campaign: dict.fromkeys(OUTCOMES, 0) for campaign in policies}
    counts = (
        pl.DataFrame({"campaign_id": work.get_column("campaign_id"), _OUTCOME: outcome})
        .drop_nulls(_OUTCOME)
        .group_by("campaign_id", _OUTCOME)
        .len()
    )
    for campaign, name, n in counts.iter_rows():
        removed[campaign][name] = n
    kept = screened.with_columns(work.get_column("expected_value")).filter(outcome.is_null())
    return Arbitrated(frame=by_campaign_and_customer(kept), removed=removed)


def _check(screened: pl.DataFrame, policies: Mapping[str, ArbitrationPolicy]) -> None:
    """Raise ConfigError unless the frame and the policies fit the contract."""
    needed = ("campaign_id", "customer_id", "branch_id", "expected_uplift")
    absent = [column for column in needed if column not in screened.columns]
    if absent:
        raise ConfigError(
            f"arbitration needs the screened column(s) {', '.join(absent)}; pass the frame "
            "screening returned",
            setting="screened",
        )
    campaigns = set(screened.get_column("campaign_id").unique().to_list())
    missing = sorted(str(c) for c in campaigns - set(policies))
    if missing:
        raise ConfigError(
            f"no arbitration policy for {len(missing)} screened campaign(s) "
            f"({', '.join(missing[:5])}); pass a policy for every campaign in the frame",
            setting="policies",
        )
    for campaign, policy in policies.items():
        if not 0 <= policy.control_share <= 1 or policy.window_days < 1:
            raise ConfigError(
                f"campaign {campaign}: control_share must be in [0, 1] and window_days >= 1, "
                f"got {policy.control_share} and {policy.window_days}; build the policy from "
                "the declaration and the stage",
                setting="policies",
            )


def _check_unique(work: pl.DataFrame, campaigns: int) -> None:
    """Raise ConfigError when a (campaign_id, customer_id) pair repeats."""
    customer, ordinal = pl.col("customer_id"), pl.col(f"{_POLICY}ordinal")
    largest = work.select(customer.abs().max()).item()
    if largest is None:
        return
    # One integer per pair when it fits in 63 bits (counting distinct integers is cheap).
    if largest < (1 << 62) // max(campaigns, 1):
        pairs = work.select((customer * campaigns + ordinal).n_unique()).item()
    else:
        pairs = work.select(pl.struct(customer, ordinal).n_unique()).item()
    if pairs < work.height:
        raise ConfigError(
            f"screened repeats {work.height - pairs} (campaign_id, customer_id) pair(s); "
            "arbitrate the frame fusion.campaigns.screening.screen returns (it drops them)",
            setting="screened",
        )


def _policy_frame(policies: Mapping[str, ArbitrationPolicy]) -> pl.DataFrame:
    """Return one row per campaign with the policy's terms (prefixed working columns)."""
    names = sorted(policies)
    return pl.DataFrame(
        {
            "campaign_id": names,
            f"{_POLICY}priority": [policies[c].priority for c in names],
            f"{_POLICY}channel": [policies[c].channel for c in names],
            f"{_POLICY}value": [float(policies[c].value) for c in names],
            f"{_POLICY}cost": [float(policies[c].cost_per_contact) for c in names],
            f"{_POLICY}units": [treated_units(policies[c].control_share) for c in names],
            f"{_POLICY}ordinal": list(range(len(names))),
        },
        schema={
            "campaign_id": pl.String,
            f"{_POLICY}priority": pl.Int64,
            f"{_POLICY}channel": pl.String,
            f"{_POLICY}value": pl.Float64,
            f"{_POLICY}cost": pl.Float64,
            f"{_POLICY}units": pl.Int64,
            f"{_POLICY}ordinal": pl.Int64,
        },
    )


def _tiebreak(work: pl.DataFrame, key: str) -> tuple[pl.Series, bool]:
    """Return the u64 tiebreak of each row (the keyed hash of campaign and customer) and
    whether the hashes are distinct.

    Only rows whose (elsewhere, priority, value) another row shares are hashed: elsewhere the
    tiebreak never decides, and 0 orders them as well as the hash would.
    """
    tied = work.select(pl.struct(_ELSEWHERE, f"{_POLICY}priority", _VALUE).is_duplicated())
    mask = tied.to_series()
    messages = work.filter(mask).select(
        pl.concat_str(pl.col("campaign_id"), pl.lit("|"), pl.col("customer_id").cast(pl.String))
    )
    digests = hmac_sha256(messages.to_series(), key)
    hashed = (
        pl.DataFrame({"h": digests})
        .select(pl.col("h").bin.slice(0, 8).bin.reinterpret(dtype=pl.UInt64, endianness="big"))
        .to_series()
    )
    out = pl.repeat(0, work.height, dtype=pl.UInt64, eager=True)
    out = out.scatter(mask.arg_true(), hashed).alias(_TIEBREAK)
    return out, hashed.n_unique() == hashed.len()


def _mark_elsewhere(frame: pl.DataFrame, taken: pl.DataFrame) -> pl.DataFrame:
    """Return the frame with a flag: is the customer taken by another campaign."""
    if not {"customer_id", "campaign_id"} <= set(taken.columns):
        raise ConfigError(
            f"taken needs customer_id and campaign_id, got {', '.join(taken.columns)}; pass "
            "the assignments of earlier plans whose windows overlap",
            setting="taken",
        )
    # A customer taken by two campaigns is elsewhere for every row; by one, for the others.
    summary = (
        taken.select(pl.col("customer_id").cast(pl.Int64), pl.col("campaign_id").cast(pl.String))
        .group_by("customer_id")
        .agg(
            pl.col("campaign_id").n_unique().alias("__arb_n_taken"),
            pl.col("campaign_id").min().alias("__arb_taken_by"),
        )
    )
    joined = frame.join(summary, on="customer_id", how="left", maintain_order="left")
    elsewhere = (pl.col("__arb_n_taken") > 1) | (
        pl.col("__arb_taken_by").is_not_null() & (pl.col("__arb_taken_by") != pl.col("campaign_id"))
    )
    return joined.with_columns(elsewhere.fill_null(False).alias(_ELSEWHERE)).drop(
        "__arb_n_taken", "__arb_taken_by"
    )


def _rank_order(work: pl.DataFrame, *, total: bool) -> pl.Series:
    """Return the row indices in rank order: taken elsewhere last, then the ranking keys.

    `total` says the keys already order every row strictly (the tiebreak hashes are distinct).
    """
    # One integer key for (elsewhere, priority), and no nulls: both keep the sort fast.
    first = pl.col(_ELSEWHERE).cast(pl.Int64) * (1 << 40) + pl.col(f"{_POLICY}priority")
    keys = [first, pl.col(_VALUE), pl.col(_TIEBREAK)]
    descending = [False, True, False]
    if not total:  # two tied rows' tiebreaks collide in 64 bits: the ids order them
        keys += [pl.col("campaign_id"), pl.col("customer_id")]
        descending += [False, False]
    return work.select(pl.arg_sort_by(keys, descending=descending)).to_series()


def _apply_capacity(
    frame: pl.DataFrame, policies: Mapping[str, ArbitrationPolicy], used_slots: pl.DataFrame
) -> pl.DataFrame:
    """Return the frame with `capacity` set on first-ranked rows past their channel's slots."""
    if not {"channel", "branch_id", "used"} <= set(used_slots.columns):
        raise ConfigError(
            f"used_slots needs channel, branch_id and used, got {', '.join(used_slots.columns)};"
            " pass the treated contacts already planned per channel and branch in the window",
            setting="used_slots",
        )
    window: dict[str, int] = {}
    for policy in policies.values():
        slots = policy.capacity_per_branch_per_day * policy.window_days
        window[policy.channel] = min(window.get(policy.channel, slots), slots)
    used = (
        used_slots.select(
            pl.col("channel").cast(pl.String).alias(f"{_POLICY}channel"),
            pl.col("branch_id").cast(pl.String).fill_null("").alias(_BRANCH),
            pl.col("used").cast(pl.Int64),
        )
        .group_by(f"{_POLICY}channel", _BRANCH)
        .agg(pl.col("used").sum())
    )
    windows = pl.DataFrame(
        {f"{_POLICY}channel": list(window), "__arb_window": list(window.values())},
        schema={f"{_POLICY}channel": pl.String, "__arb_window": pl.Int64},
    )
    groups = [f"{_POLICY}channel", _BRANCH]
    competing = pl.col(_OUTCOME).is_null()
    # The m-th row a campaign takes in a branch raises the most it can treat there from
    # ceil(u (m - 1)) to ceil(u m) (u: its treated share): assignment treats at most that many
    # of any run of m rows, so the sum of these bounds is what the slots must hold.
    taken = competing.cast(pl.Int64).cum_sum().over([*groups, "campaign_id"])
    units = pl.col(f"{_POLICY}units")
    weight = pl.when(competing).then(
        -((-units * taken) // SHARE_SCALE) + ((-units * (taken - 1)) // SHARE_SCALE)
    )
    limit = (pl.col("__arb_window") - pl.col("used").fill_null(0)).clip(lower_bound=0)
    frame = (
        frame.with_columns(weight.otherwise(0).cum_sum().over(groups).alias(_CUMULATIVE))
        .join(windows, on=f"{_POLICY}channel", how="left", maintain_order="left")
        .join(used, on=groups, how="left", maintain_order="left")
        .with_columns(limit.alias(_LIMIT))
    )
    over = competing & (pl.col(_CUMULATIVE) > pl.col(_LIMIT))
    return frame.with_columns(
        pl.when(over).then(pl.lit("capacity")).otherwise(pl.col(_OUTCOME)).alias(_OUTCOME)
    )
