"""The marketer's journey commands: `fusion journey create|list|show|promote|close|events|run|
dry-run|funnel|readout`, the journey loop of docs/journeys.md.

Each command opens the run's bank, calls one step of `fusion.journeys` or
`fusion.pipeline.journeys` and prints what it did; none holds a rule or a query of its own.
Errors leave through `labs.cli.terminal.FusionCommands`. Exit status:

    0   done (a day already run prints "already done" and writes nothing)
    1   done, with findings: event rows refused, a readout whose treatment arm opts out
        significantly more than its control
    2   a usage or input error: a declaration's bad field, a refused gate (named), an unknown
        strategy, a day out of order, an unreadable file
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from contracts.input_files import check_input_file
from labs.cli.options import DEFAULT_RUN, MinCellOption, RunOption, actor_name, bank_of, now
from labs.cli.terminal import console, print_finding, stage_progress

if TYPE_CHECKING:
    import polars as pl

    from fusion.journeys.book import StrategyRecord
    from fusion.journeys.engine import DayRun
    from fusion.pipeline.journeys import JourneyReadoutFiles
    from labs.demo_journeys import DemoJourneys

__all__ = [
    "journey_app",
    "journey_close",
    "journey_create",
    "journey_dry_run",
    "journey_events",
    "journey_funnel",
    "journey_list",
    "journey_promote",
    "journey_readout_command",
    "journey_run",
    "journey_show",
    "print_demo_journeys",
]

journey_app = typer.Typer(
    help="Journeys: declare strategies, promote them through their gates, load events, run the "
    "daily engine, read out against the hold-out (docs/journeys.md).",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(help="The strategy's id (its declaration's name).")]
ActorOption = Annotated[
    str | None,
    typer.Option(
        help="Who does this, as the strategy's stage history records it (default: your login name)."
    ),
]
DayFormats = ["%Y-%m-%d"]


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@journey_app.command("create")
def journey_create(
    file: Annotated[
        Path, typer.Argument(help="The strategy: a TOML file, or JSON (see docs/journeys.md).")
    ],
    actor: ActorOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Declare a strategy from its TOML (or JSON) file: a new draft, or its draft changed.

    The same file again changes nothing. A changed file replaces a draft as a new version;
    once past its draft the declaration is fixed and a change is refused."""
    from fusion.journeys.book import create_strategy
    from fusion.journeys.strategy import load_strategy

    # Checked before the store opens: a bad file is told at once, with its field.
    check_input_file(file, what="strategy declaration", hint="see examples/journeys/")
    strategy = load_strategy(file)
    with bank_of(run) as bank:
        record, changed = create_strategy(bank.store, strategy, actor=actor_name(actor), now=now())
    verb = ("declared" if record.version == 1 else "changed") if changed else "unchanged"
    console.print(
        f"strategy {escape(record.strategy_id)}: [bold]{verb}[/] (version {record.version}, "
        f"stage {record.stage}, {len(record.strategy.nodes)} nodes)"
    )


@journey_app.command("list")
def journey_list(run: RunOption = DEFAULT_RUN) -> None:
    """List every strategy: stage, version, priority, goal, entry, last change."""
    from fusion.journeys.book import list_strategies

    with bank_of(run, read_only=True) as bank:
        records = list_strategies(bank.store)
    if not records:
        console.print("no strategies yet; declare one with `fusion journey create FILE`")
        return
    table = Table(title="Journey strategies")
    # Ids and stages whole on a narrow terminal (the other columns wrap): they are what a
    # reader types next.
    widest = max(len(r.strategy_id) for r in records)
    table.add_column("strategy", no_wrap=True, min_width=widest)
    table.add_column("stage", no_wrap=True, min_width=9)
    for column in ("v", "priority", "goal", "entry", "updated"):
        table.add_column(column)
    for r in records:
        table.add_row(
            escape(r.strategy_id), r.stage, str(r.version), str(r.strategy.priority),
            r.strategy.goal, _entry_text(r), r.updated_at.strftime("%Y-%m-%d %H:%M"),
        )  # fmt: skip
    console.print(table)


