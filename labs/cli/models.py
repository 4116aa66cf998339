"""The model commands: train every model on a snapshot's features; score the base into lists;
`fusion models list|promote|rollback`: the registry's versions, and moving a model's CURRENT
through the champion/challenger gate (refused: one line, exit 2; every move recorded in the
store with who, when, why and the metrics compared)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from contracts.errors import ConfigError, ModelError
from contracts.input_files import check_input_file, read_parquet_input
from fusion.runfolder import RunFolder
from labs.cli.options import (
    DEFAULT_RUN,
    ClusterOption,
    RunOption,
    actor_name,
    bank_of,
    engine_for,
    now,
    parse_date,
)
from labs.cli.render import print_lists, print_training
from labs.cli.terminal import console, stage_progress
from labs.world import WorldFiles

if TYPE_CHECKING:
    from fusion.features import FeatureSet
    from fusion.lists import TargetLists
    from fusion.models.scenarios import Scenario

__all__ = [
    "models_app",
    "models_list",
    "models_promote",
    "models_rollback",
    "score_command",
    "train_command",
]

models_app = typer.Typer(
    help="The model registry: versions, and CURRENT moved through the champion/challenger gate.",
    no_args_is_help=True,
)
ModelArgument = Annotated[str, typer.Argument(help="The model's registry name, e.g. acquisition.")]
ReasonOption = Annotated[
    str | None, typer.Option(help="Why, in words (required for --override and rollback).")
]
ActorOption = Annotated[
    str | None, typer.Option(help="Who does this, as the store records it (default: login).")
]

SnapshotOption = Annotated[str | None, typer.Option(help="Feature snapshot (default: newest).")]
ScenarioOption = Annotated[
    str | None,
    typer.Option(
        help="One scenario only (built in: mobile-banking, mb-activation, credit-card, "
        "aum-growth; more from --scenarios FILE): its in-bank and fused models."
    ),
]
ScenariosOption = Annotated[
    Path | None, typer.Option(help="A TOML file of [[scenario]] tables (docs/models.md).")
]


def _scenario(name: str, scenarios: Path | None) -> Scenario:
    """Return the scenario `name` among the built-in and declared ones."""
    from fusion.models.scenarios import load_scenarios

    if scenarios is not None:
        check_input_file(scenarios, what="scenario declarations", hint="see docs/models.md")
    found = load_scenarios(scenarios)
    if name not in found:
        raise ConfigError(
            f"no scenario {name!r}; known: {', '.join(sorted(found))} (declare more in a TOML "
            "file given with --scenarios)",
            setting="scenario",
        )
    return found[name]


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
    scenario: ScenarioOption = None,
    scenarios: ScenariosOption = None,
    outcomes: Annotated[
        Path | None,
        typer.Option(
            help="The bank's outcome file for --scenario (Parquet: customer_id and outcome "
            "columns); default: the run's synthetic world's."
        ),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Train acquisition (in-bank and fused), rescue and uplift models; register them; report.

    A model's first version becomes CURRENT; later ones are challengers until `fusion models
    promote`. With --scenario only that scenario's in-bank and fused models are trained. With
    --cluster every booster is fitted by xgboost.dask on the cluster's workers; metrics,
    registry and reports are the same."""
    from fusion.pipeline.feature_tables import features_dir
    from fusion.pipeline.modelling import model_report, train_models

    folder = RunFolder(run)
    features_dir(folder, parse_date(snapshot) if snapshot else None)  # none built: said first
    if scenario is not None:
        _train_scenario(folder, _scenario(scenario, scenarios), snapshot, cluster, outcomes)
        return
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
    for name in trained.challengers:
        console.print(f"{name}: challenger {trained.refs[name].version} (`fusion models promote`)")
    lists = _score(folder, features)
    page = model_report(folder, trained, features, campaign_frame, lists)
    console.print(f"model report: {page}")


