"""The bank's side of the world: ~70 data-mart features, ID numbers and the extract's frame.

(The device ids and changed numbers of the extract are drawn in `labs.world.identifiers`.)

Features follow the latent persona and wealth / digital scores (`labs.world.personas`) only
mildly, so a bank-only model sees personas barely. Values are numpy arrays (NaN = null) or polars
Series for text, gathered in one dict by column name; keys starting with `_` are latent helpers
that never reach the extract.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from labs.world.personas import AGE, DIGITAL_SHIFT, PERSONA_INDEX, People, sigmoid
from matcher.identity import id_check_characters

__all__ = [
    "FEATURE_COLUMNS",
    "Ids",
    "add_channels",
    "bank_features",
    "customer_frame",
    "id_numbers",
    "id_prefixes",
]

F64 = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]

_FEMALE = np.array([0.30, 0.50, 0.50, 0.45, 0.60, 0.50, 0.70, 0.52, 0.50, 0.45])
# Mild shift of the latent wealth score by persona (in standard deviations).
_WEALTH_SHIFT = np.array([-0.3, -0.2, 0.4, 0.8, 0.0, 0.0, 0.0, 0.3, -0.8, 0.3])
# Preference for big cities (multiplies branch weights of tier 1, 2, 3, 4).
_TIER_PREF = np.array(
    [
        (1.0, 1.0, 1.0, 1.0), (1.2, 1.1, 1.0, 0.8), (1.4, 1.2, 0.9, 0.7), (1.5, 1.2, 0.9, 0.6),
        (0.9, 1.0, 1.1, 1.1), (1.7, 1.3, 0.8, 0.5), (1.1, 1.1, 1.0, 0.9), (0.8, 0.9, 1.1, 1.3),
        (1.0, 1.1, 1.0, 0.9), (1.6, 1.3, 0.8, 0.5),
    ]
)  # fmt: skip
# 40 branches: (GB/T 2260 district code, city tier). Sizes are Zipf-like over a fixed order.
_BRANCHES = (
    ("110101", 1), ("110105", 1), ("310101", 1), ("310115", 1), ("440305", 1), ("440106", 1),
    ("330106", 2), ("320102", 2), ("510107", 2), ("420106", 2), ("610113", 2), ("500103", 2),
    ("120101", 2), ("370202", 2), ("350203", 2), ("430104", 2), ("410105", 2), ("210102", 2),
    ("320583", 3), ("330203", 3), ("440604", 3), ("441900", 3), ("370102", 3), ("340104", 3),
    ("360102", 3), ("450103", 3), ("530102", 3), ("520102", 3), ("130102", 3), ("140105", 3),
    ("341202", 4), ("411302", 4), ("431102", 4), ("511302", 4), ("622901", 4), ("360702", 4),
    ("450802", 4), ("371302", 4), ("130602", 4), ("410702", 4),
)  # fmt: skip
_LOCAL_SHARE = 0.85  # customers whose ID was issued where their branch is
_EDUCATION = ("below_high_school", "high_school", "college", "bachelor", "master_plus")
_JOBS = (
    "civil_servant", "teacher", "professional", "white_collar", "worker",
    "self_employed", "farmer", "student", "retired", "other",
)  # fmt: skip
# P(job | persona), rows follow PERSONAS, columns follow _JOBS.
_JOB_MIX = np.array(
    [
        (0.03, 0.02, 0.08, 0.30, 0.25, 0.12, 0.03, 0.05, 0.00, 0.12),
        (0.04, 0.03, 0.10, 0.35, 0.20, 0.12, 0.02, 0.04, 0.00, 0.10),
        (0.08, 0.06, 0.20, 0.30, 0.06, 0.18, 0.01, 0.01, 0.04, 0.06),
        (0.10, 0.05, 0.22, 0.22, 0.04, 0.25, 0.01, 0.00, 0.06, 0.05),
        (0.08, 0.08, 0.12, 0.30, 0.16, 0.14, 0.04, 0.00, 0.00, 0.08),
        (0.08, 0.06, 0.18, 0.42, 0.12, 0.06, 0.01, 0.01, 0.00, 0.06),
        (0.05, 0.05, 0.12, 0.38, 0.15, 0.12, 0.02, 0.03, 0.00, 0.08),
        (0.05, 0.04, 0.04, 0.05, 0.08, 0.06, 0.08, 0.00, 0.55, 0.05),
        (0.00, 0.00, 0.01, 0.03, 0.03, 0.01, 0.00, 0.88, 0.00, 0.04),
        (0.12, 0.06, 0.38, 0.30, 0.02, 0.06, 0.00, 0.00, 0.00, 0.06),
    ]
)  # fmt: skip
# Products held beside the demand deposit, in the order their shares of assets are drawn.
_HOLDINGS = ("time_deposit", "wealth_mgmt", "funds", "insurance", "bonds", "precious_metals")
_BAD_ID_SHARE = 0.005
_LOWER_X_SHARE = 0.3  # of ID numbers ending in X, the share written with a lowercase x
_CHANNELS = ("counter", "atm", "online", "mobile", "pos", "quickpay")
_TICKETS = {"counter": 8.0, "atm": 6.6, "online": 7.5, "mobile": 6.5, "pos": 5.4, "quickpay": 4.2}


def _bernoulli(rng: np.random.Generator, p: F64 | float, n: int) -> Array:
    return rng.random(n) < p


def _draw_rows(rng: np.random.Generator, weights: Array, rows: Array) -> Array:
    """Return one column index per row, drawn from the weights of table row `rows[i]`."""
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0  # rounding must not leave a gap above the last column
    # Offset row r's CDF by r so one searchsorted over the flattened table serves every row.
    flat = (cdf + np.arange(len(cdf))[:, None]).ravel()
    hits = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return np.minimum(hits - rows * weights.shape[1], weights.shape[1] - 1)


def _persona_flags(people: People) -> dict[str, Array]:
    """Return, per persona name, whether each customer's main persona is that one."""
    return {name: people.persona == i for name, i in PERSONA_INDEX.items()}


