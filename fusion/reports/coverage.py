"""How much of the customer base the vendor covers, and what the matched customers use.

For one (snapshot date, salt epoch) whose match has run (`fusion.match`), `coverage_report`
gives marketers the numbers a real bank asked for before buying vendor data:

- match coverage overall and by branch, age band, customer level and mobile-banking
  registration: customers, keyed (a usable phone), invalid and duplicated phones, matched, and
  the coverage shares `matched / customers` and `matched / keyed`;
- what each identifier added (`by_identifier`, one row per type of the match's declared
  priority): customers with a usable key of it, customers the vendor holds under it, customers
  it matched beyond the types before it (the gain: matched / customers) and its links overruled
  by a match of higher priority (conflicts);
- app penetration over the taxonomy's 26 categories for matched customers registered on mobile
  banking vs not: the share using at least one app of the category, and the ratio
  unregistered / registered (the comparison a real bank used to choose a food-delivery partner
  for its mobile-banking campaign).

Every table goes through `fusion.reports.disclosure.suppress` before it leaves this module, so
none can skip it. Each table's `Layout` tells it the identities a reader can use: customers =
keyed + invalid + duplicated and keyed = matched + keyed-unmatched in every row, matched = users
+ non-users per category, and the overall row = the sum of a breakdown's rows (the margin).
Differences never published (keyed-unmatched, non-users) count as withheld cells, so a share of
99.8% of 600 does not reveal the one customer outside it.

Withheld cells are null, and each row lists them in `suppressed_cells` (`suppressed` is true when
that list is not empty). The penetration denominators are by_registration's matched cells and
are withheld wherever that table withholds them. The heavy work is one DuckDB scan with
GROUPING SETS and one UNNEST of the matched customers' app lists; suppression runs on the
aggregates (a few hundred cells at most).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import ConfigError, StoreError
from fusion.reports.disclosure import DEFAULT_K, Layout, check_k, guard_public_cells, suppress
from fusion.store import Store
from matcher.atomic import atomic_path

__all__ = [
    "AGE_BANDS",
    "COVERAGE_LAYOUT",
    "DENOMINATOR_GUARDS",
    "IDENTIFIER_LAYOUT",
    "PENETRATION_LAYOUT",
    "TABLES",
    "CoverageReport",
    "coverage_report",
]

# Labels of the age bands, youngest first; the CASE in _COVERAGE_SQL draws the same edges.
# Ages outside them (the extract contract allows 18..110) or missing read "unknown".
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
_UNKNOWN = "unknown"
# Table names, in the order reports show them; also the Parquet file names.
TABLES = (
    "overall",
    "by_identifier",
    "by_branch",
    "by_age_band",
    "by_level",
    "by_registration",
    "penetration",
)

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
SELECT run_id, finished_at, customers, keyed, invalid, duplicated, matched, identifiers,
       by_identifier
FROM match_runs
WHERE snapshot_date = $snapshot AND salt_epoch = $epoch
ORDER BY finished_at DESC, run_id DESC
LIMIT 1
"""


