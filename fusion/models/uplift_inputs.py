"""Checking what an uplift model is given: features, 0/1 outcomes and arms, sample weights.

`feature_matrix` reads any numeric frame - a polars or pandas DataFrame or a 2-D numpy array,
booleans allowed, nulls and NaN kept as missing - as a float64 matrix with its column names.
`trial_arrays` refuses a trial an uplift model cannot learn from (an arm empty, or all of one
outcome). Bad input raises `contracts.errors.ConfigError` naming the argument and what to pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import polars as pl

from contracts.errors import ConfigError
from fusion.models.vectors import one_per_row, zero_one

__all__ = ["Features", "feature_matrix", "outcome_labels", "row_weights", "trial_arrays"]

ArrayLike = npt.ArrayLike
Features: TypeAlias = pl.DataFrame | pd.DataFrame | npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


def feature_matrix(X: Features) -> tuple[FloatArray, tuple[str, ...] | None]:
    """Return X as a float64 matrix (nulls as NaN) and its column names (None for an array)."""
    if isinstance(X, pl.DataFrame):
        bad = [name for name, dt in X.schema.items() if not (dt.is_numeric() or dt == pl.Boolean)]
        names: tuple[str, ...] | None = tuple(X.columns)
        if bad:
            raise _non_numeric(bad, X.schema)
        matrix = X.select(pl.all().cast(pl.Float64)).to_numpy()
    elif isinstance(X, pd.DataFrame):
        names = tuple(str(c) for c in X.columns)
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(
                f"X has duplicate column names {dupes}; give every feature a unique name",
                setting="X",
            )
        bad = [str(c) for c, dt in X.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
        if bad:
            raise _non_numeric(bad, {str(c): dt for c, dt in X.dtypes.items()})
        matrix = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        names = None
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ConfigError(
                f"X must be 2-d (rows x features), got shape {arr.shape}; "
                "pass a DataFrame or reshape a single feature with x.reshape(-1, 1)",
                setting="X",
            )
        if arr.dtype.kind not in "biuf":
            raise ConfigError(
                f"X must be numeric, got dtype {arr.dtype}; encode categories as numbers first",
                setting="X",
            )
        matrix = arr.astype(np.float64)
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ConfigError(
            f"X has shape {matrix.shape}; pass at least one row and one feature", setting="X"
        )
    inf = np.isinf(matrix)
    if inf.any():
        row, col = (int(i[0]) for i in np.nonzero(inf))
        where = names[col] if names is not None else f"column {col}"
        raise ConfigError(
            f"X has {int(inf.sum())} infinite value(s) (first at row {row}, {where}); "
            "replace them with null/NaN (missing) or a finite cap",
            setting="X",
        )
    return matrix, names


def _non_numeric(bad: list[str], schema: Mapping[str, object]) -> ConfigError:
    shown = ", ".join(f"{n} ({schema[n]})" for n in bad[:5])
    return ConfigError(
        f"X must hold numeric or boolean columns only, got {len(bad)} other(s): {shown}; "
        "encode categories as numbers or drop the columns",
        setting="X",
    )


def outcome_labels(values: ArrayLike, name: str, rows: int) -> FloatArray:
    """Return `values` as 0/1 floats, one per row of X, refusing anything else."""
    arr = one_per_row(values, name, size=rows, against=f"X has {rows} rows", per="row of X")
    return zero_one(arr, name).astype(np.float64)


def trial_arrays(y: ArrayLike, treatment: ArrayLike, rows: int) -> tuple[FloatArray, FloatArray]:
    """Return y and treatment as 0/1 floats, refusing data an uplift model cannot learn from."""
    yy, tt = outcome_labels(y, "y", rows), outcome_labels(treatment, "treatment", rows)
    for arm, name in ((1.0, "treatment"), (0.0, "control")):
        in_arm = tt == arm
        n, responders = int(in_arm.sum()), int(yy[in_arm].sum())
        if n == 0:
            raise ConfigError(
                f"the {name} group is empty ({int(tt.sum())} treated, {int((tt == 0).sum())} "
                "control); uplift is learnt against a control group - pass both arms of a trial",
                setting="treatment",
            )
        if responders in (0, n):
            raise ConfigError(
                f"the {name} group's {n} rows all have y={int(responders > 0)}; each arm needs "
                "responders and non-responders - use a larger sample",
                setting="y",
            )
    return yy, tt


def row_weights(values: ArrayLike, rows: int) -> FloatArray:
    """Return `values` as positive finite float weights, one per row of X."""
    arr = np.asarray(
        one_per_row(values, "sample_weight", size=rows, against=f"X has {rows} rows"),
        dtype=np.float64,
    )
    if not (np.isfinite(arr) & (arr > 0)).all():
        raise ConfigError(
            "sample_weight must be finite and > 0 for every row; drop the rows that should not "
            "count instead of giving them weight 0",
            setting="sample_weight",
        )
    return arr
