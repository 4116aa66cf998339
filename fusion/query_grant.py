"""What an analyst's SQL may read and call: the granted views and the allowed functions.

`fusion.query` checks a query against this grant and fills a sandbox with these views only.
A view is a SELECT over the attached store file (`{db}`), filtered to the caller's rows: a branch
caller sees its customers at the newest snapshot, their matches and the vendor rows those matches
used, as its published copy holds them (`fusion.snapshots`); head office sees every snapshot.
No view carries a key or a raw identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import duckdb

from fusion.store import RAW_IDENTIFIER_COLUMNS

__all__ = ["GrantedView", "allowed_functions", "view_select"]

# Rows of one customers snapshot joined to its matches; {c_rows} filters the customers side.
_MATCHED = """
    SELECT m.customer_id, c.branch_id, m.snapshot_date, m.salt_epoch, m.batch_id, m.matched_at,
           m.key
    FROM {db}.main.matches AS m
    JOIN {db}.main.customers AS c
      ON c.customer_id = m.customer_id AND c.snapshot_date = m.snapshot_date
     AND c.salt_epoch = m.salt_epoch
    WHERE {c_rows}"""
_VENDOR = """
    SELECT mk.customer_id, mk.branch_id, mk.snapshot_date, mk.salt_epoch, mk.batch_id, {columns}
    FROM ({matched}) AS mk
    JOIN {db}.main.{table} AS v
      ON v.key = mk.key AND v.salt_epoch = mk.salt_epoch AND v.batch_id = mk.batch_id"""


@dataclass(frozen=True)
class GrantedView:
    """A view an analyst may name: what it holds, the store tables it needs, its SELECT."""

    description: str
    tables: tuple[str, ...]  # store tables it reads; the view is unavailable without them
    select: str  # {db}: the store's alias; {rows} / {c_rows}: the caller's rows; {matched}


VIEWS: dict[str, GrantedView] = {
    "customers": GrantedView(
        "one row per customer and snapshot: customer_id, branch_id, snapshot_date, salt_epoch, "
        "key_status (ok / invalid / duplicated phone)",
        ("customers",),
        "SELECT customer_id, branch_id, snapshot_date, salt_epoch, key_status "
        "FROM {db}.main.customers WHERE {rows}",
    ),
    "bank_features": GrantedView(
        "the bank extract's features per customer and snapshot (never phone or ID number)",
        ("customers", "bank_features"),
        "SELECT {features} FROM {db}.main.bank_features WHERE {rows}",
    ),
    "matches": GrantedView(
        "customers the vendor also holds: customer_id, branch_id, snapshot_date, salt_epoch, "
        "batch_id, matched_at",
        ("customers", "matches"),
        "SELECT customer_id, branch_id, snapshot_date, salt_epoch, batch_id, matched_at "
        "FROM ({matched})",
    ),
    "customer_apps": GrantedView(
        "app usage of matched customers, from the batch their match used: app_ids, app_days, "
        "app_sessions (lists)",
        ("customers", "matches", "vendor_apps"),
        _VENDOR.replace("{columns}", "v.app_ids, v.app_days, v.app_sessions").replace(
            "{table}", "vendor_apps"
        ),
    ),
    "customer_tags": GrantedView(
        "interest tags of matched customers, from the batch their match used: tag_ids, "
        "tag_weights (lists)",
        ("customers", "matches", "vendor_tags"),
        _VENDOR.replace("{columns}", "v.tag_ids, v.tag_weights").replace("{table}", "vendor_tags"),
    ),
    "tax_categories": GrantedView(
        "the taxonomy's app categories",
        ("tax_categories",),
        "SELECT * FROM {db}.main.tax_categories",
    ),
    "tax_apps": GrantedView(
        "the taxonomy's apps", ("tax_apps",), "SELECT * FROM {db}.main.tax_apps"
    ),
    "tax_tags": GrantedView(
        "the taxonomy's tags", ("tax_tags",), "SELECT * FROM {db}.main.tax_tags"
    ),
}
NEVER_SHOWN = RAW_IDENTIFIER_COLUMNS | {"key"}  # columns no view shows


def view_select(name: str, *, db: str, branches: frozenset[str] | None, features: list[str]) -> str:
    """Return the SELECT that fills the granted view `name` with the rows `branches` may see.

    `branches` None is head office (every row). Branch ids are checked by QueryScope (letters,
    digits, '.', '_', '-'), so no quote can be in them. `features` are bank_features' columns
    the view may show.
    """
    if branches is None:
        rows = c_rows = "TRUE"
    else:
        listed = ", ".join(f"'{b}'" for b in sorted(branches))
        newest = f"(SELECT max(snapshot_date) FROM {db}.main.customers)"  # noqa: S608
        rows = f"branch_id IN ({listed}) AND snapshot_date = {newest}"
        c_rows = f"c.branch_id IN ({listed}) AND c.snapshot_date = {newest}"
    shown = ", ".join('"' + c.replace('"', '""') + '"' for c in features)
    return VIEWS[name].select.format(
        db=db,
        rows=rows,
        c_rows=c_rows,
        matched=_MATCHED.format(db=db, c_rows=c_rows),
        features=shown,
    )


# Built-in functions that exist but are refused: they read the session, the catalog or settings,
# read base-table statistics (all branches), plan SQL given as a string, touch files, or have
# side effects. Table functions are refused by kind anyway; those here are named for the record.
DENIED_FUNCTIONS = frozenset(
    {
        "current_catalog",
        "current_connection_id",
        "current_database",
        "current_query",
        "current_query_id",
        "current_schema",
        "current_schemas",
        "current_setting",
        "current_transaction_id",
        "currval",
        "getenv",
        "getvariable",
        "glob",
        "in_search_path",
        "json_deserialize_sql",
        "json_execute_serialized_sql",
        "json_serialize_plan",
        "json_serialize_sql",
        "nextval",
        "parse_duckdb_log_message",
        "query",
        "query_table",
        "read_blob",
        "read_csv",
        "read_json",
        "read_parquet",
        "read_text",
        "stats",
        "txid_current",
        "version",
        "write_log",
    }
)
# Macros that only compute on their arguments (reviewed against duckdb_functions() of 1.4.4);
# other macros, such as pg_get_viewdef or format_type, expand into catalog queries.
PURE_MACROS = frozenset(
    {
        "array_append", "array_intersect", "array_pop_back", "array_pop_front", "array_prepend",
        "array_push_back", "array_push_front", "array_reverse", "array_to_string", "date_add",
        "fdiv", "fmod", "generate_subscripts", "geomean", "geometric_mean", "json",
        "json_group_array", "json_group_object", "json_group_structure", "list_any_value",
        "list_append", "list_approx_count_distinct", "list_avg", "list_bit_and", "list_bit_or",
        "list_bit_xor", "list_bool_and", "list_bool_or", "list_count", "list_entropy",
        "list_first", "list_histogram", "list_intersect", "list_kurtosis", "list_kurtosis_pop",
        "list_last", "list_mad", "list_max", "list_median", "list_min", "list_mode",
        "list_prepend", "list_product", "list_reverse", "list_sem", "list_skewness",
        "list_stddev_pop", "list_stddev_samp", "list_string_agg", "list_sum", "list_var_pop",
        "list_var_samp", "map_contains_entry", "map_contains_value", "nullif",
        "regexp_split_to_table", "round_even", "roundbankers", "split_part", "wavg",
        "weighted_avg",
    }
)  # fmt: skip
# Window-only functions (aggregates work as windows too), and unnest in a select list (in FROM
# it is a table function, refused).
SPECIAL_FUNCTIONS = frozenset(
    {
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
        "first_value", "last_value", "nth_value", "fill", "unnest", "unlist",
    }
)  # fmt: skip


@cache
def allowed_functions() -> frozenset[str]:
    """Return the function names a query may call: built-ins by kind, minus the denied ones."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET autoload_known_extensions = false")
        rows = con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE database_name = 'system' AND schema_name = 'main' "
            "AND function_type IN ('scalar', 'aggregate')"
        ).fetchall()
    finally:
        con.close()
    names = {str(r[0]) for r in rows} | PURE_MACROS | SPECIAL_FUNCTIONS
    return frozenset(n for n in names if n not in DENIED_FUNCTIONS and not n.startswith("__"))
