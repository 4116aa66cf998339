"""Uplift from a past A/B campaign: who responds *because* of the offer, and what targeting buys.

A campaign table (customer_id, treatment, responded) from the bank's own randomised test is
joined to the feature table. Rows follow the customer split every model shares: the learners fit
on train rows; the learner is chosen by its cross-fitted Qini coefficient with its bootstrap
interval over the train and valid rows (`uplift.cross_fitted_qini`: the plain T-learner unless
another beats it with the paired interval), never on test; everything is reported on test rows.
When no learner's interval clears zero, targeting by uplift is not supported by the data: the
result says so (`UpliftResult.supported`, `verdict`) and targets by the response model instead.

- per learner (T-learner, X-learner, class transformation): Qini coefficient (Radcliffe 2007),
  AUUC (Gutierrez & Gerardy 2017), uplift@30% and uplift by decile, each on the held-out A/B,
  and its cross-fitted Qini with its interval;
- a response model, what a bank usually builds (P(respond | offered), trained on treated rows);
- budgeted targeting: the same number of contacts chosen by predicted uplift and by response
  score, with the incremental conversions each buys, estimated on the held-out A/B (with a 95%
  CI) and, when the caller knows it (a synthetic world), from the true uplift.

A campaign of several offers names each customer's offer in an `arm` column (the offer's name,
or `control`); `treatment` is then any offer. Each offer gets its own uplift model against the
control (`uplift_arms.MultiArmUplift`, the chosen learner) and, on the held-out rows, its effect on
the response rate with Newcombe's interval and its model's Qini with a bootstrap interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.features import FUSED, FeatureSet
from fusion.models import metrics
from fusion.models.acquisition import (
    AcquisitionConfig,
    ScorerTask,
    TrainedModel,
    train_scorer,
    training_digest,
)
from fusion.models.booster import BoosterConfig
from fusion.models.design import (
    TEST,
    TRAIN,
    VALID,
    DesignSpec,
    design_matrix,
    fit_tag_profile,
    split_customers,
)
from fusion.models.distributed import trained_on
from fusion.models.proportions import DiffResult
from fusion.models.targeting import (
    Budget,
    TargetingResult,
    budgeted_targeting,
    uplift_correlation,
)
from fusion.models.uplift import (
    LEARNERS,
    LearnerQini,
    Selection,
    UpliftModel,
    cross_fitted_qini,
    qini_interval,
)
from fusion.models.uplift_arms import MultiArmUplift, arm_effects
from fusion.progress import Progress, report_to

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "ArmEvaluation",
    "CampaignData",
    "LearnerEvaluation",
    "UpliftConfig",
    "UpliftResult",
    "campaign_data",
    "train_uplift",
]

Index = np.ndarray[Any, Any]  # feature-table row numbers
CAMPAIGN_COLUMNS = {"customer_id": pl.Int64, "treatment": pl.Boolean, "responded": pl.Boolean}
CONTROL = "control"  # the `arm` of the customers held out, in a campaign of several offers


@dataclass(frozen=True, kw_only=True)
class UpliftConfig:
    """Learners, their booster settings, and the targeting budget the report prices."""

    learners: tuple[str, ...] = tuple(LEARNERS)
    # Shallow, heavily regularised trees: an uplift is a small difference of two noisy rates.
    params: BoosterConfig = field(
        default_factory=lambda: BoosterConfig(
            n_estimators=800, max_depth=3, learning_rate=0.03, min_child_weight=30.0,
            subsample=0.8, colsample_bytree=0.6, reg_lambda=1.0, early_stopping_rounds=50,
            validation_fraction=0.2, seed=7, n_jobs=0,
        )
    )  # fmt: skip
    tag_profile_k: int = 40
    folds: int = 3  # cross-fitting folds of the learner choice
    baseline: str | None = "t_learner"  # kept unless another learner beats it (None: top Qini)
    alpha: float = 0.05  # the choice's intervals are 1 - 2 alpha / learners
    target_share: float = 0.30  # contacts = this share of the held-out base
    cost_per_contact: float = 2.0
    value_per_conversion: float = 60.0
    split: AcquisitionConfig = field(default_factory=AcquisitionConfig)  # split seed and shares

    def __post_init__(self) -> None:
        unknown = set(self.learners).difference(LEARNERS)
        if not self.learners or unknown:
            raise ConfigError(
                f"learners must be a non-empty subset of {', '.join(LEARNERS)}; got "
                f"{', '.join(self.learners) or 'none'}",
                setting="learners",
            )
        if self.baseline is not None and self.baseline not in self.learners:
            raise ConfigError(
                f"baseline {self.baseline!r} must be one of the learners "
                f"({', '.join(self.learners)}), or None to take the top cross-fitted Qini",
                setting="baseline",
            )
        if not 0 < self.target_share < 1:
            raise ConfigError(
                f"target_share must be in (0, 1), got {self.target_share}", setting="target_share"
            )


@dataclass(frozen=True)
class CampaignData:
    """The campaign aligned to the feature table's rows."""

    campaign_id: str
    member: np.ndarray[Any, np.dtype[np.bool_]]  # the row was in the test (either arm)
    treatment: np.ndarray[Any, np.dtype[np.int64]]  # 1 offered, 0 held out (0 outside too)
    responded: np.ndarray[Any, np.dtype[np.int64]]
    arm: np.ndarray[Any, Any] | None = None  # offer name or "control" ("" outside); one offer: None
    weight: np.ndarray[Any, np.dtype[np.float64]] | None = None  # sample weight (1 outside)


