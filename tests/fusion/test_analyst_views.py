"""Analyst views in published snapshots: stable columns, a comment on every one, the dictionary."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

import fusion.analyst_views as views_module
from contracts.errors import ConfigError
from contracts.taxonomy import load_taxonomy
from fusion.analyst_views import CURRENT_SCHEMA, SCHEMAS, data_dictionary, dictionary_markdown
from fusion.store import Store
from fusion.store_attach import load_httpfs
from tests.support.stores import T0, key_blob, record_batch, store_config, tag_rows

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = date(2026, 9, 30)
# The analyst_v1 contract: changing a column here is a breaking change (a new schema version).
V1_COLUMNS = {
    "customers": ["customer_id", "branch_id", "snapshot_date", "salt_epoch", "key_status",
                  "matched"],
    "features": ["customer_id", "branch_id", "snapshot_date", "age", "aum_month_avg"],
    "matches": ["customer_id", "branch_id", "snapshot_date", "salt_epoch", "batch_id",
                "matched_at"],
    "apps": ["customer_id", "branch_id", "snapshot_date", "batch_id", "app_ids", "app_days",
             "app_sessions"],
    "app_usage": ["customer_id", "branch_id", "snapshot_date", "app_id", "app_name",
                  "category_id", "category_name", "active_days", "sessions"],
    "tags": ["customer_id", "branch_id", "snapshot_date", "batch_id", "tag_ids", "tag_weights"],
    "categories": ["taxonomy_version", "category_id", "category_code", "category_name",
                   "category_name_zh"],
    "app_catalog": ["taxonomy_version", "app_id", "category_id", "app_name", "popularity_rank"],
    "tag_catalog": ["taxonomy_version", "tag_id", "category_id", "tag_topic", "tag_name"],
    "scores": ["ranking", "customer_id", "branch_id", "score", "decile", "reason_1", "reason_2",
               "reason_3", "model_version"],
    "lists": ["list_name", "branch_id", "list_rank", "customer_id", "score"],
    "campaigns": ["campaign_id", "version", "stage", "declaration", "created_at", "created_by",
                  "updated_at"],
    "campaign_assignments": ["campaign_id", "customer_id", "branch_id", "arm", "stage", "decile",
                             "stratum", "window_start", "window_end", "contact_day",
                             "assigned_at"],
    "campaign_events": ["campaign_id", "customer_id", "event", "amount", "occurred_at",
                        "received_at"],
}  # fmt: skip
HEAD_ONLY = {"campaigns", "campaign_assignments", "campaign_events"}


@pytest.fixture
def store(tmp_path: Path, ext_dir: Path) -> Iterator[Store]:
    """A store with two branches, matches, vendor apps and tags, and an extract's features."""
    with Store.open(store_config(tmp_path, ext_dir), key=secrets.token_urlsafe(32)) as opened:
        opened.load_taxonomy(load_taxonomy())
        record_batch(opened, "b1", T0)
        opened.insert_frame("vendor_tags", tag_rows([1, 3], "b1", 10))
        apps = tag_rows([1, 3], "b1", 0).select("key", "salt_epoch", "batch_id")
        opened.insert_frame(
            "vendor_apps",
            apps.with_columns(
                app_ids=pl.lit([1, 2], pl.List(pl.Int32)),
                app_days=pl.lit([3, 4], pl.List(pl.Int16)),
                app_sessions=pl.lit([5, 6], pl.List(pl.Int32)),
            ),
        )
        ids = [101, 102, 201]
        opened.insert_frame(
            "customers",
            pl.DataFrame({"customer_id": ids, "branch_id": ["A", "A", "B"],
                          "key": [key_blob(k) for k in (1, 2, 3)], "salt_epoch": ["e1"] * 3,
                          "key_status": ["ok"] * 3, "snapshot_date": [SNAPSHOT] * 3}),
        )  # fmt: skip
        opened.insert_frame(
            "matches",
            pl.DataFrame({"customer_id": [101, 201], "key": [key_blob(1), key_blob(3)],
                          "salt_epoch": ["e1"] * 2, "batch_id": ["b1"] * 2,
                          "snapshot_date": [SNAPSHOT] * 2}),
        )  # fmt: skip
        features = pl.DataFrame(
            {"customer_id": ids, "branch_id": ["A", "A", "B"], "age": [30, 41, 52],
             "aum_month_avg": [1e4, 2e4, 3e4], "shoe_size": [40, 41, 42],
             "snapshot_date": [SNAPSHOT] * 3}
        )  # fmt: skip
        opened.create_table_like("bank_features", features)
        opened.insert_frame("bank_features", features)
        yield opened


