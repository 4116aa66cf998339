"""Design matrices, scoring models, acquisition, rescue and campaign uplift on real xgboost."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import xgboost as xgb

from contracts.errors import ConfigError
from fusion.features import IN_BANK
from fusion.models import acquisition, campaign, classifier, design
from fusion.models.acquisition import ScorerTask, population
from fusion.models.booster import BoosterConfig
from fusion.models.campaign import campaign_data
from fusion.models.classifier import PruneConfig, ScoreModel, decile_edges
from fusion.models.design import TEST, TRAIN, VALID, DesignSpec, TagProfile, split_customers
from fusion.models.distributed import Rows
from fusion.models.metrics import roc_auc
from fusion.models.rescue import RescueConfig, gate_scores, train_rescue
from tests.support.models import FAST_ACQUISITION, ModelWorld


def test_split_is_a_pure_function_of_id_and_seed():
    ids = np.arange(1_000_000_000, 1_000_100_000, dtype=np.int64)
    split = split_customers(ids, seed=7)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(split_customers(ids[shuffled], seed=7), split[shuffled])
    shares = np.bincount(split, minlength=3) / len(ids)
    assert shares == pytest.approx([0.6, 0.1, 0.3], abs=0.01)
    assert not np.array_equal(split_customers(ids, seed=8), split)
    assert set(np.unique(split)) == {TRAIN, VALID, TEST}
    with pytest.raises(ConfigError, match="valid \\+ test < 1"):
        split_customers(ids, seed=1, valid=0.5, test=0.6)


def _tags(rows: int, cols: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((rows, cols)) < 0.2) * rng.random((rows, cols))
    dense[::7] = 0  # customers without vendor data
    return sp.csr_matrix(dense.astype(np.float32))


def test_tag_profile_projects_aligns_and_round_trips():
    tags, ids = _tags(400, 60, 1), np.arange(100, 160, dtype=np.int32)
    profile = TagProfile.fit(tags, ids, k=5, seed=3, tag_names={100: "Games > moba"})
    out = profile.transform(tags, ids)
    assert out.shape == (400, 5) and out.dtype == np.float32
    assert np.isnan(out[::7]).all() and not np.isnan(np.delete(out, np.s_[::7], axis=0)).any()
    # The definition, in float64 on the dense matrix: unit-length rows times the components.
    dense = tags.toarray().astype(np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    held = norms[:, 0] > 0
    expected = (dense[held] / norms[held]) @ profile.components.astype(np.float64)
    np.testing.assert_allclose(out[held], expected, rtol=1e-5, atol=1e-6)
    # Columns in another order (another taxonomy build) give the same projection.
    order = np.random.default_rng(2).permutation(60)
    np.testing.assert_allclose(profile.transform(tags[:, order], ids[order]), out, atol=1e-6)
    again = TagProfile.from_bytes(profile.to_bytes())
    np.testing.assert_array_equal(again.transform(tags, ids), out)
    assert again.names == profile.names == [f"tag_profile_{i:02d}" for i in range(1, 6)]
    assert all(label.startswith("interests like ") for label in profile.labels)
    # A subset keeps its component numbers, so names stay stable after pruning.
    sub = profile.subset(["tag_profile_02", "tag_profile_05"])
    assert sub is not None and sub.names == ["tag_profile_02", "tag_profile_05"]
    np.testing.assert_array_equal(sub.transform(tags, ids), out[:, [1, 4]])
    assert TagProfile.from_bytes(sub.to_bytes()).names == sub.names
    assert profile.subset(["age"]) is None
    with pytest.raises(ConfigError, match="tag profile of 80 components"):
        TagProfile.fit(tags, ids, k=80)


def test_feature_labels_read_like_a_data_dictionary(model_world: ModelWorld):
    manifest = model_world.features.manifest
    spec = DesignSpec(("ukey_holder", "ext_banking_share", "ext_n_apps", "gender"))
    labels = design.feature_labels(manifest, spec)
    assert labels["ukey_holder"] == "holds a U-key"
    assert labels["ext_banking_share"] == "Banking: share of the user's sessions"
    assert labels["gender"] == "gender"
    with pytest.raises(ConfigError, match="lacks 1 column"):
        design.design_matrix(model_world.features, DesignSpec(("age", "no_such_column")))


# --- scoring models -----------------------------------------------------------------------------


def _signal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2.5 * x[:, 0] + 1.5 * x[:, 1] - 1)))).astype(np.float32)
    return x, y


NAMES = ["signal", "second", "noise_a", "noise_b", "noise_c", "noise_d"]


def test_early_stopping_keeps_the_best_round():
    x, y = _signal(3000, 1)
    xv, yv = _signal(1000, 2)
    config = BoosterConfig(learning_rate=0.3, n_estimators=400, early_stopping_rounds=10)
    booster = classifier.fit_booster(Rows(x, y), Rows(xv, yv), names=NAMES, config=config)
    assert 1 <= booster.num_boosted_rounds() < 400
    with pytest.raises(ConfigError, match="both outcomes"):
        classifier.fit_booster(Rows(x, np.zeros(3000)), Rows(xv, yv), names=NAMES, config=config)


def test_stable_pruning_keeps_signal_and_drops_noise():
    x, y = _signal(4000, 3)
    report = classifier.stable_features(
        x, y, names=NAMES, config=BoosterConfig(), prune=PruneConfig(min_share=0.05)
    )
    assert {"signal", "second"} <= set(report.kept)
    assert set(report.dropped) == set(NAMES) - set(report.kept) and report.dropped
    assert report.frequency["signal"] == 4
    assert sum(report.mean_share.values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="min_folds <= folds"):
        PruneConfig(folds=3, min_folds=4)
    # No input can hold the whole gain while two carry signal: nothing is kept, and it says so
    # (a model of no inputs would otherwise fail inside xgboost).
    with pytest.raises(ConfigError, match=r"kept none of the 6 inputs.*widen the population"):
        classifier.stable_features(
            x, y, names=NAMES, config=BoosterConfig(), prune=PruneConfig(min_share=1.0)
        )


def test_reason_codes_are_the_largest_positive_shap_values():
    x, y = _signal(3000, 4)
    xv, yv = _signal(1000, 5)
    booster = classifier.fit_booster(
        Rows(x, y), Rows(xv, yv), names=NAMES, config=BoosterConfig(learning_rate=0.2)
    )
    labels = {"signal": "signal strength", "second": "second signal"}
    model = ScoreModel(
        "m", booster, DesignSpec(tuple(NAMES)), labels, decile_edges(np.arange(10.0))
    )
    contrib = booster.predict(xgb.DMatrix(xv, feature_names=NAMES), pred_contribs=True)[:, :-1]
    np.testing.assert_allclose(model.contributions(xv), contrib, rtol=1e-6)
    reasons = model.reasons(xv)
    assert reasons.columns == ["reason_1", "reason_2", "reason_3"]
    top = np.argmax(contrib, axis=1)
    for i in range(50):
        first = reasons["reason_1"][i]
        if contrib[i, top[i]] <= 0:
            assert first is None
        else:
            name = NAMES[top[i]]
            assert first == f"{labels.get(name, name)} = {classifier._format(float(xv[i, top[i]]))}"
    # Rows whose every contribution is negative get no reason at all.
    worst = np.flatnonzero((contrib <= 0).all(axis=1))
    assert all(reasons["reason_1"][int(i)] is None for i in worst)
    with pytest.raises(ConfigError, match="expects 6 inputs"):
        model.predict(xv[:, :3])


def test_deciles_cut_the_reference_population_in_tenths():
    score = np.random.default_rng(1).random(100_000)
    model = ScoreModel("m", xgb.Booster(), DesignSpec(()), {}, decile_edges(score))
    counts = np.bincount(model.decile(score), minlength=11)[1:]
    assert counts == pytest.approx(np.full(10, 10_000), abs=50)
    assert model.decile(np.array([1.0, 0.0]).astype(np.float64)).tolist() == [1, 10]


# --- acquisition and rescue ---------------------------------------------------------------------


def test_acquisition_models_are_judged_on_the_same_held_out_rows(model_world: ModelWorld):
    features, run = model_world.features, model_world.run
    in_bank, fused = run.acquisition["in_bank"], run.acquisition["fused"]
    assert np.array_equal(in_bank.test_rows, fused.test_rows)
    split = split_customers(features.table["customer_id"].to_numpy(), seed=7)
    assert (split[fused.test_rows] == TEST).all() and population(features)[fused.test_rows].all()
    label = features.table["opened_mb"].to_numpy()[fused.test_rows]
    assert fused.evaluation.auc == roc_auc(label, fused.test_score)
    # The in-bank model reads bank columns only; the fused one reads the vendor's too.
    assert set(in_bank.model.spec.columns) <= set(features.feature_columns(IN_BANK))
    assert in_bank.model.spec.tag_profile is None
    assert any(n.startswith(("ext_", "tag_profile_")) for n in fused.model.names)
    # Pruning kept fewer inputs than it was offered and said which it dropped.
    assert in_bank.prune is not None and len(in_bank.model.names) + len(in_bank.prune.dropped) == 71
    assert fused.evaluation.auc > in_bank.evaluation.auc
    assert fused.model.metadata["training_digest"] == acquisition.training_digest(
        features,
        np.flatnonzero(population(features) & (split == TRAIN)),
        features.table["opened_mb"].fill_null(0).to_numpy().astype(np.float32),
    )


def test_training_is_deterministic_for_a_seed(model_world: ModelWorld):
    features = model_world.features
    config = dataclasses.replace(FAST_ACQUISITION, prune=None)
    rows = population(features)
    label = features.table["opened_mb"].fill_null(0).to_numpy()
    task = ScorerTask(name="a", columns=tuple(features.feature_columns()), rows=rows, label=label)
    first = acquisition.train_scorer(features, task, config=config)
    second = acquisition.train_scorer(features, task, config=config)
    np.testing.assert_array_equal(first.test_score, second.test_score)


def test_rescue_pool_is_below_the_in_bank_cutoff_and_control_is_random(model_world: ModelWorld):
    features, run = model_world.features, model_world.run
    result = run.rescue
    in_bank = run.acquisition["in_bank"].model
    pool_scores = in_bank.predict(
        design.design_matrix(features, in_bank.spec, result.model.test_rows)
    )
    assert (pool_scores < result.cutoff).all()
    everyone = np.flatnonzero(population(features))
    assert result.pool == pytest.approx(0.7 * len(everyone), abs=2)
    assert result.rescued == round(0.1 * result.pool_test)
    assert result.control == round(0.5 * result.pool_test)
    # The control is a random draw of the whole held-out pool (the list may be in it); the
    # list is the pool's top by rescue score.
    assert np.isin(result.control_rows, result.model.test_rows).all()
    assert len(np.unique(result.control_rows)) == result.control
    y = model_world.features.table[acquisition.LABEL].fill_null(0).to_numpy()
    assert result.pool_test_responders == int(y[result.model.test_rows].sum())
    assert result.summary()["pool_rate"] == result.pool_test_responders / result.pool_test
    order = np.argsort(-result.model.test_score, kind="stable")
    assert (result.rescued_rows == result.model.test_rows[order[: result.rescued]]).all()
    assert result.test.method == "newcombe"
    assert result.test.ratio == pytest.approx(result.rescued_rate / result.control_rate)
    assert result.test.ratio_ci_low < result.test.ratio < result.test.ratio_ci_high
    summary = result.summary()
    assert summary["ratio_ci"] == [result.test.ratio_ci_low, result.test.ratio_ci_high]
    with pytest.raises(ConfigError, match="accept_share"):
        RescueConfig(accept_share=1.0)
    with pytest.raises(ConfigError, match="accepted_weight"):
        RescueConfig(accepted_weight=2.0)
    with pytest.raises(ConfigError, match="gate_folds"):
        RescueConfig(gate_folds=1)


def test_rescue_gates_training_rows_on_out_of_fold_scores(model_world: ModelWorld):
    """In-sample scores of the in-bank model's training rows overstate their responders."""
    features, run = model_world.features, model_world.run
    in_bank = run.acquisition["in_bank"]
    label = features.table[acquisition.LABEL].fill_null(0).to_numpy()
    everyone = np.flatnonzero(population(features))
    config = RescueConfig(training=FAST_ACQUISITION)
    honest = gate_scores(features, in_bank, everyone, label, config=config)
    in_sample = in_bank.model.predict(design.design_matrix(features, in_bank.model.spec, everyone))
    split = design.split_customers(
        features.table["customer_id"].to_numpy()[everyone],
        seed=FAST_ACQUISITION.seed,
        valid=FAST_ACQUISITION.valid_share,
        test=FAST_ACQUISITION.test_share,
    )
    fitted = split == design.TRAIN
    assert (honest[~fitted] == in_sample[~fitted]).all()  # never fitted: the model's own score
    assert not np.allclose(honest[fitted], in_sample[fitted])
    y = label[everyone][fitted]
    # Out of fold, the training rows rank as well as unseen rows do, not better.
    assert roc_auc(y, honest[fitted]) < roc_auc(y, in_sample[fitted])
    same = gate_scores(features, in_bank, everyone, label, config=RescueConfig(gate_folds=0))
    assert (same == in_sample).all()
    weighted = train_rescue(
        features, in_bank, config=RescueConfig(accepted_weight=0.25, training=FAST_ACQUISITION)
    )
    assert weighted.pool == run.rescue.pool
    assert weighted.model.model.metadata["accepted_weight"] == 0.25


