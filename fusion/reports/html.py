"""The reports' one page shell, tables, headline figures and number formats.

A report is a plain HTML page a marketer opens from a shared folder: no JavaScript, no web
fonts, nothing fetched. Every value written into the page is escaped here; a missing or infinite
number reads "n/a", a withheld cell reads "suppressed".
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = [
    "CSS",
    "Column",
    "Section",
    "correlation",
    "count",
    "document",
    "fixed",
    "fixed1",
    "fixed3",
    "headline",
    "interval",
    "is_finite",
    "money",
    "number_cell",
    "percent",
    "points",
    "records_table",
    "row_header",
    "suppressed_cell",
    "table",
    "text_cell",
    "times",
]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.6rem; }
.meta { color: #555; margin-top: 0; }
.privacy { background: #f4f6fa; border-left: 4px solid #4c72b0; padding: 0.6rem 1rem; }
.headline { display: flex; gap: 2rem; flex-wrap: wrap; margin: 1rem 0; }
.headline div { font-size: 0.9rem; color: #555; }
.headline strong { display: block; font-size: 1.6rem; color: #222; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.sup { color: #888; font-style: italic; text-align: right; background: #fafafa; }
td.pass { color: #1e6b33; font-weight: 600; } td.fail { color: #a11d24; font-weight: 600; }
td.info { color: #555; }
p.note { font-size: 0.85rem; color: #555; margin-top: 0; }
img { max-width: 100%; height: auto; display: block; margin: 0.8rem 0; }
.pair { display: flex; gap: 1rem; flex-wrap: wrap; } .pair img { max-width: 48%; }
details { margin: 0.6rem 0; } summary { cursor: pointer; }
"""


@dataclass
class Section:
    """One part of a page: its HTML and its JSON-ready tables."""

    html: list[str]
    data: dict[str, Any]


def document(title: str, body: Iterable[str]) -> str:
    """Return a whole HTML page: the title as <title> and <h1>, then `body`, one part a line."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        *body,
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def headline(label: str, value: str, extra: str | None = None) -> str:
    """Return one headline figure: the value large, its label, and an optional second line."""
    e = html.escape
    small = f"<br>{e(extra)}" if extra else ""
    return f"<div><strong>{e(value)}</strong>{e(label)}{small}</div>"


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, name: str, note: str | None = None
) -> str:
    """Return one HTML table of pre-rendered cells, with an optional note under it."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    after = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        f'<table id="{html.escape(name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>{after}"
    )


@dataclass(frozen=True)
class Column:
    """One column of a records table: the record key, its header and how to print a value."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    numeric: bool = True


def records_table(
    records: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    name: str,
    note: str | None = None,
) -> str:
    """Return an HTML table of `records`; the first column heads each row."""
    first, rest = columns[0], columns[1:]
    rows = [
        [row_header(first.fmt(r[first.key]))]
        + [(number_cell if c.numeric else text_cell)(c.fmt(r[c.key])) for c in rest]
        for r in records
    ]
    return table([c.header for c in columns], rows, name=name, note=note)


def row_header(text: str) -> str:
    """Return the cell that heads a table row."""
    return f'<th scope="row">{html.escape(text)}</th>'


def text_cell(text: str) -> str:
    """Return a left-aligned text cell."""
    return f"<td>{html.escape(text)}</td>"


def number_cell(text: str) -> str:
    """Return a right-aligned cell of a formatted number."""
    return f'<td class="num">{html.escape(text)}</td>'


def suppressed_cell(why: str) -> str:
    """Return the cell of a withheld number; `why` shows on hover."""
    return f'<td class="sup" title="{html.escape(why)}">suppressed</td>'


# -- numbers ----------------------------------------------------------------------------------


def is_finite(value: float | None) -> TypeGuard[float]:
    """Return whether `value` is a number other than NaN or infinity."""
    return value is not None and math.isfinite(value)


def percent(value: float | None) -> str:
    """Return a share as a percentage with one decimal."""
    return f"{value:.1%}" if is_finite(value) else "n/a"


def points(value: float | None) -> str:
    """Return a difference of rates in percentage points."""
    return f"{100 * value:+.1f} pp" if is_finite(value) else "n/a"


def times(value: float | None) -> str:
    """Return a ratio as a multiple ("3.63×")."""
    return f"{value:.2f}×" if is_finite(value) else "n/a"


def fixed(value: float | None, digits: int = 2) -> str:
    """Return a number with thousands separators and `digits` decimals."""
    return f"{value:,.{digits}f}" if is_finite(value) else "n/a"


def fixed1(value: float | None) -> str:
    """Return a number with one decimal."""
    return fixed(value, 1)


def fixed3(value: float | None) -> str:
    """Return a number with three decimals."""
    return fixed(value, 3)


def count(value: int) -> str:
    """Return a count with thousands separators."""
    return f"{value:,}"


def money(value: float) -> str:
    """Return an amount without decimals."""
    return fixed(value, 0)


def correlation(value: float | None) -> str:
    """Return a correlation, or "not known" where the truth it needs is not known."""
    return "not known" if value is None else fixed(value)


def interval(bounds: tuple[float, float] | None) -> str:
    """Return a confidence interval with one decimal."""
    return "n/a" if bounds is None else f"{bounds[0]:,.1f} – {bounds[1]:,.1f}"