def bank_features(people: People, rng: np.random.Generator) -> dict[str, Any]:
    """Return the bank's feature columns for every customer (channel columns come later).

    The groups draw in a fixed order from `rng`: the person and their branch, the household,
    the assets, then the other products.
    """
    col: dict[str, Any] = {}
    _person(people, col, rng)
    _household(people, col, rng)
    _assets(people, col, rng)
    _products(people, col, rng)
    return col


def _person(people: People, col: dict[str, Any], rng: np.random.Generator) -> None:
    """Add age, gender, branch, the ID's district, city tier and the latent scores to `col`."""
    n, p = people.n, people.persona
    age_params = AGE[p]
    age = np.clip(
        np.rint(rng.normal(age_params[:, 0], age_params[:, 1])), age_params[:, 2], age_params[:, 3]
    )
    col["_age"] = age
    col["age"] = age.astype(np.int16)
    female = rng.random(n) < _FEMALE[p]
    col["_male"] = ~female
    col["gender"] = pl.Series(["M", "F"]).gather(female.astype(np.int64))
    sizes = 1.0 / np.arange(1, len(_BRANCHES) + 1) ** 0.8
    # Branch sizes are Zipf-like, but the big branches are not all in tier 1.
    sizes = sizes[rng.permutation(len(_BRANCHES))]
    tiers = np.array([t for _, t in _BRANCHES])
    branch = _draw_rows(rng, sizes[None, :] * _TIER_PREF[:, tiers - 1], p.astype(np.int64))
    col["_branch"] = branch
    # The district that issued the ID: the branch's own for most, anywhere for migrants.
    local = rng.random(n) < _LOCAL_SHARE
    col["_region"] = np.where(local, branch, rng.integers(0, len(_BRANCHES), n))
    col["is_local_resident"] = col["_region"] == branch
    tier = tiers[branch]
    col["city_tier"] = tier.astype(np.int8)

    a40 = np.clip(age, 18, 65) - 40.0
    col["_wealth"] = (
        people.wealth
        + 0.025 * a40
        + people.mixed(_WEALTH_SHIFT)
        + np.select([tier == 1, tier == 2, tier == 4], [0.25, 0.1, -0.15], 0.0)
    )
    col["_digital"] = (
        people.digital - 0.035 * (age - 40.0) + people.mixed(DIGITAL_SHIFT) + 0.15 * (tier <= 2)
    )