# --- campaign uplift ----------------------------------------------------------------------------


def test_campaign_data_aligns_to_feature_rows_and_checks_its_input(model_world: ModelWorld):
    features, frame = model_world.features, model_world.campaign
    data = campaign_data(features, frame)
    assert data.member.sum() == frame.height
    by_id = dict(zip(frame["customer_id"].to_list(), frame["treatment"].to_list(), strict=True))
    ids = features.table["customer_id"].to_list()
    for row in np.flatnonzero(data.member)[:200]:
        assert data.treatment[row] == int(by_id[ids[row]])
    with pytest.raises(ConfigError, match="lacks responded"):
        campaign_data(features, frame.drop("responded"))
    with pytest.raises(ConfigError, match="each customer once"):
        campaign_data(features, pl.concat([frame, frame.head(3)]))


def test_uplift_learner_is_chosen_by_cross_fitted_qini_and_compared_with_response(
    model_world: ModelWorld,
):
    result = model_world.run.uplift
    assert set(result.evaluations) == {"t_learner", "x_learner", "class_transformation"}
    selection = result.selection
    assert set(selection.scores) == set(result.evaluations) and selection.baseline == "t_learner"
    for name, scored in selection.scores.items():
        assert result.evaluations[name].cross_fitted_qini == scored.qini
        assert result.evaluations[name].cross_fitted_ci == (scored.ci_low, scored.ci_high)
    # The T-learner unless another beats it with the paired interval; unsupported: kept anyway.
    assert result.best == (selection.best or "t_learner")
    assert (
        result.best == "t_learner"
        or selection.scores[result.best].beats_baseline
        or (not selection.scores["t_learner"].supported)
    )
    assert result.targeting_by == ("uplift" if selection.supported else "response")
    best = result.best
    uplift, response = result.targeting["uplift"], result.targeting["response"]
    assert uplift.contacts == response.contacts == round(0.3 * len(result.test_rows))
    assert response.ratio == 1.0
    assert uplift.true_incremental is not None and uplift.estimated_ci is not None
    summary = result.summary()
    assert summary["incremental_ratio"] == uplift.ratio
    corr = summary["learners"][best]["correlation_with_true_uplift"]
    assert corr is None or -1 <= corr <= 1
    assert result.evaluations[best].by_decile.height >= 1
    with pytest.raises(ConfigError, match="learners must be"):
        campaign.UpliftConfig(learners=("s_learner",))
