"""The vendor's columns of a feature table: category and app usage, tag counts, the tag CSR.

`external_columns` turns the matched customers' picked vendor rows (list columns, as
`fusion.features` reads them from DuckDB) into plain feature columns, and `tag_matrix` into the
interest-tag CSR matrix beside the table. Vectorised throughout: per-category and per-app sums
are `np.bincount` over the flattened lists with column * rows + row indices, and the CSR is
assembled straight from the list offsets, never a Python loop per customer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from contracts.errors import StoreError
from contracts.taxonomy import Taxonomy
from fusion.bank_columns import ColumnNote

__all__ = ["VendorColumns", "choose_apps", "external_columns", "tag_matrix"]


@dataclass(frozen=True)
class VendorColumns:
    """The external columns of the matched rows (in the vendor rows' order) and their notes."""

    frame: pl.DataFrame
    notes: dict[str, ColumnNote]  # column name -> its note, in frame order
    top_apps: tuple[int, ...]  # app ids of the ext_app_*_days columns, in column order
    tags: dict[str, Any]  # the flattened tag lists for the CSR: lengths, ids, weights


_Add = Callable[[str, Any, str, str, str], None]  # (name, values, group, source, description)


@dataclass(frozen=True)
class _Usage:
    """The flattened app lists of the matched rows, mapped onto the taxonomy's categories."""

    rows: int  # matched rows
    n_apps: np.ndarray[Any, Any]  # apps per row
    row: np.ndarray[Any, Any]  # the row of each flattened app
    app_ids: np.ndarray[Any, Any]
    app_days: np.ndarray[Any, Any]
    app_sessions: np.ndarray[Any, Any]
    app_cat: np.ndarray[Any, Any]  # app id -> category position (-1: not in the taxonomy)


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Return (length of each list, all elements flattened) of a list column; null lists are []."""
    lists = column.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
    return lengths.astype(np.int64), pc.list_flatten(lists).to_numpy()


def _sums(
    index: np.ndarray[Any, Any],
    weights: np.ndarray[Any, Any] | None,
    shape: tuple[int, int],
    dtype: type[np.generic],
) -> np.ndarray[Any, Any]:
    """Return a (columns, rows) table of the sums of `weights` (or counts) by flat index.

    Column-major (index = column * rows + row), so each feature column is one contiguous slice.
    np.bincount sums in float64, exact for these integer counts; the table is narrowed at once.
    """
    return (
        np.bincount(index, weights=weights, minlength=shape[0] * shape[1])
        .reshape(shape)
        .astype(dtype)
    )


def choose_apps(
    reach: np.ndarray[Any, Any], apps: pl.DataFrame, top_apps: int
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Return the `top_apps` app ids of the taxonomy's `apps` with the most reach (by app id).

    The most used apps are those most matched customers use (reach); ties go to the lower app
    id, so the choice is deterministic.
    """
    ids = apps["app_id"].to_numpy()
    order = np.lexsort((ids, -reach[ids]))
    return ids[order[:top_apps]].astype(np.int64)


def _usage(vendor: pa.Table, taxonomy: Taxonomy) -> _Usage:
    """Return the flattened app lists of `vendor`, refusing app ids outside the taxonomy."""
    n_apps, app_ids = _flat(vendor["app_ids"])
    categories = taxonomy.categories.sort("category_id")
    cat_ids = categories["category_id"].to_numpy()
    cat_pos = np.full(int(cat_ids.max()) + 1, -1, dtype=np.int64)
    cat_pos[cat_ids] = np.arange(len(cat_ids))
    apps = taxonomy.apps.sort("app_id")
    app_cat = np.full(taxonomy.max_app_id + 1, -1, dtype=np.int64)
    app_cat[apps["app_id"].to_numpy()] = cat_pos[apps["category_id"].to_numpy()]
    if app_ids.size and (app_ids.max() >= app_cat.size or (app_cat[app_ids] < 0).any()):
        raise StoreError(f"vendor_apps holds app ids outside taxonomy {taxonomy.version}")
    return _Usage(
        rows=vendor.num_rows,
        n_apps=n_apps,
        row=np.repeat(np.arange(vendor.num_rows, dtype=np.int64), n_apps),
        app_ids=app_ids,
        app_days=_flat(vendor["app_days"])[1],
        app_sessions=_flat(vendor["app_sessions"])[1],
        app_cat=app_cat,
    )


def external_columns(
    vendor: pa.Table,
    taxonomy: Taxonomy,
    *,
    top_apps: int,
    chosen_apps: tuple[int, ...] | None,
) -> VendorColumns:
    """Return the external columns of the matched rows (in `vendor` order) and their notes.

    `chosen_apps` are the apps that get a column of active days (a training manifest's); when
    None, the `top_apps` apps with the most reach among these rows.
    """
    usage = _usage(vendor, taxonomy)
    apps = taxonomy.apps.sort("app_id")
    if chosen_apps is not None:
        chosen = np.array(chosen_apps, dtype=np.int64)
    else:
        reach = np.bincount(usage.app_ids, minlength=usage.app_cat.size)
        chosen = choose_apps(reach, apps, top_apps)
    columns: list[pl.Series] = []
    notes: dict[str, ColumnNote] = {}

    def add(name: str, values: Any, group: str, source: str, text: str) -> None:
        columns.append(pl.Series(name, values, nan_to_null=True))
        notes[name] = ColumnNote(group, source, text)

    totals = _category_columns(usage, taxonomy.categories.sort("category_id"), add)
    grp, src = "external_app", "vendor_apps"
    add("ext_n_apps", usage.n_apps.astype(np.int16), grp, src, "apps used (last 30 days)")
    add("ext_days_total", totals[0], grp, src, "active days summed over all apps")
    add("ext_sessions_total", totals[1], grp, src, "sessions summed over all apps")
    top_days = _app_days(usage, chosen)
    names = dict(zip(apps["app_id"].to_list(), apps["name"].to_list(), strict=True))
    for j, app in enumerate(chosen.tolist()):
        add(f"ext_app_{app}_days", top_days[j], grp, src,
            f"active days on app {app} ({names.get(app, 'not in the taxonomy')})")  # fmt: skip
    n_tags, tag_ids = _flat(vendor["tag_ids"])
    add("ext_n_tags", n_tags.astype(np.int16), "external_tag", "vendor_tags", "interest tags held")
    flat_tags = {"lengths": n_tags, "ids": tag_ids, "weights": _flat(vendor["tag_weights"])[1]}
    return VendorColumns(pl.DataFrame(columns), notes, tuple(chosen.tolist()), flat_tags)


def _app_days(usage: _Usage, chosen: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Return the active days of each row on each chosen app, a (chosen, rows) table."""
    k, m = len(chosen), usage.rows
    app_col = np.full(max(usage.app_cat.size, int(chosen.max(initial=0)) + 1), -1, dtype=np.int64)
    app_col[chosen] = np.arange(k)
    hit = app_col[usage.app_ids] >= 0
    index = app_col[usage.app_ids[hit]] * m + usage.row[hit]
    return _sums(index, usage.app_days[hit], (k, m), np.int16)


def _category_columns(
    usage: _Usage, categories: pl.DataFrame, add: _Add
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Add four columns per app category; return the rows' total days and sessions."""
    n_cat, m = categories.height, usage.rows
    cell = usage.app_cat[usage.app_ids] * m + usage.row
    cat_days = _sums(cell, usage.app_days, (n_cat, m), np.int32)
    cat_apps = _sums(cell, None, (n_cat, m), np.int16)
    cat_sessions = np.bincount(cell, weights=usage.app_sessions, minlength=n_cat * m).reshape(
        n_cat, m
    )
    del cell
    total_sessions = cat_sessions.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # NaN (null) when the user has no session at all
        cat_share = (cat_sessions / total_sessions).astype(np.float32)
    cat_sessions = cat_sessions.astype(np.int32)
    grp, src = "external_category", "vendor_apps"
    for j, (code, label) in enumerate(categories.select("code", "name").iter_rows()):
        add(f"ext_{code}_days", cat_days[j], grp, src,
            f"{label}: active days summed over its apps (last 30 days)")  # fmt: skip
        add(f"ext_{code}_sessions", cat_sessions[j], grp, src,
            f"{label}: sessions summed over its apps (last 30 days)")  # fmt: skip
        add(f"ext_{code}_share", cat_share[j], grp, src,
            f"{label}: share of the user's sessions (null when the user has none)")  # fmt: skip
        add(f"ext_{code}_apps", cat_apps[j], grp, src, f"{label}: number of its apps used")
    return cat_days.sum(axis=0, dtype=np.int32), total_sessions.astype(np.int32)


def tag_matrix(
    rows: int, positions: np.ndarray[Any, Any], flat: dict[str, Any], taxonomy: Taxonomy
) -> tuple[sp.csr_matrix, np.ndarray[Any, np.dtype[np.int32]]]:
    """Return the CSR over all table rows (empty where unmatched) and its column tag ids."""
    tag_ids = np.sort(taxonomy.tags["tag_id"].to_numpy()).astype(np.int32)
    column = np.full(int(tag_ids.max()) + 1, -1, dtype=np.int32)
    column[tag_ids] = np.arange(len(tag_ids), dtype=np.int32)
    ids = flat["ids"]
    if ids.size and (ids.max() >= column.size or (column[ids] < 0).any()):
        raise StoreError(f"vendor_tags holds tag ids outside taxonomy {taxonomy.version}")
    lengths = np.zeros(rows, dtype=np.int64)
    lengths[positions] = flat["lengths"]
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # Matched rows come in table order, so the flattened lists are already the CSR's data.
    matrix = sp.csr_matrix(
        (flat["weights"].astype(np.float32), column[ids], indptr), shape=(rows, len(tag_ids))
    )
    # Canonical form (columns ascending within a row; the contract rules out repeats): every
    # scipy operation and equality check then behaves as documented.
    matrix.sort_indices()
    return matrix, tag_ids