def _tables() -> dict[str, pl.DataFrame]:
    scores = pl.DataFrame(
        {"ranking": ["acquisition"] * 3, "customer_id": [101, 102, 201],
         "branch_id": ["A", "A", "B"], "score": [0.9, 0.2, 0.5], "decile": [1, 9, 5]},
        schema_overrides={"decile": pl.Int8},
    ).with_columns(
        *(pl.lit(None, pl.String).alias(c) for c in ("reason_1", "reason_2", "reason_3",
                                                     "model_version"))
    )  # fmt: skip
    lists = pl.DataFrame(
        {"list_name": ["mobile-banking"] * 2, "branch_id": ["A", "B"], "list_rank": [1, 1],
         "customer_id": [101, 201], "score": [0.9, 0.5]}
    )  # fmt: skip
    return {"published_scores": scores, "published_lists": lists}


def _publish(store: Store, out: Path) -> dict[str, tuple[Path, str]]:
    keys = {name: secrets.token_urlsafe(32) for name in ("head_office", "A", "B")}
    written = store.publish(
        out, head_office_key=keys["head_office"], branch_keys={"A": keys["A"], "B": keys["B"]},
        tables=_tables(),
    )  # fmt: skip
    return {name: (path, keys[name]) for name, path in written.items()}


def _open(path: Path, key: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    assert load_httpfs(con) is None  # else DuckDB tries to fetch it for OpenSSL, then waits
    con.execute(f"ATTACH '{path}' AS s (ENCRYPTION_KEY ?, READ_ONLY)", [key])
    return con


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str | None]]]:
    rows = con.execute(
        "SELECT table_name, column_name, comment FROM duckdb_columns() WHERE database_name = 's' "
        "AND schema_name = ? ORDER BY table_name, column_index",
        [CURRENT_SCHEMA],
    ).fetchall()
    found: dict[str, list[tuple[str, str | None]]] = {}
    for view, column, comment in rows:
        found.setdefault(view, []).append((column, comment))
    return found


@pytest.mark.slow  # three encrypted snapshots written and opened: about 2 s
def test_every_view_and_column_is_commented_and_v1_keeps_its_columns(store: Store, tmp_path: Path):
    published = _publish(store, tmp_path / "snapshots")
    head = _open(*published["head_office"])
    columns = _columns(head)
    assert {v: [c for c, _ in cs] for v, cs in columns.items()} == V1_COLUMNS
    assert all(comment for cs in columns.values() for _, comment in cs)
    view_comments = head.execute(
        "SELECT view_name, comment FROM duckdb_views() WHERE database_name = 's' "
        "AND schema_name = ?",
        [CURRENT_SCHEMA],
    ).fetchall()
    assert len(view_comments) == len(V1_COLUMNS) and all(c for _, c in view_comments)
    assert head.execute(
        f"SELECT customer_id, matched FROM s.{CURRENT_SCHEMA}.customers ORDER BY 1"
    ).fetchall() == [(101, True), (102, False), (201, True)]
    assert head.execute(
        f"SELECT customer_id, app_id, active_days, category_name IS NOT NULL "
        f"FROM s.{CURRENT_SCHEMA}.app_usage ORDER BY 1, 2"
    ).fetchall() == [(101, 1, 3, True), (101, 2, 4, True), (201, 1, 3, True), (201, 2, 4, True)]

    branch = _open(*published["A"])
    branch_columns = _columns(branch)
    assert set(branch_columns) == set(V1_COLUMNS) - HEAD_ONLY
    assert all(comment for cs in branch_columns.values() for _, comment in cs)
    for view in ("customers", "matches", "apps", "tags", "features", "scores", "lists"):
        assert branch.execute(
            f"SELECT DISTINCT branch_id FROM s.{CURRENT_SCHEMA}.{view}"
        ).fetchall() == [("A",)], view


def test_a_view_column_without_a_description_fails_the_publish(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    views = list(SCHEMAS[CURRENT_SCHEMA])
    views[0] = dataclasses.replace(views[0], columns=(*views[0].columns, ("mystery", "1")))
    monkeypatch.setitem(views_module.SCHEMAS, CURRENT_SCHEMA, tuple(views))
    with pytest.raises(ConfigError, match="'mystery' has no description"):
        _publish(store, tmp_path / "snapshots")
    with pytest.raises(ConfigError, match="'mystery' has no description"):
        data_dictionary()


def test_the_dictionary_covers_every_view_and_its_page_is_fresh():
    entries = {e.name: e for e in data_dictionary()}
    assert set(entries) == set(V1_COLUMNS)
    assert all(c.description for e in entries.values() for c in e.columns)
    assert entries["customers"].to_dict()["columns"][0]["name"] == "customer_id"
    page = ROOT / "docs" / "dictionary.md"
    assert page.read_text() == dictionary_markdown(), (
        "docs/dictionary.md is stale: regenerate it with "
        "`fusion snapshot dictionary --markdown > docs/dictionary.md`"
    )
