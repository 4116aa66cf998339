"""How much of the customer base the vendor covers, and what the matched customers use.

For one (snapshot date, salt epoch) whose match has run (`fusion.match`), `coverage_report`
gives marketers the numbers a real bank asked for before buying vendor data:

- match coverage overall and by branch, age band, customer level and mobile-banking
  registration: customers, keyed (a usable phone), invalid and duplicated phones, matched, and
  the coverage shares `matched / customers` and `matched / keyed`;
- app penetration over the taxonomy's 26 categories for matched customers registered on mobile
  banking vs not: the share using at least one app of the category, and the ratio
  unregistered / registered (the comparison a real bank used to choose a food-delivery partner
  for its mobile-banking campaign).

Every table goes through one suppression function (`_suppress`) before it leaves this module,
so none can skip it. k-anonymity here means no published number, and no number a reader can
compute exactly from published ones, describes fewer than k customers:

1. primary: a published customer count under k (zero included) is withheld;
2. secondary, so that withheld cells do not come back by arithmetic. Tables obey identities:
   customers = keyed + invalid + duplicated and keyed = matched + keyed-unmatched in every row,
   matched = users + non-users per category, and the overall row = the sum of a breakdown's
   rows (the margin). Differences never published (keyed-unmatched, non-users) count as
   withheld cells, so a share of 99.8% of 600 does not reveal the one customer outside it.
   (a) Where a published total exposes the sum of its withheld parts (total - published
   parts) and that sum is under k, the smallest published part is withheld too. (b) A rank
   audit of all identities together finds any withheld cell, or sum of up to three withheld
   parts of one identity, that the published cells fix exactly although it is under k (e.g.
   a group's shared phones learnt from the margin and another group's row); it then withholds
   the smallest published cell that makes that group unknown again. Both repeat until nothing
   changes. Not audited: bounds (a reader may learn that a withheld cell lies in some range);
3. a share or ratio is withheld when any count it is computed from is.

Withheld cells are null, and each row lists them in `suppressed_cells` (`suppressed` is true when
that list is not empty). The penetration denominators are by_registration's matched cells and
are withheld wherever that table withholds them. The heavy work is one DuckDB scan with
GROUPING SETS and one UNNEST of the matched customers' app lists; suppression runs on the
aggregates (a few hundred cells at most: under 1.5 s on 40 branches even with k = 100).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError, StoreError
from fusion.store import Store

__all__ = ["AGE_BANDS", "DEFAULT_K", "TABLES", "CoverageReport", "coverage_report"]

DEFAULT_K = 10
# Labels of the age bands, youngest first; the CASE in _COVERAGE_SQL draws the same edges.
# Ages outside them (the extract contract allows 18..110) or missing read "unknown".
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_UNKNOWN = "unknown"
# Table names, in the order reports show them; also the Parquet file names.
TABLES = ("overall", "by_branch", "by_age_band", "by_level", "by_registration", "penetration")

_COUNTS = ("customers", "keyed", "invalid", "duplicated", "matched")
_DIMENSIONS = {  # table -> its group column, and the GROUPING() id of its grouping set
    "by_branch": ("branch_id", 0b0111),
    "by_age_band": ("age_band", 0b1011),
    "by_level": ("customer_level", 0b1101),
    "by_registration": ("mb_registered", 0b1110),
}
_OVERALL_ID = 0b1111

_COVERAGE_SQL = """
WITH matched AS (
    SELECT DISTINCT customer_id FROM matches WHERE snapshot_date = $snapshot AND salt_epoch = $epoch
), base AS (
    SELECT c.branch_id,
           CASE WHEN f.age BETWEEN 18 AND 24 THEN '18-24'
                WHEN f.age BETWEEN 25 AND 34 THEN '25-34'
                WHEN f.age BETWEEN 35 AND 44 THEN '35-44'
                WHEN f.age BETWEEN 45 AND 54 THEN '45-54'
                WHEN f.age BETWEEN 55 AND 64 THEN '55-64'
                WHEN f.age >= 65 THEN '65+'
                ELSE 'unknown' END AS age_band,
           f.customer_level::TINYINT AS customer_level,
           f.mb_registered::BOOLEAN AS mb_registered,
           c.key_status,
           m.customer_id IS NOT NULL AS is_matched
    FROM customers AS c
    LEFT JOIN bank_features AS f
        ON f.customer_id = c.customer_id AND f.snapshot_date = c.snapshot_date
    LEFT JOIN matched AS m ON m.customer_id = c.customer_id
    WHERE c.snapshot_date = $snapshot AND c.salt_epoch = $epoch
)
SELECT GROUPING(branch_id, age_band, customer_level, mb_registered)::INTEGER AS grouping_id,
       branch_id, age_band, customer_level, mb_registered,
       count(*) AS customers,
       count(*) FILTER (key_status = 'ok') AS keyed,
       count(*) FILTER (key_status = 'invalid') AS invalid,
       count(*) FILTER (key_status = 'duplicated') AS duplicated,
       count(*) FILTER (is_matched) AS matched
