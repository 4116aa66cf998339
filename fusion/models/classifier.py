"""A scoring model: a binary xgboost booster with its inputs, deciles and reason codes.

Everything the acquisition and rescue models share lives here: training with early stopping on
a validation split (`fit_booster`), stable feature pruning (`stable_features`), and the fitted
`ScoreModel` that scores rows, puts them in deciles of its reference population and explains each
score with its top reason codes from xgboost's own SHAP values (`pred_contribs`, Lundberg et al.
2018, "Consistent individualized feature attribution for tree ensembles").

Stable pruning, the real case's cure for "variables that got in by luck": the training rows are
cut in folds; a quick booster is trained on each fold's complement and every variable gets its
share of the total gain; a variable stays only when its share reaches `min_share` in at least
`min_folds` of the folds. A variable that matters in one resample and not in the others carried
noise, and dropping it makes the model smaller, steadier and easier to explain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import xgboost as xgb

from contracts.errors import ConfigError
from fusion.models.booster import BoosterConfig
from fusion.models.design import DesignSpec
from fusion.models.distributed import Rows, train_booster
from fusion.progress import Progress

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "PruneConfig",
    "PruneReport",
    "ScoreModel",
    "decile_edges",
    "fit_booster",
    "gain_shares",
    "stable_features",
]

F32 = np.ndarray[Any, np.dtype[np.float32]]
F64 = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Stable pruning: keep a variable whose gain share reaches min_share in min_folds folds."""

    folds: int = 4
    rounds: int = 150
    min_share: float = 0.003
    min_folds: int = 3

    def __post_init__(self) -> None:
        if not (2 <= self.folds and 1 <= self.min_folds <= self.folds and self.rounds >= 1):
            raise ConfigError(
                f"pruning needs folds >= 2, 1 <= min_folds <= folds and rounds >= 1; got "
                f"folds={self.folds}, min_folds={self.min_folds}, rounds={self.rounds}",
                setting="prune",
            )


@dataclass(frozen=True)
class PruneReport:
    """Which variables stayed, and how often each reached the share threshold."""

    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    frequency: dict[str, int]  # folds in which the variable reached min_share
    mean_share: dict[str, float]  # its mean gain share over the folds


def _check_xy(x: F32, y: np.ndarray[Any, Any], names: Sequence[str]) -> None:
    if x.ndim != 2 or x.shape[1] != len(names) or len(y) != x.shape[0]:
        raise ConfigError(
            f"expected a 2-D matrix with {len(names)} named columns and one label per row; "
            f"got shape {x.shape} and {len(y)} labels",
            setting="design",
        )
    if len(np.unique(y)) != 2:
        raise ConfigError(
            "training needs both outcomes (0 and 1) in the labels; widen the population or "
            "the window",
            setting="label",
        )


def fit_booster(
    train: Rows,
    valid: Rows,
    *,
    names: Sequence[str],
    config: BoosterConfig,
    client: Client | None = None,
) -> xgb.Booster:
    """Return a booster trained with early stopping on the validation AUC, cut at its best round.

    Weights (optional, per row, in `Rows.weight`) count in the loss and in the validation AUC
    alike. With a Dask `client` the fit runs on the cluster's workers
    (`fusion.models.distributed`).
    """
    _check_xy(train.x, train.label, names)
    _check_xy(valid.x, valid.label, names)
    return train_booster(
        config.params(),
        train,
        rounds=config.n_estimators,
        valid=valid,
        early_stopping_rounds=config.early_stopping_rounds,
        feature_names=names,
        client=client,
    )


def stable_features(
    x: F32,
    y: np.ndarray[Any, Any],
    *,
    names: Sequence[str],
    config: BoosterConfig,
    prune: PruneConfig,
    weight: np.ndarray[Any, Any] | None = None,
    progress: Progress | None = None,
    client: Client | None = None,
) -> PruneReport:
    """Return the variables whose importance is stable across `prune.folds` resamples.

    With a Dask `client` each fold's booster is fitted on the cluster's workers.
    """
    _check_xy(x, y, names)
    fold = np.random.default_rng(config.seed).integers(0, prune.folds, size=len(y))
    shares = np.zeros((prune.folds, len(names)))
    params = config.params()
    for k in range(prune.folds):
        rows = fold != k
        booster = train_booster(
            {**params, "seed": config.seed + k},
            Rows(x[rows], y[rows], None if weight is None else weight[rows]),
            rounds=prune.rounds,
            feature_names=names,
            client=client,
        )
        shares[k] = gain_shares(booster, names)
        if progress is not None:
            progress("prune", (k + 1) / prune.folds)
    frequency = (shares >= prune.min_share).sum(axis=0)
    keep = frequency >= prune.min_folds
    if not keep.any():
        raise ConfigError(
            f"stable pruning kept none of the {len(names)} inputs: none reached a gain share of "
            f"{prune.min_share} in {prune.min_folds} of {prune.folds} folds on {len(y)} training "
            f"rows ({int(np.sum(y))} positive), so no input carries a signal steady enough to "
            "model; widen the population or the window (more rows, more positives)",
            setting="prune",
        )
    return PruneReport(
        kept=tuple(n for n, k in zip(names, keep, strict=True) if k),
        dropped=tuple(n for n, k in zip(names, keep, strict=True) if not k),
        frequency={n: int(f) for n, f in zip(names, frequency, strict=True)},
        mean_share={n: float(s) for n, s in zip(names, shares.mean(axis=0), strict=True)},
    )


