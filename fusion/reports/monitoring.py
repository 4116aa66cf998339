"""The monitoring report of one snapshot: HTML with PNG plots, the same numbers as Parquet.

monitoring.html      verdict, score PSI per model, the columns that moved most (CSI), the
                     vendor's batch against the previous one, realised performance
scores.png, features.png, vendor.png
stability.parquet    one row per model score and input column: PSI / CSI, status
bins.parquet         the shares of every bin, training and now; a share whose customer
                     count is under k is withheld (`fusion.reports.disclosure`)
vendor.parquet, realised.parquet, monitoring.json (the summary)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fusion.monitoring import Stability, Status
from fusion.monitoring_checks import MonitoringResult
from fusion.reports import plots
from fusion.reports.disclosure import DEFAULT_K, withhold
from fusion.reports.html import (
    Column,
    document,
    fixed3,
    headline,
    percent,
    records_table,
)
from matcher.atomic import atomic_path, write_atomic

__all__ = ["TOP_FEATURES", "bin_shares", "write_monitoring_report"]

TOP_FEATURES = 20  # columns listed (and plotted) per report, the largest CSI first
_COLOURS = {Status.OK: "#55a868", Status.WARN: "#dd8452", Status.ALERT: "#c44e52"}


def _shares(counts: Sequence[int], k: int) -> list[float | None]:
    """Return each bin's share of the total, None where its count (or a complement) is under k."""
    values = np.asarray(counts, dtype=np.int64)
    hidden = withhold(values, [(None, tuple(range(values.size)))], k=k)
    total = max(int(values.sum()), 1)
    return [None if h else int(v) / total for v, h in zip(values, hidden, strict=True)]


def bin_shares(stability: Sequence[Stability], *, k: int = DEFAULT_K) -> pl.DataFrame:
    """Return one row per bin of every check: training and current share (small cells withheld)."""
    rows = []
    for s in stability:
        expected, actual = _shares(s.expected, k), _shares(s.actual, k)
        for i, label in enumerate(s.labels):
            rows.append(
                {
                    "model": s.model,
                    "kind": s.kind,
                    "name": s.name,
                    "bin": i,
                    "label": label,
                    "training_share": expected[i],
                    "current_share": actual[i],
                }
            )
    return pl.DataFrame(
        rows,
        schema={
            "model": pl.String,
            "kind": pl.String,
            "name": pl.String,
            "bin": pl.Int32,
            "label": pl.String,
            "training_share": pl.Float64,
            "current_share": pl.Float64,
        },
    )


# Parquet columns of each check: column -> (attribute of the check, type).
_STABILITY = {
    "model": ("model", pl.String),
    "version": ("version", pl.String),
    "kind": ("kind", pl.String),
    "name": ("name", pl.String),
    "index": ("index", pl.Float64),
    "status": ("status", pl.String),
    "customers": ("rows", pl.Int64),
}
_VENDOR = {
    "metric": ("metric", pl.String),
    "before": ("before", pl.Float64),
    "after": ("after", pl.Float64),
    "change": ("change", pl.Float64),
    "status": ("status", pl.String),
    "compared": ("detail", pl.String),
}
_REALISED = {
    "campaign": ("campaign", pl.String),
    "model": ("model", pl.String),
    "event": ("event", pl.String),
    "control": ("control", pl.Int64),
    "observed": ("observed", pl.Int64),
    "expected": ("expected", pl.Float64),
    "ratio": ("ratio", pl.Float64),
    "p_value": ("p_value", pl.Float64),
    "status": ("status", pl.String),
}


def _frame(items: Sequence[object], columns: Mapping[str, tuple[str, Any]]) -> pl.DataFrame:
    """Return one row per check with `columns` (a Status as its text)."""

    def plain(value: object) -> object:
        return value.value if isinstance(value, Status) else value

    rows = [{c: plain(getattr(item, a)) for c, (a, _) in columns.items()} for item in items]
    return pl.DataFrame(rows, schema={c: dtype for c, (_, dtype) in columns.items()})


def _plot_scores(result: MonitoringResult, bins: pl.DataFrame, out: Path) -> Path:
    scores = [s for s in result.stability if s.kind == "score"]
    fig, ax = plots.figure(7.0, 4.2)
    width = 0.8 / max(2 * len(scores), 1)
    for j, s in enumerate(scores):
        part = bins.filter((pl.col("model") == s.model) & (pl.col("kind") == "score"))
        x = np.arange(part.height)
        for i, (column, style) in enumerate((("training_share", "//"), ("current_share", ""))):
            y = part[column].fill_null(0.0).to_numpy()
            ax.bar(
                x + (2 * j + i) * width,
                y,
                width,
                hatch=style,
                color=_COLOURS[s.status],
                edgecolor="#333",
                linewidth=0.4,
                label=f"{s.model} {'training' if i == 0 else 'now'} (PSI {s.index:.3f})",
            )
    ax.legend(fontsize=7)
    plots.finish(
        ax, "Score bins: training and now", "bin (training deciles; last: missing)", "share"
    )
    return plots.save(fig, out / "scores.png")


def _plot_features(top: Sequence[Stability], result: MonitoringResult, out: Path) -> Path:
    fig, ax = plots.figure(7.0, max(2.5, 0.25 * len(top) + 1))
    labels = [f"{s.model}: {s.name}" for s in top][::-1]
    values = [s.index for s in top][::-1]
    ax.barh(labels, values, color=[_COLOURS[s.status] for s in top][::-1])
    for threshold in (result.settings.psi_warn, result.settings.psi_alert):
        ax.axvline(threshold, color="#555", linestyle="--", linewidth=0.8)
    plots.finish(ax, "Input columns that moved most (CSI)", "CSI", "")
    return plots.save(fig, out / "features.png")