FROM base
GROUP BY GROUPING SETS ((), (branch_id), (age_band), (customer_level), (mb_registered))
"""

# Apps come from the batch each customer was matched in (point in time: the newest batch created
# by the snapshot date), not from the newest batch overall; a customer counts once per category.
_PENETRATION_SQL = """
WITH apps AS (
    SELECT m.customer_id, f.mb_registered::BOOLEAN AS mb_registered, b.taxonomy_version,
           unnest(v.app_ids) AS app_id
    FROM matches AS m
    JOIN customers AS c
        ON c.customer_id = m.customer_id AND c.snapshot_date = m.snapshot_date
        AND c.salt_epoch = m.salt_epoch
    JOIN vendor_apps AS v
        ON v.key = m.key AND v.salt_epoch = m.salt_epoch AND v.batch_id = m.batch_id
    JOIN batches AS b ON b.batch_id = m.batch_id
    LEFT JOIN bank_features AS f
        ON f.customer_id = m.customer_id AND f.snapshot_date = m.snapshot_date
    WHERE m.snapshot_date = $snapshot AND m.salt_epoch = $epoch
), used AS (
    SELECT DISTINCT apps.customer_id, apps.mb_registered, t.category_id
    FROM apps
    JOIN tax_apps AS t ON t.taxonomy_version = apps.taxonomy_version AND t.app_id = apps.app_id
)
SELECT category_id::SMALLINT AS category_id,
       count(*) FILTER (mb_registered) AS registered_users,
       count(*) FILTER (NOT mb_registered) AS unregistered_users
FROM used
GROUP BY category_id
"""

_VERSIONS_SQL = """
SELECT DISTINCT b.taxonomy_version
FROM matches AS m JOIN batches AS b ON b.batch_id = m.batch_id
WHERE m.snapshot_date = $snapshot AND m.salt_epoch = $epoch
"""

# Category names from the newest taxonomy version among those the matched batches use.
_CATEGORIES_SQL = """
SELECT category_id::SMALLINT AS category_id,
       arg_max(code, taxonomy_version) AS code,
       arg_max(name, taxonomy_version) AS name
