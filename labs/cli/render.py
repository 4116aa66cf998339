"""How the commands print a step's result: the world, a match, a training run, the lists, and
each step of the campaign loop."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.markup import escape
from rich.table import Table

from labs.cli.terminal import console

if TYPE_CHECKING:
    from fusion.campaigns.book import CampaignRecord, Promotion
    from fusion.campaigns.delivery import Delivery
    from fusion.campaigns.outcomes import EventsRecorded
    from fusion.campaigns.planning import PlanResult
    from fusion.campaigns.readout import Readout
    from fusion.campaigns.stages import Promoted
    from fusion.ingest import IngestOutcome
    from fusion.lists import TargetLists
    from fusion.pipeline.campaigns import CampaignReadout
    from fusion.pipeline.matching import MatchOutcome
    from fusion.training import TrainingRun
    from labs.world import WorldSummary

__all__ = [
    "print_campaign",
    "print_campaigns",
    "print_declared",
    "print_delivery",
    "print_events",
    "print_ingest",
    "print_lists",
    "print_match",
    "print_plans",
    "print_promotion",
    "print_readout",
    "print_training",
    "print_world",
    "readout_findings",
]


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


def print_ingest(outcomes: list[IngestOutcome]) -> list[str]:
    """Return the ledger ids of the refused or quarantined batches, after printing every verdict.

    A batch is named by its id; a refusal whose manifest could not be read, by the ledger row
    it was filed under ("refused:" and the file's SHA-256), never as "None".
    """
    findings: list[str] = []
    for outcome in outcomes:
        name = outcome.batch_id or outcome.ledger_id or "(no readable manifest)"
        reasons = f" ({', '.join(outcome.reasons)})" if outcome.reasons else ""
        console.print(
            f"{escape(name)}: [bold]{outcome.status}[/] {outcome.rows:,} rows{escape(reasons)}"
        )
        if outcome.status in ("refused", "quarantined"):
            findings.append(outcome.ledger_id or name)
    if not outcomes:
        console.print("inbox empty: nothing to ingest")
    return findings


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
        ranked = ""
        if name == "food-coupon" and lists.targeting is not None:
            ranked = f" ({lists.targeting.describe()})"
        console.print(
            f"list {name}: {frame.height:,} customers in {len(lists.files[name])} branches "
            f"-> {lists_dir / name}{ranked}",
            soft_wrap=True,
        )


# -- campaigns ---------------------------------------------------------------------------------

# The order a candidate meets the plan's rules (screening keys carry a list or column name).
_REMOVAL_ORDER = (
    "already_assigned", "duplicate", "suppressed:", "complaint", "frequency_cap", "cooling_off",
    "holder:", "stage_quota", "assigned_elsewhere", "lost_arbitration", "capacity",
)  # fmt: skip
_SHOWN_BRANCHES = 5
_SHOWN_REFUSED = 10


def _removal_rank(key: str) -> int:
    """Return the place of a removal count's key in the plan's order (unknown keys last)."""
    for place, name in enumerate(_REMOVAL_ORDER):
        if key == name or (name.endswith(":") and key.startswith(name)):
            return place
    return len(_REMOVAL_ORDER)


def print_declared(record: CampaignRecord, changed: bool) -> None:
    """Print whether the declaration created, changed or left the campaign, its version, stage."""
    verb = ("created" if record.version == 1 else "changed") if changed else "unchanged"
    console.print(
        f"campaign {escape(record.campaign_id)}: [bold]{verb}[/] (version {record.version}, "
        f"stage {record.stage})"
    )


def print_plans(result: PlanResult) -> None:
    """Print each campaign's plan: audience, every rule's removals, entrants by arm, SRM p."""
    plans = result.plans
    table = Table(title=f"Plan: {len(plans)} campaign(s) planned together")
    table.add_column("step", no_wrap=True)
    for plan in plans:
        table.add_column(f"{escape(plan.campaign_id)}\n{plan.stage}", justify="right")
    table.add_row("window from", *(str(p.window_start) for p in plans))
    table.add_row("window to", *(str(p.window_end) for p in plans))
    table.add_row("audience", *(f"{p.audience:,}" for p in plans))
    keys = sorted({k for p in plans for k in p.removed}, key=lambda k: (_removal_rank(k), k))
    for key in keys:
        counts = (p.removed.get(key) for p in plans)
        table.add_row(f"  - {escape(key)}", *("" if n is None else f"{n:,}" for n in counts))
    table.add_row("assigned", *(f"[bold]{p.assigned:,}[/]" for p in plans))
    table.add_row("  treatment", *(f"{p.treatment:,}" for p in plans))
    table.add_row("  control", *(f"{p.control:,}" for p in plans))
    table.add_row(
        "sample-ratio p",
        *("n/a" if p.srm_p_value is None else f"{p.srm_p_value:.3g}" for p in plans),
    )
    console.print(table)
    for plan in plans:
        if plan.stored_before:
            console.print(
                f"{escape(plan.campaign_id)}: this stage and window were planned before "
                f"({escape(plan.plan_id)}); the stored plan is shown and nothing was written"
            )
    for note in result.notes:
        console.print(escape(note))


def print_promotion(promoted: Promoted, *, noun: str = "campaign") -> None:
    """Print the stage change of a campaign (or a journey strategy: `noun`) and every check
    of its gate."""
    console.print(
        f"{noun} {escape(promoted.campaign_id)}: {promoted.from_stage} -> "
        f"[bold]{promoted.to_stage}[/]"
    )
    for check in promoted.checks:
        mark = "[green]ok[/]" if check.passed else "[red]failed[/]"
        console.print(f"  {mark} {escape(check.name)}: {escape(check.detail)}")


def print_delivery(delivery: Delivery) -> None:
    """Print the delivery's version, its rows per branch (the first few) and its folder."""
    branches = sorted(delivery.files)
    name = escape(delivery.campaign_id)
    if delivery.new:
        console.print(
            f"campaign {name}: delivery [bold]v{delivery.version}[/] (stage {delivery.stage}, "
            f"channel {delivery.channel}): {delivery.rows:,} rows in {len(branches)} branches"
        )
    else:
        console.print(
            f"campaign {name}: nothing new to deliver; the latest delivery v{delivery.version} "
            f"is unchanged ({delivery.rows:,} rows in {len(branches)} branches)"
        )
    for branch in branches[:_SHOWN_BRANCHES]:
        parquet = delivery.files[branch]["parquet"]
        rows = pl.scan_parquet(parquet).select(pl.len()).collect().item()
        console.print(
            f"  {escape(branch)}: {rows:,} row{'' if rows == 1 else 's'} "
            f"(sha256 {delivery.sha256[branch][:12]}...)"
        )
    if len(branches) > _SHOWN_BRANCHES:
        console.print(f"  ... and {len(branches) - _SHOWN_BRANCHES} more branches")
    if branches:
        folder = delivery.files[branches[0]]["csv"].parent.parent
        console.print(f"folder: {escape(str(folder))}", soft_wrap=True)


def print_events(recorded: EventsRecorded, *, csv: bool) -> None:
    """Print how many events were recorded, already recorded and refused, with the reasons."""
    refused = recorded.refused
    console.print(
        f"events: [bold]{recorded.recorded:,}[/] recorded, {recorded.already_recorded:,} already "
        f"recorded, {refused.height:,} refused"
    )
    if refused.is_empty():
        return
    lines = refused["row"] + 2 if csv else refused["row"]  # a CSV's header is line 1
    where = "line" if csv else "row (from 0)"
    if refused.height <= _SHOWN_REFUSED:
        for place, reason in zip(lines, refused["reason"], strict=True):
            console.print(f"  {where} {place}: {escape(str(reason))}")
        return
    for reason, n in refused["reason"].value_counts(sort=True).iter_rows():
        console.print(f"  {n:,} x {escape(str(reason))}")
    shown = ", ".join(str(place) for place in lines.head(_SHOWN_REFUSED))
    console.print(f"  first refused: {where} {shown}, ...")


def _number(value: float | None, spec: str, withheld: str = "withheld") -> str:
    return withheld if value is None else format(value, spec)


def _interval(low: float | None, high: float | None, spec: str) -> str:
    if low is None or high is None:
        return ""
    return f" (CI {format(low, spec)} to {format(high, spec)})"


def print_readout(result: CampaignReadout) -> None:
    """Print the readout: arms, lift with its CI, incremental successes, ROI, the adjusted
    figures beside the unadjusted ones, sample ratio, power, the sequential looks, the
    decision, and the files written."""
    readout = result.readout
    success = readout.success_event
    console.print(
        f"campaign {escape(readout.campaign)}: readout of {', '.join(readout.stages)} "
        f"(success: {success}; groups under k = {readout.k} withheld)"
    )
    _print_arms(readout)
    _print_lift(readout)
    _print_adjusted(readout)
    _print_checks(readout)
    files = result.files
    console.print(
        f"report: {escape(str(files['html']))} (+ {files['json'].name}, {files['parquet'].name})",
        soft_wrap=True,
    )


def _print_arms(readout: Readout) -> None:
    success = readout.success_event
    table = Table(title="Arms")
    for column in ("arm", "customers", "delivered", "contacted", success, f"{success} rate"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in readout.arms.iter_rows(named=True):
        table.add_row(
            str(arm["arm"]),
            _number(arm["n"], ","),
            _number(arm["delivered"], ","),
            _number(arm["contacted"], ","),
            _number(arm[success], ","),
            _number(arm["success_rate"], ".2%"),
        )
    console.print(table)
    by_stage = readout.breakdowns.get("by_stage")
    if by_stage is None or by_stage.is_empty():
        return
    stages = Table(title="By stage")
    for column in ("stage", "treated", "rate", "control", "rate", "lift"):
        stages.add_column(column, justify="left" if column == "stage" else "right")
    for row in by_stage.iter_rows(named=True):
        stages.add_row(
            str(row["stage"]),
            _number(row["n_treatment"], ","),
            _number(row["rate_treatment"], ".2%"),
            _number(row["n_control"], ","),
            _number(row["rate_control"], ".2%"),
            _number(row["lift"], "+.2%"),
        )
    console.print(stages)


def _print_lift(readout: Readout) -> None:
    level = f"{1 - readout.alpha:.0%}"
    comparison = readout.comparison
    if comparison is None:
        console.print("lift: withheld (an arm's counts describe fewer than k customers)")
    else:
        console.print(
            f"lift: [bold]{comparison.diff:+.2%}[/] ({level} CI {comparison.diff_ci_low:+.2%} to "
            f"{comparison.diff_ci_high:+.2%}); ratio {_number(comparison.ratio, '.2f', 'n/a')}x"
            f"{_interval(comparison.ratio_ci_low, comparison.ratio_ci_high, '.2f')}; "
            f"p = {comparison.p_value:.3g}"
        )
    money = readout.incremental
    console.print(
        f"incremental {readout.success_event}: "
        f"{_number(money.successes, '+,.1f')}"
        f"{_interval(money.successes_low, money.successes_high, '+,.1f')}; value "
        f"{_number(money.value, '+,.0f')}{_interval(money.value_low, money.value_high, '+,.0f')}"
        f" at {readout.value_per_success:,.2f} each"
        + ("" if money.amount is None else f"; from reported amounts {money.amount:+,.0f}")
    )
    console.print(
        f"cost: {_number(money.cost, ',.2f')} ({readout.cost_per_contact:,.2f} per delivered "
        f"contact); ROI {_number(money.roi, '+.0%', 'n/a')}"
        f"{_interval(money.roi_low, money.roi_high, '+.0%')}"
    )


def _print_adjusted(readout: Readout) -> None:
    """Print each metric unadjusted and adjusted, and what the covariate bought."""
    if not readout.adjusted:
        console.print("adjusted: none (no covariate known before assignment, or arms withheld)")
        return
    table = Table(title="Adjusted by what the bank knew before assignment")
    for column in ("metric (covariate)", "unadjusted", "adjusted (CUPED)", "rho",
                   "variance cut", "CI narrower", "control saved"):  # fmt: skip
        table.add_column(column, justify="left" if column.startswith("metric") else "right")
    for a in readout.adjusted:
        spec, scale = ("+.2f", 100.0) if a.kind == "rate" else ("+,.0f", 1.0)
        cells = [
            f"{format(e.estimate * scale, spec)} "
            f"({format(e.ci_low * scale, spec)} to {format(e.ci_high * scale, spec)})"
            + (" pts" if a.kind == "rate" else "")
            for e in (a.unadjusted, a.adjusted)
        ]
        table.add_row(
            f"{escape(a.metric)} ({escape(a.covariate)})", *cells, f"{a.correlation:.2f}",
            f"{a.variance_reduction:.1%}", f"{a.interval_narrowing:.1%}", f"{a.control_saved:,}",
        )  # fmt: skip
    console.print(table)
    for a in readout.adjusted:
        if a.buys_little:
            console.print(f"  {escape(a.metric)}: {escape(a.verdict())}", soft_wrap=True)


def _print_checks(readout: Readout) -> None:
    srm = readout.srm
    if readout.srm_mismatch is None:
        console.print("sample ratio: not checked (an arm is empty)")
    else:
        verdict = "[red]MISMATCH[/]" if readout.srm_mismatch else "ok"
        detail = (
            " (figures withheld under k)"
            if srm is None
            else f" (treatment {srm.n_treatment:,} / control {srm.n_control:,}, expected "
            f"control share {srm.expected_control_share:.1%}, p = {srm.p_value:.3g})"
        )
        console.print(f"sample ratio: {verdict}{detail}")
    planned = readout.planned
    ab = readout.ab
    reached = "" if ab is None else f"treatment {ab.n_t:,}, control {ab.n_c:,} of "
    console.print(
        f"A/B test (pilot + ab): {reached}{planned.treatment:,} / {planned.control:,} planned; "
        f"power at the declared effect {readout.minimum_detectable_effect:+.2%}: "
        f"{_number(readout.power, '.0%', 'n/a')}"
    )
    for scope, test in readout.sequential.items():
        name = "A/B test" if scope == "ab" else "full launch"
        boundary = f"; last boundary |z| >= {test.looks[-1].boundary_z:.2f}" if test.looks else ""
        console.print(
            f"always-valid test ({name}, mSPRT, a look every 7 days): "
            f"{escape(test.summary())}{boundary}",
            soft_wrap=True,
        )
    console.print(f"decision: [bold]{escape(readout.horizon())}[/]")


def readout_findings(readout: Readout) -> list[str]:
    """Return what in the readout needs a look before anyone acts on it (empty: nothing)."""
    if readout.srm_mismatch:
        return [
            "sample-ratio mismatch: the arms are not the sizes the assignment rule gives, so "
            "their comparison cannot be trusted; check the assignment and the event feed"
        ]
    return []


def _audience_text(record: CampaignRecord) -> str:
    """Return a campaign's audience in a few words."""
    audience = record.campaign.audience.model_dump()
    source = audience["source"]
    if source == "model":
        cut = (
            f"top {audience['top_share']:.0%}"
            if audience.get("top_share") is not None
            else f"deciles {audience['deciles']}"
        )
        return f"{audience['model']} {cut}"
    if source == "value_demand":
        return f"value {audience['value_tiers']} x demand {audience['demand_groups']}"
    return str(source)


def print_campaigns(records: list[CampaignRecord]) -> None:
    """Print every campaign: stage, version, priority, channel, audience, last change."""
    if not records:
        console.print("no campaigns yet; declare one with `fusion campaign create FILE`")
        return
    table = Table(title="Campaigns")
    for column in ("campaign", "stage", "v", "priority", "channel", "audience", "updated"):
        table.add_column(column)
    for record in records:
        campaign = record.campaign
        table.add_row(
            escape(record.campaign_id),
            record.stage,
            str(record.version),
            str(campaign.priority),
            campaign.channel.kind,
            escape(_audience_text(record)),
            f"{record.updated_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def print_campaign(record: CampaignRecord, history: list[Promotion]) -> None:
    """Print a campaign's stored declaration, its stage and its promotions with their checks."""
    console.print(
        f"campaign [bold]{escape(record.campaign_id)}[/]: stage [bold]{record.stage}[/], "
        f"version {record.version}; declared by {escape(record.created_by)} "
        f"{record.created_at:%Y-%m-%d %H:%M}, changed {record.updated_at:%Y-%m-%d %H:%M}"
    )
    console.print_json(data=record.campaign.model_dump(mode="json"))
    if not history:
        console.print("no promotion yet (a draft)")
        return
    console.print("stage history:")
    for step in history:
        console.print(
            f"  {step.promoted_at:%Y-%m-%d %H:%M} {escape(step.actor)}: {step.from_stage} -> "
            f"[bold]{step.to_stage}[/]"
        )
        for name, check in step.checks.items():
            passed = isinstance(check, dict) and check.get("passed")
            detail = check.get("detail", "") if isinstance(check, dict) else str(check)
            mark = "[green]ok[/]" if passed else "[red]failed[/]"
            console.print(f"    {mark} {escape(str(name))}: {escape(str(detail))}")
