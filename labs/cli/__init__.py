"""The `fusion` command: the one entry point for the demo, the vendor tool and the bank's jobs.

The composition root: each command parses its options, calls a step of `fusion.pipeline` (or
`labs.demo`) and prints the result. Only this package (and `api/`) reads the environment and
prints. Every command's errors leave through one place (`terminal.FusionCommands`), with the
exit status documented there and in the README. The commands by group:

    bank       keys init|rotate|pair-vendor, taxonomy load, ingest, match, features, report,
               publish
    vendor     vendor keygen|pack|rotate|evaluate|push
    models     train, score
    operations monitor, cycle
    service    serve, token create|list|revoke
    campaign   campaign create|plan|promote|deliver|outcomes|readout|close|list|show
    journeys   journey create|list|show|promote|close|events|run|dry-run|funnel|readout
    analyst    sql, snapshot keygen|bank-key|grant|open|dictionary
    workbench  world, demo, bench
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import version
from typing import Annotated

import typer

from labs.cli import (
    analyst,
    bank,
    campaigns,
    journeys,
    models,
    operations,
    service,
    snapshot,
    vendor,
    workbench,
)
from labs.cli.options import LogLevel
from labs.cli.terminal import FusionCommands, console, err_console

__all__ = ["app", "main"]

app = typer.Typer(
    name="fusion",
    help="Privacy-preserving fusion of a data vendor's app/tag data with a bank's customers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=FusionCommands,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    if asked:
        console.print(f"fusion {version('bankfusion')}")
        raise typer.Exit


@app.callback()
def _configure(
    log_level: Annotated[
        LogLevel,
        typer.Option(
            case_sensitive=False,
            help="Level of the bank's log on stderr; DEBUG also prints the traceback of an error.",
        ),
    ] = LogLevel.WARNING,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Privacy-preserving fusion of a data vendor's app/tag data with a bank's customers."""
    from rich.logging import RichHandler

    level = logging.getLevelName(log_level.value)
    # The bank's own log: refusal causes, ledger verdicts and counts (never a phone or a key).
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


# Registered in the order `fusion --help` lists them.
app.command()(workbench.world)
app.command()(workbench.demo)
app.add_typer(bank.keys_app, name="keys")
app.add_typer(bank.taxonomy_app, name="taxonomy")
app.add_typer(vendor.vendor_app, name="vendor")
app.command()(bank.ingest)
app.command("match")(bank.match_command)
app.command("features")(bank.features_command)
app.command("train")(models.train_command)
app.command("score")(models.score_command)
app.add_typer(models.models_app, name="models")
app.command("report")(bank.report_command)
app.command("monitor")(operations.monitor_command)
app.command("cycle")(operations.cycle_command)
app.add_typer(campaigns.campaign_app, name="campaign")
app.add_typer(journeys.journey_app, name="journey")
app.command()(analyst.sql)
app.command()(bank.publish)
app.add_typer(snapshot.snapshot_app, name="snapshot")
app.command()(service.serve)
app.add_typer(service.token_app, name="token")
app.command()(service.audit)
app.command()(workbench.bench)


def main() -> None:  # pragma: no cover - console entry for `python -m labs.cli`
    """Run the `fusion` command and exit with its status."""
    sys.exit(app())