def _plot_vendor(result: MonitoringResult, out: Path) -> Path | None:
    shown = [d for d in result.vendor if d.metric.startswith("penetration: ")]
    if not shown:
        return None
    fig, ax = plots.figure(7.0, 4.2)
    x = np.arange(len(shown))
    ax.bar(x - 0.2, [d.before or 0.0 for d in shown], 0.4, color="#8c8c8c", label="before")
    ax.bar(x + 0.2, [d.after or 0.0 for d in shown], 0.4, color="#4c72b0", label="now")
    ax.set_xticks(x, [d.metric.removeprefix("penetration: ") for d in shown], rotation=90)
    ax.legend(fontsize=7)
    plots.finish(ax, "App category penetration: previous batch and this one", "", "share of users")
    return plots.save(fig, out / "vendor.png")


_SCORE_COLUMNS = (
    Column("model", "model", numeric=False),
    Column("version", "version", numeric=False),
    Column("index", "PSI", fixed3),
    Column("status", "status", numeric=False),
)
_FEATURE_COLUMNS = (
    Column("model", "model", numeric=False),
    Column("name", "column", numeric=False),
    Column("index", "CSI", fixed3),
    Column("status", "status", numeric=False),
)
_VENDOR_COLUMNS = (
    Column("metric", "figure", numeric=False),
    Column("before", "before", percent),
    Column("after", "now", percent),
    Column("status", "status", numeric=False),
    Column("detail", "compared", numeric=False),
)
_REALISED_COLUMNS = (
    Column("campaign", "campaign", numeric=False),
    Column("model", "model", numeric=False),
    Column("observed", "control successes"),
    Column("expected", "expected from training", fixed3),
    Column("status", "status", numeric=False),
)


def _records(items: Sequence[object], keys: Sequence[str]) -> list[dict[str, object]]:
    """Return each item's attributes `keys` as a record (a Status as its text)."""
    return [{k: getattr(item, k) for k in keys} | _status(item) for item in items]


def _status(item: object) -> dict[str, object]:
    status = getattr(item, "status", None)
    return {"status": status.value} if isinstance(status, Status) else {}


def _body(result: MonitoringResult, top: Sequence[Stability], images: Sequence[Path]) -> list[str]:
    scores = [s for s in result.stability if s.kind == "score"]
    settings = result.settings
    features = len(result.stability) - len(scores)
    return [
        f'<p class="meta">snapshot {result.snapshot_date}, computed '
        f"{result.computed_at:%Y-%m-%d %H:%M} UTC; PSI / CSI warn at {settings.psi_warn}, "
        f"alert at {settings.psi_alert}</p>",
        '<div class="headline">',
        headline("verdict", result.status.value),
        headline("alerts", str(len(result.findings(Status.ALERT)))),
        headline("warnings", str(len(result.findings(Status.WARN)))),
        "</div>",
        "<h2>Scores</h2>",
        records_table(
            _records(scores, ("model", "version", "index")),
            _SCORE_COLUMNS,
            name="scores",
            note="Bins are the deciles of each model's scores on its training population.",
        ),
        *(f'<img src="{p.name}" alt="">' for p in images),
        "<h2>Input columns (CSI)</h2>",
        records_table(
            _records(top, ("model", "name", "index")),
            _FEATURE_COLUMNS,
            name="features",
            note=f"The {len(top)} largest of {features}; every one is in stability.parquet.",
        ),
        "<h2>Vendor batch</h2>",
        records_table(
            _records(result.vendor, ("metric", "before", "after", "detail")),
            _VENDOR_COLUMNS,
            name="vendor",
        ),
        "<h2>Realised performance</h2>",
        records_table(
            _records(result.realised, ("campaign", "model", "observed", "expected")),
            _REALISED_COLUMNS,
            name="realised",
            note="Controls of campaigns chosen from a scoring model's list, against the label "
            "rate of their deciles at training.",
        ),
    ]


def write_monitoring_report(result: MonitoringResult, out: Path, *, k: int = DEFAULT_K) -> Path:
    """Return the report page written to `out` with its plots, Parquet tables and JSON."""
    out.mkdir(parents=True, exist_ok=True)
    bins = bin_shares(result.stability, k=k)
    top = sorted((s for s in result.stability if s.kind == "feature"), key=lambda s: -s.index)[
        :TOP_FEATURES
    ]
    images = [_plot_scores(result, bins, out)]
    if top:
        images.append(_plot_features(top, result, out))
    vendor = _plot_vendor(result, out)
    if vendor is not None:
        images.append(vendor)
    tables = {
        "stability": _frame(result.stability, _STABILITY),
        "bins": bins,
        "vendor": _frame(result.vendor, _VENDOR),
        "realised": _frame(result.realised, _REALISED),
    }
    for name, frame in tables.items():
        with atomic_path(out / f"{name}.parquet") as tmp:
            frame.write_parquet(tmp)
    summary = json.dumps(result.summary(), indent=1, default=str)
    write_atomic(out / "monitoring.json", summary + "\n")
    page = out / "monitoring.html"
    title = f"Model monitoring, snapshot {result.snapshot_date}"
    write_atomic(page, document(title, _body(result, top, images)))
    return page
