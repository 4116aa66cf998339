"""Small-cell suppression: the one gate every table leaving the bank's analysts passes through.

k-anonymity here means that no published number, and no number a reader can compute exactly from
published ones, describes fewer than k customers (primary and secondary cell suppression, as in
Hundepool et al., *Statistical Disclosure Control*, Wiley 2012).

1. Primary: a published customer count under k (zero included) is withheld.
2. Secondary, so that withheld cells do not come back by arithmetic. A table obeys identities
   total = sum(parts): in every row (customers = keyed + invalid + duplicated), down every column
   (a published margin such as the overall row, or a total the reader nearly knows), and through
   differences never published (keyed - matched), which count as withheld cells.
   (a) Where a published total exposes the sum of its withheld parts (total - published parts)
   and that sum is under k, the smallest published part is withheld too. (b) A rank audit of all
   identities together finds any withheld cell, or sum of up to three withheld parts of one
   identity, that the published cells fix exactly although it is under k; it then withholds the
   smallest published cell that makes that group unknown again. Both repeat until nothing
   changes. Not audited: bounds (a reader may learn that a withheld cell lies in some range).
3. A share or ratio is withheld when any count it is computed from is; a rate is a count in
   disguise, so it is also withheld when its successes or its failures number under k.

`withhold` runs 1-2 on flat cells; `suppress` applies it to a polars table described by a
`Layout`, `suppress_grid` to a two-way table whose row, column and grand totals are known;
`guard_public_cells` keeps a count another table publishes from being a cell's only protection.

`disclose` publishes a table under a named `DisclosurePolicy`: K_ANONYMOUS (`suppress`, the rule
of every analytic table: reports, readouts, breakdowns) or OPERATIONAL, for the counts of an
operation shown to the people who run it (a campaign's plan counts per screening rule and its
deliveries to its marketers, a list's size to those who download the list). Those counts are
the operation's own records, which the API and the command line already give those callers
exactly (the plan's answer, the delivery files, the list file's rows); withholding them on a
page would hide nothing. OPERATIONAL is never the policy of a table shown to anyone else.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from contracts.errors import ConfigError

__all__ = [
    "DEFAULT_K",
    "DisclosurePolicy",
    "Identity",
    "Layout",
    "check_k",
    "disclose",
    "guard_public_cells",
    "rate_withheld",
    "suppress",
    "suppress_grid",
    "withhold",
]

DEFAULT_K = 10

Identity = tuple[int | None, tuple[int, ...]]
"""total = sum(parts) over flat cell indexes; a total of None is a published constant."""

_Cells = np.ndarray[Any, Any]
_Mask = npt.NDArray[np.bool_]


def check_k(k: object) -> int:
    """Return `k` when it is a positive integer; raise ConfigError otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(
            f"k must be a positive integer, got {k!r}; {DEFAULT_K} is the default", setting="k"
        )
    return k


@dataclass(frozen=True)
class Layout:
    """Which columns of a table are published counts, and how they depend on each other.

    `complements` are differences (name, total, part) that are never published; `sums` are the
    identities total = sum(parts) that hold in every row; `derived` are the shares and ratios
    with the counts each is computed from.
    """

    counts: tuple[str, ...]
    complements: tuple[tuple[str, str, str], ...] = ()
    sums: tuple[tuple[str, tuple[str, ...]], ...] = ()
    derived: tuple[tuple[str, tuple[str, ...]], ...] = ()


class DisclosurePolicy(StrEnum):
    """The rule a published table follows (module docstring)."""

    K_ANONYMOUS = "k-anonymous"  # analytic tables: `suppress` at k
    OPERATIONAL = "operational"  # an operation's own counts, to the people who run it: exact