def _household(people: People, col: dict[str, Any], rng: np.random.Generator) -> None:
    """Add education, job, marital status, children, household size and income to `col`."""
    n, is_p = people.n, _persona_flags(people)
    age, wealth, digital = col["_age"], col["_wealth"], col["_digital"]
    edu_score = 0.5 * wealth + 0.3 * digital - 0.01 * (age - 40) + rng.standard_normal(n)
    education = np.digitize(edu_score, [-1.0, -0.2, 0.5, 1.6])
    education = np.where(is_p["student"], np.maximum(education, 2), education)
    col["education"] = pl.Series(_EDUCATION).gather(education)
    job = _draw_rows(rng, _JOB_MIX, people.persona.astype(np.int64))
    retired = (age >= 62) & (rng.random(n) < 0.8)
    job = np.where(retired, _JOBS.index("retired"), job)
    job = np.where((job == _JOBS.index("student")) & (age > 26), _JOBS.index("white_collar"), job)
    col["_job"] = job
    col["job"] = pl.Series(_JOBS).gather(job)
    col["_employed"] = ~np.isin(
        job, [_JOBS.index("student"), _JOBS.index("retired"), _JOBS.index("other")]
    )

    u = rng.random(n)
    p_married = np.where(is_p["parent"], 0.92, 0.88 * sigmoid((age - 28.0) / 3.0))
    married = u < p_married
    widowed = married & (age > 65) & (rng.random(n) < 0.15)
    divorced = married & ~widowed & (age > 30) & (rng.random(n) < 0.07)
    marital = np.select([widowed, divorced, married], [3, 2, 1], 0)
    col["marital"] = pl.Series(("single", "married", "divorced", "widowed")).gather(marital)
    p_children = np.where(married, 0.75 * sigmoid((age - 30.0) / 4.0), 0.05)
    has_children = is_p["parent"] | (rng.random(n) < p_children)
    col["has_children"] = has_children
    kids = np.where(has_children, 1 + rng.poisson(0.3, n), 0)
    col["household_size"] = np.minimum(1 + married + kids + rng.poisson(0.3, n), 8).astype(np.int8)
    income = np.exp(10.8 + 0.45 * wealth + 0.15 * education + rng.normal(0, 0.5, n))
    income = np.where(job == _JOBS.index("student"), income * 0.05, income)
    income = np.where(job == _JOBS.index("retired"), income * 0.45, income)
    col["annual_income"] = np.round(income, -2)


