"""The model commands: train every model on a snapshot's features; score the base into lists."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.input_files import read_parquet_input
from fusion.runfolder import RunFolder
from labs.cli.options import DEFAULT_RUN, ClusterOption, RunOption, engine_for, now, parse_date
from labs.cli.render import print_lists, print_training
from labs.cli.terminal import console, stage_progress
from labs.world import WorldFiles

if TYPE_CHECKING:
    from fusion.features import FeatureSet
    from fusion.lists import TargetLists

__all__ = ["score_command", "train_command"]

SnapshotOption = Annotated[str | None, typer.Option(help="Feature snapshot (default: newest).")]


def _features(folder: RunFolder, snapshot: str | None) -> FeatureSet:
    from fusion.pipeline.feature_tables import read_features

    return read_features(folder, parse_date(snapshot) if snapshot else None)


def _score(folder: RunFolder, features: FeatureSet, cluster: str | None = None) -> TargetLists:
    """Score the base (on `cluster` when given), write the lists and print their lengths."""
    from fusion.pipeline.modelling import score_and_list

    with engine_for(cluster) as engine, stage_progress("score") as progress:
        lists = score_and_list(folder, features, engine=engine, progress=progress)
    print_lists(lists, folder.lists)
    return lists


def train_command(
    campaign: Annotated[
        Path | None,
        typer.Option(
            help="Past A/B campaign (Parquet: customer_id, treatment, responded); "
            "default: the run's synthetic world's."
        ),
    ] = None,
    snapshot: SnapshotOption = None,
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Train acquisition (in-bank and fused), rescue and uplift models; register them; report.

    With --cluster every booster is fitted by xgboost.dask on the cluster's workers; metrics,
    registry and reports are the same."""
    from fusion.pipeline.feature_tables import features_dir
    from fusion.pipeline.modelling import model_report, train_models

    folder = RunFolder(run)
    features_dir(folder, parse_date(snapshot) if snapshot else None)  # none built: said first
    campaign_frame = read_parquet_input(
        campaign or folder.world / WorldFiles.CAMPAIGN,
        what="past A/B campaign",
        columns=("customer_id", "treatment", "responded"),
        hint="pass --campaign PATH",
    )
    features = _features(folder, snapshot)
    with (
        engine_for(cluster, cluster_only=True) as engine,
        stage_progress("train") as progress,
    ):
        trained = train_models(
            folder, features, campaign_frame, now=now(), engine=engine, progress=progress
        )
    print_training(trained)
    lists = _score(folder, features)
    page = model_report(folder, trained, features, campaign_frame, lists)
    console.print(f"model report: {page}")


def score_command(
    snapshot: SnapshotOption = None,
    cluster: ClusterOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Score the base with the current models and write the target lists per branch.

    With --cluster the acquisition model scores the base on the cluster (chunks of rows, one
    task each); the rescue and uplift lists are scored here."""
    folder = RunFolder(run)
    _score(folder, _features(folder, snapshot), cluster)