FROM tax_categories
WHERE list_contains($versions, taxonomy_version)
GROUP BY category_id
ORDER BY category_id
"""

_LATEST_RUN_SQL = """
SELECT run_id, finished_at, customers, keyed, invalid, duplicated, matched
FROM match_runs
WHERE snapshot_date = $snapshot AND salt_epoch = $epoch
ORDER BY finished_at DESC, run_id DESC
LIMIT 1
"""


@dataclass(frozen=True)
class _Layout:
    """Which columns of a table are published counts, and how they depend on each other.

    `complements` are differences (total - part) that are never published; `sums` are the
    identities total = sum(parts) that hold in every row; `derived` are the shares and ratios
    with the counts each is computed from.
    """

    counts: tuple[str, ...]
    complements: tuple[tuple[str, str, str], ...] = ()
    sums: tuple[tuple[str, tuple[str, ...]], ...] = ()
    derived: tuple[tuple[str, tuple[str, ...]], ...] = ()


_COVERAGE_LAYOUT = _Layout(
    counts=_COUNTS,
    complements=(("_keyed_unmatched", "keyed", "matched"),),
    sums=(
        ("customers", ("keyed", "invalid", "duplicated")),
        ("keyed", ("matched", "_keyed_unmatched")),
    ),
    derived=(
        ("coverage", ("matched", "customers")),
        ("keyed_coverage", ("matched", "keyed")),
    ),
)

_PENETRATION_LAYOUT = _Layout(
    counts=("registered_matched", "registered_users", "unregistered_matched", "unregistered_users"),
    complements=(
        ("_registered_non_users", "registered_matched", "registered_users"),
        ("_unregistered_non_users", "unregistered_matched", "unregistered_users"),
    ),
    sums=(
        ("registered_matched", ("registered_users", "_registered_non_users")),
        ("unregistered_matched", ("unregistered_users", "_unregistered_non_users")),
    ),
    derived=(
        ("registered_share", ("registered_users", "registered_matched")),
        ("unregistered_share", ("unregistered_users", "unregistered_matched")),
        (
            "ratio",
            (
                "registered_users",
                "registered_matched",
                "unregistered_users",
                "unregistered_matched",
            ),
        ),
    ),
)


@dataclass(frozen=True)
class CoverageReport:
    """Match coverage and app penetration of one snapshot and salt epoch, k-anonymised.

    Coverage tables (`overall`, `by_branch`, `by_age_band`, `by_level`, `by_registration`): the
    group column (branch_id, age_band, customer_level, mb_registered; none for `overall`), then
    customers, keyed, invalid, duplicated, matched (Int64), coverage = matched / customers and
    keyed_coverage = matched / keyed (Float64). `penetration`, one row per category: category_id,
    code, name, registered_matched, registered_users, unregistered_matched, unregistered_users
    (Int64), registered_share, unregistered_share and ratio = unregistered_share /
    registered_share (Float64). Every table ends with `suppressed_cells` (the row's withheld
    columns, List[String]) and `suppressed` (Boolean); a withheld cell is null.
    """

    snapshot_date: date
    salt_epoch: str
    k: int
    run_id: str  # the match run the numbers describe
    matched_at: datetime
    overall: pl.DataFrame
    by_branch: pl.DataFrame
    by_age_band: pl.DataFrame
    by_level: pl.DataFrame
    by_registration: pl.DataFrame
    penetration: pl.DataFrame

    def tables(self) -> dict[str, pl.DataFrame]:
        """Return every table by name, in report order."""
        return {name: getattr(self, name) for name in TABLES}

    def to_parquet(self, out_dir: Path) -> dict[str, Path]:
        """Write `<table>.parquet` for every table under `out_dir`; return the paths by name.

        Each file's key-value metadata names the snapshot, salt epoch, k and match run.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        metadata = {
            "snapshot_date": self.snapshot_date.isoformat(),
            "salt_epoch": self.salt_epoch,
            "k": str(self.k),
            "match_run": self.run_id,
        }
        written = {}
        for name, table in self.tables().items():
            path = out_dir / f"{name}.parquet"
            table.write_parquet(path, metadata=metadata | {"table": name})
            written[name] = path
        return written


