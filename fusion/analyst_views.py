"""Stable, versioned views for analysts inside each published snapshot, with their dictionary.

Every snapshot (head office and each branch) holds a schema `analyst_v1` of views over its own
tables: `customers`, `features`, `matches`, `apps`, `app_usage`, `tags`, the taxonomy, and, when
the data exists in that copy, `scores`, `lists` and the campaign views. An analyst's query names
`analyst_v1.<view>` and keeps working whatever the store's tables become: the views' columns are
a contract. A change that removes, renames or retypes a column is a new schema (`analyst_v2`)
published beside the old one for one release, then the old one goes (`SCHEMAS`, newest last).

Each view and each of its columns carries a `COMMENT ON` from `contracts.dictionary` (DuckDB
keeps them: `duckdb_views()`, `duckdb_columns()`); a column without a description raises, so
nothing reaches an analyst unexplained. `data_dictionary` gives the same text as data (for a
console page or an API route) and `dictionary_markdown` as the page docs/dictionary.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from contracts.dictionary import BANK_FEATURES, describe_column, describe_view
from contracts.errors import StoreError
from contracts.schemas import VENDOR_BATCH
from fusion.store_attach import sql_string

__all__ = [
    "CURRENT_SCHEMA",
    "PUBLISHED_TABLES",
    "SCHEMAS",
    "AnalystView",
    "ColumnEntry",
    "ViewEntry",
    "create_analyst_views",
    "data_dictionary",
    "dictionary_markdown",
]

log = logging.getLogger(__name__)

CURRENT_SCHEMA = "analyst_v1"
# Tables a snapshot holds beyond the store's: the run folder's score and list files, copied in
# at publish time (`fusion.pipeline.snapshots`), each filtered to the branch in branch copies.
PUBLISHED_TABLES = ("published_scores", "published_lists")

# Joins shared by the views: a match with its customer row (for the branch), and the vendor
# rows the match used (the batch it names, under its salt epoch).
_MATCHED = """main.matches AS m
    JOIN main.customers AS c
      ON c.customer_id = m.customer_id AND c.snapshot_date = m.snapshot_date
     AND c.salt_epoch IS NOT DISTINCT FROM m.salt_epoch"""
_VENDOR = (
    _MATCHED
    + """
    JOIN main.{table} AS v
      ON v.key = m.key AND v.batch_id = m.batch_id
     AND v.salt_epoch IS NOT DISTINCT FROM m.salt_epoch"""
)
_MATCH_ROW = (
    ("customer_id", "m.customer_id"),
    ("branch_id", "c.branch_id"),
    ("snapshot_date", "m.snapshot_date"),
)


@dataclass(frozen=True)
class AnalystView:
    """One analyst view: the tables it needs, its columns (name, SQL expression), its FROM."""

    name: str
    tables: tuple[str, ...]  # snapshot tables it reads: without one of them, no view
    columns: tuple[tuple[str, str], ...]
    source: str  # the FROM clause; {schema} names this version's schema
    availability: str
    extract_features: bool = False  # + the described columns of the bank's extract

    def select(self, schema: str, features: Sequence[str] = ()) -> str:
        """Return the view's SELECT in `schema`, with the extract columns `features`."""
        quoted = [f'"{f}"' for f in features] if self.extract_features else []
        exprs = [f"{expr} AS {name}" for name, expr in self.columns] + quoted
        source = self.source.format(schema=schema)
        return f"SELECT {', '.join(exprs)} FROM {source}"  # noqa: S608 (names are ours)


def _lists(prefix: str) -> tuple[tuple[str, str], ...]:
    """The vendor batch contract's list columns starting with `prefix`, as view columns."""
    return tuple((c, f"v.{c}") for c in VENDOR_BATCH.columns if c.startswith(prefix))