def _entry_text(record: StrategyRecord) -> str:
    entry = record.strategy.entry()
    return f"stage {entry.stage}" if entry.stage else f"event {entry.event}"


@journey_app.command("show")
def journey_show(strategy_id: IdArgument, run: RunOption = DEFAULT_RUN) -> None:
    """Show a strategy: its stored declaration, its stage and every promotion with its checks."""
    import json

    from fusion.journeys.book import get_strategy, strategy_history

    with bank_of(run, read_only=True) as bank:
        record = get_strategy(bank.store, strategy_id)
        history = strategy_history(bank.store, strategy_id)
    console.print(
        f"strategy [bold]{escape(record.strategy_id)}[/]: stage {record.stage}, version "
        f"{record.version}, declared by {escape(record.created_by)} on "
        f"{record.created_at:%Y-%m-%d}"
    )
    console.print_json(json.dumps(record.to_dict()["declaration"]))
    if not history:
        console.print("no promotion yet")
    for move in history:
        console.print(
            f"{move['promoted_at'][:16]} {move['from_stage']} -> {move['to_stage']} by "
            f"{escape(move['actor'])}"
        )
        for name, check in move["checks"].items():
            mark = "pass" if check.get("passed") else "FAIL"
            console.print(f"    {mark} {name}: {escape(str(check.get('detail', '')))}")


@journey_app.command("promote")
def journey_promote(
    strategy_id: IdArgument,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="The stage to promote to: whitelist, pilot, ab or full. It must be the next "
            "one (stages are never skipped); default: the next one.",
        ),
    ] = None,
    actor: ActorOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Promote a strategy to its next stage once that stage's gate holds.

    Stages: draft -> whitelist -> pilot (small traffic) -> ab -> full. Prints every check.
    A refused gate exits 2 naming the gate; the stage is left as it was."""
    from fusion.journeys.book import promote_strategy
    from labs.cli.render import print_promotion

    with bank_of(run) as bank:
        promoted = promote_strategy(
            bank.store, strategy_id, actor=actor_name(actor), now=now(), to_stage=to
        )
    print_promotion(promoted, noun="strategy")


@journey_app.command("close")
def journey_close(
    strategy_id: IdArgument, actor: ActorOption = None, run: RunOption = DEFAULT_RUN
) -> None:
    """Close a strategy from any stage: the daily run moves no one in it (its readout stays)."""
    from fusion.journeys.book import close_strategy
    from labs.cli.render import print_promotion

    with bank_of(run) as bank:
        closed = close_strategy(bank.store, strategy_id, actor=actor_name(actor), now=now())
    print_promotion(closed, noun="strategy")


@journey_app.command("events")
def journey_events(
    file: Annotated[
        Path,
        typer.Argument(
            help="Journey events: CSV with a header row or Parquet, columns customer_id, event, "
            "occurred_at (+ event_key, touch_id for answers to touches)."
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(help="Who sent the events, as the store records it (default: the file name)."),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Load a file of journey events (milestones, log-ins, answers to touches).

    Every row is stored, found stored already (a resend is harmless) or refused with its row
    number and reason; a bad row never costs the good ones. Exits 1 when any row was refused."""
    from fusion.journeys.events import load_events

    check_input_file(file, what="events file", hint="CSV with a header row, or Parquet")
    with bank_of(run) as bank:
        loaded = load_events(bank.store, file, source=source or file.name, now=now())
    console.print(
        f"events from {escape(file.name)}: {loaded.recorded:,} recorded, "
        f"{loaded.already_recorded:,} already recorded, {loaded.refused.height:,} refused"
    )
    for row in loaded.refused.head(10).iter_rows(named=True):
        # CSV row numbers count the header as line 1, as an editor shows them.
        line = row["row"] + (2 if file.suffix.lower() == ".csv" else 0)
        where = f"line {line}" if file.suffix.lower() == ".csv" else f"row {row['row']}"
        console.print(f"    refused {where}: {escape(str(row['reason']))}")
    if loaded.refused.height > 10:
        console.print(f"    ... and {loaded.refused.height - 10:,} more")
    if loaded.refused.height:
        raise typer.Exit(code=1)