def coverage_report(
    store: Store, *, snapshot_date: date, salt_epoch: str, k: int = DEFAULT_K
) -> CoverageReport:
    """Return the k-anonymised coverage and penetration tables of a matched snapshot.

    Args:
        store: the bank's store (read-only snapshots work: this only reads).
        snapshot_date: the extract's snapshot date, as given to `fusion.match.match`.
        salt_epoch: the salt epoch id the match ran under.
        k: cells counting fewer customers than this are withheld (and what would reveal them).

    Raises:
        ConfigError: k is not a positive integer, or the snapshot has no customers or no match
            run under that epoch, or its match run is older than its customers.
        StoreError: the store lacks the extract's features or the taxonomy the batches use.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}", setting="k")
    params: dict[str, object] = {"snapshot": snapshot_date, "epoch": salt_epoch}
    _require_features(store)
    counts = store.execute(_COVERAGE_SQL, params).pl()
    raw = counts.filter(pl.col("grouping_id") == _OVERALL_ID).select(_COUNTS)
    if raw.is_empty() or raw["customers"][0] == 0:
        raise ConfigError(
            f"no customers for snapshot {snapshot_date} under salt epoch {salt_epoch!r}; load "
            "the extract (fusion.match.load_extract) and match it first",
            setting="snapshot_date",
        )
    run = _latest_run(store, params, raw)

    overall = _suppress(raw, _COVERAGE_LAYOUT, k=k)
    tables: dict[str, pl.DataFrame] = {"overall": overall}
    for name, (column, grouping_id) in _DIMENSIONS.items():
        rows = _ordered(
            counts.filter(pl.col("grouping_id") == grouping_id).select(column, *_COUNTS), column
        )
        tables[name] = _suppress(rows, _COVERAGE_LAYOUT, k=k, margin=overall)

    registration = _ordered(
        counts.filter(pl.col("grouping_id") == _DIMENSIONS["by_registration"][1]), "mb_registered"
    )
    tables["penetration"] = _penetration(store, params, registration, tables["by_registration"], k)
    return CoverageReport(
        snapshot_date=snapshot_date,
        salt_epoch=salt_epoch,
        k=k,
        run_id=str(run["run_id"]),
        matched_at=run["finished_at"],
        **tables,
    )


def _require_features(store: Store) -> None:
    """Raise StoreError unless bank_features has the columns the breakdowns group by."""
    present = set(
        store.execute(
            "SELECT column_name FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND table_name = 'bank_features' "
            "AND database_name = current_database()"
        )
        .pl()["column_name"]
        .to_list()
    )
    missing = [c for c in ("customer_id", "snapshot_date", "age", "customer_level", "mb_registered")
               if c not in present]  # fmt: skip
    if missing:
        raise StoreError(
            f"bank_features lacks {', '.join(missing)}: load a bank extract that carries them "
            "(fusion.match.load_extract) before asking for coverage",
            path=str(store.path),
        )


def _latest_run(store: Store, params: Mapping[str, object], raw: pl.DataFrame) -> dict[str, Any]:
    """Return the newest match run of the snapshot; refuse one whose counts are not today's."""
    runs = store.execute(_LATEST_RUN_SQL, params).pl()
    if runs.is_empty():
        raise ConfigError(
            f"snapshot {params['snapshot']} has customers under salt epoch {params['epoch']!r} "
            "but no match run; run the match (fusion.match.match) first",
            setting="snapshot_date",
        )
    run = runs.row(0, named=True)
    recorded = tuple(int(run[c]) for c in _COUNTS)
    current = tuple(int(raw[c][0]) for c in _COUNTS)
    if recorded != current:
        # No counts in the message: they are unsuppressed and may be under k.
        raise ConfigError(
            f"the match run {run['run_id']} counted other customers than the store now holds "
            "for this snapshot: the extract changed after the match; run the match again",
            setting="snapshot_date",
        )
    return run


def _ordered(rows: pl.DataFrame, column: str) -> pl.DataFrame:
    """Return the groups in reading order: bands youngest first, registered first, else sorted."""
    if column == "age_band":
        rank = {label: i for i, label in enumerate((*AGE_BANDS, _UNKNOWN))}
        return rows.sort(pl.col(column).replace_strict(rank, return_dtype=pl.Int32))
    return rows.sort(column, descending=column == "mb_registered", nulls_last=True)


