"""The marketer's commands: `fusion campaign create|plan|promote|deliver|outcomes|metrics|readout|
close|list|show`, the campaign loop of docs/campaigns.md.

Each command opens the run's bank, calls one step of `fusion.pipeline.campaigns` (or reads the
campaign book) and prints what it did; none holds a rule or a query of its own. Exit status:

    0   done
    1   done, with findings: a plan or readout whose arms show a sample-ratio mismatch, event
        rows refused
    2   a usage or input error: a declaration's bad field, a refused gate, an unknown campaign,
        an unreadable file; one line on stderr names the field or the gate
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.text import Text

from contracts.errors import CampaignError, DeclarationError, GateRefused
from contracts.input_files import check_input_file, read_parquet_input
from labs.cli.options import (
    DEFAULT_RUN,
    MinCellOption,
    RunOption,
    actor_name,
    bank_of,
    now,
    parse_date,
)
from labs.cli.terminal import err_console, print_finding

__all__ = [
    "campaign_app",
    "campaign_close",
    "campaign_create",
    "campaign_deliver",
    "campaign_list",
    "campaign_metrics",
    "campaign_outcomes",
    "campaign_plan",
    "campaign_promote",
    "campaign_readout_command",
    "campaign_show",
]

campaign_app = typer.Typer(
    help="Campaigns: declare, plan, promote through their gates, deliver, record outcome "
    "events, read out against the control (docs/campaigns.md).",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(help="The campaign's name (its declaration's name).")]
ActorOption = Annotated[
    str | None,
    typer.Option(
        help="Who does this, as the stage history and the plans record it (default: your "
        "login name)."
    ),
]
SnapshotOption = Annotated[
    str | None,
    typer.Option(help="Feature snapshot (YYYY-MM-DD) audiences and segments read; default newest."),
]


def _one_line(error: CampaignError, where: Path | None = None) -> NoReturn:
    """Print the error on one line (however narrow the terminal) and exit 2.

    A refused gate leads with `gate <name>:`, an error in a file with the file; a
    declaration's message names its field."""
    head = f" gate {error.gate}:" if isinstance(error, GateRefused) else ""
    head += f" {where}:" if where else ""
    err_console.print(Text.assemble(("error:", "red"), f"{head} {error}"), soft_wrap=True)
    raise typer.Exit(code=2) from error