_EVERYWHERE = "head office and every branch (its own rows)"
V1: tuple[AnalystView, ...] = (
    AnalystView(
        "customers",
        ("customers", "matches"),
        (
            ("customer_id", "c.customer_id"),
            ("branch_id", "c.branch_id"),
            ("snapshot_date", "c.snapshot_date"),
            ("salt_epoch", "c.salt_epoch"),
            ("key_status", "c.key_status"),
            ("matched", "m.customer_id IS NOT NULL"),
        ),
        """main.customers AS c
    LEFT JOIN (SELECT DISTINCT customer_id, snapshot_date, salt_epoch FROM main.matches) AS m
      ON m.customer_id = c.customer_id AND m.snapshot_date = c.snapshot_date
     AND m.salt_epoch IS NOT DISTINCT FROM c.salt_epoch""",
        _EVERYWHERE,
    ),
    AnalystView(
        "features",
        ("bank_features",),
        (
            ("customer_id", "customer_id"),
            ("branch_id", "branch_id"),
            ("snapshot_date", "snapshot_date"),
        ),
        "main.bank_features",
        _EVERYWHERE + ", once an extract is loaded",
        extract_features=True,
    ),
    AnalystView(
        "matches",
        ("customers", "matches"),
        (
            *_MATCH_ROW,
            ("salt_epoch", "m.salt_epoch"),
            ("batch_id", "m.batch_id"),
            ("matched_at", "m.matched_at"),
        ),
        _MATCHED,
        _EVERYWHERE,
    ),
    AnalystView(
        "apps",
        ("customers", "matches", "vendor_apps"),
        (*_MATCH_ROW, ("batch_id", "m.batch_id"), *_lists("app_")),
        _VENDOR.replace("{table}", "vendor_apps"),
        _EVERYWHERE,
    ),
    AnalystView(
        "app_usage",
        ("customers", "matches", "vendor_apps", "tax_apps", "tax_categories"),
        (
            ("customer_id", "u.customer_id"),
            ("branch_id", "u.branch_id"),
            ("snapshot_date", "u.snapshot_date"),
            ("app_id", "u.app_id"),
            ("app_name", "a.name"),
            ("category_id", "a.category_id"),
            ("category_name", "k.name"),
            ("active_days", "u.active_days"),
            ("sessions", "u.sessions"),
        ),
        """(SELECT customer_id, branch_id, snapshot_date, unnest(app_ids) AS app_id,
                 unnest(app_days) AS active_days, unnest(app_sessions) AS sessions
          FROM {schema}.apps) AS u
    LEFT JOIN main.tax_apps AS a
      ON a.app_id = u.app_id
     AND a.taxonomy_version = (SELECT max(taxonomy_version) FROM main.tax_apps)
    LEFT JOIN main.tax_categories AS k
      ON k.category_id = a.category_id AND k.taxonomy_version = a.taxonomy_version""",
        _EVERYWHERE,
    ),
    AnalystView(
        "tags",
        ("customers", "matches", "vendor_tags"),
        (*_MATCH_ROW, ("batch_id", "m.batch_id"), *_lists("tag_")),
        _VENDOR.replace("{table}", "vendor_tags"),
        _EVERYWHERE,
    ),
    AnalystView(
        "categories",
        ("tax_categories",),
        (
            ("taxonomy_version", "taxonomy_version"),
            ("category_id", "category_id"),
            ("category_code", "code"),
            ("category_name", "name"),
            ("category_name_zh", "name_zh"),
        ),
        "main.tax_categories",
        _EVERYWHERE,
    ),
    AnalystView(
        "app_catalog",
        ("tax_apps",),
        (
            ("taxonomy_version", "taxonomy_version"),
            ("app_id", "app_id"),
            ("category_id", "category_id"),
            ("app_name", "name"),
            ("popularity_rank", "popularity_rank"),
        ),
        "main.tax_apps",
        _EVERYWHERE,
    ),
    AnalystView(
        "tag_catalog",
        ("tax_tags",),
        (
            ("taxonomy_version", "taxonomy_version"),
            ("tag_id", "tag_id"),
            ("category_id", "category_id"),
            ("tag_topic", "topic"),
            ("tag_name", "name"),
        ),
        "main.tax_tags",
        _EVERYWHERE,
    ),
    AnalystView(
        "scores",
        ("published_scores",),
        tuple(
            (c, c)
            for c in (
                "ranking",
                "customer_id",
                "branch_id",
                "score",
                "decile",
                "reason_1",
                "reason_2",
                "reason_3",
                "model_version",
            )
        ),
        "main.published_scores",
        _EVERYWHERE + ", once the base is scored",
    ),
    AnalystView(
        "lists",
        ("published_lists",),
        tuple((c, c) for c in ("list_name", "branch_id", "list_rank", "customer_id", "score")),
        "main.published_lists",
        _EVERYWHERE + ", once lists are written",
    ),
    AnalystView(
        "campaigns",
        ("campaigns",),
        tuple(
            (c, c)
            for c in (
                "campaign_id",
                "version",
                "stage",
                "declaration",
                "created_at",
                "created_by",
                "updated_at",
            )
        ),
        "main.campaigns",
        "head office",
    ),
    AnalystView(
        "campaign_assignments",
        ("assignments",),
        tuple(
            (c, c)
            for c in (
                "campaign_id",
                "customer_id",
                "branch_id",
                "arm",
                "stage",
                "decile",
                "stratum",
                "window_start",
                "window_end",
                "contact_day",
                "assigned_at",
            )
        ),
        "main.assignments",
        "head office",
    ),
    AnalystView(
        "campaign_events",
        ("outcome_events",),
        tuple(
            (c, c)
            for c in ("campaign_id", "customer_id", "event", "amount", "occurred_at", "received_at")
        ),
        "main.outcome_events",
        "head office",
    ),
)

# Every published schema and its views, oldest first; the last is CURRENT_SCHEMA.
SCHEMAS: dict[str, tuple[AnalystView, ...]] = {CURRENT_SCHEMA: V1}


