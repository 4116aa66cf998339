"""The match report: one plain HTML page with PNG plots, and the same numbers as Parquet.

`write_match_report` turns a `fusion.reports.coverage.CoverageReport` into files a marketer can open
from a shared folder: no JavaScript, no web fonts, nothing fetched. The numbers are the
report's own, already k-anonymised: a withheld cell reads "suppressed" on the page, is null in
the Parquet files and has no bar in the plots, and every table says how many of its cells were
withheld and why.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from fusion.reports.coverage import CoverageReport
from fusion.reports.html import (
    document,
    headline,
    number_cell,
    percent,
    row_header,
    suppressed_cell,
    table,
)
from fusion.reports.plots import figure, save
from matcher.atomic import write_atomic

__all__ = ["REPORT_FILE", "write_match_report"]

REPORT_FILE = "match_report.html"

_REGISTERED_COLOUR = "#4c72b0"
_UNREGISTERED_COLOUR = "#dd8452"
_COVERAGE_COLOUR = "#55a868"

_COUNT_HEADERS = {
    "customers": "Customers",
    "keyed": "Usable key",
    "invalid": "Invalid identifiers",
    "duplicated": "Shared identifiers",
    "matched": "Matched",
    "coverage": "Coverage",
    "keyed_coverage": "Coverage of usable",
}
_IDENTIFIER_HEADERS = {
    "keyed": "Usable key",
    "linked": "Held by the vendor",
    "matched": "Matched: added",
    "conflicts": "Conflicts",
    "gain": "Gain (of customers)",
}
_IDENTIFIER_NAMES = {"mobile": "Mobile number", "id_number": "ID number", "device_id": "Device id"}
_PENETRATION_HEADERS = {
    "name": "App category",
    "registered_matched": "Registered: matched",
    "registered_users": "Registered: users",
    "registered_share": "Registered: share",
    "unregistered_matched": "Not registered: matched",
    "unregistered_users": "Not registered: users",
    "unregistered_share": "Not registered: share",
    "ratio": "Ratio not reg. / reg.",
}
_SHARES = {"coverage", "keyed_coverage", "registered_share", "unregistered_share", "gain"}

# (table, group column, section title, group column header, plot file)
_BREAKDOWNS = (
    ("by_branch", "branch_id", "Coverage by branch", "Branch", "coverage_by_branch.png"),
    ("by_age_band", "age_band", "Coverage by age band", "Age band", "coverage_by_age_band.png"),
    ("by_level", "customer_level", "Coverage by customer level", "Level", "coverage_by_level.png"),
    (
        "by_registration",
        "mb_registered",
        "Coverage by mobile-banking registration",
        "Mobile banking",
        "coverage_by_registration.png",
    ),
)
_PENETRATION_PLOT = "penetration_by_category.png"


def write_match_report(report: CoverageReport, out_dir: Path) -> Path:
    """Return the path of `match_report.html`, written under `out_dir` with its PNGs and Parquet.

    Args:
        report: k-anonymised tables from `fusion.reports.coverage.coverage_report`.
        out_dir: folder for the page, one PNG per plot and one `<table>.parquet` per table
            (created if missing; files of an earlier report there are replaced).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet = report.to_parquet(out_dir)
    for name, column, title, _, plot in _BREAKDOWNS:
        _coverage_plot(report, getattr(report, name), column, title, out_dir / plot)
    penetration = _by_ratio(report.penetration)
    _penetration_plot(report, penetration, out_dir / _PENETRATION_PLOT)

    page = _page(report, penetration, [path.name for path in parquet.values()])
    # The page appears last and whole: its plots are already there.
    return write_atomic(out_dir / REPORT_FILE, page)


# -- page -------------------------------------------------------------------------------------


