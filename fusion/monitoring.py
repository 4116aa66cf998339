"""Model monitoring: how far a scoring run has moved from the population a model was trained on.

Four checks, each judged ok / warn / alert against `MonitorSettings`:

    scores     the population stability index (PSI) of each monitored model's scores, training
               population against the scoring run's
    features   the same index of each input column the model reads (the characteristic
               stability index, CSI)
    vendor     the vendor's batch against the previous one: match rate, tag coverage, tags per
               user and every app category's penetration (`fusion.vendor_drift`)
    realised   campaign outcomes against the training figures (`fusion.vendor_drift`)

The index, over bins fixed from the training population (Siddiqi 2006, ch. 8; Yurdakul 2018):

    PSI = sum_i (a_i - e_i) ln(a_i / e_i),   e_i = max(E_i / N_E, eps),  a_i = max(A_i / N_A, eps)

E_i and A_i are the training and the scoring run's counts in bin i, N_E and N_A their totals, and
eps (default 1e-4) stands in for an empty bin, whose share would make the logarithm infinite.
Bins: a numeric column (and a score) is cut at the deciles of its training values (repeated
deciles merged: bin k holds edges[k-1] <= x < edges[k]), plus one bin for missing values (null or
NaN: "no vendor data" moves when the match rate does); a categorical column has one bin per
training category, one for categories unseen at training and one for missing. The usual reading
is below 0.1 stable, 0.1-0.25 a shift to look at, above 0.25 a shift to act on.

The training side is a `ModelProfile` (bins and counts, never a row) written beside each model
version at training (`write_training_profiles`, called by `fusion.pipeline.modelling`), as
`<models>/<name>/<version>/monitoring_profile.json`. The registry does not list the file among
the model's digests, so it never changes what a version is; a version trained before profiles
existed gets one from the training snapshot's feature table, which its metadata names.

References:
    Siddiqi, N. (2006). Credit Risk Scorecards. Wiley, ch. 8 (the index and its 0.1 / 0.25
    reading).
    Yurdakul, B. (2018). Statistical Properties of Population Stability Index. PhD thesis,
    Western Michigan University (its distribution, and why sparse bins need a floor).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from contracts.errors import ConfigError, ModelError
from fusion.features import FeatureSet
from fusion.models.acquisition import LABEL, population
from fusion.models.classifier import ScoreModel
from fusion.models.design import DesignSpec, design_matrix
from fusion.registry import Registry, UpliftArtifact
from matcher.atomic import write_atomic

__all__ = [
    "MISSING",
    "MONITORED",
    "OTHER",
    "PROFILE_FILE",
    "Bins",
    "ModelProfile",
    "MonitorSettings",
    "Stability",
    "Status",
    "column_bins",
    "model_stability",
    "population_stability",
    "profile_model",
    "read_profile",
    "scored_population",
    "worst",
    "write_training_profiles",
]

PROFILE_FILE = "monitoring_profile.json"
PROFILE_FORMAT = "bankfusion-monitoring-profile/1"
MONITORED = ("acquisition", "rescue", "uplift")  # the models whose scores a scoring run writes
MISSING = "(missing)"
OTHER = "(other)"
_COMPARE_EDGES = 16  # up to this many edges, bins are found by comparisons, not a search

F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


class Status(StrEnum):
    """A check's verdict, in increasing order of concern."""

    OK = "ok"
    WARN = "warn"
    ALERT = "alert"

    @property
    def rank(self) -> int:
        return ("ok", "warn", "alert").index(self.value)


def worst(statuses: Iterable[Status]) -> Status:
    """Return the most severe of `statuses` (ok when there are none)."""
    return max(statuses, key=lambda s: s.rank, default=Status.OK)