def _penetration(
    store: Store,
    params: dict[str, object],
    registration: pl.DataFrame,
    by_registration: pl.DataFrame,
    k: int,
) -> pl.DataFrame:
    """Return the k-anonymised category penetration of registered vs unregistered customers."""
    versions = store.execute(_VERSIONS_SQL, params).pl()["taxonomy_version"].drop_nulls()
    if versions.is_empty():  # nobody matched: list the newest taxonomy's categories anyway
        versions = (
            store.execute("SELECT max(taxonomy_version) AS v FROM tax_categories")
            .pl()["v"]
            .drop_nulls()
        )
    categories = store.execute(_CATEGORIES_SQL, {"versions": versions.to_list()}).pl()
    stored = store.execute(
        "SELECT DISTINCT taxonomy_version FROM tax_apps WHERE list_contains($versions, "
        "taxonomy_version)",
        {"versions": versions.to_list()},
    ).pl()["taxonomy_version"]
    lacking = sorted(set(versions.to_list()) - set(stored.to_list()))
    if categories.is_empty() or lacking:
        raise StoreError(
            f"the store lacks taxonomy {', '.join(lacking) or 'tables'} that the matched batches "
            "use; load it with store.load_taxonomy(contracts.taxonomy.load_taxonomy(version))",
            path=str(store.path),
        )
    users = store.execute(_PENETRATION_SQL, {**params}).pl()

    def matched(flag: bool) -> int:
        group = registration.filter(pl.col("mb_registered") == flag)["matched"]
        return int(group[0]) if len(group) else 0

    frame = (
        categories.join(users, on="category_id", how="left")
        .with_columns(
            pl.col("registered_users", "unregistered_users").fill_null(0).cast(pl.Int64),
            registered_matched=pl.lit(matched(True), pl.Int64),
            unregistered_matched=pl.lit(matched(False), pl.Int64),
        )
        .select(
            "category_id",
            "code",
            "name",
            "registered_matched",
            "registered_users",
            "unregistered_matched",
            "unregistered_users",
        )
    )
    # The denominators are by_registration's matched cells: withheld there, withheld here.
    published = {
        flag: by_registration.filter(pl.col("mb_registered") == flag)["matched"]
        for flag in (True, False)
    }
    withheld = [
        f"{prefix}_matched"
        for flag, prefix in ((True, "registered"), (False, "unregistered"))
        if published[flag].is_empty() or published[flag].is_null().any()
    ]
    table = _suppress(frame, _PENETRATION_LAYOUT, k=k, withheld=withheld)
    return _guard_public_denominators(table, withheld)


def _guard_public_denominators(table: pl.DataFrame, withheld: list[str]) -> pl.DataFrame:
    """Withhold what a denominator protected where it is withheld here but public elsewhere.

    Secondary suppression may withhold `registered_matched` to protect a small users cell, but
    that number is by_registration's `matched`, published there unless `withheld` says so; the
    protection then has to come from withholding the users cell and its shares instead.
    """
    for prefix in ("registered", "unregistered"):
        if f"{prefix}_matched" in withheld:
            continue
        exposed = pl.col(f"{prefix}_matched").is_null()
        hide = [f"{prefix}_users", f"{prefix}_share", "ratio"]
        table = table.with_columns(
            *(pl.when(exposed).then(None).otherwise(pl.col(c)).alias(c) for c in hide),
            suppressed_cells=pl.when(exposed)
            .then(pl.concat_list("suppressed_cells", pl.lit(hide)).list.unique(maintain_order=True))
            .otherwise(pl.col("suppressed_cells")),
        ).with_columns(suppressed=pl.col("suppressed_cells").list.len() > 0)
    return table


def _share(numerator: str, denominator: str) -> pl.Expr:
    return (pl.col(numerator) / pl.col(denominator)).cast(pl.Float64)


_FORMULAS: dict[str, pl.Expr] = {
    "coverage": _share("matched", "customers"),
    "keyed_coverage": _share("matched", "keyed"),
    "registered_share": _share("registered_users", "registered_matched"),
    "unregistered_share": _share("unregistered_users", "unregistered_matched"),
    "ratio": (
        _share("unregistered_users", "unregistered_matched")
        / _share("registered_users", "registered_matched")
    ),
}


