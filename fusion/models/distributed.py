"""Where every booster of `fusion.models` is fitted: in this process, or across a Dask cluster.

`train_booster` is the one switch. Without a client it is `xgboost.train` on a `QuantileDMatrix`
(its validation rows in a plain `DMatrix`, which each round predicts faster);
given a `distributed.Client` it runs the same parameters (tree_method hist with xgboost's 256
bins, eta, depth, seed; the same weights and early stopping) through `xgboost.dask.train`, and
gives back the same kind of `xgboost.Booster`, so scoring, SHAP reasons, the registry and every
metric stay the in-process code. The acquisition, rescue and campaign-response scorers, their
stable-pruning folds and every inner booster of the uplift learners go through it.

How the rows are laid out on the workers:

    training rows     cut in one contiguous block per worker (block i on the worker xgboost
                      ranks i-th), so each worker sketches and builds histograms on its own rows
                      and the cluster allreduces them: distributed hist
    validation rows   the whole set on every worker: xgboost's distributed AUC adds up areas of
                      pairs within a worker only, so on row-split validation data early stopping
                      would follow a different, noisier figure; a full copy per worker makes the
                      allreduced metric exactly the in-process one (the cost: one copy of the
                      validation rows per worker)

The blocks are scattered from this process with random keys (so the copies of the validation set
are distinct partitions) and pinned to their worker. The fitted booster is not bit-identical to
the in-process one: past a few thousand rows the merged per-worker quantile summaries put some
bin edges elsewhere, and `subsample` and `colsample_bytree` draw from each worker's own stream,
so with sampling on the two differ as two seeds do. For the same data and worker count the
result is the same run to run.

What crosses the network: the feature rows go from this process to the workers over the
cluster's comms (TLS on `fusion.jobs`'s clusters), but xgboost's own collective - the tracker
on the scheduler and the workers' allreduce of gradient histograms and of quantile summaries,
which hold feature values - runs over plain TCP sockets with no TLS. Keep the workers on a
network the bank trusts.

`dask`, `distributed` and `xgboost.dask` are imported on the first cluster fit only, so an
in-process run (and the API's scoring) does not load them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from contracts.errors import ConfigError

if TYPE_CHECKING:
    import dask.array as da
    from distributed import Client

__all__ = ["Rows", "cluster_workers", "train_booster", "trained_on"]

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Rows:
    """A booster's rows: a dense feature matrix (NaN = missing), a label and an optional weight."""

    x: Array
    label: Array
    weight: Array | None = None


def trained_on(client: Client | None) -> str:
    """Return where `train_booster` fits with this client: "in-process" or "dask: N workers"."""
    if client is None:
        return "in-process"
    return f"dask: {len(_workers(client))} workers"


def train_booster(
    params: Mapping[str, Any],
    train: Rows,
    *,
    rounds: int,
    valid: Rows | None = None,
    early_stopping_rounds: int | None = None,
    feature_names: Sequence[str] | None = None,
    client: Client | None = None,
) -> xgb.Booster:
    """Return a booster fitted on `train` for up to `rounds` rounds, here or on `client`'s workers.

    With `valid` and `early_stopping_rounds`, training stops once the last of `params`'
    eval_metric has not improved on `valid` for that many rounds, and the booster is cut at its
    best round, so the saved model scores like the one judged.
    """
    fit = _Fit(
        params=params,
        rounds=rounds,
        stop=early_stopping_rounds if valid is not None else None,
        names=None if feature_names is None else list(feature_names),
    )
    if client is None:
        booster = _train_in_process(fit, train, valid)
    else:
        booster = _train_on_cluster(client, fit, train, valid)
    if fit.stop is not None:
        # xgb.train returns every round it ran; the trees after the best one only fit noise.
        return booster[: booster.best_iteration + 1]
    return booster


@dataclass(frozen=True, kw_only=True)
class _Fit:
    """What one fit asks of xgboost, wherever it runs."""

    params: Mapping[str, Any]
    rounds: int
    stop: int | None  # early-stopping rounds, set only when there are validation rows
    names: list[str] | None

    def train_args(self, evals: list[tuple[Any, str]]) -> dict[str, Any]:
        """Return the keyword arguments `xgboost.train` and `xgboost.dask.train` share."""
        return {
            "num_boost_round": self.rounds,
            "evals": evals,
            "early_stopping_rounds": self.stop,
            "verbose_eval": False,
        }