@dataclass
class ScoreModel:
    """A fitted scoring model: booster, inputs, labels for reasons and decile cut points."""

    name: str  # e.g. "acquisition-fused"
    booster: xgb.Booster
    spec: DesignSpec
    labels: dict[str, str]  # input name -> words a marketer reads
    decile_edges: F64  # 9 descending cut points: decile 1 holds scores >= edges[0]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return self.spec.names

    def predict(self, x: F32) -> F64:
        """Return P(label = 1) per row of the design matrix `x`."""
        self._check(x)
        return np.asarray(self.booster.inplace_predict(x, validate_features=False), np.float64)

    def decile(self, score: F64) -> np.ndarray[Any, np.dtype[np.int8]]:
        """Return the decile (1 = best 10% of the reference population) of each score."""
        return (1 + (np.asarray(score)[:, None] < self.decile_edges[None, :]).sum(axis=1)).astype(
            np.int8
        )

    def contributions(self, x: F32) -> F32:
        """Return each input's SHAP contribution (log-odds) per row; the bias column dropped."""
        self._check(x)
        matrix = xgb.DMatrix(x, feature_names=self.names)
        return np.asarray(self.booster.predict(matrix, pred_contribs=True), np.float32)[:, :-1]

    def reasons(self, x: F32, *, top: int = 3) -> pl.DataFrame:
        """Return `top` reason codes per row: the inputs that raised the score most, in words.

        Only positive contributions count (a reason is why the customer is a good prospect); a
        row with fewer than `top` of them gets nulls. Each code reads "label = value" (a tag
        profile component: its label alone).
        """
        contrib = self.contributions(x)
        top = min(top, contrib.shape[1])
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
        rows = np.arange(len(x))[:, None]
        chosen = contrib[rows, order]
        values = x[rows, order]
        readable = np.array([self.labels.get(n, n) for n in self.names], dtype=object)
        # A tag-profile component's value is a projection, meaningless to a marketer: its
        # label (the interests it stands for) is the reason.
        bare = np.array([n.startswith("tag_profile_") for n in self.names])
        columns: dict[str, Any] = {}
        for j in range(top):
            text = [
                label if plain else f"{label} = {_format(value)}"
                for label, value, plain in zip(
                    readable[order[:, j]], values[:, j], bare[order[:, j]], strict=True
                )
            ]
            columns[f"reason_{j + 1}"] = pl.Series(text, dtype=pl.String).set(
                pl.Series(chosen[:, j] <= 0), None
            )
        return pl.DataFrame(columns, schema={f"reason_{j + 1}": pl.String for j in range(top)})

    def importance(self) -> pl.DataFrame:
        """Return gain share per input, largest first, with its readable label."""
        return pl.DataFrame(
            {
                "feature": self.names,
                "label": [self.labels.get(n, n) for n in self.names],
                "gain_share": gain_shares(self.booster, self.names),
            }
        ).sort("gain_share", descending=True, maintain_order=True)

    def _check(self, x: F32) -> None:
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ConfigError(
                f"model {self.name} expects {len(self.names)} inputs per row; got shape "
                f"{x.shape}. Build the design matrix with the model's own spec.",
                setting="design",
            )


def gain_shares(booster: xgb.Booster, names: Sequence[str]) -> F64:
    """Return each input's share of the booster's total gain (0 for inputs it never split on)."""
    gain = booster.get_score(importance_type="total_gain")
    values = np.array([float(np.sum(gain.get(name, 0.0))) for name in names])
    total = values.sum()
    return values / total if total > 0 else values


def decile_edges(score: F64) -> F64:
    """Return 9 descending cut points so each decile of `score` holds a tenth of it."""
    return np.quantile(np.asarray(score, np.float64), np.linspace(0.9, 0.1, 9))


def _format(value: float) -> str:
    if np.isnan(value):
        return "no data"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