def _page(report: CoverageReport, penetration: pl.DataFrame, parquet: Sequence[str]) -> str:
    e = html.escape
    k = report.k
    overall = report.overall.row(0, named=True)
    title = f"Vendor match report, snapshot {report.snapshot_date.isoformat()}"
    parts = [
        f'<p class="meta">Salt epoch {e(report.salt_epoch)} &middot; match run '
        f"{e(report.run_id)} finished {e(report.matched_at.isoformat(sep=' ', timespec='minutes'))}"
        f" UTC &middot; k = {k}</p>",
        '<p class="privacy"><strong>Privacy.</strong> Every number on this page describes at '
        f"least k = {k} customers. A cell that counts fewer customers, or that could be worked "
        "out from other cells by subtraction, reads <em>suppressed</em>, is empty in the "
        "Parquet files and has no bar in the plots. No phone number, ID number or match key is "
        "in this report or in the files beside it.</p>",
        '<div class="headline">',
        _headline("Customers", overall["customers"], None),
        _headline("Matched at the vendor", overall["matched"], overall["coverage"]),
        _headline("Usable key", overall["keyed"], None),
        _headline("Invalid identifiers", overall["invalid"], None),
        _headline("Shared identifiers", overall["duplicated"], None),
        "</div>",
        "<p>Coverage is matched / customers; coverage of usable is matched / customers with a "
        "usable key: an identifier of the match (phone, ID number, device id) that is valid and "
        "not shared with another customer; only those can match. A customer with none is "
        "counted by its first identifier's reason (invalid or shared).</p>",
        "<h2>All customers</h2>",
        _table(report.overall, None, "", "overall", k),
        "<h2>What each identifier added</h2>",
        "<p>Identifiers in the match's priority order, highest first. A customer is matched by "
        "the first identifier that links it to a vendor user neither matched yet; "
        "<em>matched: added</em> counts the customers an identifier matched beyond those before "
        "it, and the gain is their share of all customers. A conflict is a link the identifier "
        "made that a match of higher priority overruled (one customer, one vendor user).</p>",
        _table(report.by_identifier, "id_type", "Identifier", "by_identifier", k),
    ]
    for name, column, section, header, plot in _BREAKDOWNS:
        parts += [
            f"<h2>{e(section)}</h2>",
            f'<img src="{plot}" alt="{e(section)}: bar chart of coverage per group">',
            _table(getattr(report, name), column, header, name, k),
        ]
    parts += [
        "<h2>App use of matched customers: registered on mobile banking vs not</h2>",
        "<p>Share of matched customers who used at least one app of the category in the last "
        "30 days, for customers already registered on mobile banking and for those not yet "
        "registered. The ratio (not registered / registered) above 1 marks categories where the "
        "customers a mobile-banking campaign targets over-index: candidates for a partner "
        "offer. Sorted by ratio.</p>",
        f'<img src="{_PENETRATION_PLOT}" alt="Bar chart of app category use, registered vs '
        'not registered">',
        _table(penetration, "name", _PENETRATION_HEADERS["name"], "penetration", k),
        "<h2>Files</h2>",
        "<p>The same numbers as Parquet (suppressed cells are null; the columns "
        "<code>suppressed</code> and <code>suppressed_cells</code> say which):</p><ul>",
        *(f"<li><code>{e(name)}</code></li>" for name in parquet),
        "</ul>",
    ]
    return document(title, parts)


def _headline(label: str, count: int | None, share: float | None) -> str:
    value = "suppressed" if count is None else f"{count:,}"
    extra = f" ({share:.1%})" if share is not None else ""
    return headline(label, value + extra)


def _table(frame: pl.DataFrame, column: str | None, header: str, name: str, k: int) -> str:
    """Return one HTML table with a note on its suppressed cells."""
    headers = {"penetration": _PENETRATION_HEADERS, "by_identifier": _IDENTIFIER_HEADERS}.get(
        name, _COUNT_HEADERS
    )
    cells = [c for c in headers if c in frame.columns and c != column]
    why = f"fewer than {k} customers, or recoverable by subtraction from such a cell"
    rows = [
        [
            row_header(_label(column, row[column]) if column else "All customers"),
            *(
                suppressed_cell(why) if row[c] is None else number_cell(_number(c, row[c]))
                for c in cells
            ),
        ]
        for row in frame.iter_rows(named=True)
    ]
    withheld = int(frame["suppressed_cells"].list.len().sum()) if frame.height else 0
    rows_hit = int(frame["suppressed"].sum()) if frame.height else 0
    note = (
        f"{withheld} of {frame.height * len(cells)} cells suppressed, in {rows_hit} of "
        f"{frame.height} rows ({why}; k = {k})."
        if withheld
        else f"No cell suppressed: every cell describes at least k = {k} customers."
    )
    return table([header or "", *(headers[c] for c in cells)], rows, name=name, note=note)