def _with_arms(campaign: pl.DataFrame) -> pl.DataFrame:
    """Return `campaign` with `treatment` derived from (or checked against) an `arm` column."""
    if "arm" not in campaign.columns:
        return campaign
    offered = pl.col("arm").cast(pl.String) != CONTROL
    if "treatment" not in campaign.columns:
        return campaign.with_columns(offered.alias("treatment"))
    if campaign.filter(offered != pl.col("treatment").cast(pl.Boolean)).height:
        raise ConfigError(
            f"the campaign's treatment disagrees with its arm for some rows; arm {CONTROL!r} "
            "must have treatment false and every offer true - drop treatment to derive it",
            setting="campaign",
        )
    return campaign


def campaign_data(features: FeatureSet, campaign: pl.DataFrame) -> CampaignData:
    """Return `campaign` aligned to the rows of `features` (customers absent from it: members 0).

    An `arm` column (offer name, or "control") is kept when it names two offers or more; a
    `weight` column (e.g. inverse propensities, `campaign_outcomes`) weighs the learners' rows.
    """
    campaign = _with_arms(campaign)
    missing = [c for c in CAMPAIGN_COLUMNS if c not in campaign.columns]
    if missing:
        raise ConfigError(
            f"the campaign table lacks {', '.join(missing)}; expected columns customer_id, "
            "treatment (offered or held out), responded, one row per customer in the test",
            setting="campaign",
        )
    frame = campaign.select(
        [pl.col(c).cast(t) for c, t in CAMPAIGN_COLUMNS.items()]
        + [pl.col("campaign_id") if "campaign_id" in campaign.columns else pl.lit("campaign")]
    )
    if frame["customer_id"].is_duplicated().any() or frame.null_count().sum_horizontal()[0] > 0:
        raise ConfigError(
            "the campaign table must hold each customer once, with treatment and responded "
            "filled in; deduplicate it and drop rows without an outcome",
            setting="campaign",
        )
    ids = frame["campaign_id"].unique().to_list()
    for extra, dtype in (("arm", pl.String), ("weight", pl.Float64)):
        if extra in campaign.columns:
            frame = frame.with_columns(campaign[extra].cast(dtype))
    joined = features.table.select("customer_id").join(
        frame, on="customer_id", how="left", maintain_order="left"
    )
    member = joined["treatment"].is_not_null().to_numpy()
    arm = None
    if "arm" in joined.columns and joined["arm"].drop_nulls().n_unique() > 2:
        arm = joined["arm"].fill_null("").to_numpy().astype(str)
    return CampaignData(
        campaign_id=",".join(sorted(str(i) for i in ids)),
        member=member,
        treatment=joined["treatment"].fill_null(False).to_numpy().astype(np.int64),
        responded=joined["responded"].fill_null(False).to_numpy().astype(np.int64),
        arm=arm,
        weight=joined["weight"].fill_null(1.0).to_numpy() if "weight" in joined.columns else None,
    )


