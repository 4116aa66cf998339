"""More of the bank's objectives, each with a label a bank would hold after the window.

Banks in this field run one model per scenario. Beside "opens mobile banking" (`campaign`), the
world draws three more outcomes, each from bank features AND from personas and the fintech
trait that only the vendor's data shows, so fused and in-bank models can be judged per scenario:

    activated_mb       registered on mobile banking, then an active user in the window
                       (known for registered customers only)
    took_credit_card   took a credit card in the window (known for customers without one)
    aum_grew           assets under management grew by a fifth or more in the window

    P(outcome) = sigmoid(b + bank terms + persona terms + fintech term), b set so the rate
    among the customers it is known for is the scenario's base rate.

They are drawn from their own random stream after everything else, so every other file of a
world is the same bytes with or without them. The bank's outcome file holds the labels (null
where unknown); the truth file the probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import brentq

from labs.world.bank import Ids
from labs.world.personas import People, sigmoid

__all__ = ["OUTCOME_COLUMNS", "ScenarioOutcomes", "draw_scenarios", "scenario_frames"]

F64 = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]

OUTCOME_COLUMNS = ("activated_mb", "took_credit_card", "aum_grew")
# Persona terms of each logit, rows follow PERSONAS: gamer, food_delivery, traveller, investor,
# parent, commuter, shopper, senior, student, professional.
_PERSONA = {
    "activated_mb": np.array([1.0, 1.2, 0.3, 0.2, -0.2, 1.0, 1.2, -1.6, 0.6, 0.3]),
    "took_credit_card": np.array([0.3, 0.6, 1.4, 0.4, 0.2, 0.3, 1.8, -1.4, -1.2, 0.7]),
    "aum_grew": np.array([-0.6, -0.3, 0.3, 1.8, 0.0, 0.0, -0.4, 0.4, -0.8, 1.0]),
}
_FINTECH = {"activated_mb": 1.2, "took_credit_card": 0.8, "aum_grew": 0.6}
_RATE = {"activated_mb": 0.25, "took_credit_card": 0.06, "aum_grew": 0.15}


@dataclass(frozen=True)
class ScenarioOutcomes:
    """Each scenario's true probability, who its label is known for, and the label drawn."""

    p: dict[str, F64]
    known: dict[str, Array]  # bool: the label exists for this customer
    label: dict[str, Array]  # bool


def _bank_terms(col: dict[str, Any], registered: Array) -> dict[str, F64]:
    """Return each scenario's in-bank logit terms (what the bank's own data sees)."""
    age = col["age"].astype(np.float64)
    aum = np.log1p(col["aum_month_avg"] / 10_000.0)
    return {
        "activated_mb": (
            0.5 * np.log1p(col["mobile_txn_count_3m"]) + 0.4 * col["online_banking"]
            + 0.3 * np.clip((40.0 - age) / 10.0, -2.5, 2.0) + 0.3 * col["wechat_bound"]
            + 0.2 * registered
        ),
        "took_credit_card": (
            0.4 * aum + 0.5 * col["payroll"] + 0.3 * np.log1p(col["annual_income"] / 1e5)
            - 0.03 * np.abs(age - 35.0) + 0.3 * col["online_banking"]
        ),
        "aum_grew": (
            0.5 * (col["wealth_mgmt"] > 0) + 0.4 * col["payroll"] + 0.2 * aum
            + 0.3 * np.log1p(col["salary_amount_3m"] / 1e4) - 0.3 * (col["aum_current"] < 500)
        ),
    }  # fmt: skip


def _intercept(logit: F64, rate: float) -> float:
    """Return b with mean(sigmoid(b + logit)) = rate (the mean is monotone in b)."""
    return float(brentq(lambda b: float(sigmoid(b + logit).mean()) - rate, -30.0, 30.0))


def draw_scenarios(
    people: People, col: dict[str, Any], registered: Array, rng: np.random.Generator
) -> ScenarioOutcomes:
    """Return the scenarios' probabilities and labels for every bank customer."""
    known = {
        "activated_mb": np.asarray(registered, dtype=bool),
        "took_credit_card": np.asarray(col["credit_card"], dtype=np.float64) == 0,
        "aum_grew": np.ones(people.n, dtype=bool),
    }
    bank = _bank_terms(col, np.asarray(registered, dtype=np.float64))
    p, label = {}, {}
    for name in OUTCOME_COLUMNS:
        logit = bank[name] + people.mixed(_PERSONA[name]) + _FINTECH[name] * people.fintech
        b = _intercept(logit[known[name]], _RATE[name]) if known[name].any() else 0.0
        p[name] = sigmoid(b + logit)
        label[name] = (rng.random(people.n) < p[name]) & known[name]
    return ScenarioOutcomes(p, known, label)


def scenario_frames(ids: Ids, outcomes: ScenarioOutcomes) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the bank's outcome file (labels, null where unknown) and the truth file."""
    customer_id = pl.Series("customer_id", ids.customer_id, dtype=pl.Int64)
    labels = pl.DataFrame(
        [
            customer_id,
            *(
                pl.Series(name, outcomes.label[name]).scatter(
                    np.flatnonzero(~outcomes.known[name]), None
                )
                for name in OUTCOME_COLUMNS
            ),
        ]
    )
    truth = pl.DataFrame(
        [customer_id, *(pl.Series(f"p_{name}", outcomes.p[name]) for name in OUTCOME_COLUMNS)]
    )
    return labels, truth
