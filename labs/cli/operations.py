"""The operations commands for schedulers: monitor a snapshot; run a snapshot's whole cycle.

Both exit 0 when all is well, 1 with findings (a monitoring alert, a refused batch: the run
finished and the findings are printed), 2 on a usage error (another cycle running, a snapshot
without features...), as every command does (`labs.cli.terminal`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from labs.cli.options import DEFAULT_RUN, RunOption, bank_of, now, parse_date
from labs.cli.terminal import EXIT_FINDINGS, console, err_console

if TYPE_CHECKING:
    from fusion.monitoring import MonitorSettings
    from fusion.monitoring_checks import MonitoringResult

__all__ = ["cycle_command", "monitor_command"]

SnapshotOption = Annotated[str, typer.Option(help="Snapshot date, YYYY-MM-DD.")]
PsiWarnOption = Annotated[
    float, typer.Option(help="PSI / CSI at or above which a model or column warns.")
]
PsiAlertOption = Annotated[
    float, typer.Option(help="PSI / CSI at or above which a model or column alerts (exit 1).")
]


def _settings(psi_warn: float, psi_alert: float) -> MonitorSettings:
    from fusion.monitoring import MonitorSettings

    return MonitorSettings(psi_warn=psi_warn, psi_alert=psi_alert)


def _print_monitoring(result: MonitoringResult, page: Path | None) -> None:
    from fusion.monitoring import Status

    for s in result.stability:
        if s.kind == "score":
            console.print(f"{s.model} {s.version}: score PSI {s.index:.3f} ({s.status.value})")
    features = [s for s in result.stability if s.kind == "feature"]
    moved = sum(s.status is not Status.OK for s in features)
    console.print(f"input columns: {len(features)} checked, {moved} moved (CSI >= warn)")
    vendor = [d for d in result.vendor if d.status is not Status.OK]
    console.print(f"vendor: {len(result.vendor)} figures checked, {len(vendor)} moved")
    console.print(f"verdict: {result.status.value}" + (f"; report: {page}" if page else ""))


def _findings(lines: list[str] | tuple[str, ...], what: str) -> None:
    """Print the findings on stderr and exit 1 when there are any."""
    if not lines:
        return
    shown = "; ".join(lines[:8]) + (f"; and {len(lines) - 8} more" if len(lines) > 8 else "")
    err_console.print(
        Text.assemble(("finding:", "yellow"), f" {len(lines)} {what}: {shown}"), soft_wrap=True
    )
    raise typer.Exit(code=EXIT_FINDINGS)


def monitor_command(
    snapshot: SnapshotOption,
    psi_warn: PsiWarnOption = 0.1,
    psi_alert: PsiAlertOption = 0.25,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Monitor a scored snapshot against the models' training: score PSI, column CSI, the
    vendor's batch, campaign outcomes. Writes the report (HTML, Parquet) and the latest result
    /metrics shows.

    Exit status: 0 stable (warnings are printed); 1 at least one alert (cron-friendly); 2 the
    snapshot has no features, no model is trained, or a threshold is invalid."""
    from fusion.monitoring import Status
    from fusion.pipeline.monitoring import monitor_snapshot, write_monitoring

    snapshot_date = parse_date(snapshot)
    settings = _settings(psi_warn, psi_alert)
    with console.status("monitoring"), bank_of(run, read_only=True) as bank:
        result = monitor_snapshot(bank, snapshot_date=snapshot_date, now=now(), settings=settings)
        page = write_monitoring(bank.folder, result)
    _print_monitoring(result, page)
    _findings(result.findings(Status.ALERT), "monitoring alert(s)")


def cycle_command(
    snapshot: SnapshotOption,
    extract: Annotated[
        Path | None,
        typer.Option(
            help="The bank's customer extract of the snapshot (Parquet); needed only while the "
            "snapshot is not matched."
        ),
    ] = None,
    lists_on_alert: Annotated[
        bool,
        typer.Option(
            "--lists-on-alert",
            help="Publish the lists even when monitoring alerts (withheld by default).",
        ),
    ] = False,
    psi_warn: PsiWarnOption = 0.1,
    psi_alert: PsiAlertOption = 0.25,
    run: RunOption = DEFAULT_RUN,
) -> None:
    """Run a snapshot's cycle for a scheduler: ingest, match, features, score, monitor, lists.

    Idempotent: a step already done for the snapshot with the same inputs is skipped, so a
    second run writes nothing. Two cycles never overlap: a second one exits 2 at once.

    Exit status: 0 done (or nothing left to do); 1 done with findings (a monitoring alert, the
    lists then withheld; a refused or quarantined batch); 2 refused (another cycle running, no
    keyring, an unmatched snapshot without --extract)."""
    from fusion.pipeline.cycle import run_cycle
    from fusion.runfolder import RunFolder

    snapshot_date = parse_date(snapshot)
    settings = _settings(psi_warn, psi_alert)
    result = run_cycle(
        RunFolder(run),
        snapshot_date=snapshot_date,
        clock=now,
        extract=extract,
        settings=settings,
        lists_on_alert=lists_on_alert,
    )
    for step in result.steps:
        mark = "ran " if step.ran else "skip"
        console.print(f"{mark} {step.name:<8} {step.detail}")
    if not result.changed:
        console.print(f"cycle {snapshot_date}: nothing to do, nothing written")
    _findings(result.findings, "finding(s) in the cycle")
