"""The campaign readout page: one plain HTML page with PNG plots, from a k-anonymised Readout.

`campaign_page` turns a `fusion.campaigns.readout.Readout` into `readout.html` and its plots
(funnel per arm, success rate per arm with its Wilson interval, lift by decile with its Newcombe
interval). The numbers are the readout's own, already k-anonymised: a withheld cell reads
"suppressed" on the page and has no bar or point in the plots. No JavaScript, nothing fetched.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.ticker import PercentFormatter

from fusion.campaigns.statistics import json_ready
from fusion.models.proportions import wilson_interval
from fusion.reports.html import (
    count,
    document,
    fixed,
    fixed1,
    headline,
    is_finite,
    money,
    number_cell,
    percent,
    points,
    row_header,
    suppressed_cell,
    table,
    times,
)
from fusion.reports.plots import figure, finish, save
from matcher.atomic import write_atomic

if TYPE_CHECKING:  # the readout imports this module to write its page
    from fusion.campaigns.readout import Readout
    from fusion.campaigns.sequential import SequentialTest
    from fusion.campaigns.statistics import Comparison

__all__ = ["PAGE_FILE", "PLOT_FILES", "campaign_page", "long_frame"]

PAGE_FILE = "readout.html"
PLOT_FILES = {
    "funnel": "funnel.png",
    "success_rate": "success_rate.png",
    "lift_by_decile": "lift_by_decile.png",
}

_ARM_COLOURS = {"treatment": "#4c72b0", "control": "#dd8452"}
_FUNNEL_EVENTS = ("delivered", "contacted", "reached", "responded", "converted")
_SIDE_EVENTS = ("complained", "opted_out")
_GROUP_HEADERS = {
    "by_stage": ("Stage", "By stage"),
    "by_branch": ("Branch", "By branch"),
    "by_decile": ("Score decile", "By score decile (1 = best)"),
    "by_segment": ("Segment", "By segment"),
}


def campaign_page(readout: Readout, out_dir: Path) -> Path:
    """Return the path of `readout.html`, written under `out_dir` after its PNG plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _funnel_plot(readout, out_dir / PLOT_FILES["funnel"])
    _rate_plot(readout, out_dir / PLOT_FILES["success_rate"])
    _decile_plot(readout, out_dir / PLOT_FILES["lift_by_decile"])
    return write_atomic(out_dir / PAGE_FILE, _page(readout))


def long_frame(readout: Readout) -> pl.DataFrame:
    """Return arms, breakdowns and summary figures of the readout in one long table.

    Columns: table, group (the breakdown's group as text; null for arms and summary), arm
    (null for lift and summary figures), metric, value (Float64, null when withheld or not
    defined) and suppressed (whether k-anonymity withheld it).
    """
    parts = [_long(readout.arms, "arms", None)]
    parts += [_long(t, name, t.columns[0]) for name, t in readout.breakdowns.items()]
    parts.append(_summary_long(readout))
    return pl.concat(parts, how="vertical")


def _long(frame: pl.DataFrame, table: str, column: str | None) -> pl.DataFrame:
    """Return one wide table as long rows (table, group, arm, metric, value, suppressed)."""
    keys = ["arm"] if column is None else [column]
    metrics = [c for c in frame.columns if c not in (*keys, "suppressed_cells", "suppressed")]
    long = frame.with_columns(pl.col(metrics).cast(pl.Float64)).unpivot(
        index=[*keys, "suppressed_cells"], on=metrics, variable_name="metric"
    )
    arm_suffix = r"_(treatment|control)$"  # a breakdown's n_treatment: arm treatment, metric n
    return long.select(
        pl.lit(table).alias("table"),
        (pl.lit(None) if column is None else pl.col(column)).cast(pl.String).alias("group"),
        (pl.col("arm") if column is None else pl.col("metric").str.extract(arm_suffix))
        .cast(pl.String)
        .alias("arm"),
        pl.col("metric").str.replace(arm_suffix, "") if column else pl.col("metric"),
        "value",
        pl.col("suppressed_cells").list.contains(pl.col("metric")).alias("suppressed"),
    )


