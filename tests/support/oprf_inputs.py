"""Phone numbers an OPRF request blinds from one seed, and the one-process output of each step."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from matcher.oprf import OprfServerKey, blind_evaluate, blind_with, evaluate
from matcher.oprf_match import derive_row_keys, replay_blinds

__all__ = ["INPUTS", "OprfWorld", "oprf_world"]

INPUTS = 5_000  # five blind blocks of 1,024 rows, the last one partial


@dataclass(frozen=True)
class OprfWorld:
    """A request's inputs, seed and vendor key, and what each step gives in one process."""

    inputs: list[bytes]  # 11-digit mobile numbers as ASCII bytes
    seed: bytes
    key: OprfServerKey
    blinded: list[bytes]  # the single-process reference of each step
    evaluated: list[bytes]
    labels: list[bytes]  # what the vendor derives directly: derive_row_keys(evaluate(key, x))
    data_keys: list[bytes]


def oprf_world() -> OprfWorld:
    """Return INPUTS distinct numbers, a random seed and key, and each step's reference output."""
    numbers = np.random.default_rng(8).choice(10**8, INPUTS, replace=False)
    inputs = [f"138{n:08d}".encode() for n in numbers.tolist()]
    seed, key = secrets.token_bytes(32), OprfServerKey.generate()
    blinded = blind_with(inputs, replay_blinds(inputs, seed).blinds)
    labels, data_keys = derive_row_keys(evaluate(key, inputs))
    return OprfWorld(inputs, seed, key, blinded, blind_evaluate(key, blinded), labels, data_keys)