@dataclass
class LearnerEvaluation:
    """One uplift learner's held-out figures."""

    qini: float
    auuc: float
    uplift_at_30: float
    valid_qini: float
    by_decile: pl.DataFrame
    correlation: float | None  # with the true uplift, when the caller gave it
    cross_fitted_qini: float | None = None  # over train and valid rows: what chose the learner
    cross_fitted_ci: tuple[float, float] | None = None
    vs_baseline: tuple[float, float, float] | None = None  # difference, its paired interval

    def summary(self) -> dict[str, Any]:
        return {
            "qini": self.qini,
            "auuc": self.auuc,
            "uplift_at_30": self.uplift_at_30,
            "valid_qini": self.valid_qini,
            "cross_fitted_qini": self.cross_fitted_qini,
            "cross_fitted_ci": None if self.cross_fitted_ci is None else list(self.cross_fitted_ci),
            "vs_baseline": None if self.vs_baseline is None else list(self.vs_baseline),
            "correlation_with_true_uplift": self.correlation,
        }


@dataclass(frozen=True)
class ArmEvaluation:
    """One offer of a several-offer campaign against the control, on the held-out rows."""

    arm: str
    treated: int
    control: int
    effect: DiffResult  # response rate offered minus control, Newcombe's interval
    qini: float  # of this offer's own uplift model
    qini_ci: tuple[float, float]  # Poisson-bootstrap percentile interval

    def summary(self) -> dict[str, Any]:
        return {
            "treated": self.treated,
            "control": self.control,
            "effect": self.effect.diff,
            "effect_ci": [self.effect.ci_low, self.effect.ci_high],
            "qini": self.qini,
            "qini_ci": list(self.qini_ci),
        }


@dataclass
class UpliftResult:
    """Fitted learners, the chosen one, the response model, and the targeting comparison.

    `best` is the learner registered: the one chosen, or - when targeting by uplift is not
    supported by the data (`supported` false) - the baseline, kept for the record while the
    targeting falls back to the response model (`targeting_by`).
    """

    spec: DesignSpec
    learners: dict[str, UpliftModel]
    evaluations: dict[str, LearnerEvaluation]
    best: str
    selection: Selection
    response: TrainedModel
    targeting: dict[str, TargetingResult]  # "uplift" (best learner) and "response"
    test_rows: np.ndarray[Any, np.dtype[np.int64]]  # held-out campaign rows
    test_uplift: np.ndarray[Any, np.dtype[np.float64]]  # best learner's prediction on them
    metadata: dict[str, Any] = field(default_factory=dict)
    test_label: np.ndarray[Any, Any] | None = None  # responded, on the test rows
    test_treatment: np.ndarray[Any, Any] | None = None  # the arm, on the test rows
    arms: dict[str, ArmEvaluation] = field(default_factory=dict)  # several offers only
    multi_arm: MultiArmUplift | None = None

    @property
    def model(self) -> UpliftModel:
        return self.learners[self.best]

    @property
    def supported(self) -> bool:
        """Return whether targeting by uplift is supported by the data (cross-fitted Qini)."""
        return self.selection.supported

    @property
    def targeting_by(self) -> str:
        """Return the strategy lists should target by: "uplift", or "response" when unsupported."""
        return "uplift" if self.supported else "response"

    @property
    def verdict(self) -> str:
        """Return the learner choice in words, and the fallback when uplift is unsupported."""
        verdict = self.selection.verdict
        if self.supported:
            return verdict
        return verdict.replace(
            "target by response or at random", "target by the response model instead"
        )

    def summary(self) -> dict[str, Any]:
        uplift = self.targeting["uplift"]
        return {
            "best": self.best,
            "uplift_supported": self.supported,
            "targeting_by": self.targeting_by,
            "verdict": self.verdict,
            "cross_fitting_folds": self.selection.folds,
            "arms": {name: arm.summary() for name, arm in self.arms.items()},
            "learners": {k: v.summary() for k, v in self.evaluations.items()},
            "targeting": {k: _targeting_summary(v) for k, v in self.targeting.items()},
            "incremental_ratio": uplift.ratio,
            "response_model_auc": self.response.evaluation.auc,
            **self.metadata,
        }


def _targeting_summary(result: TargetingResult) -> dict[str, Any]:
    return {
        "contacts": result.contacts,
        "cost": result.cost,
        "incremental_conversions": result.incremental_conversions,
        "true_incremental": result.true_incremental,
        "estimated_incremental": result.estimated_incremental,
        "estimated_ci": list(result.estimated_ci) if result.estimated_ci else None,
        "net_value": result.net_value,
        "roi": result.roi,
        "ratio_to_response": result.ratio,
    }


