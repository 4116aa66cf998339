"""The world executes a campaign: who is delivered, contacted, reached, and who succeeds.

Given a campaign's assignments (customer_id, arm, contact_day) and the world's truth
(`truth/propensity.parquet`), `execute_campaign` returns the funnel events the bank's channels
would report, in the input schema of `fusion.campaigns.outcomes.record_events`, and the true
effect of the campaign on every assigned customer, to judge a readout against.

The funnel, per treatment customer (one uniform per step, every draw over whole columns):

    delivered    on contact_day (the delivery file reached the channel), 07:00-08:00; a
                 treatment customer without one (a whitelist) on the window's first day, start
    contacted    with `contact_rate` (0.87: the CRM case's share of a list a call centre gets
                 to), 0 to `contact_delay_days` days after delivery, 09:00-18:00
    reached      with `reach_rate` of the contacted (the right person listened), minutes later
    complained   with `complaint_rate`, and opted_out with `opt_out_rate`, of the contacted,
                 within two days of the contact (drawn apart from success: rare either way)
    success      with p_treatment if reached, else with p_control (organic, as if untreated);
                 a reached success comes `success_delay_days` (1-20) days after the reach, an
                 organic one on a day of the window [start, start + window_days)

Control customers are never delivered or contacted: they only succeed organically, with
p_control, on a day of the window. The success is the objective's own event: for
mobile_banking a `converted` (the account opened, with the first month's balance), preceded by a
`responded`, and a few customers respond without ever opening (`interest_rate` of the reached,
`organic_interest` of the others); for
food_coupon a `responded` (the coupon used), and most responders (`order_rate`) also place an
order, a `converted` event with its amount up to two days later. So responders and converters
are never the same set, as in a real funnel. Assignment therefore raises a customer's success
probability from p_control to

    p_control + contact_rate * reach_rate * (p_treatment - p_control)

and that intention-to-treat pair is what `true_effects` holds for every assigned customer.

The success probabilities by objective:

    food_coupon      p_control = p_response_control, p_treatment = p_response_treatment of the
                     world (its past coupon campaign's truth); the world draws responses only
                     for unregistered customers, so a registered one has 0 under both.
                     converted amount: the coupon order's spend, lognormal (median e^3.5 ~ 33)
    mobile_banking   a call to open mobile banking (the rescue list): p_control = 0.25 x p_open
                     (a quarter of the world's opening happens unprompted within a campaign's
                     window) and p_treatment = min(0.95, 1.5 x p_open), so a reached customer
                     opens six times as often as an organic one (1.5 / 0.25), unless capped.
                     Registered customers cannot open it again: 0 under both.
                     converted amount: the first month's balance, lognormal (median e^8 ~ 2,981)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import polars as pl

from fusion.campaigns.outcomes import EVENT_SCHEMA
from labs.world.errors import WorldError

__all__ = [
    "BALANCE_METRIC",
    "TRUE_BALANCE_SCHEMA",
    "TRUE_EFFECT_SCHEMA",
    "ExecutionConfig",
    "execute_balances",
    "execute_campaign",
]

TRUE_EFFECT_SCHEMA = {
    "customer_id": pl.Int64,
    "arm": pl.String,
    "p_control": pl.Float64,
    "p_treatment": pl.Float64,
}
TRUE_BALANCE_SCHEMA = {"customer_id": pl.Int64, "arm": pl.String, "effect": pl.Float64}
BALANCE_METRIC = "aum"
_BALANCE_STREAM = 0xBA1A  # the balances' own random stream: the funnel's draws stay as they were
_OBJECTIVES = ("mobile_banking", "food_coupon")
_US_PER_MINUTE = 60_000_000
_US_PER_HOUR = 60 * _US_PER_MINUTE
_US_PER_DAY = 24 * _US_PER_HOUR
# The funnel's order, for events of one customer at one instant (a reach right at its contact).
_EVENT_ORDER = (
    "delivered",
    "contacted",
    "reached",
    "complained",
    "opted_out",
    "responded",
    "converted",
)

I64 = np.ndarray[Any, np.dtype[np.int64]]
F64 = np.ndarray[Any, np.dtype[np.float64]]
Mask = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass(frozen=True)
class ExecutionConfig:
    """Rates, delays and amounts of a campaign's execution (see the module docstring)."""

    contact_rate: float = 0.87  # the CRM case: share of delivered customers contacted
    reach_rate: float = 0.80  # reached | contacted
    complaint_rate: float = 0.004  # | contacted
    opt_out_rate: float = 0.006  # | contacted
    interest_rate: float = 0.03  # mobile_banking: reached, responds, never opens
    organic_interest: float = 0.005  # mobile_banking: the same, unprompted (e.g. an app banner)
    order_rate: float = 0.85  # food_coupon: responders who also order (converted)
    contact_delay_days: int = 2  # contacted 0..this many days after delivery
    success_delay_days: tuple[int, int] = (1, 20)  # a reached success, days after the reach
    window_days: int = 28  # organic successes fall on a day of [start, start + window_days)
    organic_share: float = 0.25  # mobile_banking: p_control = organic_share x p_open
    call_multiplier: float = 1.5  # mobile_banking: p_treatment = call_multiplier x p_open
    success_cap: float = 0.95  # mobile_banking: p_treatment's ceiling
    balance_log_median: float = 8.0  # mobile_banking: log of the median first-month balance
    balance_log_sigma: float = 1.0
    spend_log_median: float = 3.5  # food_coupon: log of the median coupon order
    spend_log_sigma: float = 0.5
    balance_sigma: float = 0.08  # a month's AUM average: aum_current x lognormal(0, this)

    def __post_init__(self) -> None:
        for name in (
            "contact_rate",
            "reach_rate",
            "complaint_rate",
            "opt_out_rate",
            "interest_rate",
            "organic_interest",
            "order_rate",
            "organic_share",
            "success_cap",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise WorldError(f"{name} must be a probability in [0, 1], got {value}")
        low, high = self.success_delay_days
        if not 0 <= low <= high:
            raise WorldError(
                f"success_delay_days must be (low, high) with 0 <= low <= high, got "
                f"{self.success_delay_days}"
            )
        for name in ("contact_delay_days", "window_days"):
            if getattr(self, name) < (1 if name == "window_days" else 0):
                raise WorldError(f"{name} must be at least 1, got {getattr(self, name)}")
        if min(self.call_multiplier, self.balance_log_sigma, self.spend_log_sigma,
               self.balance_sigma) < 0:  # fmt: skip
            raise WorldError("call_multiplier and the amounts' sigmas must be >= 0")


@dataclass(frozen=True)
class _Funnel:
    """Who went how far, and when (microseconds since 1970, naive UTC), one row per customer."""

    delivered: Mask
    contacted: Mask
    reached: Mask
    complained: Mask
    opted_out: Mask
    responded: Mask
    converted: Mask
    delivered_at: I64
    contacted_at: I64
    reached_at: I64
    complained_at: I64
    opted_out_at: I64
    responded_at: I64
    converted_at: I64
    amount: F64


def execute_campaign(
    assigned: pl.DataFrame,
    truth: pl.DataFrame,
    *,
    campaign_id: str,
    objective: Literal["mobile_banking", "food_coupon"],
    start: date,
    seed: int,
    config: ExecutionConfig = ExecutionConfig(),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (the funnel events, the true effects) of executing the campaign in the world.

    `assigned`: customer_id i64, arm "treatment" | "control", contact_day date (treatment;
    null: delivered on `start`).
    `truth`: the world's propensity frame. The events follow `EVENT_SCHEMA` (event_key null,
    amount on converted only), sorted by time; the true effects (`TRUE_EFFECT_SCHEMA`) give
    each assigned customer's success probability without and with assignment. The same
    inputs and seed give the same frames, whatever the order of `assigned`'s rows.
    """
    if objective not in _OBJECTIVES:
        raise WorldError(f"objective must be one of {', '.join(_OBJECTIVES)}, got {objective!r}")
    frame = _joined(assigned, truth)
    p_control, p_reached = _probabilities(frame, objective, config)
    rng = np.random.default_rng(seed)
    funnel = _funnel(frame, p_control, p_reached, objective, start, rng, config)
    events = _events(frame["customer_id"].to_numpy(), funnel, campaign_id)
    reach = config.contact_rate * config.reach_rate
    effects = pl.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "arm": frame["arm"],
            "p_control": p_control,
            "p_treatment": p_control + reach * (p_reached - p_control),
        },
        schema=TRUE_EFFECT_SCHEMA,
    )
    return events, effects


def execute_balances(
    effects: pl.DataFrame,
    events: pl.DataFrame,
    bank: pl.DataFrame,
    *,
    campaign_id: str,
    objective: Literal["mobile_banking", "food_coupon"],
    measured_at: datetime,
    seed: int,
    config: ExecutionConfig = ExecutionConfig(),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (the AUM metric rows, its true effects) of a campaign the world executed.

    `effects`: `execute_campaign`'s true effects (customer_id, arm, p_control, p_treatment);
    `events`: its funnel events; `bank`: the bank extract's customer_id, aum_current and
    aum_month_avg. Each assigned customer's AUM month average of the month after the campaign is
    drawn by the law the world draws `aum_month_avg` by (aum_current x lognormal(0,
    `balance_sigma`)), plus the new money a customer who opened mobile banking brings (the
    converted event's amount: the first month's balance). Its pre-period is the extract's
    `aum_month_avg`, known before assignment. The metric rows follow
    `fusion.campaigns.metrics.METRIC_SCHEMA`; the true effect of assignment on a customer's
    expected AUM is (p_treatment - p_control) x the mean first-month balance for mobile_banking,
    0 for food_coupon (a coupon moves no deposits). Draws come from a stream of their own, so
    the funnel's events are the same with or without the balances.
    """
    if objective not in _OBJECTIVES:
        raise WorldError(f"objective must be one of {', '.join(_OBJECTIVES)}, got {objective!r}")
    frame = (
        effects.select(pl.col("customer_id").cast(pl.Int64), "arm", "p_control", "p_treatment")
        .sort("customer_id")
        .join(
            bank.select(pl.col("customer_id").cast(pl.Int64), "aum_current", "aum_month_avg"),
            on="customer_id",
            how="left",
            maintain_order="left",
        )
    )
    if frame["aum_current"].null_count():
        raise WorldError("bank lacks some assigned customers; pass the world's bank extract")
    new_money = (
        events.filter((pl.col("event") == "converted") & (pl.col("campaign_id") == campaign_id))
        .group_by("customer_id")
        .agg(pl.col("amount").sum().alias("new_money"))
    )
    frame = frame.join(new_money, on="customer_id", how="left", maintain_order="left")
    rng = np.random.default_rng([seed, _BALANCE_STREAM])
    drift = rng.lognormal(0.0, config.balance_sigma, frame.height)
    opens = objective == "mobile_banking"
    brought = frame["new_money"].fill_null(0.0).to_numpy() if opens else 0.0
    value = np.round(frame["aum_current"].to_numpy() * drift + brought, 2)
    mean_balance = math.exp(config.balance_log_median + config.balance_log_sigma**2 / 2)
    lift = (frame["p_treatment"] - frame["p_control"]).to_numpy()
    metrics = pl.DataFrame(
        {
            "campaign_id": campaign_id,
            "customer_id": frame["customer_id"],
            "metric": BALANCE_METRIC,
            "value": value,
            "pre_value": frame["aum_month_avg"].cast(pl.Float64),
            "measured_at": measured_at.replace(tzinfo=None),
        }
    ).cast({"measured_at": pl.Datetime("us")})
    truth = pl.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "arm": frame["arm"],
            "effect": lift * mean_balance if opens else np.zeros(frame.height),
        },
        schema=TRUE_BALANCE_SCHEMA,
    )
    return metrics, truth