# An identity: (total cell, part cells); total None = a published constant (a margin).
_Identity = tuple[int | None, tuple[int, ...]]
_Cells = np.ndarray[Any, Any]


def _suppress(
    frame: pl.DataFrame,
    layout: _Layout,
    *,
    k: int,
    margin: pl.DataFrame | None = None,
    withheld: Collection[str] = (),
) -> pl.DataFrame:
    """Return `frame` with its shares computed and every cell that could expose < k withheld.

    Args:
        frame: group columns and the layout's counts, one row per group, true values.
        layout: the table's counts, identities and derived columns.
        k: the smallest number of customers a published cell (or a difference of published
            cells) may describe.
        margin: the published one-row total of the same counts over all of `frame`'s rows (the
            `overall` table); each of its published cells adds a column identity.
        withheld: counts another table withholds; withheld here in every row.
    """
    n = frame.height
    helpers = [helper for helper, _, _ in layout.complements]
    names = [*layout.counts, *helpers]

    def cell(name: str, row: int) -> int:
        return names.index(name) * n + row

    counts = [frame[c].cast(pl.Int64).fill_null(0).to_numpy() for c in layout.counts]
    for _, total, part in layout.complements:
        counts.append(counts[names.index(total)] - counts[names.index(part)])
    values = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    hidden = values < k
    hidden[len(layout.counts) * n :] = True  # complements are never published
    for name in withheld:
        hidden[cell(name, 0) : cell(name, 0) + n] = True
    identities: list[_Identity] = [
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
    # Each pass withholds at least one more cell or stops, so the loop ends.
    while _withhold_exposed_sums(values, hidden, identities, k) or _withhold_determined(
        values, hidden, identities, k
    ):
        pass

    masks = {name: hidden[cell(name, 0) : cell(name, 0) + n] for name in layout.counts}
    for name, inputs in layout.derived:
        masks[name] = np.logical_or.reduce([masks[c] for c in inputs])
    cells = list(masks)
    out = frame.with_columns(*(_FORMULAS[name].alias(name) for name, _ in layout.derived))
    return out.with_columns(
        *(pl.when(pl.Series(masks[c])).then(None).otherwise(pl.col(c)).alias(c) for c in cells),
        pl.Series(
            "suppressed_cells",
            [[c for c in cells if masks[c][row]] for row in range(n)],
            dtype=pl.List(pl.String),
        ),
    ).with_columns(suppressed=pl.col("suppressed_cells").list.len() > 0)


def _withhold_exposed_sums(
    values: _Cells, hidden: _Cells, identities: list[_Identity], k: int
) -> bool:
    """Withhold the smallest published part wherever a published total exposes withheld parts
    summing to under k (total - published parts = their sum); return whether any was."""
    changed = False
    for total, parts in identities:
        if total is not None and hidden[total]:
            continue
        withheld = [p for p in parts if hidden[p]]
        if withheld and values[withheld].sum() < k:
            shown = [p for p in parts if not hidden[p]]
            if shown:  # else the total equals their sum, is under k and already withheld
                hidden[min(shown, key=lambda p: (values[p], p))] = True
                changed = True
    return changed


def _withhold_determined(
    values: _Cells, hidden: _Cells, identities: list[_Identity], k: int
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
        key=lambda c: (values[c], c),
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


def _cells(identity: _Identity) -> tuple[int, ...]:
    total, parts = identity
    return parts if total is None else (total, *parts)


def _reach(group: tuple[int, ...], hidden: _Cells, identities: list[_Identity]) -> set[int]:
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


def _null_space(hidden: _Cells, identities: list[_Identity]) -> tuple[dict[int, int], _Cells]:
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


def _known(group: tuple[int, ...], hidden: _Cells, identities: list[_Identity]) -> bool:
    index, free = _null_space(hidden, identities)
    return _is_known(group, index, free)


def _known_small_group(
    values: _Cells, hidden: _Cells, identities: list[_Identity], k: int
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