def train_uplift(
    features: FeatureSet,
    campaign: pl.DataFrame,
    *,
    config: UpliftConfig | None = None,
    true_uplift: np.ndarray[Any, Any] | None = None,
    progress: Progress | None = None,
    client: Client | None = None,
) -> UpliftResult:
    """Return uplift learners and a response model fitted on `campaign`, judged on held-out rows.

    `true_uplift` (per feature-table row, optional) is only read for the report: the
    correlation of predicted with true uplift and the true incremental conversions. With a Dask
    `client` every booster is trained on the cluster's workers; predictions and metrics stay here.
    """
    config = config or UpliftConfig()
    report = report_to(progress)
    data = campaign_data(features, campaign)
    train, valid, test = _campaign_rows(features, data, config)
    y, t = data.responded, data.treatment
    profile = None
    if config.tag_profile_k:
        profile = fit_tag_profile(features, train, k=config.tag_profile_k, seed=config.params.seed)
    spec = DesignSpec(tuple(features.feature_columns(FUSED)), profile)
    x = design_matrix(features, spec)
    truth = None if true_uplift is None else np.asarray(true_uplift)[test]
    selection = _choose_learner(x, data, np.sort(np.r_[train, valid]), config, client)
    report("uplift: cross-fitted choice", 1 / (len(config.learners) + 2))
    learners: dict[str, UpliftModel] = {}
    evaluations: dict[str, LearnerEvaluation] = {}
    for i, name in enumerate(config.learners):
        learners[name], evaluations[name] = _fit_and_judge(
            name, x, data, (train, valid, test), selection, config, truth=truth, client=client
        )
        report(f"uplift: {name}", (i + 2) / (len(config.learners) + 2))
    # Unsupported: the baseline (or the top figure) is registered for the record only.
    best = (
        selection.best
        or config.baseline
        or max(selection.scores, key=lambda n: selection.scores[n].qini)
    )
    response = _response_model(features, data, config, client)
    response_score = response.model.predict(design_matrix(features, response.model.spec, test))
    test_uplift = learners[best].predict(x[test])
    targeting = budgeted_targeting(
        {"uplift": test_uplift, "response": response_score},
        budget=Budget(
            contacts=max(1, round(config.target_share * len(test))),
            cost_per_contact=config.cost_per_contact,
            value_per_conversion=config.value_per_conversion,
        ),
        true_uplift=truth,
        y=y[test],
        treatment=t[test],
        baseline="response",
    )
    report("uplift: targeting", 1.0)
    return UpliftResult(
        spec=spec,
        learners=learners,
        evaluations=evaluations,
        best=best,
        selection=selection,
        response=response,
        targeting=targeting,
        test_rows=test,
        test_uplift=test_uplift,
        metadata={
            "campaign_id": data.campaign_id,
            "rows": {"train": len(train), "valid": len(valid), "test": len(test)},
            "training_digest": training_digest(features, train, data.responded, data.treatment),
            "treated_share": float(t[data.member].mean()),
            "target_share": config.target_share,
            "cost_per_contact": config.cost_per_contact,
            "value_per_conversion": config.value_per_conversion,
            "trained_on": trained_on(client),
        },
        test_label=y[test],
        test_treatment=t[test],
        **_several_offers(data, x, train, test, LEARNERS[best], config),
    )


def _fit_and_judge(
    name: str,
    x: np.ndarray[Any, Any],
    data: CampaignData,
    rows: tuple[Index, Index, Index],
    selection: Selection,
    config: UpliftConfig,
    *,
    truth: np.ndarray[Any, Any] | None,
    client: Client | None,
) -> tuple[UpliftModel, LearnerEvaluation]:
    """Return learner `name` fitted on the train rows and its figures (`_evaluate`)."""
    train, valid, test = rows
    y, t = data.responded, data.treatment
    model = LEARNERS[name](params=config.params).fit(
        x[train], y[train], t[train], client=client, sample_weight=_part(data.weight, train)
    )
    judged = _evaluate(
        model, x, y, t, valid=valid, test=test, truth=truth, scored=selection.scores[name]
    )
    return model, judged


def _part(values: np.ndarray[Any, Any] | None, rows: Index) -> np.ndarray[Any, Any] | None:
    return None if values is None else values[rows]


def _choose_learner(
    x: np.ndarray[Any, Any], data: CampaignData, rows: Index, config: UpliftConfig,
    client: Client | None,
) -> Selection:  # fmt: skip
    """Return the cross-fitted choice of learner over `rows` (the campaign's train and valid)."""
    return cross_fitted_qini(
        x[rows], data.responded[rows], data.treatment[rows],
        learners={n: LEARNERS[n] for n in config.learners}, folds=config.folds,
        params=config.params, alpha=config.alpha, seed=config.params.seed,
        baseline=config.baseline, sample_weight=_part(data.weight, rows), client=client,
    )  # fmt: skip


