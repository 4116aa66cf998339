"""The one suppression every published table goes through: random tables audited independently."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contracts.errors import ConfigError
from fusion.reports.coverage import COVERAGE_LAYOUT, DENOMINATOR_GUARDS
from fusion.reports.disclosure import (
    DEFAULT_K,
    check_k,
    guard_public_cells,
    rate_withheld,
    suppress,
    suppress_grid,
    withhold,
)
from tests.support.coverage import COUNTS, Cell, Identities, audit, audit_coverage

# The audit reads counts only: the shares need not be computed.
COUNTS_ONLY = replace(COVERAGE_LAYOUT, derived=())


@st.composite
def _tables(draw: st.DrawFn) -> list[dict[str, int]]:
    groups = []
    for _ in range(draw(st.integers(1, 7))):
        keyed = draw(st.integers(0, 60))
        invalid, duplicated = draw(st.integers(0, 14)), draw(st.integers(0, 14))
        matched = draw(st.integers(0, keyed))
        groups.append(
            {
                "customers": keyed + invalid + duplicated,
                "keyed": keyed,
                "invalid": invalid,
                "duplicated": duplicated,
                "matched": matched,
            }
        )
    return groups


@settings(max_examples=60, deadline=None)
@given(groups=_tables(), k=st.sampled_from([3, 10]))
def test_suppression_never_leaves_a_small_group_computable(groups: list[dict[str, int]], k: int):
    frame = pl.DataFrame(groups).with_columns(g=pl.int_range(pl.len()).cast(pl.Int64))
    total = frame.select(pl.col(COUNTS).sum())
    overall = suppress(total, COUNTS_ONLY, k=k)
    table = suppress(frame, COUNTS_ONLY, k=k, margin=overall)
    expected = {i: g for i, g in enumerate(groups)}
    assert not audit_coverage(overall, None, {None: total.row(0, named=True)}, None, k)
    assert not audit_coverage(table, "g", expected, overall, k)


def _audit_grid(counts: np.ndarray, hidden: np.ndarray, k: int) -> list[str]:
    """Audit a grid whose row, column and grand totals the reader knows."""
    rows, columns = counts.shape
    cells = [(i, j) for i in range(rows) for j in range(columns)]
    values: dict[Cell, int] = {(i, str(j)): int(counts[i, j]) for i, j in cells}
    published = {(i, str(j)): not hidden[i, j] for i, j in cells}
    identities: Identities = [(None, [(i, str(j)) for j in range(columns)]) for i in range(rows)]
    identities += [(None, [(i, str(j)) for i in range(rows)]) for j in range(columns)]
    identities.append((None, list(values)))
    return audit(values, published, identities, k)


@settings(max_examples=60, deadline=None)
@given(cells=st.lists(st.integers(0, 40), min_size=25, max_size=25), k=st.sampled_from([3, 10]))
def test_a_grid_with_known_totals_never_gives_a_small_cell_back(cells: list[int], k: int):
    counts = np.array(cells, dtype=np.int64).reshape(5, 5)
    # A total the reader knows from elsewhere is not the table's to protect: keep them >= k.
    assume(min(counts.sum(axis=0).min(), counts.sum(axis=1).min()) >= k)
    hidden = suppress_grid(counts, k=k)
    assert hidden.shape == counts.shape
    assert hidden[counts < k].all()
    assert not _audit_grid(counts, hidden, k)


def test_a_grid_of_large_cells_is_published_whole():
    counts = np.arange(100, 125, dtype=np.int64).reshape(5, 5)
    assert not suppress_grid(counts, k=10).any()


def test_a_small_cell_cannot_come_back_through_another_row_or_column():
    counts = np.full((3, 3), 50, dtype=np.int64)
    counts[0, 0], counts[0, 2], counts[2, 0] = 4, 30, 20
    hidden = suppress_grid(counts, k=10)
    assert hidden[0, 0] and hidden[0, 2] and hidden[2, 0]
    assert not _audit_grid(counts, hidden, 10)


def test_a_rate_needs_k_successes_and_k_failures():
    successes = np.array([0, 5, 10, 10, 40], dtype=np.int64)
    trials = np.array([100, 100, 100, 15, 50], dtype=np.int64)
    assert rate_withheld(successes, trials, k=10).tolist() == [True, True, False, True, False]


@pytest.mark.parametrize("k", [0, -1, True, 2.5, "10"])
def test_k_must_be_a_positive_integer(k: object):
    with pytest.raises(ConfigError, match="k must be a positive integer") as caught:
        check_k(k)
    assert caught.value.setting == "k"
    assert check_k(DEFAULT_K) == 10


def test_a_denominator_public_elsewhere_cannot_be_the_only_protection():
    table = pl.DataFrame(
        {
            "registered_matched": [None, 500],
            "registered_users": [493, 300],
            "registered_share": [0.986, 0.6],
            "unregistered_matched": [400, 400],
            "unregistered_users": [100, 90],
            "unregistered_share": [0.25, 0.225],
            "ratio": [0.25, 0.375],
            "suppressed_cells": [["registered_matched"], []],
            "suppressed": [True, False],
        },
        schema_overrides={"suppressed_cells": pl.List(pl.String)},
    )
    guarded = guard_public_cells(table, DENOMINATOR_GUARDS, withheld=[])
    first = guarded.row(0, named=True)
    assert first["registered_users"] is None and first["ratio"] is None
    assert set(first["suppressed_cells"]) >= {"registered_matched", "registered_users", "ratio"}
    assert guarded.row(1, named=True) == table.row(1, named=True)
    # Withheld upstream too: the denominator is secret everywhere, nothing more to hide.
    withheld = ["registered_matched"]
    assert guard_public_cells(table, DENOMINATOR_GUARDS, withheld=withheld).equals(table)


def test_kept_cells_are_withheld_last():
    # responded = converted + (responded - converted), the difference never published and 8 < k:
    # one of the two published cells must go; the kept one (the headline) stays.
    values = np.array([25, 17, 8])
    identities = [(0, (1, 2))]
    hidden = np.array([False, False, True])
    plain = withhold(values, identities, k=10, hidden=hidden.copy())
    assert plain.tolist() == [False, True, True]
    kept = withhold(values, identities, k=10, hidden=hidden.copy(), keep=np.array([0, 1, 0]) > 0)
    assert kept.tolist() == [True, False, True]