def _assets(people: People, col: dict[str, Any], rng: np.random.Generator) -> None:
    """Add tenure, payroll, the assets by product, the customer level and the manager to `col`."""
    n, is_p = people.n, _persona_flags(people)
    age, wealth, digital = col["_age"], col["_wealth"], col["_digital"]
    a40 = np.clip(age, 18, 65) - 40.0
    max_tenure = np.clip((age - 18.0) * 12.0, 1.0, 360.0)
    col["tenure_months"] = (1 + np.floor(max_tenure * rng.beta(1.3, 2.2, n))).astype(np.int16)
    col["payroll"] = _bernoulli(rng, sigmoid(-0.8 + 1.2 * col["_employed"] + 0.2 * wealth), n)
    dormant = rng.random(n) < sigmoid(-1.8 - 0.6 * wealth)
    base = np.where(
        dormant,
        rng.uniform(0.0, 500.0, n),
        np.exp(9.3 + 1.2 * wealth + 0.012 * a40 + rng.normal(0.0, 0.7, n)),
    )
    senior, investor = is_p["senior"], is_p["investor"]
    # Per product: the chance to hold it and the scale of its share of the assets.
    holdings = {
        "time_deposit": (sigmoid(-0.4 + 0.5 * wealth + 0.025 * a40 + 0.5 * senior), 1.5),
        "wealth_mgmt": (
            sigmoid(-1.9 + 0.9 * wealth + 1.2 * investor + 0.3 * is_p["professional"]),
            1.3,
        ),
        "funds": (sigmoid(-2.4 + 0.7 * wealth + 0.4 * digital + 1.4 * investor), 0.8),
        "insurance": (sigmoid(-2.6 + 0.5 * wealth + 0.6 * is_p["parent"] + 0.01 * a40), 0.6),
        "bonds": (sigmoid(-3.6 + 0.6 * wealth + 0.9 * senior), 0.8),
        "precious_metals": (sigmoid(-4.2 + 0.6 * wealth), 0.3),
    }
    demand_share = rng.gamma(1.2, 1.0, n)
    shares = {}
    for name in _HOLDINGS:
        prob, scale = holdings[name]
        held = (rng.random(n) < prob) & ~dormant
        shares[name] = np.where(held, scale * rng.gamma(1.6, 1.0, n), 0.0)
    total = demand_share + sum(shares.values())
    col["aum_current"] = np.round(base, 2)
    col["aum_month_avg"] = np.round(base * rng.lognormal(0.0, 0.08, n), 2)
    col["aum_year_avg"] = np.round(base * rng.lognormal(-0.05, 0.3, n), 2)
    col["aum_max_12m"] = np.round(
        np.maximum(col["aum_month_avg"], col["aum_year_avg"]) * (1.0 + rng.exponential(0.2, n)), 2
    )
    col["demand_deposit"] = np.round(base * demand_share / total, 2)
    for name in _HOLDINGS:
        col[name] = np.round(base * shares[name] / total, 2)
    col["time_deposit_count"] = np.where(
        col["time_deposit"] > 0, 1 + rng.poisson(0.7 + 0.3 * np.clip(wealth, 0, 3)), 0
    ).astype(np.int16)
    col["wealth_ratio"] = np.round(col["wealth_mgmt"] / np.maximum(base, 1.0), 4)
    level = 1 + np.digitize(col["aum_month_avg"], [50_000, 500_000, 1_000_000, 6_000_000])
    col["_level"] = level
    col["customer_level"] = level.astype(np.int8)
    col["has_relationship_manager"] = rng.random(n) < np.select(
        [level >= 3, level == 2], [0.8, 0.15], 0.01
    )


def _products(people: People, col: dict[str, Any], rng: np.random.Generator) -> None:
    """Add U-key, online banking, cards, loans, contact facts and the product count to `col`."""
    n, is_p = people.n, _persona_flags(people)
    age, wealth, digital = col["_age"], col["_wealth"], col["_digital"]
    payroll = col["payroll"]
    self_employed = col["_job"] == _JOBS.index("self_employed")
    ukey = _bernoulli(
        rng, sigmoid(-1.4 + 0.6 * digital + 0.4 * wealth + 0.7 * self_employed + 0.3 * payroll), n
    )
    col["ukey_holder"] = ukey
    online = _bernoulli(rng, sigmoid(-0.4 + 0.9 * digital + 0.3 * wealth + 0.3 * ukey), n)
    col["online_banking"] = online
    cc = _bernoulli(
        rng,
        sigmoid(
            -0.9
            + 0.4 * wealth
            + 0.5 * digital
            + 0.6 * is_p["shopper"]
            + 0.5 * is_p["traveller"]
            - 0.8 * is_p["student"]
            - 0.6 * is_p["senior"]
        ),
        n,
    )
    col["credit_card"] = cc
    limit = np.where(cc, np.round(np.exp(9.8 + 0.45 * wealth + rng.normal(0, 0.4, n)), -3), 0.0)
    col["credit_card_limit"] = limit
    col["credit_card_balance"] = np.round(limit * rng.beta(1.2, 3.0, n) * (rng.random(n) < 0.7), 2)
    mortgage = _bernoulli(rng, sigmoid(-1.6 + 0.3 * wealth - 0.004 * (age - 38.0) ** 2), n)
    col["mortgage_balance"] = np.where(
        mortgage, np.round(np.exp(13.2 + 0.3 * wealth + rng.normal(0, 0.5, n)), 2), 0.0
    )
    consumer = _bernoulli(
        rng, sigmoid(-2.6 + 0.3 * digital - 0.2 * wealth + 0.4 * is_p["shopper"]), n
    )
    col["consumer_loan_balance"] = np.where(
        consumer, np.round(np.exp(10.3 + rng.normal(0, 0.8, n)), 2), 0.0
    )
    business = _bernoulli(rng, 0.02 + 0.06 * self_employed, n)
    business_balance = np.where(
        business, np.round(np.exp(12.0 + 0.4 * wealth + rng.normal(0, 0.6, n)), 2), 0.0
    )
    col["loan_balance"] = np.round(
        col["mortgage_balance"] + col["consumer_loan_balance"] + business_balance, 2
    )
    col["n_loans"] = (mortgage.astype(np.int8) + consumer + business).astype(np.int8)
    col["n_debit_cards"] = (1 + rng.poisson(0.35, n)).astype(np.int8)
    col["wechat_bound"] = _bernoulli(rng, sigmoid(0.9 * digital), n)
    col["sms_alerts"] = _bernoulli(rng, sigmoid(0.8 + 0.02 * (age - 40.0) - 0.3 * digital), n)
    col["months_since_contact"] = np.minimum(
        rng.poisson(np.where(col["has_relationship_manager"], 2.0, 14.0)), 60
    ).astype(np.int16)
    col["complaints_12m"] = rng.poisson(0.03 + 0.02 * col["_level"]).astype(np.int8)
    col["social_security_card"] = _bernoulli(
        rng, sigmoid(-0.8 + 1.2 * payroll + 0.3 * (age > 50)), n
    )
    held_products = sum((col[h] > 0).astype(np.int8) for h in _HOLDINGS)
    col["n_products"] = (1 + cc + held_products + mortgage + consumer + business).astype(np.int8)