def _summary_long(readout: Readout) -> pl.DataFrame:
    """Return the comparison, A/B, money, power, sample-ratio, adjusted and sequential figures
    as long rows."""
    figures: dict[str, float | None] = {}
    for prefix, comparison in (("lift", readout.comparison), ("ab", readout.ab)):
        if comparison is not None:
            figures |= {f"{prefix}.{key}": v for key, v in comparison.to_dict().items()}
    figures |= {f"incremental.{key}": v for key, v in asdict(readout.incremental).items()}
    figures["ab.power"] = readout.power
    if readout.srm is not None:
        figures |= {f"sample_ratio.{key}": v for key, v in readout.srm.to_dict().items()}
    for adjusted in readout.adjusted:
        for name in ("unadjusted", "adjusted", "stratified"):
            if getattr(adjusted, name) is None:
                continue
            estimate = asdict(getattr(adjusted, name))
            prefix = f"adjusted.{adjusted.metric}.{name}"
            figures |= {f"{prefix}.{key}": v for key, v in estimate.items()}
        figures |= {
            f"adjusted.{adjusted.metric}.{key}": float(getattr(adjusted, key))
            for key in ("correlation", "variance_reduction", "interval_narrowing", "control_saved")
        }
    for scope, test in readout.sequential.items():
        figures[f"sequential.{scope}.p_value"] = test.p_value
    values = [json_ready(float(v)) if v is not None else None for v in figures.values()]
    frame = pl.DataFrame(
        {"metric": list(figures), "value": values},
        schema={"metric": pl.String, "value": pl.Float64},
    )
    return frame.select(
        pl.lit("summary").alias("table"),
        pl.lit(None, pl.String).alias("group"),
        pl.lit(None, pl.String).alias("arm"),
        "metric",
        "value",
        pl.lit(False).alias("suppressed"),
    )


# -- page -------------------------------------------------------------------------------------


def _page(readout: Readout) -> str:
    e = html.escape
    k = readout.k
    parts = [
        f'<p class="meta">Stages {e(", ".join(readout.stages))} &middot; success = '
        f"{e(readout.success_event)} &middot; alpha = {readout.alpha:g} &middot; k = {k} "
        f"&middot; {e(readout.analysis.replace('_', '-'))} analysis</p>",
        '<p class="privacy"><strong>Privacy.</strong> Every number on this page describes at '
        f"least k = {k} customers. A cell that counts fewer, or that could be worked out from "
        "other cells by subtraction, reads <em>suppressed</em> and has no bar in the plots; a "
        "figure computed from such a cell is withheld too. No customer is named or numbered in "
        "this report or in the files beside it.</p>",
        '<div class="headline">',
        *_headlines(readout),
        "</div>",
        f"<p><strong>{e(readout.horizon())}.</strong> "
        + (
            "The A/B test (pilot and ab stages) is judged at weekly looks by an always-valid "
            "test: it stops at the first look past its boundary.</p>"
            if readout.analysis == "sequential"
            else "The A/B test (pilot and ab stages) is judged once, when both arms reach the "
            "size its power calculation planned; a readout before then is interim and decides "
            "nothing.</p>"
        ),
        "<h2>Arms and funnel</h2>",
        f'<img src="{PLOT_FILES["funnel"]}" alt="Funnel: share of each arm reaching each step">',
        _arms_table(readout),
        f'<img src="{PLOT_FILES["success_rate"]}" alt="Success rate per arm with its interval">',
        "<h2>Lift and money</h2>",
        _lift_table(readout),
        "<h2>A/B test and sample ratio</h2>",
        _ab_table(readout),
        "<h2>Adjusted by what the bank knew before assignment</h2>",
        _adjusted_table(readout),
        "<h2>Early looks (always-valid test)</h2>",
        *(_looks_table(readout, test) for test in readout.sequential.values()),
    ]
    for name, frame in readout.breakdowns.items():
        header, title = _GROUP_HEADERS.get(name, (name, name))
        parts.append(f"<h2>{e(title)}</h2>")
        if name == "by_decile":
            parts.append(
                f'<img src="{PLOT_FILES["lift_by_decile"]}" alt="Lift by score decile with '
                'its interval">'
            )
        parts.append(_breakdown_table(frame, name, header, k))
    parts.append(_methods(readout))
    return document(f"Campaign readout: {readout.campaign}", parts)