def _print_day(ran: DayRun) -> None:
    if ran.replayed:
        console.print(
            f"day {ran.day}: already done; nothing written ({ran.touches.height:,} touches "
            f"delivered, {ran.held_out.height:,} held out that day)"
        )
        return
    console.print(
        f"day {ran.day}: {ran.total('entered'):,} entered, {ran.touches.height:,} touches "
        f"delivered, {ran.held_out.height:,} held out, {ran.total('blocked'):,} blocked "
        f"({', '.join(f'{k} v{v}' for k, v in ran.strategies.items()) or 'no live strategy'})"
    )


@journey_app.command("run")
def journey_run(
    day: Annotated[
        datetime | None,
        typer.Option(formats=DayFormats, help="The one day to run (YYYY-MM-DD)."),
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option(
            "--from", formats=DayFormats, help="The first day of a range to run (YYYY-MM-DD)."
        ),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option("--to", formats=DayFormats, help="The last day of the range (YYYY-MM-DD)."),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Run the daily engine for a day, or for every day of a range in order (a backfill).

    Each day moves every customer of every live strategy in one transaction and emits its
    touches. A day already run prints "already done" and writes nothing. Days run in order."""
    from contracts.errors import ConfigError
    from fusion.pipeline.journeys import run_journey_days

    if day is not None and (start is not None or end is not None):
        raise ConfigError("give --day, or --from and --to, not both", setting="day")
    first, last = (_day(day), _day(day)) if day else (_day(start), _day(end) or _day(start))
    if first is None or last is None:
        raise ConfigError(
            "name the day to run: --day YYYY-MM-DD, or --from YYYY-MM-DD --to YYYY-MM-DD",
            setting="day",
        )
    with bank_of(run) as bank:
        if last > first:
            with stage_progress("journey run") as progress:
                done = run_journey_days(bank.folder, bank.store, first, last, now=now(),
                                        progress=progress)  # fmt: skip
        else:
            done = run_journey_days(bank.folder, bank.store, first, last, now=now())
    for ran in done.runs:
        _print_day(ran)


@journey_app.command("dry-run")
def journey_dry_run(
    day: Annotated[
        datetime, typer.Option(formats=DayFormats, help="The day to compute (YYYY-MM-DD).")
    ],
    strategy: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this strategy (repeat for several); a draft is taken as at full launch "
            "with no control. Default: every live strategy at its stage."
        ),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Show per strategy and node what the run of a day would do; nothing is written."""
    from fusion.pipeline.journeys import journey_dry_run as dry_run

    with bank_of(run, read_only=True) as bank:
        frame = dry_run(bank.folder, bank.store, day=day.date(), now=now(), strategy_ids=strategy)
    _print_frame(frame, f"Dry run of {day.date()} (nothing written)")


def _print_frame(frame: pl.DataFrame, title: str) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(column, justify="right" if frame.schema[column].is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*("suppressed" if v is None else escape(str(v)) for v in row))
    console.print(table)


@journey_app.command("funnel")
def journey_funnel(
    as_of: Annotated[
        datetime,
        typer.Option(formats=DayFormats, help="Count the events that occurred by this day."),
    ],
    k: MinCellOption = 10,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Show the cohort funnel: per download week and branch, milestones, stage conversion and
    day-7/30/100 retention, every cell under k withheld."""
    from fusion.journeys.lifecycle import cohort_funnel

    with bank_of(run, read_only=True) as bank:
        frame = cohort_funnel(bank.store, as_of=as_of.date(), now=now(), k=k)
    shown = [
        "cohort_week", "branch_id", "customers", "conversion_activate", "conversion_grow",
        "retention_d7", "retention_d30", "retention_d100",
    ]  # fmt: skip
    rates = [c for c in shown[3:] if c in frame.columns]
    import polars as pl

    _print_frame(
        frame.select(*shown[:3], *(pl.col(c).round(3) for c in rates)),
        f"Cohort funnel as of {as_of.date()} (k = {k})",
    )


@journey_app.command("readout")
def journey_readout_command(
    strategy_id: IdArgument,
    as_of: Annotated[
        datetime, typer.Option(formats=DayFormats, help="Read out as of the end of this day.")
    ],
    k: MinCellOption = 10,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the files (default: reports/journeys/<strategy>)."),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Read a strategy out against its held-out control, and write it as HTML and JSON.

    Prints per arm the customers, goal, stage conversion, retention and opt-outs, and the lift
    of each with its interval. Exits 1 when the treatment arm opts out significantly more."""
    from fusion.pipeline.journeys import journey_readout

    with bank_of(run, read_only=True) as bank:
        result = journey_readout(
            bank.folder, bank.store, strategy_id, as_of=as_of.date(), now=now(), k=k, out_dir=out
        )
    _print_readout(result)
    if result.opt_outs is not None and result.opt_outs.harmful:
        print_finding(
            f"{strategy_id}: the treatment arm opts out significantly more than the control "
            "(the interval of the difference is above 0): review the content, the channel and "
            "the audience, or close the strategy"
        )
        raise typer.Exit(code=1)


def _points(value: float | None) -> str:
    return "withheld" if value is None else f"{value * 100:+.2f}"


def _print_readout(result: JourneyReadoutFiles) -> None:
    readout = result.readout
    console.print(
        f"strategy [bold]{escape(readout.strategy_id)}[/] (stage {readout.stage}, goal "
        f"{readout.goal}) as of {readout.as_of}, k = {readout.k}"
    )
    arms = readout.arms.select(
        "arm", "customers", "goal_rate", "converted_rate", "retention_rate", "exposed_rate",
        "opted_out_rate",
    )  # fmt: skip
    _print_frame(arms, "Arms")
    for metric, found in readout.comparisons.items():
        if found is None:
            console.print(f"{metric}: withheld (a cell under k)")
            continue
        console.print(
            f"{metric}: {found.rate_t:.2%} vs {found.rate_c:.2%}, lift {_points(found.diff)} "
            f"points (95% CI {_points(found.diff_ci_low)} to {_points(found.diff_ci_high)}), "
            f"p = {found.p_value:.3g}"
        )
    harm = result.opt_outs
    if harm is None:
        console.print("opt-outs: withheld (a cell under k)")
    else:
        c = harm.comparison
        control = f"under {readout.k}" if harm.control_withheld else f"{c.rate_c:.2%}"
        bound = "at least " if harm.control_withheld else ""
        console.print(
            f"opt-outs (any touch, from entry): {c.rate_t:.2%} vs {control}, difference "
            f"{bound}{_points(c.diff)} points (95% CI {_points(c.diff_ci_low)} to "
            f"{_points(c.diff_ci_high)})" + (": [red]harmful[/]" if harm.harmful else "")
        )
    console.print(f"readout: {result.files['html']}")


def print_demo_journeys(journeys: DemoJourneys) -> None:
    """Print the demo's journey readouts beside the world's truth (`labs.demo_journeys`)."""
    table = Table(title=f"Journeys: {journeys.days} days backfilled in {journeys.seconds:.1f}s")
    for column in (
        "strategy",
        "arms (t / c)",
        "stage conversion lift",
        "truth",
        "opt-outs",
        "truth",
    ):
        table.add_column(column)
    for name, result in journeys.readouts.items():
        truth = journeys.truth[name]
        arms = {r["arm"]: r["customers"] for r in result.readout.arms.to_dicts()}
        found = result.readout.comparisons.get("converted")
        lift = (
            f"{_points(found.diff)} ({_points(found.diff_ci_low)} to {_points(found.diff_ci_high)})"
            if found
            else "withheld"
        )
        harm = result.opt_outs
        opt = (
            ("at least " if harm.control_withheld else "")
            + f"{_points(harm.comparison.diff)} ({_points(harm.comparison.diff_ci_low)} to "
            f"{_points(harm.comparison.diff_ci_high)})" + (" harmful" if harm.harmful else "")
            if harm
            else "withheld"
        )
        table.add_row(
            f"{name}\n({truth.conversion_event})",
            f"{arms.get('treatment')} / {arms.get('control')}",
            lift, _points(truth.conversion), opt, _points(truth.opt_out),
        )  # fmt: skip
    console.print(table)
    for name, result in journeys.readouts.items():
        console.print(f"journey readout {name}: {result.files['html']}")