def add_channels(
    people: People, col: dict[str, Any], registered: Array, rng: np.random.Generator
) -> None:
    """Add 3-month channel transaction columns to `col` (mobile needs the registration flag)."""
    n = people.n
    wealth = col["_wealth"]
    activity = 0.3 * wealth + 0.3 * col["payroll"] + rng.normal(0.0, 0.7, n)
    activity = np.where(col["aum_current"] < 500, -2.0, activity)
    rates = _channel_rates(people, col, registered, activity)
    # A customer without online or mobile banking never used that channel.
    has_channel = {"online": col["online_banking"], "mobile": registered}
    count_total = np.zeros(n, dtype=np.int64)
    amount_total = np.zeros(n)
    for channel in _CHANNELS:
        count = rng.poisson(np.minimum(rates[channel], 500.0))
        ticket = np.exp(_TICKETS[channel] + 0.4 * wealth + rng.normal(0.0, 0.4, n))
        amount = np.round(count * ticket, 2)
        # Days since the last transaction: within the quarter when there was one, else
        # older (90..364) or never (null) in the last year.
        recent = np.minimum(np.floor(rng.exponential(90.0 / (count + 1.0))), 89.0)
        older = np.where(rng.random(n) < 0.5, 90.0 + np.floor(rng.random(n) * 275.0), np.nan)
        older = np.where(has_channel.get(channel, True), older, np.nan)
        col[f"{channel}_txn_count_3m"] = count.astype(np.int32)
        col[f"{channel}_txn_amount_3m"] = amount
        col[f"{channel}_days_since_last"] = np.where(count > 0, recent, older)
        count_total += count
        amount_total += amount
    col["txn_count_3m"] = count_total.astype(np.int32)
    col["txn_amount_3m"] = np.round(amount_total, 2)
    _flows(col, activity, amount_total, rng)


