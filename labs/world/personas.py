"""The latent truth both sides of the world share: personas, the fintech trait, the link function.

Every person has a main persona and maybe a second one, which counts `SECOND_WEIGHT` in
behaviour and in the label. Per-persona tables are arrays whose rows follow `PERSONAS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AGE",
    "DIGITAL_SHIFT",
    "N_PERSONAS",
    "PERSONAS",
    "PERSONA_INDEX",
    "SECOND_WEIGHT",
    "People",
    "draw_people",
    "draw_personas",
    "fintech_trait",
    "mix",
    "sigmoid",
]

F64 = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]

PERSONAS: tuple[str, ...] = (
    "gamer", "food_delivery", "traveller", "investor", "parent",
    "commuter", "shopper", "senior", "student", "professional",
)  # fmt: skip
PERSONA_INDEX = {name: i for i, name in enumerate(PERSONAS)}
N_PERSONAS = len(PERSONAS)

# Share of each main persona in the population (bank and vendor draw from the same people).
_MIX = np.array([0.10, 0.12, 0.08, 0.08, 0.13, 0.12, 0.13, 0.10, 0.06, 0.08])
_SECOND_PERSONA_SHARE = 0.35  # people with a second persona
SECOND_WEIGHT = 0.35  # how much the second persona counts in behaviour and in the label

# Age by persona: mean, sd, min, max.
AGE = np.array(
    [
        (27, 6, 18, 50), (31, 7, 18, 60), (39, 10, 22, 75), (46, 10, 25, 80), (36, 6, 24, 55),
        (34, 8, 20, 60), (33, 9, 18, 65), (66, 7, 55, 90), (21, 2, 18, 28), (38, 8, 23, 62),
    ],
    dtype=np.float64,
)  # fmt: skip
# Mild shift of the latent digital-affinity score (in standard deviations).
DIGITAL_SHIFT = np.array([0.5, 0.4, 0.2, 0.2, 0.0, 0.3, 0.4, -0.8, 0.5, 0.3])
# A second latent trait seen only at the vendor: heavy use of payment, wealth and other banks'
# apps (the vendor module boosts those categories for it; the label rewards it).
_FINTECH_SHARE = 0.3


def sigmoid(x: F64) -> F64:
    """Return the logistic function of `x`, element-wise."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class People:
    """Latent facts of the bank's customers: personas and the wealth / digital scores."""

    n: int
    persona: Array  # int8 main persona
    second: Array  # int8 second persona, equal to `persona` when there is none
    second_weight: F64  # 0 or SECOND_WEIGHT
    fintech: Array  # bool: the vendor-only trait
    wealth: F64
    digital: F64

    def mixed(self, table: Array) -> F64:
        """Return a per-persona table mixed over main and second persona for every person."""
        return mix(table, self.persona, self.second, self.second_weight)


def mix(table: Array, persona: Array, second: Array, weight: F64) -> F64:
    """Return table[persona] blended with table[second] by the second persona's weight."""
    return (1.0 - weight) * table[persona] + weight * table[second]


def draw_personas(n: int, rng: np.random.Generator) -> tuple[Array, Array, F64]:
    """Return main persona, second persona (= main when none) and the second's weight."""
    persona = rng.choice(N_PERSONAS, size=n, p=_MIX).astype(np.int8)
    has_second = rng.random(n) < _SECOND_PERSONA_SHARE
    # A second persona different from the main one: shift by 1..9 around the circle.
    second = ((persona + rng.integers(1, N_PERSONAS, n)) % N_PERSONAS).astype(np.int8)
    second = np.where(has_second, second, persona).astype(np.int8)
    return persona, second, np.where(has_second, SECOND_WEIGHT, 0.0)


def draw_people(n: int, rng: np.random.Generator) -> People:
    """Return the latent persona and scores of `n` bank customers."""
    persona, second, weight = draw_personas(n, rng)
    digital = rng.standard_normal(n)  # shifted by persona, age and city in bank_features
    return People(
        n=n,
        persona=persona,
        second=second,
        second_weight=weight,
        fintech=fintech_trait(digital, rng),
        wealth=rng.standard_normal(n),
        digital=digital,
    )


def fintech_trait(digital: F64, rng: np.random.Generator) -> Array:
    """Return the fintech trait: independent of the bank's view but for a mild digital tilt."""
    logit = math.log(_FINTECH_SHARE / (1 - _FINTECH_SHARE)) + 0.3 * digital
    return rng.random(len(digital)) < sigmoid(logit)
