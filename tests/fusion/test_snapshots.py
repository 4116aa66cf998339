"""Published snapshots on real DuckDB files: a head-office copy, branch copies, their keys."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

import fusion.snapshots as snapshots_module
from contracts.errors import ConfigError, StoreError
from contracts.taxonomy import load_taxonomy
from fusion.store import Store, StoreConfig
from fusion.store_migrations import SCHEMA_VERSION
from tests.support.stores import T0, key_blob, record_batch, store_config, tag_rows


@pytest.fixture
def store(tmp_path: Path, ext_dir: Path) -> Iterator[Store]:
    with Store.open(store_config(tmp_path, ext_dir), key=secrets.token_urlsafe(32)) as opened:
        yield opened


def _two_branches(store: Store) -> None:
    store.load_taxonomy(load_taxonomy())
    record_batch(store, "b1", T0)
    record_batch(store, "b2", T0 + timedelta(days=1))
    store.insert_frame("vendor_tags", tag_rows([1, 2, 3, 4, 99], "b1", 10))
    store.insert_frame("vendor_tags", tag_rows([1], "b2", 20))
    store.insert_frame("vendor_apps", tag_rows([1, 2, 3, 4], "b1", 0).select("key", "batch_id"))
    store.insert_frame("vendor_apps", tag_rows([1], "b2", 0).select("key", "batch_id"))
    snapshot, earlier = date(2026, 9, 30), date(2026, 6, 30)
    customers = pl.DataFrame(
        {
            "customer_id": [101, 102, 201, 202, 201],
            "branch_id": ["A", "A", "B", "B", "A"],  # 201 was at A last quarter, moved to B
            "key": [key_blob(k) for k in (1, 2, 3, 4, 3)],
            "snapshot_date": [snapshot] * 4 + [earlier],
        }
    )
    store.insert_frame("customers", customers)
    store.insert_frame(
        "matches",
        pl.DataFrame(
            {
                "customer_id": [101, 201, 201],
                "key": [key_blob(1), key_blob(3), key_blob(3)],
                "batch_id": ["b2", "b1", "b1"],
                "snapshot_date": [snapshot, snapshot, earlier],
            }
        ),
    )
    store.execute(
        "INSERT INTO audit_log (\"at\", actor, action) VALUES (?, 'ops', 'publish')", [T0]
    )


def _tables(store: Store) -> set[str]:
    return {r[0] for r in store.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


@pytest.mark.slow  # over a second: out of the inner loop
def test_publish_writes_a_head_office_copy_and_branch_copies(
    store: Store, tmp_path: Path, ext_dir: Path
):
    _two_branches(store)
    keys = {name: secrets.token_urlsafe(32) for name in ("head_office", "A", "B")}
    out = tmp_path / "snapshots"
    written = store.publish(
        out, head_office_key=keys["head_office"], branch_keys={"A": keys["A"], "B": keys["B"]}
    )
    assert written == {
        "head_office": out / "head_office.duckdb",
        "A": out / "branch_A.duckdb",
        "B": out / "branch_B.duckdb",
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written.values())

    def snapshot(name: str, key: str) -> Store:
        return Store.open(
            StoreConfig(written[name], extension_directory=ext_dir), key=key, read_only=True
        )

    with snapshot("head_office", keys["head_office"]) as head:
        assert head.schema_version == SCHEMA_VERSION
        assert _tables(head) == _tables(store)
        for table in ("customers", "matches", "vendor_tags", "batches", "audit_log", "tax_tags"):
            query = f"SELECT count(*) FROM {table}"
            assert head.execute(query).fetchone() == store.execute(query).fetchone()
        assert head.execute("SELECT count(*) FROM vendor_tags_latest").fetchone() == (5,)
    for wrong in (keys["A"], keys["B"]):
        with pytest.raises(StoreError, match="did not open with this key"):
            snapshot("head_office", wrong)

    with snapshot("A", keys["A"]) as branch:
        assert "batches" not in _tables(branch) and "audit_log" not in _tables(branch)
        assert branch.execute(
            "SELECT customer_id, branch_id FROM customers ORDER BY 1"
        ).fetchall() == [
            (101, "A"),
            (102, "A"),
        ]
        assert branch.execute("SELECT customer_id FROM matches").fetchall() == [(101,)]
        assert branch.execute("SELECT key, batch_id, tag_ids FROM vendor_tags").fetchall() == [
            (key_blob(1), "b2", [20, 21])
        ]
        assert branch.execute("SELECT key, batch_id FROM vendor_tags_latest").fetchall() == [
            (key_blob(1), "b2")
        ]
        assert branch.execute("SELECT key, batch_id FROM vendor_apps").fetchall() == [
            (key_blob(1), "b2")
        ]
        assert branch.execute("SELECT count(*) FROM tax_tags").fetchone() == (
            load_taxonomy().n_tags,
        )
    with snapshot("B", keys["B"]) as branch:
        assert branch.execute("SELECT customer_id FROM customers ORDER BY 1").fetchall() == [
            (201,),
            (202,),
        ]
        assert branch.execute("SELECT key FROM vendor_tags").fetchall() == [(key_blob(3),)]
    for wrong in (keys["head_office"], keys["B"]):
        with pytest.raises(StoreError, match="did not open with this key"):
            snapshot("A", wrong)

    # Publishing again replaces the copies in place.
    store.insert_frame(
        "customers",
        pl.DataFrame(
            {"customer_id": [103], "branch_id": ["A"], "snapshot_date": [date(2026, 9, 30)]}
        ),
    )
    store.publish(out, head_office_key=keys["head_office"], branch_keys={"A": keys["A"]})
    with snapshot("A", keys["A"]) as branch:
        assert branch.execute("SELECT count(*) FROM customers").fetchone() == (3,)
    assert len(list(out.iterdir())) == 3


def test_publish_refuses_shared_keys_and_unsafe_branch_names(store: Store, tmp_path: Path):
    shared = secrets.token_urlsafe(32)
    with pytest.raises(ConfigError, match="its own key"):
        store.publish(tmp_path / "out", head_office_key=shared, branch_keys={"A": shared})
    with pytest.raises(ConfigError, match="branch id"):
        store.publish(
            tmp_path / "out",
            head_office_key=shared,
            branch_keys={"../x": secrets.token_urlsafe(32)},
        )
    assert not (tmp_path / "out").exists()


def test_a_failed_publish_keeps_the_previous_copy_and_leaves_no_temp_file(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _two_branches(store)
    keys = {"head_office": secrets.token_urlsafe(32), "A": secrets.token_urlsafe(32)}
    out = tmp_path / "snapshots"
    store.publish(out, head_office_key=keys["head_office"], branch_keys={"A": keys["A"]})
    branch_a = (out / "branch_A.duckdb").read_bytes()

    broken = dict(snapshots_module._BRANCH_TABLES, matches="SELECT * FROM db.main.no_such_table")
    monkeypatch.setattr(snapshots_module, "_BRANCH_TABLES", broken)
    with pytest.raises(duckdb.CatalogException):
        store.publish(out, head_office_key=keys["head_office"], branch_keys={"A": keys["A"]})
    assert sorted(p.name for p in out.iterdir()) == ["branch_A.duckdb", "head_office.duckdb"]
    assert (out / "branch_A.duckdb").read_bytes() == branch_a
    attached = store.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    assert not [name for (name,) in attached if name.startswith("snapshot_")]


def test_publish_takes_only_the_run_folders_tables(store: Store, tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot go into a snapshot"):
        store.publish(
            tmp_path / "out",
            head_office_key=secrets.token_urlsafe(32),
            branch_keys={},
            tables={"api_tokens": pl.DataFrame({"branch_id": ["A"]})},
        )
