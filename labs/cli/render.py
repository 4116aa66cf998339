"""How the commands print a step's result: the world, a match, a training run, the lists."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from labs.cli.terminal import console

if TYPE_CHECKING:
    from fusion.lists import TargetLists
    from fusion.pipeline.matching import MatchOutcome
    from fusion.training import TrainingRun
    from labs.world import WorldSummary

__all__ = ["print_lists", "print_match", "print_training", "print_world"]


def print_world(world: WorldSummary) -> None:
    """Print the synthetic world's summary as a table."""
    summary = world.to_dict()
    table = Table(title="Synthetic world", show_header=False)
    rows = [
        ("bank customers", f"{summary['bank_customers']:,}"),
        ("vendor users", f"{summary['vendor_users']:,}"),
        ("true coverage", f"{float(summary['true_coverage']):.1%}"),
        ("label rate (opens mobile banking)", f"{float(summary['label_rate']):.2%}"),
        (
            "invalid / duplicated phones",
            f"{summary['invalid_phones']:,} / {summary['duplicated_phones']:,}",
        ),
    ]
    for key, value in rows:
        table.add_row(key, value)
    mix = summary.get("persona_mix", {})
    if isinstance(mix, dict):
        table.add_row(
            "persona mix (vendor)",
            ", ".join(f"{p} {float(s):.0%}" for p, s in sorted(mix.items(), key=lambda x: -x[1])),
        )
    table.add_row("seconds", f"{float(summary.get('seconds', 0.0)):.1f}")
    console.print(table)


def print_match(done: MatchOutcome) -> None:
    """Print a match's counts (and, in OPRF mode, what became of the vendor's sealed rows)."""
    result = done.run
    rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(done.reasons.items())) or "none"
    console.print(
        f"match {result.snapshot_date} (epoch {result.salt_epoch}): [bold]{result.matched:,}[/] of "
        f"{result.customers:,} customers ({result.coverage:.1%}); unusable phones: {rejected}; "
        f"shared phones (not matched): {result.duplicated:,}"
    )
    oprf = done.oprf
    if oprf is not None:
        console.print(
            f"OPRF: {oprf.vendor_rows:,} sealed vendor rows; opened {oprf.opened:,} (matched "
            f"customers), dropped {oprf.dropped:,} unopened"
            + (f"; quarantined batches: {', '.join(oprf.quarantined)}" if oprf.quarantined else "")
        )


def print_training(run: TrainingRun) -> None:
    """Print the training run's headline figures: AUCs, the rescue ratio, the uplift gain."""
    summary = run.summary()
    _print_acquisition(summary["acquisition"])
    rescue = summary["rescue"]
    low, high = rescue["ratio_ci"]
    ratio = "no ratio: the control had no responder" if rescue["ratio"] is None else (
        f"{rescue['ratio']:.2f}x"
        + ("" if low is None else f" (95% CI {low:.2f}-{high:.2f})")
    )  # fmt: skip
    console.print(
        f"rescue: top {rescue['rescued']:,} of the rejected pool respond "
        f"{rescue['rescued_rate']:.1%} vs random control {rescue['control_rate']:.1%}: {ratio}"
    )
    uplift = summary["uplift"]
    best = uplift["learners"][uplift["best"]]
    corr = best["correlation_with_true_uplift"]
    console.print(
        f"uplift ({uplift['best']}): Qini {best['qini']:.3f}; targeting 30%: "
        f"{uplift['incremental_ratio'] or float('nan'):.2f}x the incremental conversions of "
        "response targeting"
        + (f"; correlation with true uplift {corr:.2f}" if corr is not None else "")
    )


def _print_acquisition(acq: dict[str, Any]) -> None:
    gain_low, gain_high = acq["auc_gain_ci"]
    console.print(
        f"acquisition AUC (held out): in-bank {acq['in_bank']['auc']:.3f} "
        f"({acq['in_bank']['inputs']} of {acq['in_bank']['candidates']} inputs kept), fused "
        f"{acq['fused']['auc']:.3f} (+{acq['auc_gain']:.3f}"
        + ("" if gain_low is None else f", DeLong 95% CI {gain_low:+.3f} to {gain_high:+.3f}")
        + ")"
    )


def print_lists(lists: TargetLists, lists_dir: Path) -> None:
    """Print how many customers were scored and how long each list is."""
    console.print(
        f"scored {lists.scores.rows:,} customers ({lists.scores.rows_per_second:,.0f} rows/s) "
        f"-> {lists.scores.path}"
    )
    for name, frame in lists.lists.items():
        console.print(
            f"list {name}: {frame.height:,} customers in {len(lists.files[name])} branches "
            f"-> {lists_dir / name}"
        )