def _interval(
    readout: Readout, low: float | None, high: float | None, fmt: Callable[[float], str]
) -> str:
    """Return "95% CI a to b" at the readout's level, or "CI n/a"."""
    if not (is_finite(low) and is_finite(high)):
        return "CI n/a"
    return f"{100 * (1 - readout.alpha):.0f}% CI {fmt(low)} to {fmt(high)}"


def _headlines(readout: Readout) -> list[str]:
    comparison = readout.comparison
    money_ = readout.incremental
    if comparison is None:
        lift = [
            headline("Relative lift (treatment / control)", "suppressed"),
            headline("Absolute lift", "suppressed"),
        ]
    else:
        lift = [
            headline(
                "Relative lift (treatment / control)",
                times(comparison.ratio),
                _interval(readout, comparison.ratio_ci_low, comparison.ratio_ci_high, times),
            ),
            headline(
                "Absolute lift",
                points(comparison.diff),
                _interval(readout, comparison.diff_ci_low, comparison.diff_ci_high, points),
            ),
        ]
    return [
        *lift,
        headline(
            f"Incremental {readout.success_event}",
            _or_suppressed(money_.successes, fixed1),
            _interval(readout, money_.successes_low, money_.successes_high, fixed1),
        ),
        headline(
            "ROI",
            _roi(readout),
            _interval(readout, money_.roi_low, money_.roi_high, percent),
        ),
        headline("Sample ratio", _srm_verdict(readout), _srm_detail(readout)),
        headline(
            "Power reached",
            "n/a" if readout.status == "not judged" else _or_suppressed(readout.power, percent),
            f"against +{100 * readout.minimum_detectable_effect:.1f} pp at alpha {readout.alpha:g}",
        ),
        headline("Decision", readout.decision or readout.status, _horizon_line(readout)),
    ]


def _horizon_line(readout: Readout) -> str:
    """Return the horizon under the decision, without repeating the decision itself."""
    text = readout.horizon()
    return text.removesuffix(f": {readout.decision}") if readout.decision else text


def _roi(readout: Readout) -> str:
    """Return the ROI; "n/a" when nothing was spent, "suppressed" when its inputs are."""
    money_ = readout.incremental
    if money_.roi is not None:
        return percent(money_.roi)
    return "n/a" if money_.cost == 0 else "suppressed"


def _or_suppressed(value: float | None, fmt: Callable[[float], str]) -> str:
    return "suppressed" if value is None else fmt(value)


def _srm_verdict(readout: Readout) -> str:
    if readout.srm_mismatch is None:
        return "n/a"
    return "MISMATCH" if readout.srm_mismatch else "OK"


def _srm_detail(readout: Readout) -> str:
    srm = readout.srm
    if srm is None:
        return "figures withheld (a stage's arm sizes are suppressed)"
    return (
        f"treatment {srm.n_treatment:,} / control {srm.n_control:,}; control share expected "
        f"{srm.expected_control_share:.1%}, p = {srm.p_value:.3g}"
    )


def _cell(row: dict[str, Any], column: str, fmt: Callable[[Any], str], why: str) -> str:
    """Return the cell of row[column]: suppressed, n/a or the formatted number."""
    if column in (row.get("suppressed_cells") or ()):
        return suppressed_cell(why)
    value = row[column]
    return number_cell("n/a" if value is None else fmt(value))


def _why(k: int) -> str:
    return f"fewer than {k} customers, or recoverable by subtraction from such a cell"


def _note(frame: pl.DataFrame, cells: int, k: int) -> str:
    withheld = int(frame["suppressed_cells"].list.len().sum()) if frame.height else 0
    if not withheld:
        return f"No cell suppressed: every cell describes at least k = {k} customers."
    return f"{withheld} of {cells} cells suppressed ({_why(k)}; k = {k})."


def _arms_table(readout: Readout) -> str:
    frame = readout.arms
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("n", "Customers", count),
        *((e, e.replace("_", " ").capitalize(), count) for e in (*_FUNNEL_EVENTS, *_SIDE_EVENTS)),
        ("contact_rate", "Contact rate", percent),
        ("reach_rate", "Reach rate", percent),
        ("response_rate", "Response rate", percent),
        ("conversion_rate", "Conversion rate", percent),
        ("success_rate", "Success rate", percent),
        ("amount", "Converted amount", money),
    ]
    why = _why(readout.k)
    rows = [
        [row_header(row["arm"]), *(_cell(row, c, f, why) for c, _, f in columns)]
        for row in frame.iter_rows(named=True)
    ]
    note = (
        "Customers with each event (counted once however often it was reported); rates are of "
        "the arm's customers. " + _note(frame, frame.height * len(columns), readout.k)
    )
    return table(["Arm", *(h for _, h, _ in columns)], rows, name="arms", note=note)