COVERAGE_LAYOUT = Layout(
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

# One row per identifier type: keyed = linked + keyed-unlinked and linked = matched +
# linked-not-added in every row; down the rows, matched sums to the overall row's matched (the
# margin). `customers` is the overall count in every row, the gain's denominator.
IDENTIFIER_LAYOUT = Layout(
    counts=("customers", "keyed", "linked", "matched", "conflicts"),
    complements=(
        ("_keyed_unlinked", "keyed", "linked"),
        ("_linked_not_added", "linked", "matched"),
    ),
    sums=(
        ("keyed", ("linked", "_keyed_unlinked")),
        ("linked", ("matched", "_linked_not_added")),
    ),
    derived=(("gain", ("matched", "customers")),),
)

PENETRATION_LAYOUT = Layout(
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

# What each penetration denominator protects when secondary suppression withholds it although
# by_registration publishes it: the users cell, and the share and ratio computed from it.
DENOMINATOR_GUARDS = {
    f"{side}_matched": (f"{side}_users", f"{side}_share", "ratio")
    for side in ("registered", "unregistered")
}


@dataclass(frozen=True)
class CoverageReport:
    """Match coverage and app penetration of one snapshot and salt epoch, k-anonymised.

    `by_identifier`, one row per identifier type in priority order: id_type, customers,
    keyed, linked, matched (what the type added), conflicts (Int64) and gain = matched /
    customers (Float64).
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
    by_identifier: pl.DataFrame
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
            with atomic_path(path) as tmp:
                table.write_parquet(tmp, metadata=metadata | {"table": name})
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
    check_k(k)
    params: dict[str, object] = {"snapshot": snapshot_date, "epoch": salt_epoch}
    _require_features(store)
    counts = store.execute(_COVERAGE_SQL, params).pl()
    raw = counts.filter(pl.col("grouping_id") == _OVERALL_ID).select(_COUNTS)
    if raw.is_empty() or raw["customers"][0] == 0:
        raise ConfigError(
            f"no customers for snapshot {snapshot_date} under salt epoch {salt_epoch!r}; match "
            "the snapshot's extract first (fusion match --extract EXTRACT.parquet --snapshot DATE)",
            setting="snapshot_date",
        )
    run = _latest_run(store, params, raw)

    overall = _suppress(raw, COVERAGE_LAYOUT, k=k)
    tables: dict[str, pl.DataFrame] = {"overall": overall}
    tables["by_identifier"] = _by_identifier(run, raw, overall, k)
    for name, (column, grouping_id) in _DIMENSIONS.items():
        rows = _ordered(
            counts.filter(pl.col("grouping_id") == grouping_id).select(column, *_COUNTS), column
        )
        tables[name] = _suppress(rows, COVERAGE_LAYOUT, k=k, margin=overall)

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
            f"bank_features lacks {', '.join(missing)}: match a bank extract that carries them "
            "(fusion match --extract EXTRACT.parquet --snapshot DATE) before asking for coverage",
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


def _by_identifier(
    run: Mapping[str, Any], raw: pl.DataFrame, overall: pl.DataFrame, k: int
) -> pl.DataFrame:
    """Return what each identifier of the run's priority added, k-anonymised.

    A run from before several identifiers matched on the mobile number alone: every customer
    keyed was keyed by it and every match is its own.
    """
    customers, keyed, matched = (int(raw[c][0]) for c in ("customers", "keyed", "matched"))
    found = json.loads(run["by_identifier"]) if run.get("by_identifier") else {}
    if not found:
        found = {"mobile": {"keyed": keyed, "linked": matched, "matched": matched, "conflicts": 0}}
    kinds = str(run.get("identifiers") or ",".join(found)).split(",")
    frame = pl.DataFrame(
        {
            "id_type": kinds,
            "customers": [customers] * len(kinds),
            **{
                name: [int(found.get(kind, {}).get(name, 0)) for kind in kinds]
                for name in ("keyed", "linked", "matched", "conflicts")
            },
        },
        schema={
            "id_type": pl.String,
            **dict.fromkeys(("customers", "keyed", "linked", "matched", "conflicts"), pl.Int64),
        },
    )
    # An identifier's gain is the headline: secondary suppression withholds other cells first.
    return _suppress(
        frame, IDENTIFIER_LAYOUT, k=k, margin=overall.select("matched"), keep=("matched",)
    )


def _ordered(rows: pl.DataFrame, column: str) -> pl.DataFrame:
    """Return the groups in reading order: bands youngest first, registered first, else sorted."""
    if column == "age_band":
        rank = {label: i for i, label in enumerate((*AGE_BANDS, _UNKNOWN))}
        return rows.sort(pl.col(column).replace_strict(rank, return_dtype=pl.Int32))
    return rows.sort(column, descending=column == "mb_registered", nulls_last=True)


def _suppress(
    frame: pl.DataFrame,
    layout: Layout,
    *,
    k: int,
    margin: pl.DataFrame | None = None,
    withheld: Sequence[str] = (),
    keep: Sequence[str] = (),
) -> pl.DataFrame:
    """Return `frame` with its shares computed, through the disclosure gate."""
    shares = frame.with_columns(*(_FORMULAS[name].alias(name) for name, _ in layout.derived))
    return suppress(shares, layout, k=k, margin=margin, withheld=withheld, keep=keep)


def _penetration(
    store: Store,
    params: dict[str, object],
    registration: pl.DataFrame,
    by_registration: pl.DataFrame,
    k: int,
) -> pl.DataFrame:
    """Return the k-anonymised category penetration of registered vs unregistered customers."""
    categories = _categories(store, params)
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
    table = _suppress(frame, PENETRATION_LAYOUT, k=k, withheld=withheld)
    # Secondary suppression may withhold a denominator to protect a small users cell, but that
    # number is by_registration's `matched`, published there unless `withheld` says so.
    return guard_public_cells(table, DENOMINATOR_GUARDS, withheld=withheld)


def _categories(store: Store, params: Mapping[str, object]) -> pl.DataFrame:
    """Return the categories of the taxonomies the matched batches use; refuse a missing one."""
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
            "use (every batch loaded brings its own; this store holds batches from before): "
            "load it with `fusion taxonomy load"
            + (f" --version {lacking[0]}`" if lacking else "`"),
            path=str(store.path),
        )
    return categories


def _share(numerator: str, denominator: str) -> pl.Expr:
    return (pl.col(numerator) / pl.col(denominator)).cast(pl.Float64)


_FORMULAS: dict[str, pl.Expr] = {
    "coverage": _share("matched", "customers"),
    "gain": _share("matched", "customers"),
    "keyed_coverage": _share("matched", "keyed"),
    "registered_share": _share("registered_users", "registered_matched"),
    "unregistered_share": _share("unregistered_users", "unregistered_matched"),
    "ratio": (
        _share("unregistered_users", "unregistered_matched")
        / _share("registered_users", "registered_matched")
    ),
}