@campaign_app.command("create")
def campaign_create(
    file: Annotated[
        Path,
        typer.Argument(help="The declaration: a TOML file, or JSON (see docs/campaigns.md)."),
    ],
    actor: ActorOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Declare a campaign from its TOML (or JSON) file: a new draft, or its draft changed.

    The same file again changes nothing.
    A changed file replaces a draft as a new version; once past its draft it is refused."""
    from fusion.campaigns.declaration import load_declaration
    from fusion.pipeline.campaigns import declare_campaign
    from labs.cli.render import print_declared

    # Checked before the store opens: a bad file is told at once, with its field.
    check_input_file(file, what="campaign declaration", hint="see the example in docs/campaigns.md")
    try:
        campaign = load_declaration(file)
    except DeclarationError as error:
        _one_line(error, where=file)
    with bank_of(run) as bank:
        record, changed = declare_campaign(bank, campaign, actor=actor_name(actor), now=now())
    print_declared(record, changed)


@campaign_app.command("plan")
def campaign_plan(
    names: Annotated[
        list[str],
        typer.Argument(
            help="The campaigns to plan together; they compete for customers (one campaign "
            "per customer per window, by priority) and for channel capacity."
        ),
    ],
    window_start: Annotated[
        datetime,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="The window's first day (YYYY-MM-DD); it lasts each campaign's window_days. "
            "Planning the same stage and window again shows the stored plan.",
        ),
    ],
    snapshot: SnapshotOption = None,
    actor: ActorOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Plan who enters each campaign's current stage in a window, and in which arm.

    Prints per campaign the audience and what each screening, quota and arbitration rule removed.
    Then the entrants in treatment and control, and the sample-ratio check's p-value.
    Exits 1 when a plan's arms show a sample-ratio mismatch."""
    from fusion.campaigns.statistics import SRM_ALPHA
    from fusion.pipeline.campaigns import plan_window
    from labs.cli.render import print_plans

    with bank_of(run) as bank:
        result = plan_window(
            bank,
            names,
            window_start=window_start.date(),
            actor=actor_name(actor),
            now=now(),
            snapshot=parse_date(snapshot) if snapshot else None,
        )
    print_plans(result)
    broken = [
        p.campaign_id
        for p in result.plans
        if p.srm_p_value is not None and p.srm_p_value < SRM_ALPHA
    ]
    if broken:
        print_finding(
            f"sample-ratio mismatch in the plan of {', '.join(broken)} (p < {SRM_ALPHA}): the "
            "arms are not the sizes the assignment rule gives; do not deliver, investigate"
        )
        raise typer.Exit(code=1)


@campaign_app.command("promote")
def campaign_promote(
    name: NameArgument,
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
    """Promote a campaign to its next stage once that stage's gate holds.

    Stages: draft -> whitelist -> pilot -> ab -> full. Prints every check of the gate.
    A refused gate exits 2 with `gate <name>: <what to do>`; the stage is left as it was."""
    from fusion.pipeline.campaigns import promote_campaign
    from labs.cli.render import print_promotion

    with bank_of(run) as bank:
        try:
            promoted = promote_campaign(bank, name, actor=actor_name(actor), now=now(), to_stage=to)
        except GateRefused as error:
            _one_line(error)
    print_promotion(promoted)


@campaign_app.command("deliver")
def campaign_deliver(name: NameArgument, run: RunOption = DEFAULT_RUN) -> None:
    """Write the treated customers not delivered before as the next delivery version.

    Files: deliveries/<campaign>/v<n>/<channel>/<branch>.csv and .parquet.
    No control customer, match key or score is in them.
    Nothing new to deliver leaves the latest version as it was."""
    from fusion.pipeline.campaigns import deliver_campaign
    from labs.cli.render import print_delivery

    with bank_of(run) as bank:
        delivery = deliver_campaign(bank, name, now=now())
    print_delivery(delivery)


@campaign_app.command("outcomes")
def campaign_outcomes(
    file: Annotated[
        Path,
        typer.Argument(
            help="Funnel events: CSV with a header row or Parquet, columns campaign_id, "
            "customer_id, event, occurred_at (+ amount, event_key)."
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(help="Who sent the events, as the store records it (default: the file name)."),
    ] = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Record a file of funnel events (delivered ... converted, complained, opted_out).

    Every row is stored, found stored already (a resend is harmless) or refused with its reason.
    A bad row never costs the good ones. Exits 1 when any row was refused."""
    from fusion.pipeline.campaigns import load_outcome_file
    from labs.cli.render import print_events

    check_input_file(file, what="events file", hint="CSV with a header row, or Parquet")
    with bank_of(run) as bank:
        recorded = load_outcome_file(bank, file, source=source or file.name, now=now())
    print_events(recorded, csv=file.suffix.lower() == ".csv")
    if recorded.refused.height:
        raise typer.Exit(code=1)


@campaign_app.command("metrics")
def campaign_metrics(
    file: Annotated[
        Path,
        typer.Argument(
            help="Amount metrics (Parquet): campaign_id, customer_id, metric (e.g. aum), value "
            "(after the campaign), pre_value (before assignment; may be null), measured_at."
        ),
    ],
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Record per-customer amount metrics; the readout adjusts each by its pre-period (CUPED).

    All or nothing: the first bad row refuses the file, and a newer measurement of a (campaign,
    metric, customer) replaces an older one."""
    from fusion.campaigns.metrics import METRIC_SCHEMA
    from fusion.pipeline.campaigns import record_campaign_metrics

    frame = read_parquet_input(file, what="metrics file", columns=METRIC_SCHEMA.names())
    with bank_of(run) as bank:
        written = record_campaign_metrics(bank, frame, now=now())
    err_console.print(f"{written:,} metric rows recorded from {file.name}")


@campaign_app.command("readout")
def campaign_readout_command(
    name: NameArgument,
    k: MinCellOption = 10,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the files (default: reports/campaigns/<name>)."),
    ] = None,
    snapshot: SnapshotOption = None,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Read a campaign out against its control, and write it as JSON, Parquet and HTML.

    Prints rates, lift with its interval, incremental successes, ROI, the sample-ratio check,
    power, and the decision once the A/B test reached its planned size (before: interim).
    Exits 1 when the arms show a sample-ratio mismatch: no comparison of them can be trusted."""
    from fusion.pipeline.campaigns import campaign_readout
    from labs.cli.render import print_readout, readout_findings

    with bank_of(run) as bank:
        result = campaign_readout(
            bank, name, k=k, out_dir=out, snapshot=parse_date(snapshot) if snapshot else None
        )
    print_readout(result)
    findings = readout_findings(result.readout)
    for finding in findings:
        print_finding(finding)
    if findings:
        raise typer.Exit(code=1)


@campaign_app.command("close")
def campaign_close(
    name: NameArgument, actor: ActorOption = None, run: RunOption = DEFAULT_RUN
) -> None:
    """Close a campaign from any stage: it plans and delivers nothing more (its readout stays)."""
    from fusion.pipeline.campaigns import close
    from labs.cli.render import print_promotion

    with bank_of(run) as bank:
        closed = close(bank, name, actor=actor_name(actor), now=now())
    print_promotion(closed)


@campaign_app.command("list")
def campaign_list(run: RunOption = DEFAULT_RUN) -> None:
    """List every campaign: stage, version, priority, channel, audience, last change."""
    from fusion.campaigns.book import list_campaigns
    from labs.cli.render import print_campaigns

    with bank_of(run, read_only=True) as bank:
        records = list_campaigns(bank.store)
    print_campaigns(records)


@campaign_app.command("show")
def campaign_show(name: NameArgument, run: RunOption = DEFAULT_RUN) -> None:
    """Show a campaign: its stored declaration, its stage and every promotion with its checks."""
    from fusion.campaigns.book import get_campaign, stage_history
    from labs.cli.render import print_campaign

    with bank_of(run, read_only=True) as bank:
        record = get_campaign(bank.store, name)
        history = stage_history(bank.store, name)
    print_campaign(record, history)