def create_analyst_views(cur: duckdb.DuckDBPyConnection, catalog: str) -> list[str]:
    """Create every analyst schema's views in the attached snapshot `catalog`, with comments.

    `cur` must have `catalog` as its default (USE), so the views bind to the snapshot's own
    tables. A view whose tables the copy lacks is left out. Returns the extract columns left out
    of `features` because the dictionary does not describe them (they stay in the head-office
    base table); a view column without a description raises ConfigError.
    """
    tables = {
        str(r[0])
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'main'",
            [catalog],
        ).fetchall()
    }
    extract = _extract_columns(cur, catalog) if "bank_features" in tables else []
    features = [c for c in extract if c in BANK_FEATURES]
    left_out = [c for c in extract if c not in BANK_FEATURES and c not in _FEATURE_IDS]
    if left_out:
        log.warning(
            "extract columns %s are not in the data dictionary (contracts/dictionary.py), so "
            "analyst views leave them out",
            ", ".join(left_out),
        )
    for schema, views in SCHEMAS.items():
        cur.execute(f"CREATE SCHEMA {schema}")
        for view in views:
            if not set(view.tables) <= tables:
                continue
            select = view.select(schema, features)
            cur.execute(f"CREATE VIEW {schema}.{view.name} AS {select}")
            _comment(cur, catalog, schema, view)
    return left_out


_FEATURE_IDS = ("customer_id", "branch_id", "snapshot_date")


def _extract_columns(cur: duckdb.DuckDBPyConnection, catalog: str) -> list[str]:
    rows = cur.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? "
        "AND schema_name = 'main' AND table_name = 'bank_features' ORDER BY column_index",
        [catalog],
    ).fetchall()
    return [str(r[0]) for r in rows if r[0] not in _FEATURE_IDS]


def _comment(cur: duckdb.DuckDBPyConnection, catalog: str, schema: str, view: AnalystView) -> None:
    """Comment the view and every column DuckDB gives it; a column without a description raises."""
    name = f"{schema}.{view.name}"
    cur.execute(f"COMMENT ON VIEW {name} IS {sql_string(describe_view(view.name))}")
    columns = cur.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? "
        "AND table_name = ? ORDER BY column_index",
        [catalog, schema, view.name],
    ).fetchall()
    declared = [c for c, _ in view.columns]
    if [str(r[0]) for r in columns][: len(declared)] != declared:
        raise StoreError(
            f"view {name} came out with columns {[r[0] for r in columns]}, expected "
            f"{declared} first; its definition in fusion/analyst_views.py is inconsistent"
        )
    comments = [
        f'COMMENT ON COLUMN {name}."{column}" IS {sql_string(describe_column(str(column)))}'
        for (column,) in columns
    ]
    if comments:  # one call: the statements run in order, as they would one by one
        cur.execute(";\n".join(comments))


@dataclass(frozen=True)
class ColumnEntry:
    """One column of an analyst view and what it holds."""

    name: str
    description: str


@dataclass(frozen=True)
class ViewEntry:
    """One analyst view: its schema, what a row is, where it exists, its columns."""

    schema: str
    name: str
    description: str
    availability: str
    columns: tuple[ColumnEntry, ...]

    def to_dict(self) -> dict[str, object]:
        """Return the entry as JSON-ready data."""
        return {
            "schema": self.schema,
            "view": self.name,
            "description": self.description,
            "availability": self.availability,
            "columns": [{"name": c.name, "description": c.description} for c in self.columns],
        }


def data_dictionary() -> tuple[ViewEntry, ...]:
    """Return every analyst view of every published schema with its columns described.

    `features` lists the extract columns the dictionary describes; a snapshot holds those its
    bank extract delivered. Raises ConfigError where a description is missing.
    """
    entries = []
    for schema, views in SCHEMAS.items():
        for view in views:
            names = [c for c, _ in view.columns]
            if view.extract_features:
                names += list(BANK_FEATURES)
            columns = tuple(ColumnEntry(c, describe_column(c)) for c in names)
            entries.append(
                ViewEntry(schema, view.name, describe_view(view.name), view.availability, columns)
            )
    return tuple(entries)


def dictionary_markdown() -> str:
    """Return the data dictionary as the Markdown page docs/dictionary.md."""
    lines = [
        "# Data dictionary of the analyst views",
        "",
        "Generated from `contracts/dictionary.py` by `fusion snapshot dictionary --markdown`; "
        "the same text is in every published snapshot (`COMMENT ON` each view and column: "
        "`SELECT * FROM duckdb_columns() WHERE schema_name = 'analyst_v1'`). How to open a "
        "snapshot: `analysts.md`.",
    ]
    for entry in data_dictionary():
        lines += [
            "",
            f"## {entry.schema}.{entry.name}",
            "",
            f"{entry.description} Available in: {entry.availability}.",
            "",
            "| column | meaning |",
            "|---|---|",
        ]
        lines += [f"| `{c.name}` | {c.description.replace('|', '/')} |" for c in entry.columns]
    return "\n".join(lines) + "\n"