def _label(column: str | None, value: object) -> str:
    if value is None:
        return "unknown"
    if column == "mb_registered":
        return "registered" if value else "not registered"
    if column == "customer_level":
        return f"level {value}"
    if column == "id_type":
        return _IDENTIFIER_NAMES.get(str(value), str(value))
    return str(value)


def _number(column: str, value: float) -> str:
    if column in _SHARES:
        return percent(value)
    if column == "ratio":
        return f"{value:.2f}"
    return f"{int(value):,}"


def _by_ratio(penetration: pl.DataFrame) -> pl.DataFrame:
    return penetration.sort(["ratio", "category_id"], descending=[True, False], nulls_last=True)


# -- plots ------------------------------------------------------------------------------------


def _coverage_plot(
    report: CoverageReport, frame: pl.DataFrame, column: str, title: str, path: Path
) -> None:
    """Draw coverage per group as horizontal bars; a suppressed group gets a label, no bar."""
    labels = [_label(column, v) for v in frame[column].to_list()]
    values = frame["coverage"].to_list()
    fig, ax = _figure_for(len(labels))
    positions = list(range(len(labels)))
    ax.barh(positions, [v or 0.0 for v in values], color=_COVERAGE_COLOUR, height=0.7)
    _mark_suppressed(ax, positions, values)
    overall = report.overall["coverage"][0]
    if overall is not None:
        ax.axvline(
            overall,
            color="#333",
            linestyle="--",
            linewidth=1,
            label=f"all customers: {overall:.1%}",
        )
        ax.legend(loc="lower right", fontsize=8)
    _axes(ax, positions, labels, f"{title} (matched / customers)")
    save(fig, path)


def _penetration_plot(report: CoverageReport, frame: pl.DataFrame, path: Path) -> None:
    """Draw registered vs not-registered category shares as paired horizontal bars."""
    labels = frame["name"].to_list()
    fig, ax = _figure_for(int(len(labels) * 1.6))
    positions = list(range(len(labels)))
    registered = frame["registered_share"].to_list()
    unregistered = frame["unregistered_share"].to_list()
    ax.barh(
        [p - 0.2 for p in positions],
        [v or 0.0 for v in registered],
        height=0.4,
        color=_REGISTERED_COLOUR,
        label="registered on mobile banking",
    )
    ax.barh(
        [p + 0.2 for p in positions],
        [v or 0.0 for v in unregistered],
        height=0.4,
        color=_UNREGISTERED_COLOUR,
        label="not registered",
    )
    _mark_suppressed(ax, [p - 0.2 for p in positions], registered)
    _mark_suppressed(ax, [p + 0.2 for p in positions], unregistered)
    ax.legend(loc="lower right", fontsize=8)
    _axes(
        ax,
        positions,
        labels,
        "Matched customers using the app category (sorted by ratio not registered / registered)",
    )
    save(fig, path)


def _figure_for(rows: int) -> tuple[Figure, Axes]:
    """Return a wide figure tall enough for `rows` horizontal bars."""
    return figure(8.0, 1.4 + 0.28 * max(rows, 2))


def _mark_suppressed(ax: Axes, positions: Sequence[float], values: Sequence[object]) -> None:
    for position, value in zip(positions, values, strict=True):
        if value is None:
            ax.text(0.005, position, "suppressed", va="center", fontsize=7, color="#888")


def _axes(ax: Axes, positions: Sequence[int], labels: Sequence[str], title: str) -> None:
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="x", color="#eee")
    ax.set_axisbelow(True)
