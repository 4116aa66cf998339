"""Training on a Dask cluster (xgboost.dask): the same models, figures and registry as here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pytest
import xgboost as xgb

from fusion.features import IN_BANK
from fusion.jobs import ClusterEngine
from fusion.models.acquisition import LABEL, population
from fusion.models.classifier import fit_booster
from fusion.models.design import TRAIN, VALID, DesignSpec, design_matrix, split_customers
from fusion.models.distributed import Rows, train_booster, trained_on
from fusion.models.metrics import roc_auc
from fusion.registry import Registry, UpliftArtifact
from fusion.scoring import score_rows
from fusion.training import TrainingConfig, TrainingRun, train_all
from tests.support.models import FAST, TRAINED_AT, ModelWorld

pytestmark = pytest.mark.slow  # demo runs, LocalClusters, models trained twice

# xgboost.dask draws `subsample` rows and `colsample_bytree` columns on each worker from its own
# stream, so with sampling on a cluster run differs from the in-process one as two seeds do, and
# on this 12k world two seeds move the held-out AUC by up to 0.027 (in-bank, FAST settings,
# seeds 7-11). The comparison therefore turns sampling off: what is left is what distribution
# itself changes (the merged quantile sketch), which the 0.005 bound is about. Everything else is
# FAST. On the 100k demo world with the default settings, sampling on, the two runs were within
# 0.001 (in-bank 0.7901 / 0.7893, fused 0.8435 / 0.8429).
_ACQUISITION = replace(
    FAST.acquisition,
    boost=replace(FAST.acquisition.boost, subsample=1.0, colsample_bytree=1.0),
)
COMPARED = TrainingConfig(
    acquisition=_ACQUISITION,
    rescue=replace(FAST.rescue, training=_ACQUISITION),
    uplift=replace(
        FAST.uplift, params=replace(FAST.uplift.params, subsample=1.0, colsample_bytree=1.0)
    ),
)


@dataclass(frozen=True)
class Runs:
    local: TrainingRun
    cluster: TrainingRun
    registry: Registry  # the cluster run's


@pytest.fixture(scope="module")
def runs(
    model_world: ModelWorld, cluster: ClusterEngine, tmp_path_factory: pytest.TempPathFactory
) -> Runs:
    """Every model trained twice on the same world: in this process and on the cluster."""
    root = tmp_path_factory.mktemp("distributed-training")
    train = partial(
        train_all, model_world.features, campaign=model_world.campaign, now=TRAINED_AT,
        config=COMPARED, true_uplift=model_world.true_uplift,
    )  # fmt: skip
    local = train(registry=Registry(root / "local"))
    registry = Registry(root / "cluster")
    on_cluster = train(registry=registry, client=cluster.client)
    return Runs(local, on_cluster, registry)


def test_acquisition_and_response_auc_match_in_process(runs: Runs):
    # With ~700 validation rows the early-stopping round is a knife edge and pruning keeps
    # slightly different variables, so a model may move by up to 0.010 between the engines on a
    # world this small (seen on three 12k worlds; fused 0.8255 here, 0.8191 on the cluster).
    for kind in ("in_bank", "fused"):
        local, cluster = runs.local.acquisition[kind], runs.cluster.acquisition[kind]
        np.testing.assert_array_equal(cluster.test_rows, local.test_rows)
        assert cluster.evaluation.auc == pytest.approx(local.evaluation.auc, abs=0.01)
    response = (runs.local.uplift.response, runs.cluster.uplift.response)
    # campaign response: 0.6416 here, 0.6498 on the cluster
    assert response[1].evaluation.auc == pytest.approx(response[0].evaluation.auc, abs=0.01)


def test_rescue_test_matches_within_its_own_noise(runs: Runs):
    local, cluster = runs.local.rescue, runs.cluster.rescue
    # The pool comes from each run's in-bank cutoff, so it differs by a few customers, and the
    # random control is drawn from it: the control's responders (a handful) swing the ratio far
    # more than the models do. So: the rescued lists' responders agree within one binomial
    # standard deviation of the list, and each run's ratio lies in the other's 95% CI.
    # Measured: 14 vs 13 responders of 153 (one sd: 3.6), ratio 4.67 vs 4.33 (CI 1.37-15.9).
    assert abs(cluster.pool - local.pool) <= 0.01 * local.pool
    sd = math.sqrt(local.rescued * local.rescued_rate * (1 - local.rescued_rate))
    assert abs(cluster.rescued_responders - local.rescued_responders) <= sd
    assert local.test.ratio_ci_low <= cluster.test.ratio <= local.test.ratio_ci_high
    assert cluster.test.ratio_ci_low <= local.test.ratio <= cluster.test.ratio_ci_high


def test_uplift_learners_match_in_process(runs: Runs):
    # A campaign arm has ~900 training rows: under ~2,000 the merged sketch finds the same bins as
    # the single one (boosters identical on synthetic data up to 2,000 rows, not from 3,000), so
    # the learners come out alike (measured: every Qini equal). 0.01 is well under what a new
    # seed moves a learner's Qini by on this world (0.01 to 0.06 measured, sampling on).
    local, cluster = runs.local.uplift, runs.cluster.uplift
    assert cluster.best == local.best
    for name, evaluation in local.evaluations.items():
        assert cluster.evaluations[name].qini == pytest.approx(evaluation.qini, abs=0.01)
        assert cluster.evaluations[name].valid_qini == pytest.approx(
            evaluation.valid_qini, abs=0.01
        )
    assert np.corrcoef(cluster.test_uplift, local.test_uplift)[0, 1] > 0.99


def test_cluster_models_register_load_and_score_like_in_process(
    runs: Runs, model_world: ModelWorld
):
    features, run, registry = model_world.features, runs.cluster, runs.registry
    assert registry.names() == sorted(run.refs)
    described = registry.describe("acquisition")["metadata"]
    assert described["trained_on"] == "dask: 2 workers"
    assert described["test"]["auc"] == run.acquisition["fused"].evaluation.auc
    assert runs.local.acquisition["fused"].model.metadata["trained_on"] == "in-process"
    rows = run.acquisition["fused"].test_rows
    loaded = registry.load_score_model("acquisition")
    trained = run.acquisition["fused"].model
    # Scored in this process with every core (the workers trained with one thread each).
    assert json.loads(loaded.booster.save_config())["learner"]["generic_param"]["nthread"] == "0"
    assert score_rows(loaded, features, rows).equals(score_rows(trained, features, rows))
    uplift = registry.load("uplift")
    assert isinstance(uplift, UpliftArtifact)
    assert uplift.metadata["trained_on"] == "dask: 2 workers"
    x = design_matrix(features, uplift.spec, run.uplift.test_rows)
    np.testing.assert_array_equal(uplift.model.predict(x), run.uplift.test_uplift)


def _in_bank(model_world: ModelWorld) -> tuple[list[str], Rows, Rows]:
    """Return the in-bank acquisition design's names, training rows and validation rows."""
    features = model_world.features
    spec = DesignSpec(tuple(features.feature_columns(IN_BANK)))
    x = design_matrix(features, spec)
    y = features.table[LABEL].fill_null(0).to_numpy().astype(np.float32)
    split = split_customers(features.table["customer_id"].to_numpy(), seed=7)
    train, valid = (np.flatnonzero(population(features) & (split == s)) for s in (TRAIN, VALID))
    return spec.names, Rows(x[train], y[train]), Rows(x[valid], y[valid])


