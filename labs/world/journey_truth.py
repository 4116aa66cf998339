"""The journey world's truth: every cohort customer's daily hazards and the touches' true effects.

A cohort customer walks the milestones of `contracts.journeys.MILESTONES` in order, at most one a
day, from the day they enter the cohort. On day t a customer who has reached k milestones reaches
the next one with the daily hazard

    h_k(i, t) = sigmoid(BASE[k] + persona_k(i) + bank_k(i) + frailty(i) - FADE[k] x w(i, t)
                        + sum over channels c whose effect is live on t of NEXT[c](i))

where w is the days waited at the step (since the last milestone, or since entering), persona_k
blends the main persona's term with the second one's (weight 0.35, as everywhere in the world),
bank_k reads the extract and the fintech trait (younger, fintech, online banking, WeChat
binding, payroll and assets help: `_bank_terms`), and frailty is a customer's N(0, 0.6) draw
shared by all steps (unobserved heterogeneity: the customers stuck at a step are the slow ones).
Once registered, a customer logs in on a day with

    p_login(i, t) = sigmoid(LOGIN_BASE + login_persona(i) - 0.01 (age - 35) + 0.6 [card bound]
                            - 0.012 (t - registered day) + login frailty(i) N(0, 0.7)
                            + sum over live channels c of LOGIN[c](i))

so engagement fades and a quiet customer goes 14 days without a log-in now and then.

A touch is answered on the day of the world's step it is handed to: it is exposed with
P_EXPOSURE[c](i) (a push needs the app opened once; an in-app pop-up needs a log-in that day; a
customer opted out of the channel sees nothing), then clicked with P_CLICK[c](i) and answered
with an opt-out with P_OPT_OUT[c](i), each given exposure. An exposed touch's effect is live on
the day of exposure and the PERSIST[c] - 1 days after (a later touch of the channel extends it),
whether or not it was clicked. The true effects, in logits, with the answers' probabilities:

    channel       NEXT (next milestone)     LOGIN           exposed        clicked       opt-out
    app_push      +3.0 commuters, +0.8      0               90% (opened)   25% commuters 0.4%,
                  most, +0.2 seniors                                       2-7% others   seniors 2%
    sms           +0.3 / +0.1 / -0.4        +1.0/+0.3/-1.2  97%            5%/3%/1%      1%/2%/15%
    in_app_popup  +0.8                      0               at the log-in  15%           0
    crm_task      +0.8, +1.2 for 55+        +0.3            70%            20%           2%

(SMS figures by age band: under 30 / 30-54 / 55 and over, the bank's own age; commuters and
seniors by persona, blended with the second persona), live for PERSIST = 5 (pop-up), 7 (push),
7 (SMS) and 10 (CRM task) days. So the push works on commuters, whom only the vendor's data
shows, and the SMS brings the young back but drives customers of 55 and over away: they opt
out, log in less and move on more slowly.

For one push exposed on day t to a customer stuck before binding a card, the card is bound within
the push's window with probability 1 - prod_{s=t}^{t+PERSIST-1} (1 - h_3(i, s)) instead of the
same product without the NEXT term; after the window the hazards are the same again, so the
effect on "bound by the end of the run" is that gain less the part the customer would have
caught up on later. `labs.world.journeys.true_effects` measures it exactly, by replaying the
same customers with the same random numbers with and without the strategy's touches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from contracts.journeys import JOURNEY_CHANNELS, MILESTONES
from labs.world.personas import PERSONA_INDEX, PERSONAS, SECOND_WEIGHT, mix, sigmoid

__all__ = [
    "BASE",
    "FADE",
    "LOGIN_BASE",
    "LOGIN_CARD_BOUND",
    "LOGIN_FADE",
    "PERSIST",
    "JourneyPeople",
    "age_band",
    "daily_hazard",
    "journey_people",
    "login_probability",
]

F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
Array = np.ndarray[Any, Any]

# Daily hazard logits of each milestone for an average customer (MILESTONES order).
BASE = np.array([-3.6, -1.6, -2.6, -4.3, -2.6, -4.6])
# Per-persona terms of each milestone's logit, rows follow MILESTONES, columns follow PERSONAS:
# gamer, food_delivery, traveller, investor, parent, commuter, shopper, senior, student,
# professional.
_PERSONA = np.array(
    [
        (0.6, 0.5, 0.2, 0.2, 0.0, 0.5, 0.4, -0.6, 0.7, 0.3),  # download
        (0.3, 0.3, 0.1, 0.1, 0.0, 0.2, 0.2, -0.3, 0.3, 0.2),  # first_open
        (0.2, 0.3, 0.2, 0.3, 0.0, 0.2, 0.3, -0.4, 0.0, 0.3),  # register
        (0.0, 0.3, 0.3, 0.4, 0.0, 0.0, 0.5, -0.4, -0.3, 0.3),  # bind_card
        (0.3, 0.5, 0.3, 0.2, 0.2, 0.3, 0.5, -0.4, 0.3, 0.3),  # first_transaction
        (-0.5, -0.3, 0.3, 1.0, 0.0, 0.0, -0.2, 0.4, -1.0, 0.5),  # assets_10k
    ]
)
# Each step's pull fades with the days a customer has waited at it (logit per day).
FADE = np.array([0.02, 0.12, 0.06, 0.015, 0.03, 0.0])
_FRAILTY_SD = 0.6
LOGIN_BASE = -1.7
_LOGIN_PERSONA = np.array([0.8, 0.5, 0.0, 0.2, -0.2, 0.8, 0.5, -1.2, 0.9, 0.2])
_LOGIN_FRAILTY_SD = 0.7
LOGIN_CARD_BOUND = 0.6  # bound cards bring customers back
LOGIN_FADE = 0.012  # logit lost per day since registering

# Channel effects (JOURNEY_CHANNELS order: in_app_popup, app_push, sms, crm_task).
PERSIST = np.array([5, 7, 7, 10])  # days an exposed touch's effect is live, its own day included
_PUSH_NEXT = np.array([0.8, 0.8, 0.8, 0.8, 0.8, 3.0, 0.8, 0.2, 0.8, 0.8])  # by persona
_PUSH_CLICK = np.array([0.06, 0.06, 0.05, 0.05, 0.05, 0.25, 0.06, 0.02, 0.07, 0.05])
_SMS_NEXT = np.array([0.3, 0.1, -0.4])  # by age band: under 30, 30-54, 55 and over
_SMS_LOGIN = np.array([1.0, 0.3, -1.2])
_SMS_CLICK = np.array([0.05, 0.03, 0.01])
_SMS_OPT_OUT = np.array([0.01, 0.02, 0.15])
_YOUNG, _SENIOR = 30, 55  # age band limits


def age_band(age: Array) -> I64:
    """Return 0 (under 30), 1 (30-54) or 2 (55 and over) for each age."""
    return np.digitize(np.asarray(age, dtype=np.float64), [_YOUNG, _SENIOR]).astype(np.int64)


@dataclass(frozen=True)
class JourneyPeople:
    """The cohort's customers, in customer_id order, with their hazards' fixed parts.

    `milestone_logit[i, k]` is customer i's logit of reaching milestone k on a day, effects and
    the download's fading aside; `login_logit[i]` the same for a log-in. The channel arrays are
    (channel, customer), channels in `JOURNEY_CHANNELS` order.
    """

    customer_id: I64
    branch_id: pl.Series
    entry_day: I64  # the day (from the journey's start) the customer enters the cohort
    persona: Array  # int8 main persona (PERSONAS order)
    second: Array  # int8 second persona, = persona when none
    age: F64
    milestone_logit: F64  # (n, len(MILESTONES))
    login_logit: F64
    effect_next: F64  # logit added to the next milestone's hazard while a channel's effect lives
    effect_login: F64  # logit added to the log-in's
    p_exposure: F64
    p_click: F64  # given exposure
    p_opt_out: F64  # given exposure

    @property
    def n(self) -> int:
        return len(self.customer_id)

    def subset(self, rows: I64) -> JourneyPeople:
        """Return the same people restricted to positions `rows` (in that order)."""
        return replace(
            self,
            customer_id=self.customer_id[rows],
            branch_id=self.branch_id.gather(rows),
            entry_day=self.entry_day[rows],
            persona=self.persona[rows],
            second=self.second[rows],
            age=self.age[rows],
            milestone_logit=self.milestone_logit[rows],
            login_logit=self.login_logit[rows],
            effect_next=self.effect_next[:, rows],
            effect_login=self.effect_login[:, rows],
            p_exposure=self.p_exposure[:, rows],
            p_click=self.p_click[:, rows],
            p_opt_out=self.p_opt_out[:, rows],
        )


def journey_people(
    frame: pl.DataFrame, rng: np.random.Generator, intake_days: int
) -> JourneyPeople:
    """Return the truth of the cohort customers in `frame`, drawing entry days and frailties.

    `frame`: one row per cohort customer, sorted by customer_id: customer_id, branch_id, age,
    online_banking, wechat_bound, payroll, aum_current (the bank extract) and persona,
    second_persona (null: none), fintech (the world's truth). Draws from `rng`, in this order:
    entry days, milestone frailties, log-in frailties.
    """
    n = frame.height
    persona = _persona_index(frame["persona"])
    second_names = frame["second_persona"].fill_null(frame["persona"])
    second = _persona_index(second_names)
    weight = np.where(second != persona, SECOND_WEIGHT, 0.0)
    entry_day = rng.integers(0, intake_days, n).astype(np.int64)
    frailty = rng.normal(0.0, _FRAILTY_SD, n)
    login_frailty = rng.normal(0.0, _LOGIN_FRAILTY_SD, n)
    age = frame["age"].cast(pl.Float64).to_numpy()
    persona_terms = np.stack([mix(row, persona, second, weight) for row in _PERSONA], axis=1)
    milestone_logit = BASE[None, :] + persona_terms + _bank_terms(frame) + frailty[:, None]
    login_logit = (
        LOGIN_BASE
        + mix(_LOGIN_PERSONA, persona, second, weight)
        - 0.01 * (age - 35.0)
        + login_frailty
    )
    effects = _channel_effects(persona, second, weight, age_band(age))
    return JourneyPeople(
        customer_id=frame["customer_id"].to_numpy().astype(np.int64),
        branch_id=frame["branch_id"],
        entry_day=entry_day,
        persona=persona,
        second=second,
        age=age,
        milestone_logit=milestone_logit,
        login_logit=login_logit,
        **effects,
    )


def _persona_index(names: pl.Series) -> Array:
    """Return the PERSONAS index of each persona name."""
    return (
        names.replace_strict(list(PERSONAS), list(range(len(PERSONAS))), return_dtype=pl.Int8)
        .to_numpy()
        .astype(np.int8)
    )


def _bank_terms(frame: pl.DataFrame) -> F64:
    """Return the in-bank (and fintech) terms of each milestone's logit, (n, len(MILESTONES))."""
    n = frame.height
    age = frame["age"].cast(pl.Float64).to_numpy()
    flag = {
        name: frame[name].cast(pl.Float64).to_numpy()
        for name in ("online_banking", "wechat_bound", "payroll", "fintech")
    }
    young = -0.02 * (age - 35.0)
    aum = np.clip(np.log(np.maximum(frame["aum_current"].to_numpy(), 1.0) / 10_000.0), -3.0, 2.0)
    terms = np.zeros((n, len(MILESTONES)))
    digital = [MILESTONES.index(m) for m in ("download", "first_open", "register", "bind_card")]
    terms[:, digital] += (young + 0.4 * flag["fintech"])[:, None]
    terms[:, MILESTONES.index("download")] += 0.3 * flag["online_banking"]
    terms[:, MILESTONES.index("register")] += 0.3 * flag["online_banking"]
    terms[:, MILESTONES.index("bind_card")] += 0.3 * flag["wechat_bound"]
    terms[:, MILESTONES.index("first_transaction")] += 0.3 * flag["payroll"]
    terms[:, MILESTONES.index("assets_10k")] += 1.0 * aum
    return terms


def _channel_effects(persona: Array, second: Array, weight: F64, band: I64) -> dict[str, F64]:
    """Return the per-channel effect and answer arrays, each (len(JOURNEY_CHANNELS), n)."""
    n = len(persona)
    shape = (len(JOURNEY_CHANNELS), n)
    at = {name: i for i, name in enumerate(JOURNEY_CHANNELS)}
    senior = band == 2
    senior_persona = mix(
        (np.arange(len(PERSONAS)) == PERSONA_INDEX["senior"]).astype(np.float64),
        persona,
        second,
        weight,
    )
    effect_next, effect_login = np.zeros(shape), np.zeros(shape)
    p_exposure, p_click, p_opt_out = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    popup, push, sms, crm = (at[c] for c in ("in_app_popup", "app_push", "sms", "crm_task"))
    effect_next[popup], p_exposure[popup], p_click[popup] = 0.8, 1.0, 0.15
    effect_next[push] = mix(_PUSH_NEXT, persona, second, weight)
    p_exposure[push] = 0.9
    p_click[push] = mix(_PUSH_CLICK, persona, second, weight)
    p_opt_out[push] = 0.004 + 0.016 * senior_persona
    effect_next[sms], effect_login[sms] = _SMS_NEXT[band], _SMS_LOGIN[band]
    p_exposure[sms], p_click[sms], p_opt_out[sms] = 0.97, _SMS_CLICK[band], _SMS_OPT_OUT[band]
    effect_next[crm] = np.where(senior, 1.2, 0.8)
    effect_login[crm], p_exposure[crm], p_click[crm], p_opt_out[crm] = 0.3, 0.7, 0.2, 0.02
    return {
        "effect_next": effect_next,
        "effect_login": effect_login,
        "p_exposure": p_exposure,
        "p_click": p_click,
        "p_opt_out": p_opt_out,
    }


def daily_hazard(people: JourneyPeople, stage: I64, waiting: I64, boost: F64) -> F64:
    """Return each customer's hazard of reaching their next milestone on a day.

    `stage`: milestones reached so far (< len(MILESTONES)); `waiting`: days since the last one
    (or since entering); `boost`: the live effects' logits.
    """
    step = np.minimum(stage, len(MILESTONES) - 1)
    logit = people.milestone_logit[np.arange(people.n), step] - FADE[step] * waiting + boost
    return sigmoid(logit)


def login_probability(
    people: JourneyPeople, card_bound: Array, days_registered: I64, boost: F64
) -> F64:
    """Return each registered customer's probability of logging in on a day."""
    logit = (
        people.login_logit + LOGIN_CARD_BOUND * card_bound - LOGIN_FADE * days_registered + boost
    )
    return sigmoid(logit)
