"""The model report's value x demand matrix: customers and open rates by AUM tier and score decile.

The one table of the model report that cuts the base by customer attributes, so both grids go
through `fusion.reports.disclosure`: a cell of fewer than k customers, or one that the row,
column and grid totals would give back by subtraction, is withheld, and an open rate is withheld
unless its customers, openers and non-openers all number at least k.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib import colormaps
from matplotlib.ticker import PercentFormatter

from fusion.features import FeatureSet
from fusion.models.acquisition import LABEL
from fusion.reports.disclosure import rate_withheld, suppress_grid
from fusion.reports.html import Section, number_cell, row_header, suppressed_cell, table
from fusion.reports.plots import figure, finish, save
from fusion.training import TrainingRun

__all__ = ["Grid", "value_demand_section"]

FloatArray = npt.NDArray[np.float64]

_DEMAND_GROUPS = ("deciles 1-2", "deciles 3-4", "deciles 5-6", "deciles 7-8", "deciles 9-10")
# Value tiers by AUM quantile, highest first (the code cuts at the 80/60/40/20th percentiles).
_TIERS = ("V1 (top 20%)", "V2 (20-40%)", "V3 (40-60%)", "V4 (60-80%)", "V5 (bottom 20%)")


@dataclass(frozen=True)
class Grid:
    """One value x demand table: a number per (value tier, demand group), some withheld."""

    name: str  # file stem and table id
    title: str
    values: FloatArray  # (tiers, demand groups); NaN where withheld
    hidden: npt.NDArray[np.bool_]
    percent: bool
    colours: str  # matplotlib colour map
    note: str

    def text(self, i: int, j: int) -> str:
        return f"{self.values[i, j]:.1%}" if self.percent else f"{self.values[i, j]:,.0f}"

    def to_dict(self) -> dict[str, Any]:
        """Return the cells as nested lists, None where withheld, and how many are."""
        cells = (self.values if self.percent else self.values.astype(np.int64)).astype(object)
        cells[self.hidden] = None
        return {"cells": cells.tolist(), "suppressed": int(self.hidden.sum())}


def value_demand_section(
    run: TrainingRun, features: FeatureSet, scores: pl.DataFrame, out_dir: Path, k: int
) -> Section:
    """Return the value x demand section (and write its two heatmaps)."""
    grids, edges = _value_demand(run, features, scores, k)
    parts = [
        "<h2>Value x demand: where to start the call lists</h2>",
        "<p>Rows: customer value, the month-average assets under management (AUM) in five "
        "tiers of equal size (cut points rounded to two significant digits). Columns: predicted "
        "demand, the fused model's score decile grouped in pairs. Banks work the lists from the "
        "top-left cell (high value, high demand) outward; the open rates, measured on held-out "
        "customers, show whether the demand the model predicts is real in each tier.</p>",
        '<div class="pair">',
    ]
    for grid in grids:
        _heatmap(grid, out_dir / f"{grid.name}.png")
        parts.append(f'<img src="{grid.name}.png" alt="Heatmap: {html.escape(grid.title)}">')
    parts.append("</div>")
    parts += [_grid_table(grid, edges) for grid in grids]
    data = {
        "k": k,
        "value_tiers": list(_TIERS),
        "aum_cut_points": edges.tolist(),
        "demand_groups": list(_DEMAND_GROUPS),
        **{grid.name: grid.to_dict() for grid in grids},
    }
    return Section(parts, data)


def _value_demand(
    run: TrainingRun, features: FeatureSet, scores: pl.DataFrame, k: int
) -> tuple[list[Grid], FloatArray]:
    """Return the customer-count and open-rate grids of `scores`, k-anonymised, and the rounded
    AUM cut points between the value tiers (highest first)."""
    frame = scores.select("customer_id", "decile").join(
        features.table.select("customer_id", "aum_month_avg", LABEL), on="customer_id"
    )
    # No AUM on file means no assets with the bank: the lowest tier.
    aum = frame["aum_month_avg"].fill_null(0.0).to_numpy().astype(np.float64)
    shares = np.linspace(1, 0, len(_TIERS) + 1)[1:-1]  # 0.8, 0.6, 0.4, 0.2
    edges = np.quantile(aum, shares) if len(aum) else np.zeros(len(shares))
    tier = (aum[:, None] < edges[None, :]).sum(axis=1)
    demand = np.clip((frame["decile"].cast(pl.Int64).to_numpy() - 1) // 2, 0, 4)
    cell = tier * len(_DEMAND_GROUPS) + demand
    size, shape = len(_TIERS) * len(_DEMAND_GROUPS), (len(_TIERS), len(_DEMAND_GROUPS))
    counts = np.bincount(cell, minlength=size)
    test_ids = features.table["customer_id"].to_numpy()[run.acquisition["fused"].test_rows]
    held = frame["customer_id"].is_in(pl.Series(test_ids).implode()).to_numpy()
    opened = frame[LABEL].fill_null(False).cast(pl.Int64).to_numpy()
    held_n = np.bincount(cell[held], minlength=size)
    held_yes = np.bincount(cell[held], weights=opened[held], minlength=size).astype(np.int64)
    # Every row, column and the grid's total is (nearly) known: each value tier and each
    # decile pair is a fifth of the population, and the page prints the customers scored.
    count_hidden = suppress_grid(counts.reshape(shape), k=k).ravel()
    # A rate is a count in disguise: its openers and non-openers must reach k as well.
    rate_hidden = count_hidden | rate_withheld(held_yes, held_n, k=k)
    rates = np.divide(held_yes, held_n, out=np.full(size, np.nan), where=held_n > 0)
    grids = [
        Grid("value_demand_customers", "Customers not yet on mobile banking",
              counts.astype(np.float64).reshape(shape), count_hidden.reshape(shape), False,
              "Blues", f"{int(count_hidden.sum())} of {size} cells suppressed: fewer than k = "
              f"{k} customers, or part of a row, column or total whose withheld cells add up to "
              "under k."),
        Grid("value_demand_open_rate", "Observed open rate, held-out customers",
              rates.reshape(shape), rate_hidden.reshape(shape), True, "Greens",
              f"{int(rate_hidden.sum())} of {size} rates suppressed: fewer than k = {k} "
              "held-out customers, openers or non-openers in the cell."),
    ]  # fmt: skip
    return grids, np.array([_round_significant(e) for e in edges])


def _round_significant(value: float, digits: int = 2) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(round(value, digits - 1 - math.floor(math.log10(abs(value)))))


def _grid_table(grid: Grid, edges: FloatArray) -> str:
    why = "fewer than k customers behind the cell"
    rows = [
        [row_header(f"{tier}{_tier_range(edges, i)}")]
        + [
            suppressed_cell(why) if grid.hidden[i, j] else number_cell(grid.text(i, j))
            for j in range(len(_DEMAND_GROUPS))
        ]
        for i, tier in enumerate(_TIERS)
    ]
    head = f"<h3>{html.escape(grid.title)}</h3>"
    return head + table(["Value tier (AUM)", *_DEMAND_GROUPS], rows, name=grid.name, note=grid.note)


def _tier_range(edges: FloatArray, tier: int) -> str:
    if tier == 0:
        return f": ≥ {edges[0]:,.0f}"
    if tier == len(edges):
        return f": < {edges[-1]:,.0f}"
    return f": {edges[tier]:,.0f} – {edges[tier - 1]:,.0f}"


def _heatmap(grid: Grid, path: Path) -> None:
    """Draw a value x demand heatmap; a suppressed cell is blank grey and says so."""
    fig, ax = figure(6.4, 4.2)
    shown = np.ma.masked_array(np.nan_to_num(grid.values), mask=grid.hidden)
    colours = colormaps[grid.colours].with_extremes(bad="#eeeeee")
    image = ax.imshow(shown, cmap=colours, aspect="auto", vmin=0.0)
    top = float(shown.max()) if shown.count() else 0.0
    for (i, j), hidden in np.ndenumerate(grid.hidden):
        dark = not hidden and grid.values[i, j] > 0.6 * top
        ax.text(j, i, "suppressed" if hidden else grid.text(i, j), ha="center", va="center",
                fontsize=7 if hidden else 8,
                color="#888" if hidden else ("white" if dark else "#222"))  # fmt: skip
    ax.set_xticks(range(len(_DEMAND_GROUPS)), [g.replace("deciles ", "D") for g in _DEMAND_GROUPS])
    ax.set_yticks(range(len(_TIERS)), list(_TIERS))
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    if grid.percent:
        bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    finish(ax, grid.title, "Predicted demand (fused score decile, 1 = highest)", "Customer value")
    ax.grid(visible=False)
    save(fig, path)