def test_early_stopping_on_the_cluster_follows_the_exact_validation_auc(
    model_world: ModelWorld, cluster: ClusterEngine
):
    # Every worker holds the whole validation set, so the allreduced AUC is the exact one (on
    # row-split data xgboost would count pairs within a worker only). The stopped booster must
    # end at the round whose exact validation AUC is the best of the run.
    names, train, valid = _in_bank(model_world)
    params = FAST.acquisition.boost.params()  # sampling on: it runs on the cluster as well
    stopped = train_booster(
        params, train, rounds=40, valid=valid, early_stopping_rounds=40,
        feature_names=names, client=cluster.client,
    )  # fmt: skip
    full = train_booster(params, train, rounds=40, feature_names=names, client=cluster.client)
    exact = [roc_auc(valid.label, full[:k].inplace_predict(valid.x)) for k in range(1, 41)]
    assert exact[stopped.num_boosted_rounds() - 1] == pytest.approx(max(exact), abs=1e-9)
    np.testing.assert_array_equal(
        stopped.inplace_predict(valid.x),
        full[: stopped.num_boosted_rounds()].inplace_predict(valid.x),
    )


def test_a_cluster_fit_is_reproducible(model_world: ModelWorld, cluster: ClusterEngine):
    names, train, valid = _in_bank(model_world)

    def fit() -> xgb.Booster:
        return fit_booster(
            train, valid, names=names, config=FAST.acquisition.boost, client=cluster.client
        )

    assert fit().save_raw("json") == fit().save_raw("json")
    assert trained_on(cluster.client) == "dask: 2 workers" and trained_on(None) == "in-process"