@dataclass(frozen=True)
class _Line:
    label: str
    value: str
    interval: str = ""


def _lift_table(readout: Readout) -> str:
    c = readout.comparison
    m = readout.incremental
    lines = _comparison_lines(readout, c, "Pooled over the stages in scope")
    lines += [
        _Line(
            f"Incremental {readout.success_event}",
            _or_suppressed(m.successes, fixed1),
            _interval(readout, m.successes_low, m.successes_high, fixed1),
        ),
        _Line(
            f"Incremental value (x {readout.value_per_success:,.2f})",
            _or_suppressed(m.value, money),
            _interval(readout, m.value_low, m.value_high, money),
        ),
        _Line("Incremental converted amount (reported amounts)", _or_na(m.amount, money)),
        _Line(
            f"Cost (delivered contacts x {readout.cost_per_contact:,.2f})",
            _or_suppressed(m.cost, money),
        ),
        _Line(
            "ROI = (value - cost) / cost",
            _roi(readout),
            _interval(readout, m.roi_low, m.roi_high, percent),
        ),
    ]
    return _lines_table(lines, "lift")


def _or_na(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a" if value is None else fmt(value)


def _comparison_lines(readout: Readout, c: Comparison | None, scope: str) -> list[_Line]:
    if c is None:
        return [_Line(f"{scope}: lift", "suppressed")]
    return [
        _Line(f"{scope}: success rate treatment", percent(c.rate_t)),
        _Line(f"{scope}: success rate control", percent(c.rate_c)),
        _Line(
            f"{scope}: absolute lift",
            points(c.diff),
            _interval(readout, c.diff_ci_low, c.diff_ci_high, points),
        ),
        _Line(
            f"{scope}: relative lift",
            times(c.ratio),
            _interval(readout, c.ratio_ci_low, c.ratio_ci_high, times),
        ),
        _Line(f"{scope}: p-value (pooled z-test)", fixed(c.p_value, 4)),
    ]


def _ab_table(readout: Readout) -> str:
    planned = readout.planned
    lines = [
        _Line(
            "Planned size",
            f"{planned.treatment:,} treated, {planned.control:,} control",
        ),
        _Line("Status", readout.status),
        _Line("Decision", readout.decision or "none yet"),
    ]
    ab = readout.ab
    if ab is not None:
        lines.append(_Line("Reached", f"{ab.n_t:,} treated, {ab.n_c:,} control"))
    lines += _comparison_lines(readout, ab, "A/B test (pilot + ab)")
    lines += [
        _Line("Power reached", _or_suppressed(readout.power, percent)),
        _Line("Sample ratio", _srm_verdict(readout), _srm_detail(readout)),
    ]
    return _lines_table(lines, "ab")


def _adjusted_table(readout: Readout) -> str:
    """Return each metric unadjusted, CUPED and stratified, with what the covariate bought."""
    if not readout.adjusted:
        return (
            '<p class="note">No adjusted figure: no covariate fixed before assignment is known '
            "for these customers (score the base first), or an arm is withheld under k.</p>"
        )
    rows = []
    for a in readout.adjusted:
        fmt = points if a.kind == "rate" else money
        level = percent if a.kind == "rate" else money
        rows.append(
            [
                row_header(f"{a.metric} (by {a.covariate})"),
                number_cell(f"{level(a.mean_treatment)} vs {level(a.mean_control)}"),
                *(number_cell("n/a" if e is None else
                              f"{fmt(e.estimate)} ({fmt(e.ci_low)} to {fmt(e.ci_high)})")
                  for e in (a.unadjusted, a.adjusted, a.stratified)),
                number_cell(fixed(a.correlation, 3)),
                number_cell(percent(a.variance_reduction)),
                number_cell(percent(a.interval_narrowing)),
                number_cell(count(a.control_saved)),
                number_cell(a.verdict()),
            ]
        )  # fmt: skip
    headers = ["Metric", "Mean treated vs control", "Unadjusted", "Adjusted (CUPED)",
               "Stratified CUPED",
               "rho", "Variance reduction", "Interval narrower by", "Control saved",
               "Verdict"]  # fmt: skip
    note = (
        "Success is adjusted by the propensity score (CUPAC), an amount metric by its own "
        "pre-period (CUPED): theta pooled within arms, the difference of adjusted means equal "
        "to the arm's OLS coefficient in outcome ~ arm + covariate, HC2 standard errors. "
        "Variance reduction = 1 - var(adjusted) / var(unadjusted), about rho squared; control "
        "saved = that share of the control, which the same precision would not have needed. "
        "Stratified: the same within stage x branch x decile strata, each weighted by its size "
        "(so stages of different control shares count as the customers they hold; strata "
        "short of 10 customers in an arm pooled within their stage)."
    )
    return table(headers, rows, name="adjusted", note=note)


def _looks_table(readout: Readout, test: SequentialTest) -> str:
    """Return one experiment's looks: data, estimate, boundary and always-valid p-value."""
    rows = [
        [
            row_header(f"look {look.number}"),
            number_cell(look.at.date().isoformat()),
            number_cell(f"{look.n_treatment:,} / {look.n_control:,}"),
            number_cell(points(look.estimate)),
            number_cell(fixed(look.z, 2)),
            number_cell(f"{fixed(look.boundary_z, 2)} ({points(look.boundary).lstrip('+')})"),
            number_cell(fixed(look.p_value, 4)),
            number_cell(_crossing(test, look.number)),
        ]
        for look in test.looks
    ]
    scope = "A/B test (pilot + ab)" if test.scope == "ab" else "full launch"
    note = (
        f"{scope}: {test.summary()}. mSPRT with a normal mixture of "
        f"standard deviation tau = {points(test.tau)} (the declared minimum detectable effect), "
        f"a look every 7 days, on the {'adjusted' if test.adjusted else 'unadjusted'} "
        "difference; its always-valid p-value may be read at every look without raising the "
        f"error rate above alpha = {readout.alpha:g}."
    )
    headers = ["Look", "Date", "Treated / control", "Lift", "z", "Boundary |z| (lift)",
               "Always-valid p", ""]  # fmt: skip
    return table(headers, rows, name=f"looks_{test.scope}", note=note)


def _crossing(test: SequentialTest, number: int) -> str:
    """Return "crossed: stop" at the first look past the boundary, "after the stop" later."""
    first = test.crossed_at
    if first is None or number < first.number:
        return ""
    return "crossed: stop" if number == first.number else "after the stop"


def _lines_table(lines: Sequence[_Line], name: str) -> str:
    rows = [
        [
            row_header(line.label),
            suppressed_cell("withheld: computed from a suppressed count")
            if line.value == "suppressed"
            else number_cell(line.value),
            number_cell(line.interval),
        ]
        for line in lines
    ]
    return table(["", "Value", "Interval"], rows, name=name)


def _group_label(name: str, value: object) -> str:
    if value is None:
        return {"by_decile": "no score", "by_segment": "none"}.get(name, "unknown")
    return f"decile {value}" if name == "by_decile" else str(value)


def _breakdown_table(frame: pl.DataFrame, name: str, header: str, k: int) -> str:
    column = frame.columns[0]
    columns: list[tuple[str, str, Callable[[Any], str]]] = [
        ("n_treatment", "Treated", count),
        ("successes_treatment", "Successes", count),
        ("rate_treatment", "Rate", percent),
        ("n_control", "Control", count),
        ("successes_control", "Successes", count),
        ("rate_control", "Rate", percent),
        ("lift", "Lift", points),
    ]
    why = _why(k)
    rows = []
    for row in frame.iter_rows(named=True):
        cells = [_cell(row, c, f, why) for c, _, f in columns]
        if "lift_low" in row["suppressed_cells"]:
            cells.append(suppressed_cell(why))
        elif is_finite(row["lift_low"]) and is_finite(row["lift_high"]):
            cells.append(number_cell(f"{points(row['lift_low'])} to {points(row['lift_high'])}"))
        else:
            cells.append(number_cell("n/a"))
        rows.append([row_header(_group_label(name, row[column])), *cells])
    headers = [header, *(h for _, h, _ in columns), "Lift CI (Newcombe)"]
    return table(headers, rows, name=name, note=_note(frame, frame.height * 8, k))


def _methods(readout: Readout) -> str:
    return (
        '<h2>Methods</h2><p class="note">Success is a customer with a '
        f"<code>{html.escape(readout.success_event)}</code> event at or after assignment. "
        "Absolute lift: difference of success rates with Newcombe's hybrid score interval; "
        "relative lift: ratio with Katz's log interval; p-value: pooled two-sided z-test. "
        "Incremental successes = lift x treated customers; value = that x the declared value "
        "per success; ROI = (value - cost) / cost. Sample ratio: chi-square goodness of fit of "
        "the arm sizes against the split the assignment rule gives, a mismatch below p = "
        "0.001. Power: normal approximation on Cohen's h at the declared minimum detectable "
        "effect. Whitelist customers never count. Adjusted figures (CUPED / CUPAC, Deng et al. "
        "2013) and the always-valid looks (mSPRT, Johari et al. 2017): see their tables' "
        "notes.</p>"
    )


# -- plots ------------------------------------------------------------------------------------


def _suppressed_label(ax: Axes, x: float) -> None:
    ax.text(x, 0.0, "suppressed", rotation=90, ha="center", va="bottom", fontsize=7, color="#888")


def _funnel_plot(readout: Readout, path: Path) -> None:
    """Draw each arm's share reaching each funnel step; a suppressed step gets a label."""
    events = (*_FUNNEL_EVENTS, *_SIDE_EVENTS)
    fig, ax = figure(8.0, 4.2)
    positions = np.arange(len(events))
    for offset, arm in ((-0.2, "treatment"), (0.2, "control")):
        row = readout.arms.filter(pl.col("arm") == arm).row(0, named=True)
        shares = [row[e] / row["n"] if row[e] is not None and row["n"] else None for e in events]
        ax.bar(
            positions + offset,
            [s or 0.0 for s in shares],
            width=0.4,
            color=_ARM_COLOURS[arm],
            label=arm,
        )
        for x, share in zip(positions + offset, shares, strict=True):
            if share is None:
                _suppressed_label(ax, x)
    ax.set_xticks(positions, [e.replace("_", " ") for e in events])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    finish(ax, "Funnel: customers of the arm with each event", "", "share of the arm")
    save(fig, path)


def _rate_plot(readout: Readout, path: Path) -> None:
    """Draw each arm's success rate with its Wilson interval; a suppressed rate gets a label."""
    fig, ax = figure(5.0, 3.6)
    for x, arm in enumerate(("treatment", "control")):
        row = readout.arms.filter(pl.col("arm") == arm).row(0, named=True)
        successes, n = row[readout.success_event], row["n"]
        if successes is None or not n:
            _suppressed_label(ax, x)
            continue
        low, high = wilson_interval(successes, n, alpha=readout.alpha)
        rate = successes / n
        ax.bar(x, rate, width=0.6, color=_ARM_COLOURS[arm])
        error = [[rate - float(low)], [float(high) - rate]]
        ax.errorbar(x, rate, yerr=error, color="#222", capsize=6)
    ax.set_xticks([0, 1], ["treatment", "control"])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    finish(
        ax,
        f"Success rate ({readout.success_event}) with {100 * (1 - readout.alpha):.0f}% "
        "Wilson interval",
        "",
        "customers with a success",
    )
    save(fig, path)


def _decile_plot(readout: Readout, path: Path) -> None:
    """Draw the lift of each score decile with its interval; a suppressed decile gets a label."""
    frame = readout.breakdowns.get("by_decile")
    fig, ax = figure(7.0, 3.8)
    if frame is not None and frame.height:
        labels = [_group_label("by_decile", v) for v in frame["decile"].to_list()]
        for x, row in enumerate(frame.iter_rows(named=True)):
            lift, low, high = row["lift"], row["lift_low"], row["lift_high"]
            if not (is_finite(lift) and is_finite(low) and is_finite(high)):
                _suppressed_label(ax, x)
                continue
            error = [[lift - low], [high - lift]]
            ax.errorbar(x, lift, yerr=error, fmt="o", color=_ARM_COLOURS["treatment"], capsize=4)
        ax.set_xticks(range(len(labels)), labels, rotation=30)
        ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.axhline(0.0, color="#333", linewidth=1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    finish(ax, "Lift by score decile (treatment - control)", "", "difference of success rates")
    save(fig, path)
