"""Checking the one-value-per-customer arrays that the models and metrics take.

Every check raises `contracts.errors.ConfigError` naming the argument and what to pass instead,
so the metrics, the uplift learners and the targeting all refuse bad input in the same words.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from contracts.errors import ConfigError

__all__ = ["finite", "one_per_row", "zero_one"]

FloatArray = npt.NDArray[np.float64]


def one_per_row(
    values: npt.ArrayLike,
    name: str,
    *,
    size: int | None = None,
    against: str = "",
    per: str = "customer",
) -> npt.NDArray[np.generic]:
    """Return `values` as a 1-d array, refusing other shapes and, given `size`, other lengths.

    `against` completes "{name} has N values but ..." (e.g. "y_true has 40"); `per` names what
    one value stands for (a customer, a row of X).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConfigError(
            f"{name} must be a 1-d array, got shape {arr.shape}; pass one value per {per}",
            setting=name,
        )
    if size is not None and arr.size != size:
        raise ConfigError(
            f"{name} has {arr.size} values but {against}; pass one value per {per} "
            "in the same order",
            setting=name,
        )
    return arr


def zero_one(arr: npt.NDArray[np.generic], name: str) -> npt.NDArray[np.generic]:
    """Return the 1-d `arr` unchanged if it holds only 0 and 1 (as numbers or booleans)."""
    if arr.dtype.kind not in "biuf":
        raise ConfigError(
            f"{name} must hold 0/1 labels, got dtype {arr.dtype}; pass integers or booleans "
            "without nulls",
            setting=name,
        )
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise ConfigError(
            f"{name} must hold only 0 and 1, got {int(bad.sum())} other value(s) "
            f"(first at row {int(np.argmax(bad))}); encode it as 1 = yes, 0 = no",
            setting=name,
        )
    return arr


def finite(arr: npt.NDArray[np.generic], name: str) -> FloatArray:
    """Return the 1-d `arr` as floats, refusing non-numeric dtypes, NaN and infinities."""
    if arr.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must be numeric, got dtype {arr.dtype}", setting=name)
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        raise ConfigError(
            f"{name} has NaN or infinite values (first at row {int(np.argmax(bad))}); "
            "impute or drop those customers first",
            setting=name,
        )
    return out