def _several_offers(
    data: CampaignData,
    x: np.ndarray[Any, Any],
    train: Index,
    test: Index,
    learner: type[UpliftModel],
    config: UpliftConfig,
) -> dict[str, Any]:
    """Return each offer's uplift model and held-out figures, when the campaign had several."""
    if data.arm is None:
        return {}
    model = MultiArmUplift(learner, params=config.params, control=CONTROL).fit(
        x[train], data.responded[train], data.arm[train]
    )
    arm, y = data.arm[test], data.responded[test]
    effects = arm_effects(y, arm, control=CONTROL, alpha=config.alpha)
    predicted = model.predict(x[test])
    arms = {}
    for name, effect in effects.items():
        rows = (arm == name) | (arm == CONTROL)
        offered = (arm[rows] == name).astype(np.int64)
        qini, low, high = qini_interval(
            y[rows], predicted[name][rows], offered, alpha=config.alpha / 2,
            seed=config.params.seed,
        )  # fmt: skip
        arms[name] = ArmEvaluation(
            name, int(offered.sum()), int(rows.sum() - offered.sum()), effect, qini, (low, high)
        )
    return {"arms": arms, "multi_arm": model}


def _campaign_rows(
    features: FeatureSet, data: CampaignData, config: UpliftConfig
) -> tuple[Index, Index, Index]:
    """Return the campaign's train, valid and test rows, each with both arms and both outcomes."""
    split = split_customers(
        features.table["customer_id"].to_numpy(),
        seed=config.split.seed,
        valid=config.split.valid_share,
        test=config.split.test_share,
    )
    parts = tuple(np.flatnonzero(data.member & (split == part)) for part in (TRAIN, VALID, TEST))
    for name, rows in zip(("train", "valid", "test"), parts, strict=True):
        arms = set(data.treatment[rows].tolist())
        if arms != {0, 1} or len(set(data.responded[rows].tolist())) < 2:
            raise ConfigError(
                f"the campaign's {name} rows need both arms and both outcomes; it has "
                f"{len(rows)} rows. Use a larger campaign.",
                setting="campaign",
            )
    train, valid, test = parts
    return train, valid, test


def _evaluate(
    model: UpliftModel,
    x: np.ndarray[Any, Any],
    y: Index,
    t: Index,
    *,
    valid: Index,
    test: Index,
    truth: np.ndarray[Any, Any] | None,
    scored: LearnerQini,
) -> LearnerEvaluation:
    """Return the learner's figures on the test rows, its Qini on the validation rows, and its
    cross-fitted Qini (`scored`) with its interval."""
    u_valid, u_test = model.predict(x[valid]), model.predict(x[test])
    return LearnerEvaluation(
        qini=metrics.qini_auc_score(y[test], u_test, t[test]),
        auuc=metrics.uplift_auc_score(y[test], u_test, t[test]),
        uplift_at_30=metrics.uplift_at_k(y[test], u_test, t[test], k=0.3),
        valid_qini=metrics.qini_auc_score(y[valid], u_valid, t[valid]),
        by_decile=metrics.uplift_by_decile(y[test], u_test, t[test]),
        # A learner that early-stopped at its first round predicts one value: no ranking,
        # so no correlation to report (its Qini says the same).
        correlation=None
        if truth is None or np.ptp(u_test) == 0
        else uplift_correlation(u_test, truth),
        cross_fitted_qini=scored.qini,
        cross_fitted_ci=(scored.ci_low, scored.ci_high),
        vs_baseline=scored.vs_baseline,
    )


def _response_model(
    features: FeatureSet, data: CampaignData, config: UpliftConfig, client: Client | None
) -> TrainedModel:
    """Return the response model a bank would build: P(respond | offered), on the treated arm."""
    task = ScorerTask(
        name="campaign-response",
        columns=tuple(features.feature_columns(FUSED)),
        rows=data.member & (data.treatment == 1),
        label=data.responded,
    )
    training = AcquisitionConfig(
        prune=None, tag_profile_k=config.tag_profile_k, seed=config.split.seed,
        valid_share=config.split.valid_share, test_share=config.split.test_share,
    )  # fmt: skip
    return train_scorer(features, task, config=training, client=client)