def disclose(
    frame: pl.DataFrame,
    layout: Layout,
    *,
    policy: DisclosurePolicy,
    k: int,
    margin: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Return `frame` as published under `policy`, with `suppressed_cells` and `suppressed`.

    K_ANONYMOUS is `suppress(frame, layout, k=k, margin=margin)`. OPERATIONAL publishes every
    count as it is (no cell withheld). The layout is the one the table would be suppressed by
    under K_ANONYMOUS, and its columns must be in the table under either policy.
    """
    check_k(k)
    if policy not in tuple(DisclosurePolicy):
        raise ConfigError(
            f"policy must be one of {', '.join(p.value for p in DisclosurePolicy)}, got {policy!r}",
            setting="policy",
        )
    if policy == DisclosurePolicy.K_ANONYMOUS:
        return suppress(frame, layout, k=k, margin=margin)
    named = [*layout.counts, *(name for name, _ in layout.derived)]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"the table lacks the counts its layout names ({', '.join(missing)}); give the "
            "layout the table's own count columns",
            setting="layout",
        )
    return frame.with_columns(
        suppressed_cells=pl.Series([[]] * frame.height, dtype=pl.List(pl.String)),
        suppressed=pl.lit(value=False),
    )


def suppress(
    frame: pl.DataFrame,
    layout: Layout,
    *,
    k: int,
    margin: pl.DataFrame | None = None,
    withheld: Collection[str] = (),
    keep: Collection[str] = (),
) -> pl.DataFrame:
    """Return `frame` with every cell that could expose < k customers null, and which ones.

    Args:
        frame: group columns, the layout's counts and its derived columns, one row per group,
            true values.
        layout: the table's counts, identities and derived columns.
        k: the smallest number of customers a published cell (or a difference of published
            cells) may describe.
        margin: the published one-row total of the same counts over all of `frame`'s rows (the
            overall table); each of its published cells adds a column identity.
        withheld: counts another table withholds; withheld here in every row.
        keep: counts to publish whenever another cell can be withheld instead (a table's
            headline, e.g. a readout's successes): secondary suppression takes them last.

    Returns:
        `frame` with withheld cells null, then `suppressed_cells` (the row's withheld columns,
        List[String]) and `suppressed` (Boolean).
    """
    n = frame.height
    names = [*layout.counts, *(name for name, _, _ in layout.complements)]

    def cell(name: str, row: int) -> int:
        return names.index(name) * n + row

    counts = [frame[c].cast(pl.Int64).fill_null(0).to_numpy() for c in layout.counts]
    for _, total, part in layout.complements:
        counts.append(counts[names.index(total)] - counts[names.index(part)])
    values = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    hidden = np.zeros(values.size, dtype=bool)
    hidden[len(layout.counts) * n :] = True  # complements are never published
    for name in withheld:
        hidden[cell(name, 0) : cell(name, 0) + n] = True
    identities: list[Identity] = [
        (cell(total, row), tuple(cell(p, row) for p in parts))
        for row in range(n)
        for total, parts in layout.sums
    ]
    if margin is not None:
        identities += [
            (None, tuple(cell(name, row) for row in range(n)))
            for name in layout.counts
            if name in margin.columns and margin[name].is_not_null().all()
        ]
    kept = np.zeros(values.size, dtype=bool)
    for name in keep:
        kept[cell(name, 0) : cell(name, 0) + n] = True
    hidden = withhold(values, identities, k=k, hidden=hidden, keep=kept)

    masks = {name: hidden[cell(name, 0) : cell(name, 0) + n] for name in layout.counts}
    for name, inputs in layout.derived:
        masks[name] = np.logical_or.reduce([masks[c] for c in inputs])
    cells = list(masks)
    return frame.with_columns(
        *(pl.when(pl.Series(masks[c])).then(None).otherwise(pl.col(c)).alias(c) for c in cells),
        pl.Series(
            "suppressed_cells",
            [[c for c in cells if masks[c][row]] for row in range(n)],
            dtype=pl.List(pl.String),
        ),
    ).with_columns(suppressed=pl.col("suppressed_cells").list.len() > 0)


def suppress_grid(counts: npt.NDArray[np.int64], *, k: int) -> _Mask:
    """Return which cells of a two-way table of customer counts to withhold (same shape).

    For a table whose row, column and grand totals a reader knows or nearly knows: each of them
    is an identity with a published total.
    """
    shape = counts.shape
    index = np.arange(counts.size).reshape(shape)
    identities: list[Identity] = [
        (None, tuple(int(c) for c in group)) for group in (*index, *index.T, index.ravel())
    ]
    return withhold(counts.ravel(), identities, k=k).reshape(shape)


def rate_withheld(
    successes: npt.NDArray[np.int64], trials: npt.NDArray[np.int64], *, k: int
) -> _Mask:
    """Return where a rate successes / trials would expose < k customers: few of either kind."""
    return np.asarray(np.minimum(successes, trials - successes) < k)


def guard_public_cells(
    table: pl.DataFrame, guards: Mapping[str, Sequence[str]], *, withheld: Collection[str]
) -> pl.DataFrame:
    """Return `table` with the cells a public count protected withheld wherever it is withheld.

    Secondary suppression may withhold a count (say a denominator) to protect a small cell, but
    when another table publishes that count, the protection is void: the cells `guards` lists for
    it (the small cell and what is computed from it) are withheld instead. Counts in `withheld`
    are secret everywhere, so they need no guard.
    """
    for public, protected in guards.items():
        if public in withheld:
            continue
        exposed = pl.col(public).is_null()
        hide = list(protected)
        table = table.with_columns(
            *(pl.when(exposed).then(None).otherwise(pl.col(c)).alias(c) for c in hide),
            suppressed_cells=pl.when(exposed)
            .then(pl.concat_list("suppressed_cells", pl.lit(hide)).list.unique(maintain_order=True))
            .otherwise(pl.col("suppressed_cells")),
        ).with_columns(suppressed=pl.col("suppressed_cells").list.len() > 0)
    return table


def withhold(
    values: _Cells,
    identities: Sequence[Identity],
    *,
    k: int,
    hidden: _Cells | None = None,
    keep: _Cells | None = None,
) -> _Mask:
    """Return which flat cells to withhold: primary, then secondary until nothing changes.

    Args:
        values: the true customer count of every cell.
        identities: total = sum(parts) relations a reader knows hold between the cells.
        k: the smallest number of customers a published number may describe.
        hidden: cells withheld whatever their value (never-published differences, cells another
            table withholds).
        keep: cells secondary suppression withholds only when no other cell will do (primary
            suppression still withholds them when they are under k).
    """
    mask = values < k
    if hidden is not None:
        mask |= hidden
    rules = list(identities)
    kept = np.zeros(values.size, dtype=bool) if keep is None else keep
    # Each pass withholds at least one more cell or stops, so the loop ends.
    while _withhold_exposed_sums(values, mask, rules, k, kept) or _withhold_determined(
        values, mask, rules, k, kept
    ):
        pass
    return mask


def _withhold_exposed_sums(
    values: _Cells, hidden: _Cells, identities: list[Identity], k: int, kept: _Cells
) -> bool:
    """Withhold the smallest published part (or, sparing kept cells, the total) wherever a
    published total exposes withheld parts summing to under k (total - published parts = their
    sum); return whether any was."""
    changed = False
    for total, parts in identities:
        if total is not None and hidden[total]:
            continue
        withheld = [p for p in parts if hidden[p]]
        if withheld and values[withheld].sum() < k:
            shown = [p for p in parts if not hidden[p]]
            if shown:  # else the total equals their sum, is under k and already withheld
                # Withholding the total would do as well: it is a candidate, after every part
                # unless a part is to be kept (a part is never larger than its total).
                choices = shown if total is None else [*shown, total]
                hidden[min(choices, key=lambda p: (kept[p], values[p], p not in parts, p))] = True
                changed = True
    return changed


def _withhold_determined(
    values: _Cells, hidden: _Cells, identities: list[Identity], k: int, kept: _Cells
) -> bool:
    """Withhold one more cell if the identities pin down a small withheld group exactly.

    Groups checked: each withheld cell, and each sum of up to three withheld parts of one
    identity (e.g. the invalid + shared phones of one group, learnt through the margins). For
    a known group under k, the cell withheld is the smallest published cell, among those of the
    identities that reach the group, whose withholding makes the group unknown again (or the
    smallest of them when no single one does). Returns whether anything was withheld.
    """
    group = _known_small_group(values, hidden, identities, k)
    if group is None:
        return False
    reach = _reach(group, hidden, identities)
    candidates = sorted(
        {c for identity in identities if set(_cells(identity)) & reach for c in _cells(identity)},
        key=lambda c: (kept[c], values[c], c),
    )
    candidates = [c for c in candidates if not hidden[c]]
    if not candidates:
        return False
    for cell in candidates:
        hidden[cell] = True
        if not _known(group, hidden, identities):
            return True
        hidden[cell] = False
    hidden[candidates[0]] = True
    return True


def _cells(identity: Identity) -> tuple[int, ...]:
    total, parts = identity
    return parts if total is None else (total, *parts)


def _reach(group: tuple[int, ...], hidden: _Cells, identities: list[Identity]) -> set[int]:
    """Return the withheld cells linked to the group through identities (its component)."""
    reach, frontier = set(group), list(group)
    while frontier:
        cell = frontier.pop()
        for identity in identities:
            cells = _cells(identity)
            if cell in cells:
                for other in cells:
                    if hidden[other] and other not in reach:
                        reach.add(other)
                        frontier.append(other)
    return reach


def _null_space(hidden: _Cells, identities: list[Identity]) -> tuple[dict[int, int], _Cells]:
    """Return the withheld cells' column index and a basis of the identities' null space.

    The published cells fix the withheld ones up to this null space: a sum of withheld cells
    is known exactly when its vector is orthogonal to it.
    """
    unknown = np.flatnonzero(hidden)
    index = {int(c): j for j, c in enumerate(unknown)}
    rows = []
    for total, parts in identities:
        row = np.zeros(unknown.size)
        for p in parts:
            if hidden[p]:
                row[index[p]] = 1.0
        if total is not None and hidden[total]:
            row[index[total]] = -1.0
        if row.any():
            rows.append(row)
    if not rows:
        return index, np.eye(unknown.size)
    matrix = np.array(rows)
    _, singular, vt = np.linalg.svd(matrix)
    tol = singular.max(initial=0.0) * max(matrix.shape) * np.finfo(float).eps
    return index, vt[int((singular > tol).sum()) :].T


def _is_known(group: tuple[int, ...], index: dict[int, int], free: _Cells) -> bool:
    if free.shape[1] == 0:
        return True
    return bool(np.abs(free[[index[c] for c in group]].sum(axis=0)).max() < 1e-8)


def _known(group: tuple[int, ...], hidden: _Cells, identities: list[Identity]) -> bool:
    index, free = _null_space(hidden, identities)
    return _is_known(group, index, free)


def _known_small_group(
    values: _Cells, hidden: _Cells, identities: list[Identity], k: int
) -> tuple[int, ...] | None:
    """Return a group of withheld cells summing to under k that the published cells fix."""
    if not hidden.any():
        return None
    index, free = _null_space(hidden, identities)
    for total, parts in identities:
        members = [p for p in parts if hidden[p]]
        groups = [g for size in (1, 2, 3) for g in itertools.combinations(members, size)]
        if total is not None and hidden[total]:
            groups.append((total,))
        for group in groups:
            if values[list(group)].sum() < k and _is_known(group, index, free):
                return group
    return None