def _joined(assigned: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """Return the assigned customers, by customer_id, with their truth; refuse bad inputs."""
    for name in ("customer_id", "arm", "contact_day"):
        if name not in assigned.columns:
            raise WorldError(f"assigned has no column {name}; give customer_id, arm, contact_day")
    needed = (
        "customer_id",
        "mb_registered",
        "p_open",
        "p_response_control",
        "p_response_treatment",
    )
    missing = [name for name in needed if name not in truth.columns]
    if missing:
        raise WorldError(
            f"truth has no column {', '.join(missing)}; pass truth/propensity.parquet of a world"
        )
    frame = assigned.select(
        pl.col("customer_id").cast(pl.Int64),
        pl.col("arm").cast(pl.String),
        pl.col("contact_day").cast(pl.Date),
    ).sort("customer_id")
    if frame["customer_id"].is_duplicated().any():
        raise WorldError("assigned holds a customer twice; a customer has one arm per campaign")
    bad_arm = ~frame["arm"].is_in(["treatment", "control"]).fill_null(False)
    if bad_arm.any():
        raise WorldError(
            f"{bad_arm.sum()} assigned rows have an arm other than treatment or control"
        )
    joined = frame.join(
        truth.select(needed).cast({"customer_id": pl.Int64}),
        on="customer_id",
        how="left",
        maintain_order="left",
    )
    unknown = joined["mb_registered"].is_null().sum()
    if unknown:
        raise WorldError(
            f"{unknown} assigned customers are not in the truth; assign the world's customers"
        )
    return joined


def _probabilities(frame: pl.DataFrame, objective: str, config: ExecutionConfig) -> tuple[F64, F64]:
    """Return the success probabilities without a contact and once reached, per customer."""
    registered = frame["mb_registered"].to_numpy().astype(bool)
    if objective == "mobile_banking":
        p_open = frame["p_open"].fill_null(0.0).to_numpy().astype(np.float64)
        p_control = config.organic_share * p_open
        p_reached = np.minimum(config.success_cap, config.call_multiplier * p_open)
    else:
        p_control = frame["p_response_control"].fill_null(0.0).to_numpy().astype(np.float64)
        p_reached = frame["p_response_treatment"].fill_null(0.0).to_numpy().astype(np.float64)
    # Registered customers cannot open mobile banking again; the world has no coupon truth
    # for them.
    p_control = np.where(registered, 0.0, np.clip(p_control, 0.0, 1.0))
    p_reached = np.where(registered, 0.0, np.clip(p_reached, 0.0, 1.0))
    return p_control, p_reached


def _funnel(
    frame: pl.DataFrame,
    p_control: F64,
    p_reached: F64,
    objective: str,
    start: date,
    rng: np.random.Generator,
    config: ExecutionConfig,
) -> _Funnel:
    """Return who reached each step, and when; every draw is one column of `rng`, in order."""
    n = frame.height
    u = rng.random((6, n))  # contact, reach, complaint, opt-out, success, responded
    treated = (frame["arm"] == "treatment").to_numpy()
    contacted = treated & (u[0] < config.contact_rate)
    reached = contacted & (u[1] < config.reach_rate)
    success = u[4] < np.where(reached, p_reached, p_control)

    day0 = int((start - date(1970, 1, 1)).days) * _US_PER_DAY
    contact_day = frame["contact_day"].fill_null(start).cast(pl.Int64).to_numpy() * _US_PER_DAY
    delivered_at = contact_day + 7 * _US_PER_HOUR + rng.integers(0, _US_PER_HOUR, n)
    contacted_at = (
        contact_day
        + rng.integers(0, config.contact_delay_days + 1, n) * _US_PER_DAY
        + 9 * _US_PER_HOUR
        + rng.integers(0, 9 * _US_PER_HOUR, n)
    )
    reached_at = contacted_at + rng.integers(_US_PER_MINUTE, 10 * _US_PER_MINUTE, n)
    complained_at = contacted_at + rng.integers(_US_PER_MINUTE, 2 * _US_PER_DAY, n)
    opted_out_at = contacted_at + rng.integers(_US_PER_MINUTE, 2 * _US_PER_DAY, n)
    low, high = config.success_delay_days
    after_reach = reached_at + rng.integers(low, high + 1, n) * _US_PER_DAY
    organic = day0 + rng.integers(0, config.window_days, n) * _US_PER_DAY
    organic += 8 * _US_PER_HOUR + rng.integers(0, 14 * _US_PER_HOUR, n)
    responded_at = np.where(reached, after_reach, organic)
    converted_at = responded_at + rng.integers(0, 2 * _US_PER_DAY, n)
    if objective == "mobile_banking":
        log_median, sigma = config.balance_log_median, config.balance_log_sigma
    else:
        log_median, sigma = config.spend_log_median, config.spend_log_sigma
    amount = np.round(rng.lognormal(log_median, sigma, n), 2)
    return _Funnel(
        delivered=treated,
        contacted=contacted,
        reached=reached,
        complained=contacted & (u[2] < config.complaint_rate),
        opted_out=contacted & (u[3] < config.opt_out_rate),
        responded=success
        | (
            (p_reached > 0)
            & (u[5] < np.where(reached, config.interest_rate, config.organic_interest))
        )
        if objective == "mobile_banking"
        else success,
        converted=success
        if objective == "mobile_banking"
        else success & (u[5] < config.order_rate),
        delivered_at=delivered_at,
        contacted_at=contacted_at,
        reached_at=reached_at,
        complained_at=complained_at,
        opted_out_at=opted_out_at,
        responded_at=responded_at,
        converted_at=converted_at,
        amount=amount,
    )


def _events(customer_id: I64, funnel: _Funnel, campaign_id: str) -> pl.DataFrame:
    """Return the funnel's events as rows of `EVENT_SCHEMA`, sorted by time and funnel step."""
    parts = []
    for event in _EVENT_ORDER:
        mask: Mask = getattr(funnel, event)
        rows = np.flatnonzero(mask)
        amount = funnel.amount[rows] if event == "converted" else np.full(len(rows), np.nan)
        parts.append(
            pl.DataFrame(
                {
                    "customer_id": customer_id[rows],
                    "event": pl.Series([event]).gather(np.zeros(len(rows), dtype=np.int64)),
                    "occurred_at": pl.Series(
                        getattr(funnel, f"{event}_at")[rows], dtype=pl.Int64
                    ).cast(pl.Datetime("us")),
                    "amount": pl.Series(amount, dtype=pl.Float64).fill_nan(None),
                    "step": np.full(len(rows), _EVENT_ORDER.index(event), dtype=np.int8),
                }
            )
        )
    return (
        pl.concat(parts)
        .sort("occurred_at", "customer_id", "step")
        .select(
            pl.lit(campaign_id, dtype=pl.String).alias("campaign_id"),
            "customer_id",
            "event",
            "occurred_at",
            "amount",
            pl.lit(None, dtype=pl.String).alias("event_key"),
        )
        .cast(EVENT_SCHEMA)
    )
