"""Outcomes of the world: who is on mobile banking, who opens it (the label), the past campaign.

For customers not yet on mobile banking,

    P(opened_mb) = sigmoid(b0 + bank terms + persona terms + fintech term)

where the bank terms are the real case's top variables (young age, U-key, wealth management,
tenure, time deposits, online banking) and the persona terms are large enough that a model with
vendor features beats an in-bank one, most of all where the in-bank model sees nothing. The past
campaign (a food-delivery coupon) has a true uplift, in probability points, that is strong for
food-delivery users and shoppers, small for most and slightly negative for seniors, on top of a
response without the offer that follows loyalty to the bank (assets, tenure, a relationship
manager, payroll): the "sure things" answer anyway, so chasing response is not chasing uplift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from labs.world.bank import Ids, add_channels
from labs.world.personas import People, sigmoid

__all__ = ["Outcomes", "campaign_frame", "draw_outcomes"]

F64 = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]

# Label: persona terms of the logit of opening mobile banking within the window.
_LABEL_PERSONA = np.array([-1.6, 1.2, 1.8, 3.0, -1.8, 3.0, 3.0, -2.0, 0.0, 0.6])
# Campaign (food-delivery coupon): persona terms of the response logit without and with the offer.
# The response without the offer follows the customer's loyalty to the bank (its "sure things"
# answer anyway); the offer adds an uplift in probability points that only the persona drives, so a
# response model and an uplift model rank customers differently, as in real campaigns.
_RESPONSE_PERSONA = np.array([0.0, 0.2, 0.0, 0.3, 0.0, 0.1, 0.2, -0.3, 0.1, 0.2])
_RESPONSE_BANK = 1.2  # weight of the (standardised) loyalty score in the control response logit
_UPLIFT_PERSONA = np.array([0.02, 0.10, 0.01, 0.0, 0.01, 0.01, 0.07, -0.015, 0.04, 0.0])
_FINTECH_LABEL = 2.0  # logit of opening mobile banking
# Scale of the bank terms in the label logit: tuned so an in-bank model's held-out AUC sits near
# the real case's 0.8 (larger scales give the bank's own features more weight).
_BANK_LABEL_WEIGHT = 1.2
_MB_REGISTERED_RATE = 0.40
_LABEL_RATE = 0.07  # among customers not yet registered
_CAMPAIGN_SHARE = 0.40  # of unregistered customers
_CONTROL_RESPONSE_RATE = 0.05
_CAMPAIGN_ID = "2026Q2-food-coupon"


@dataclass(frozen=True)
class Outcomes:
    """Registration, the label and the campaign, with the true probabilities behind them."""

    registered: Array  # bool
    p_open: F64
    opened: Array  # bool (meaningful where not registered)
    campaign: Array  # int8: -1 not in the campaign, 0 control, 1 treatment
    p_control: F64
    p_treatment: F64
    responded: Array  # bool (meaningful where in the campaign)


def _intercept(logits: F64, target: float) -> float:
    """Return b such that mean(sigmoid(b + logits)) equals `target` (Newton's method)."""
    b = math.log(target / (1.0 - target)) - float(np.median(logits))
    for _ in range(30):
        p = sigmoid(b + logits)
        gap = float(p.mean()) - target
        if abs(gap) < 1e-9:
            break
        b -= gap / max(float((p * (1.0 - p)).mean()), 1e-12)
    return b


def draw_outcomes(people: People, col: dict[str, Any], rng: np.random.Generator) -> Outcomes:
    """Return registration, label and campaign outcomes; adds the channel columns to `col`."""
    n = people.n
    registered_logit = (
        1.1 * col["_digital"] + 0.4 * col["online_banking"] + 0.3 * col["wechat_bound"]
        + 0.3 * col["payroll"] - 0.2 * (col["city_tier"] == 4)
    )  # fmt: skip
    registered = rng.random(n) < sigmoid(
        _intercept(registered_logit, _MB_REGISTERED_RATE) + registered_logit
    )
    add_channels(people, col, registered, rng)
    unregistered = ~registered
    p_open = _p_open(people, col, unregistered)
    opened = (rng.random(n) < p_open) & unregistered

    # The campaign: a random share of the unregistered, treatment assigned by a fair coin.
    eligible = unregistered & (rng.random(n) < _CAMPAIGN_SHARE)
    treatment = rng.random(n) < 0.5
    campaign = np.where(eligible, treatment.astype(np.int8), -1).astype(np.int8)
    p_control, p_treatment = _responses(people, col, unregistered)
    # One uniform per customer for both arms: the potential outcomes are coupled, so uplift is
    # never negative for a person whose true uplift is positive.
    u = rng.random(n)
    responded = eligible & (u < np.where(campaign == 1, p_treatment, p_control))
    return Outcomes(registered, p_open, opened, campaign, p_control, p_treatment, responded)


def _p_open(people: People, col: dict[str, Any], unregistered: Array) -> F64:
    """Return the true probability of opening mobile banking in the window, per customer."""
    age = col["age"].astype(np.float64)
    # The real case's top variables: young, U-key, wealth management, tenure, time deposits,
    # online banking. Persona and fintech terms come on top: a bank-only model sees them only
    # through the mild persona shifts of age and assets, a fused one through the vendor's lists.
    bank_logit = (
        0.35 * np.clip((40.0 - age) / 10.0, -2.5, 2.0)
        + 0.8 * col["ukey_holder"]
        + 0.6 * (col["wealth_mgmt"] > 0)
        + 0.25 * np.log1p(col["wealth_mgmt"] / 10_000.0)
        + 0.45 * (col["time_deposit"] > 0)
        + 0.7 * col["online_banking"]
        - 0.35 * np.log1p(col["tenure_months"] / 12.0)
        + 0.2 * np.log1p(col["quickpay_txn_count_3m"])
        + 0.3 * col["wechat_bound"]
    )
    logit = (
        _BANK_LABEL_WEIGHT * bank_logit
        + people.mixed(_LABEL_PERSONA)
        + _FINTECH_LABEL * people.fintech
    )
    return sigmoid(_intercept(logit[unregistered], _LABEL_RATE) + logit)


def _responses(people: People, col: dict[str, Any], unregistered: Array) -> tuple[F64, F64]:
    """Return the true response probabilities without and with the offer, per customer."""
    # Loyal, wealthy, well-looked-after customers answer any offer of the bank's: the "sure
    # things". Their loyalty runs against the coupon's young target, so a response model that
    # chases them buys few extra conversions.
    loyalty = (
        np.log1p(col["aum_month_avg"] / 10_000.0)
        + 0.6 * np.log1p(col["tenure_months"] / 12.0)
        + 0.8 * col["has_relationship_manager"]
        + 0.5 * col["payroll"]
    )
    loyalty = (loyalty - loyalty.mean()) / max(float(loyalty.std()), 1e-9)
    base = _RESPONSE_BANK * loyalty + people.mixed(_RESPONSE_PERSONA)
    base = base + _intercept(base[unregistered], _CONTROL_RESPONSE_RATE)
    p_control = sigmoid(base)
    p_treatment = np.clip(p_control + people.mixed(_UPLIFT_PERSONA), 0.0, 1.0)
    return p_control, p_treatment


def campaign_frame(ids: Ids, outcomes: Outcomes) -> pl.DataFrame:
    """Return the past campaign: who was offered (treatment) or held out, and who responded."""
    rows = np.flatnonzero(outcomes.campaign >= 0)
    return pl.DataFrame(
        {
            "campaign_id": pl.Series([_CAMPAIGN_ID]).gather(np.zeros(len(rows), dtype=np.int64)),
            "customer_id": ids.customer_id[rows],
            "treatment": outcomes.campaign[rows] == 1,
            "responded": outcomes.responded[rows],
        },
        schema={
            "campaign_id": pl.String,
            "customer_id": pl.Int64,
            "treatment": pl.Boolean,
            "responded": pl.Boolean,
        },
    )