def _channel_rates(
    people: People, col: dict[str, Any], registered: Array, activity: F64
) -> dict[str, F64]:
    """Return each channel's expected transactions in the quarter, per customer."""
    p, digital = people.persona, col["_digital"]
    age = col["age"].astype(np.float64)
    shopper = (p == PERSONA_INDEX["shopper"]).astype(np.float64)
    food = (p == PERSONA_INDEX["food_delivery"]).astype(np.float64)
    return {
        "counter": np.exp(-0.6 + 0.025 * (age - 40) - 0.4 * digital + 0.3 * activity),
        "atm": np.exp(0.5 - 0.008 * (age - 40) + 0.4 * activity - 0.2 * digital),
        "online": np.where(
            col["online_banking"], np.exp(0.8 + 0.4 * digital + 0.4 * activity), 0.0
        ),
        "mobile": np.where(registered, np.exp(2.3 + 0.4 * digital + 0.4 * activity), 0.0),
        "pos": np.exp(0.6 + 0.5 * activity + 0.8 * col["credit_card"] + 0.4 * shopper),
        "quickpay": np.exp(
            1.2
            + 0.7 * digital
            + 0.4 * activity
            + 0.4 * col["wechat_bound"]
            + 0.5 * (shopper + food)
        ),
    }


def _flows(col: dict[str, Any], activity: F64, amount_total: F64, rng: np.random.Generator) -> None:
    """Add salary, transfers, inflow / outflow, utility payments and active months to `col`."""
    n = len(activity)
    wealth, digital = col["_wealth"], col["_digital"]
    col["max_single_txn_amount_3m"] = np.round(amount_total * rng.beta(2.0, 5.0, n), 2)
    col["salary_amount_3m"] = np.where(
        col["payroll"], np.round(col["annual_income"] / 4.0 * rng.lognormal(0.0, 0.1, n), 2), 0.0
    )
    transfers_in = rng.poisson(np.exp(0.3 + 0.3 * activity + 0.2 * digital))
    transfers_out = rng.poisson(np.exp(0.6 + 0.4 * activity + 0.3 * digital))
    col["transfer_in_count_3m"] = transfers_in.astype(np.int32)
    col["transfer_out_count_3m"] = transfers_out.astype(np.int32)
    col["inflow_amount_3m"] = np.round(
        col["salary_amount_3m"] + transfers_in * np.exp(8.0 + 0.5 * wealth + rng.normal(0, 0.5, n)),
        2,
    )
    col["outflow_amount_3m"] = np.round(
        amount_total + transfers_out * np.exp(7.8 + 0.5 * wealth + rng.normal(0, 0.5, n)), 2
    )
    col["utility_payment_count_3m"] = rng.poisson(
        np.exp(0.2 + 0.3 * col["has_children"] + 0.2 * np.clip(wealth, -2, 2))
    ).astype(np.int32)
    col["active_months_12m"] = rng.binomial(12, sigmoid(1.5 + activity)).astype(np.int8)


@dataclass(frozen=True)
class Ids:
    """Customer ids and resident ID numbers as the extract writes them."""

    customer_id: Array  # int64, increasing with gaps, as a core banking system hands them out
    numbers: pl.Series  # String
    bad: Array  # bool: the check character is wrong on purpose


def id_prefixes(
    region: Array, age: Array, back: Array, seq: Array, snapshot: datetime.date
) -> pl.Series:
    """Return the first 17 characters of ID numbers: district, birth date, sequence.

    Args:
        region: row of the district in the branch list; age: whole years at the snapshot;
        back: days the birth date lies before the age-th birthday preceding the snapshot
        (0..363, so age is exact); seq: the 3-digit sequence, odd for men.
    """
    day = 28 if (snapshot.month, snapshot.day) == (2, 29) else snapshot.day
    frame = pl.DataFrame(
        {
            "region": pl.Series([code for code, _ in _BRANCHES]).gather(region),
            "year": snapshot.year - age.astype(np.int32),
            "back": back,
            "seq": seq,
        }
    )
    birth = pl.date(pl.col("year"), snapshot.month, day) - pl.duration(days=pl.col("back"))
    return frame.select(
        pl.concat_str(
            pl.col("region"),
            birth.dt.strftime("%Y%m%d"),
            pl.col("seq").cast(pl.String).str.zfill(3),
        ).alias("id_number")
    )["id_number"]


