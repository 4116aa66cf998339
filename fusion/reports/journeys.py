"""The journey readout page: one plain HTML page with the funnel plot, from a k-anonymised
`fusion.journeys.readout.JourneyReadout` (withheld cells read "suppressed", no bar is drawn).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.journeys import MILESTONES
from fusion.reports.html import (
    count,
    document,
    headline,
    number_cell,
    percent,
    points,
    row_header,
    suppressed_cell,
    table,
    text_cell,
)
from fusion.reports.plots import figure, finish, save
from matcher.atomic import write_atomic

if TYPE_CHECKING:  # the readout imports this module to write its page
    from fusion.journeys.readout import JourneyReadout

__all__ = ["FUNNEL_FILE", "PAGE_FILE", "funnel_plot", "journey_page"]

PAGE_FILE = "readout.html"
FUNNEL_FILE = "funnel.png"
_COLOURS = {"treatment": "#4c72b0", "control": "#dd8452"}


def journey_page(result: JourneyReadout, out_dir: Path) -> Path:
    """Return the path of `readout.html` under `out_dir`, written after `funnel.png` and
    `readout.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    funnel_plot(result, out_dir / FUNNEL_FILE)
    write_atomic(out_dir / "readout.json", json.dumps(result.to_dict(), indent=2, default=str))
    return write_atomic(out_dir / PAGE_FILE, _page(result))


def funnel_plot(result: JourneyReadout, path: Path) -> Path:
    """Return `path`, a PNG of the share of each arm reaching each milestone."""
    fig, ax = figure(7.5, 4.2)
    x = np.arange(len(MILESTONES))
    for offset, row in zip((-0.2, 0.2), result.funnel.to_dicts(), strict=True):
        n = row["customers"]
        shares = [row[m] / n if n and row[m] is not None else np.nan for m in MILESTONES]
        ax.bar(x + offset, shares, width=0.4, label=row["arm"], color=_COLOURS[row["arm"]])
    ax.set_xticks(x, [m.replace("_", " ") for m in MILESTONES])
    ax.legend(fontsize=8)
    finish(
        ax,
        f"{result.strategy_id}: milestones reached by {result.as_of}",
        "milestone",
        "share of the arm's customers",
    )
    return save(fig, path)


def _cell(value: Any, fmt: Any) -> str:
    if value is None:
        return suppressed_cell("fewer than k customers, or it would expose such a cell")
    return number_cell(fmt(value))


def _points_interval(low: float, high: float) -> str:
    return f"{points(low)} to {points(high)}"


def _comparisons_table(result: JourneyReadout) -> str:
    """Return the treatment-against-control table: one row a metric, withheld under k."""
    return table(
        ["metric", "treatment", "control", "difference", "95% CI (Newcombe)", "p"],
        [
            [
                row_header(m),
                *(
                    [
                        number_cell(percent(c.rate_t)),
                        number_cell(percent(c.rate_c)),
                        number_cell(points(c.diff)),
                        number_cell(_points_interval(c.diff_ci_low, c.diff_ci_high)),
                        number_cell(f"{c.p_value:.3g}"),
                    ]
                    if c
                    else [suppressed_cell("under k")] * 5
                ),
            ]
            for m, c in result.comparisons.items()
        ],
        name="comparisons",
    )


def _page(result: JourneyReadout) -> str:
    goal = result.comparisons.get("goal")
    heads = [headline("stage", result.stage), headline("goal", result.goal.replace("_", " "))]
    if goal is not None:
        heads.append(
            headline(
                "goal lift (95% CI)",
                points(goal.diff),
                _points_interval(goal.diff_ci_low, goal.diff_ci_high),
            )
        )
    arm_cols = (
        "customers",
        "goal_rate",
        "exposed_rate",
        "clicked_rate",
        "opted_out_rate",
        "converted_rate",
        "retention_rate",
    )
    arms = table(
        ["arm", *arm_cols],
        [
            [
                row_header(r["arm"]),
                *(_cell(r[c], count if c == "customers" else percent) for c in arm_cols),
            ]
            for r in result.arms.to_dicts()
        ],
        name="arms",
        note=f"as of {result.as_of}; counts under k = {result.k} are withheld",
    )
    compared = _comparisons_table(result)
    node_cols = ("visitors", "touched", "exposed", "clicked", "goal", "goal_rate")
    nodes = table(
        ["node", "kind", "arm", *node_cols],
        [
            [
                row_header(r["node_id"]),
                text_cell(r["kind"]),
                text_cell(r["arm"]),
                *(_cell(r[c], percent if c == "goal_rate" else count) for c in node_cols),
            ]
            for r in result.nodes.to_dicts()
        ],
        name="nodes",
    )
    body = [
        '<div class="headline">',
        *heads,
        "</div>",
        "<h2>Arms</h2>",
        arms,
        "<h2>Treatment against control</h2>",
        compared,
        "<h2>Funnel</h2>",
        f'<img src="{FUNNEL_FILE}" alt="milestones reached per arm">',
        "<h2>Nodes</h2>",
        nodes,
    ]
    return document(f"Journey readout: {result.strategy_id}", body)