def _train_in_process(fit: _Fit, train: Rows, valid: Rows | None) -> xgb.Booster:
    """Return the booster `xgboost.train` fits here, early-stopped on `valid` when `fit.stop`."""
    names = fit.names
    # nthread 0 or unset: every core, as xgboost.train itself does.
    nthread = int(fit.params.get("nthread") or -1)
    dtrain = xgb.QuantileDMatrix(
        train.x, label=train.label, weight=train.weight, feature_names=names, nthread=nthread
    )
    evals = []
    if valid is not None:
        # A plain DMatrix: each round predicts the new tree on it, and from a QuantileDMatrix
        # that means recovering every value from its bin by a binary search (over a quarter of
        # the 100k demo's training time). The splits are bin cuts of `dtrain`, so the raw values
        # take the same branches and the metric, the stopping round and the model are the same.
        dvalid = xgb.DMatrix(
            valid.x, label=valid.label, weight=valid.weight, feature_names=names, nthread=nthread
        )
        evals.append((dvalid, "valid"))
    return xgb.train(dict(fit.params), dtrain, **fit.train_args(evals))


def cluster_workers(client: Client) -> dict[str, dict[str, Any]]:
    """Return the scheduler's worker table (address -> what it knows of the worker), asked now.

    Not `client.scheduler_info()`: that returns the client's cached identity, which the
    client's own periodic refresh overwrites at any moment with a summary holding no worker
    (it asks for n_workers=0), so a cluster of live workers could read as empty.
    """
    scheduler = client.scheduler
    if scheduler is None:  # a client never connected, or closed
        raise ConfigError(
            "the Dask client is not connected to a scheduler; start the cluster (or train in "
            "this process, with no client)",
            setting="cluster",
        )
    identity = client.sync(scheduler.identity, n_workers=-1)
    return dict(identity.get("workers", {}))


def _workers(client: Client) -> list[str]:
    """Return the addresses of the cluster's workers in the order of their xgboost ranks.

    xgboost.dask ranks workers by name (then address); giving block i to rank i keeps a fit
    reproducible when a restarted cluster's workers come up on other ports.
    """
    workers = cluster_workers(client)
    return sorted(workers, key=lambda address: (str(workers[address].get("name")), address))


def _train_on_cluster(client: Client, fit: _Fit, train: Rows, valid: Rows | None) -> xgb.Booster:
    """Return the booster `xgboost.dask.train` fits with `fit` on rows spread over workers."""
    from xgboost import dask as dxgb

    workers = _workers(client)
    if not workers:
        raise ConfigError(
            "the Dask cluster has no worker to train on; start workers (docs/cluster.md) or "
            "train in this process (no client)",
            setting="cluster",
        )
    # A worker without training rows would only wait on the others' allreduce.
    workers = workers[: max(1, len(train.label))]
    x, label, weight = _place(client, workers, train, whole=False)
    names = fit.names
    dtrain = dxgb.DaskQuantileDMatrix(client, x, label, weight=weight, feature_names=names)
    evals = []
    if valid is not None:
        x, label, weight = _place(client, workers, valid, whole=True)
        # Plain, as in process: see `_train_in_process`.
        dvalid = dxgb.DaskDMatrix(client, x, label, weight=weight, feature_names=names)
        evals.append((dvalid, "valid"))
    result = dxgb.train(client, dict(fit.params), dtrain, **fit.train_args(evals))
    booster: xgb.Booster = result["booster"]
    # Each worker trained with its own thread count (one on fusion.jobs's LocalCluster), which
    # the booster keeps; give it back the caller's, so scoring here uses every core again.
    booster.set_param({"nthread": int(fit.params.get("nthread") or 0)})
    return booster


def _place(
    client: Client, workers: Sequence[str], rows: Rows, *, whole: bool
) -> tuple[da.Array, da.Array, da.Array | None]:
    """Return `rows` as dask arrays with one partition per worker, stored on that worker.

    `whole=False` cuts the rows in contiguous blocks, one per worker; `whole=True` puts a full
    copy on each worker.
    """
    import dask.array as da

    def spread(values: Array) -> da.Array:
        blocks = [values] * len(workers) if whole else np.array_split(values, len(workers))
        parts = []
        for address, block in zip(workers, blocks, strict=True):
            # hash=False: random keys, so a copy sent to a second worker is a second partition.
            future = client.scatter(block, workers=[address], hash=False)
            parts.append(da.from_delayed(future, shape=block.shape, dtype=block.dtype))
        return da.concatenate(parts, axis=0)

    weight = None if rows.weight is None else spread(np.asarray(rows.weight))
    return spread(np.asarray(rows.x)), spread(np.asarray(rows.label)), weight