def id_numbers(col: dict[str, Any], snapshot: datetime.date, rng: np.random.Generator) -> Ids:
    """Return 18-character ID numbers whose birth date gives the age and whose parity the gender.

    Layout (GB 11643-1999): 6-digit district, birth date YYYYMMDD, 3-digit sequence whose last
    digit is odd for men, and the MOD 11-2 check character.
    """
    n = len(col["age"])
    customer_id = 1_000_000_000 + np.cumsum(rng.integers(1, 20, n))
    back = rng.integers(0, 364, n)
    seq = rng.integers(0, 500, n) * 2 + col["_male"]
    first17 = id_prefixes(col["_region"], col["age"], back, seq, snapshot)
    check = id_check_characters(first17)
    bad = rng.random(n) < _BAD_ID_SHARE
    alphabet = "0123456789X"
    index = check.replace_strict(list(alphabet), list(range(11)), return_dtype=pl.Int64).to_numpy()
    # A wrong check character: any of the ten others.
    index = np.where(bad, (index + rng.integers(1, 11, n)) % 11, index)
    lower = (index == 10) & (rng.random(n) < _LOWER_X_SHARE)
    final = pl.Series([*alphabet, "x"]).gather(np.where(lower, 11, index))
    numbers = (first17 + final).alias("id_number")
    return Ids(customer_id=customer_id, numbers=numbers, bad=bad)


# Output columns of the bank extract after the identifiers, grouped as in the data mart.
_DEMOGRAPHICS = (
    "age", "gender", "marital", "education", "job", "city_tier", "household_size",
    "has_children", "is_local_resident", "annual_income",
)  # fmt: skip
_RELATIONSHIP = (
    "tenure_months", "customer_level", "n_products", "ukey_holder", "online_banking", "payroll",
    "credit_card", "credit_card_limit", "n_debit_cards", "wechat_bound", "sms_alerts",
    "has_relationship_manager", "months_since_contact", "complaints_12m", "social_security_card",
)  # fmt: skip
_ASSETS = (
    "aum_current", "aum_month_avg", "aum_year_avg", "aum_max_12m", "demand_deposit",
    "time_deposit", "time_deposit_count", "wealth_mgmt", "wealth_ratio", "funds", "insurance",
    "bonds", "precious_metals", "loan_balance", "mortgage_balance", "consumer_loan_balance",
    "credit_card_balance", "n_loans",
)  # fmt: skip
_TRANSACTIONS = (
    *(f"{c}_{m}" for c in _CHANNELS for m in ("txn_count_3m", "txn_amount_3m", "days_since_last")),
    "txn_count_3m", "txn_amount_3m", "max_single_txn_amount_3m", "salary_amount_3m",
    "inflow_amount_3m", "outflow_amount_3m", "transfer_in_count_3m", "transfer_out_count_3m",
    "utility_payment_count_3m", "active_months_12m",
)  # fmt: skip
FEATURE_COLUMNS = (*_DEMOGRAPHICS, *_RELATIONSHIP, *_ASSETS, *_TRANSACTIONS)


def _column(name: str, values: Any) -> pl.Series:
    """Return one extract column; NaN in a days-since column means 'no transaction' (null)."""
    if isinstance(values, pl.Series):
        return values.alias(name)
    if name.endswith("days_since_last"):
        return pl.Series(name, values).fill_nan(None).cast(pl.Int16)
    return pl.Series(name, values)


def customer_frame(
    col: dict[str, Any],
    phone: pl.Series,
    ids: Ids,
    *,
    registered: Array,
    opened: Array,
    device: pl.Series | None = None,
) -> pl.DataFrame:
    """Return the bank extract: identifiers, ~70 features, the registration flag and the label.

    The label (`opened`) exists only for customers not `registered` yet: null for the others.
    `device` (the mobile-banking app's device ids, `labs.world.identifiers`) follows the ID
    number when given.
    """
    return pl.DataFrame(
        [
            pl.Series("customer_id", ids.customer_id, dtype=pl.Int64),
            pl.Series([f"B{i + 1:03d}" for i in range(len(_BRANCHES))])
            .gather(col["_branch"])
            .alias("branch_id"),
            phone.alias("phone"),
            ids.numbers,
            *([] if device is None else [device.alias("device_id")]),
            *(_column(name, col[name]) for name in FEATURE_COLUMNS),
            pl.Series("mb_registered", registered),
            pl.Series("opened_mb", opened).scatter(np.flatnonzero(registered), None),
        ]
    )