def _train_scenario(
    folder: RunFolder,
    scenario: Scenario,
    snapshot: str | None,
    cluster: str | None,
    outcomes: Path | None,
) -> None:
    """Train, register and print one scenario's in-bank and fused models."""
    from fusion.pipeline.modelling import train_scenario_models

    frame = None
    if scenario.label.source == "outcome":
        frame = read_parquet_input(
            outcomes or folder.world / WorldFiles.OUTCOMES,
            what="outcome file",
            columns=("customer_id", scenario.label.column),
            hint="pass --outcomes PATH",
        )
    features = _features(folder, snapshot)
    with engine_for(cluster, cluster_only=True) as engine, stage_progress("train") as progress:
        ran = train_scenario_models(
            folder, features, scenario, outcomes=frame, now=now(), engine=engine,
            progress=progress,
        )  # fmt: skip
    found = ran.summary()
    low, high = found["auc_gain_ci"]
    console.print(
        f"scenario {scenario.name}: {found['population']:,} customers, label rate "
        f"{found['label_rate']:.1%}; held-out AUC in-bank {found['in_bank_auc']:.3f}, fused "
        f"{found['fused_auc']:.3f} (gain {found['auc_gain']:+.3f}, 95% DeLong CI "
        f"{low:+.3f} to {high:+.3f})"
    )
    for name, ref in ran.refs.items():
        if name in ran.challengers:
            console.print(f"{name}: challenger {ref.version} (`fusion models promote`)")
        else:
            console.print(f"{name}: CURRENT {ref.version}")


def score_command(
    snapshot: SnapshotOption = None,
    cluster: ClusterOption = None,
    scenario: ScenarioOption = None,
    scenarios: ScenariosOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Score the base with the current models and write the target lists per branch.

    With --scenario the scenario's CURRENT model scores its population into
    scores/<scenario>.parquet and lists/<scenario>/. With --cluster the acquisition model
    scores the base on the cluster (chunks of rows, one task each); the rescue and uplift lists
    are scored here."""
    folder = RunFolder(run)
    if scenario is None:
        _score(folder, _features(folder, snapshot), cluster)
        return
    from fusion.pipeline.modelling import score_scenario

    chosen = _scenario(scenario, scenarios)
    scored, files = score_scenario(folder, _features(folder, snapshot), chosen)
    console.print(
        f"scenario {chosen.name}: {scored.rows:,} customers scored by {scored.model} "
        f"{scored.version}; list in {folder.lists / chosen.name} ({len(files)} branches)"
    )


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="One model (default: every model).")] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """List every saved version: CURRENT marked, challengers after it, held-out figure."""
    from fusion.pipeline.modelling import model_versions

    found_all = model_versions(RunFolder(run), name)
    currents = {v.name: v.version for v in found_all if v.current}
    for found in found_all:
        figure = "-" if found.value is None else f"{found.metric} {found.value:.4f}"
        current = currents.get(found.name)
        mark = (
            "CURRENT   "
            if found.current
            else "challenger"
            if current is None or found.version > current
            else "earlier   "
        )
        console.print(
            f"{found.name:<24} {found.version}  {mark}  snapshot {found.snapshot_date}  "
            f"held out: {figure}",
            soft_wrap=True,
        )


@models_app.command("promote")
def models_promote(
    name: ModelArgument,
    version: Annotated[
        str | None, typer.Option("--version", help="The challenger (default: the newest).")
    ] = None,
    override: Annotated[
        bool, typer.Option(help="Move CURRENT even if the gate refuses (needs --reason).")
    ] = False,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Promote a challenger: CURRENT moves only when it beats the champion on the same
    held-out customers (AUC by DeLong, Qini by bootstrap), or by --override with a reason."""
    from fusion.pipeline.modelling import promote_model

    with bank_of(run) as bank:
        decision = promote_model(
            bank.folder, bank.store, name, actor=actor_name(actor), now=now(), version=version,
            reason=reason, override=override,
        )  # fmt: skip
    if not decision.moved:
        raise ModelError(decision.message(), model=name)
    console.print(decision.message())


@models_app.command("rollback")
def models_rollback(
    name: ModelArgument,
    reason: ReasonOption = None,
    to: Annotated[
        str | None, typer.Option(help="The version to return to (default: the one replaced).")
    ] = None,
    actor: ActorOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Move CURRENT back to the version the last promotion replaced (or --to), with a reason."""
    from fusion.pipeline.modelling import rollback_model

    with bank_of(run) as bank:
        decision = rollback_model(
            bank.folder, bank.store, name, actor=actor_name(actor), now=now(), reason=reason,
            version=to,
        )  # fmt: skip
    console.print(decision.message())