@dataclass(frozen=True, kw_only=True)
class MonitorSettings:
    """Thresholds of every check; a value at or above `*_warn` warns, at or above `*_alert` alerts.

    Defaults: PSI / CSI 0.1 and 0.25 (Siddiqi 2006); the vendor's batch against the previous one:
    match rate moved by 5 / 10 points, tag coverage, tags per user or a category's penetration
    moved by 25% / 50% of its previous value (categories under `min_penetration` of users are
    too thin to judge); realised performance: observed successes of campaign controls off the
    training rate by 25% / 50%, when the difference is significant at `significance`.
    """

    psi_warn: float = 0.1
    psi_alert: float = 0.25
    epsilon: float = 1e-4
    bins: int = 10
    match_rate_warn: float = 0.05
    match_rate_alert: float = 0.10
    relative_warn: float = 0.25
    relative_alert: float = 0.5
    min_penetration: float = 0.01
    significance: float = 0.05
    min_customers: int = 100  # fewer customers scored (or in a control): not judged

    def __post_init__(self) -> None:
        pairs = (
            ("psi", self.psi_warn, self.psi_alert),
            ("match_rate", self.match_rate_warn, self.match_rate_alert),
            ("relative", self.relative_warn, self.relative_alert),
        )
        for name, warn, alert in pairs:
            if not (math.isfinite(warn) and math.isfinite(alert) and 0 < warn <= alert):
                raise ConfigError(
                    f"{name}_warn and {name}_alert must be finite with 0 < warn <= alert, got "
                    f"{warn!r} and {alert!r}; the defaults are {name}_warn < {name}_alert",
                    setting=f"{name}_warn",
                )
        if not 0 < self.epsilon < 0.01:
            raise ConfigError(
                f"epsilon must be in (0, 0.01), got {self.epsilon!r}; it stands in for the share "
                "of an empty bin (default 1e-4)",
                setting="epsilon",
            )
        if not 2 <= self.bins <= 100:
            raise ConfigError(f"bins must be in 2..100, got {self.bins!r}", setting="bins")
        if not (0 <= self.min_penetration < 1 and 0 < self.significance < 1):
            raise ConfigError(
                "min_penetration must be in [0, 1) and significance in (0, 1), got "
                f"{self.min_penetration!r} and {self.significance!r}",
                setting="min_penetration",
            )
        if self.min_customers < 1:
            raise ConfigError(
                f"min_customers must be >= 1, got {self.min_customers!r}", setting="min_customers"
            )

    def judge(self, value: float | None, warn: float, alert: float) -> Status:
        """Return the status of `value` against a warn and an alert threshold (None: ok)."""
        if value is None or not math.isfinite(value):
            return Status.OK
        if value >= alert:
            return Status.ALERT
        return Status.WARN if value >= warn else Status.OK

    def to_dict(self) -> dict[str, float | int]:
        """Return the thresholds as JSON-ready values."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# --- bins and the index -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bins:
    """The bins of one column (or score) fixed at training, and the training counts in them.

    numeric: `edges` ascending; value bins are x < edges[0], edges[0] <= x < edges[1], ...,
    x >= edges[-1], then the missing bin. categorical: one bin per category of `categories`,
    then the bin of unseen categories, then the missing bin.
    """

    kind: Literal["numeric", "categorical"]
    counts: tuple[int, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        """Return a readable name of every bin, in bin order."""
        if self.kind == "categorical":
            return [*self.categories, OTHER, MISSING]
        e = [f"{v:.4g}" for v in self.edges]
        if not e:
            return ["all", MISSING]
        inner = (f"{a} to < {b}" for a, b in itertools.pairwise(e))
        return [f"< {e[0]}", *inner, f">= {e[-1]}", MISSING]

    def count(self, values: pl.Series, codes: Sequence[str] | None = None) -> I64:
        """Return the counts of `values` in these bins (`codes`: the text behind integer codes)."""
        if self.kind == "numeric":
            return _numeric_counts(values, np.asarray(self.edges, dtype=np.float64))
        return _category_counts(values, self.categories, codes)

    def to_dict(self) -> dict[str, Any]:
        """Return the bins as JSON-ready values."""
        out: dict[str, Any] = {"kind": self.kind, "counts": list(self.counts)}
        if self.kind == "numeric":
            out["edges"] = list(self.edges)
        else:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Bins:
        """Return the bins `to_dict` described."""
        return cls(
            kind=document["kind"],
            counts=tuple(int(c) for c in document["counts"]),
            edges=tuple(float(e) for e in document.get("edges", ())),
            categories=tuple(str(c) for c in document.get("categories", ())),
        )


def _as_float(values: pl.Series) -> F64:
    """Return `values` as float64 with nulls as NaN."""
    if values.dtype == pl.Float64:
        return values.to_numpy(allow_copy=True).astype(np.float64, copy=False)
    return values.cast(pl.Float64).to_numpy(allow_copy=True)


def _numeric_counts(values: pl.Series, edges: F64) -> I64:
    """Return the counts of `values` in the value bins `edges` cut, then the missing bin."""
    x = _as_float(values)
    if edges.size <= _COMPARE_EDGES:
        # The number of edges <= x, one vectorised comparison per edge: several times faster
        # than a binary search per value for the handful of edges deciles give.
        where = np.zeros(x.size, dtype=np.int16)
        for edge in edges:
            where += x >= edge
    else:
        where = np.searchsorted(edges, x, side="right").astype(np.int16)
    # NaN compares false and sorts after every edge: it gets its own bin, the last.
    where[np.isnan(x)] = edges.size + 1
    return np.bincount(where, minlength=edges.size + 2).astype(np.int64)


def _category_counts(
    values: pl.Series, categories: Sequence[str], codes: Sequence[str] | None
) -> I64:
    """Return the counts per category of `categories`, then unseen ones, then missing."""
    counted = values.value_counts()
    names, n = counted[counted.columns[0]], counted["count"].to_numpy()
    out = np.zeros(len(categories) + 2, dtype=np.int64)
    where = {c: i for i, c in enumerate(categories)}
    for value, count in zip(names.to_list(), n, strict=True):
        if value is None:
            out[-1] += int(count)
            continue
        text = codes[int(value)] if codes is not None else str(value)
        out[where.get(text, len(categories))] += int(count)
    return out


def column_bins(values: pl.Series, *, codes: Sequence[str] | None = None, bins: int = 10) -> Bins:
    """Return the bins of a training column: deciles (`bins` quantiles) or its categories.

    A text column, or one whose integers are `codes` into text values (the feature table's
    encoded categories), is categorical; any other is numeric.
    """
    if codes is not None or values.dtype in (pl.String, pl.Categorical, pl.Enum):
        text = (
            [str(codes[int(v)]) for v in values.drop_nulls().unique().to_list()]
            if codes is not None
            else [str(v) for v in values.drop_nulls().unique().to_list()]
        )
        categories = tuple(sorted(set(text)))
        counts = _category_counts(values, categories, codes)
        return Bins("categorical", tuple(int(c) for c in counts), categories=categories)
    x = _as_float(values)
    present = x[~np.isnan(x)]
    quantiles = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.quantile(present, quantiles)) if present.size else np.zeros(0)
    counts = _numeric_counts(values, edges)
    return Bins("numeric", tuple(int(c) for c in counts), edges=tuple(float(e) for e in edges))


def population_stability(
    expected: Sequence[int] | I64, actual: Sequence[int] | I64, *, epsilon: float = 1e-4
) -> float:
    """Return the PSI of `actual` counts against `expected` counts over the same bins.

    PSI = sum_i (a_i - e_i) ln(a_i / e_i), with shares floored at `epsilon` (module docstring).
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ConfigError(
            f"expected and actual must be counts over the same bins, got shapes {e.shape} and "
            f"{a.shape}",
            setting="actual",
        )
    if e.sum() <= 0 or a.sum() <= 0 or (e < 0).any() or (a < 0).any():
        raise ConfigError(
            "expected and actual must be non-negative counts with at least one row each; "
            "a model scored nobody, or a profile is empty",
            setting="actual",
        )
    e = np.maximum(e / e.sum(), epsilon)
    a = np.maximum(a / a.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


# --- the training profile -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelProfile:
    """What a model saw at training: its score bins and the bins of each input column.

    `decile_rates` is the label's rate in each of the model's score deciles (1 = best) on the
    training population, for scoring models; the realised-performance check compares campaign
    controls with it.
    """

    model: str
    version: str
    snapshot_date: str
    rows: int
    score: Bins
    features: dict[str, Bins]
    decile_rates: tuple[float | None, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the profile as the JSON document written beside the model."""
        return {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "version": self.version,
            "snapshot_date": self.snapshot_date,
            "rows": self.rows,
            "score": self.score.to_dict(),
            "features": {name: b.to_dict() for name, b in self.features.items()},
            "decile_rates": None if self.decile_rates is None else list(self.decile_rates),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> ModelProfile:
        """Return the profile `to_dict` described."""
        if document.get("format") != PROFILE_FORMAT:
            raise ModelError(
                f"a monitoring profile of format {document.get('format')!r} arrived where "
                f"{PROFILE_FORMAT} was expected; retrain the model to write a current one",
                model=str(document.get("model")),
            )
        rates = document.get("decile_rates")
        return cls(
            model=document["model"],
            version=document["version"],
            snapshot_date=document["snapshot_date"],
            rows=int(document["rows"]),
            score=Bins.from_dict(document["score"]),
            features={n: Bins.from_dict(b) for n, b in document["features"].items()},
            decile_rates=None if rates is None else tuple(rates),
        )


def scored_population(
    registry: Registry, model: ScoreModel | UpliftArtifact, features: FeatureSet
) -> tuple[I64, F64]:
    """Return the feature-table rows a scoring run scores with `model`, and their scores.

    The same populations `fusion.lists.build_target_lists` scores: customers not yet on mobile
    banking; for the rescue model, those of them its in-bank gate rejects. The scores are the
    ones the scoring run writes (same booster, same table), without reason codes.
    """
    rows = np.flatnonzero(population(features))
    if isinstance(model, UpliftArtifact):
        return rows, model.model.predict(design_matrix(features, model.spec, rows))
    if model.name == "rescue":
        gate = registry.load_score_model(
            str(model.metadata["in_bank_model"]), model.metadata.get("in_bank_version")
        )
        gated = gate.predict(design_matrix(features, gate.spec, rows))
        rows = rows[gated < float(model.metadata["in_bank_cutoff"])]
    return rows, model.predict(design_matrix(features, model.spec, rows))


def _input_columns(spec: DesignSpec) -> list[str]:
    """Return the feature-table columns a model reads (tag-profile components are derived)."""
    return list(spec.columns)


def profile_model(
    registry: Registry, name: str, features: FeatureSet, *, bins: int = 10
) -> ModelProfile:
    """Return the profile of the CURRENT version of `name` on `features` (its training table)."""
    model = registry.load(name)
    rows, scores = scored_population(registry, model, features)
    if rows.size == 0:
        raise ModelError(
            f"model {name} scores nobody of the feature table of "
            f"{features.manifest.snapshot_date}; a profile needs its training population",
            model=name,
        )
    table = features.table[rows]
    codes = features.manifest.codes
    columns = {
        c: column_bins(table[c], codes=codes.get(c), bins=bins) for c in _input_columns(model.spec)
    }
    rates = None
    if isinstance(model, ScoreModel) and LABEL in table.columns:
        label = table[LABEL].fill_null(0).to_numpy().astype(np.float64)
        decile = model.decile(scores)
        rates = tuple(
            float(label[decile == d].mean()) if (decile == d).any() else None for d in range(1, 11)
        )
    return ModelProfile(
        model=name,
        version=str(model.metadata["version"]),
        snapshot_date=features.manifest.snapshot_date.isoformat(),
        rows=int(rows.size),
        score=column_bins(pl.Series("score", scores), bins=bins),
        features=columns,
        decile_rates=rates,
    )


def _profile_path(registry: Registry, name: str, version: str) -> Path:
    return registry.root / name / version / PROFILE_FILE


def write_training_profiles(
    registry: Registry, features: FeatureSet, *, bins: int = 10
) -> dict[str, Path]:
    """Write the profile of each monitored model's CURRENT version beside it; return the paths.

    Called right after training on `features` (the training table), so CURRENT is the version
    just trained.
    """
    written: dict[str, Path] = {}
    for name in MONITORED:
        if registry.current(name) is None:
            continue
        profile = profile_model(registry, name, features, bins=bins)
        path = _profile_path(registry, name, profile.version)
        write_atomic(path, json.dumps(profile.to_dict(), indent=1) + "\n")
        written[name] = path
    return written


def read_profile(
    registry: Registry, name: str, *, training_features: FeatureSet | None = None
) -> ModelProfile:
    """Return the training profile of the CURRENT version of `name`.

    A version trained before profiles existed has none beside it: with `training_features` (the
    table its metadata's snapshot names) it is computed from them; without, ModelError says so.
    """
    version = registry.current(name)
    if version is None:
        raise ModelError(
            f"no current version of model {name}; run `fusion train` first", model=name
        )
    path = _profile_path(registry, name, version)
    if path.is_file():
        profile = ModelProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
        if profile.version != version:
            raise ModelError(
                f"{path} profiles version {profile.version}, not {version} beside which it lies; "
                "the file was moved: delete it (the profile is then computed again from the "
                "training snapshot)",
                model=name,
            )
        return profile
    if training_features is None:
        raise ModelError(
            f"model {name} version {version} has no training profile ({PROFILE_FILE}) and its "
            "training feature table is gone; retrain it (`fusion train`) to monitor it",
            model=name,
        )
    return profile_model(registry, name, training_features)


# --- stability of one scoring run ---------------------------------------------------------------


@dataclass(frozen=True)
class Stability:
    """The PSI of one model's scores, or the CSI of one of its input columns, with its bins."""

    model: str
    version: str
    kind: Literal["score", "feature"]
    name: str
    index: float
    status: Status
    labels: tuple[str, ...]
    expected: tuple[int, ...]  # training counts per bin
    actual: tuple[int, ...]  # the scoring run's counts per bin
    rows: int = field(default=0)  # customers of the scoring run


def _stability(
    profile: ModelProfile,
    kind: Literal["score", "feature"],
    name: str,
    bins: Bins,
    actual: I64,
    settings: MonitorSettings,
) -> Stability:
    index = population_stability(bins.counts, actual, epsilon=settings.epsilon)
    judged = int(actual.sum()) >= settings.min_customers
    status = settings.judge(index, settings.psi_warn, settings.psi_alert) if judged else Status.OK
    return Stability(
        model=profile.model,
        version=profile.version,
        kind=kind,
        name=name,
        index=index,
        status=status,
        labels=tuple(bins.labels),
        expected=bins.counts,
        actual=tuple(int(c) for c in actual),
        rows=int(actual.sum()),
    )


def model_stability(
    profile: ModelProfile,
    scores: pl.Series,
    table: pl.DataFrame,
    *,
    codes: Mapping[str, Sequence[str]] | None = None,
    settings: MonitorSettings | None = None,
) -> list[Stability]:
    """Return the PSI of `scores` and the CSI of every profiled column of `table`.

    `table` holds the scoring run's customers (the rows `scores` scored), `codes` the text
    behind the table's encoded categories (`FeatureManifest.codes`): the categories of two
    snapshots are compared by their text, since each snapshot numbers them afresh.
    """
    settings = settings or MonitorSettings()
    codes = codes or {}
    missing = [c for c in profile.features if c not in table.columns]
    if missing:
        raise ConfigError(
            f"the feature table lacks {len(missing)} column(s) model {profile.model} reads "
            f"({', '.join(missing[:5])}); rebuild the snapshot's features with the model's "
            "taxonomy, or retrain",
            setting="features",
        )
    out = [
        _stability(profile, "score", "score", profile.score, profile.score.count(scores), settings)
    ]
    for name, bins in profile.features.items():
        actual = bins.count(table[name], codes.get(name))
        out.append(_stability(profile, "feature", name, bins, actual, settings))
    return out
