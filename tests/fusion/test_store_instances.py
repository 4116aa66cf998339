"""Stores open on pooled DuckDB instances (`fusion.store_instances`): httpfs loads once, and
nothing of one store (its file, settings, temporary tables) reaches the next."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from fusion import store_instances
from fusion.store import Store, StoreConfig


@pytest.fixture
def key() -> str:
    return secrets.token_hex(32)


@pytest.fixture(autouse=True)
def empty_pool():
    store_instances.close_idle()
    yield
    store_instances.close_idle()


def _setting(store: Store, name: str) -> object:
    row = store.execute("SELECT current_setting(?)", [name]).fetchone()
    assert row is not None
    return row[0]


def test_a_closed_stores_instance_serves_the_next_open_with_httpfs_loaded(
    tmp_path: Path, ext_dir: Path, key: str
):
    config = StoreConfig(tmp_path / "a.duckdb", extension_directory=ext_dir)
    with Store.open(config, key=key) as first:
        assert first.httpfs_loaded and store_instances.pooled() == 0
    assert store_instances.pooled() == 1
    with Store.open(config, key=key, read_only=True) as second:
        assert store_instances.pooled() == 0  # taken from the pool, not made anew
        assert second.httpfs_loaded
        assert second.execute(
            "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
        ).fetchone() == (True,)
    # A second store open at once takes an instance of its own.
    other = StoreConfig(tmp_path / "b.duckdb", extension_directory=ext_dir)
    with Store.open(config, key=key) as one, Store.open(other, key=key) as two:
        one.execute("CREATE TABLE here (x INTEGER)")
        assert two.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'here'"
        ).fetchone() == (0,)
    assert store_instances.pooled() == store_instances.MAX_IDLE


def test_nothing_of_a_closed_store_reaches_the_next_one(tmp_path: Path, ext_dir: Path, key: str):
    small = StoreConfig(
        tmp_path / "a.duckdb", memory_limit="100MB", threads=1, extension_directory=ext_dir
    )
    with Store.open(small, key=key) as store:
        store.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS x")
        store.execute("SET preserve_insertion_order = false")
        store.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        limited = _setting(store, "memory_limit"), _setting(store, "threads")
    assert store_instances.pooled() == 1
    plain = StoreConfig(tmp_path / "b.duckdb", extension_directory=ext_dir)
    with Store.open(plain, key=key) as store:
        assert (_setting(store, "memory_limit"), _setting(store, "threads")) != limited
        assert _setting(store, "threads") == os.cpu_count()
        assert _setting(store, "preserve_insertion_order") is True
        assert _setting(store, "temp_directory") == f"{plain.path}.tmp"
        assert _setting(store, "temp_file_encryption") is True
        names = store.execute("SELECT database_name FROM duckdb_databases()").fetchall()
        assert {n for (n,) in names} == {"db", "memory", "system", "temp"}
        assert store.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name IN ('scratch', 'kept')"
        ).fetchone() == (0,)
    # The first file was detached whole: its table is there for the next reader.
    with Store.open(small, key=key, read_only=True) as reader:
        assert reader.execute("SELECT answer FROM kept").fetchone() == (42,)


def test_a_closed_writers_file_is_free_for_another_process(tmp_path: Path, ext_dir: Path, key: str):
    config = StoreConfig(tmp_path / "a.duckdb", extension_directory=ext_dir)
    with Store.open(config, key=key) as store:
        store.execute("CREATE TABLE t AS SELECT range AS x FROM range(1000)")
    assert store_instances.pooled() == 1  # the instance waits, the file does not
    code = (
        "import sys\nfrom fusion.store import Store, StoreConfig\n"
        "config = StoreConfig(sys.argv[1], extension_directory=sys.argv[2])\n"
        "with Store.open(config, key=sys.argv[3]) as s:\n"
        "    print(s.execute('SELECT count(*) FROM t').fetchone()[0])\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(config.path), str(ext_dir), key],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "1000"


_FORKS = """
import os, sys
from fusion import store_instances
from fusion.store import Store, StoreConfig
Store.open(StoreConfig(sys.argv[1], extension_directory=sys.argv[2]), key=sys.argv[3]).close()
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: report its pool, never touch the parent's instances
    os.write(write, str(store_instances.pooled()).encode())
    os._exit(0)
os.close(write)
seen = os.read(read, 16).decode()
print(store_instances.pooled(), seen, os.waitpid(pid, 0)[1])
"""


def test_a_forked_child_starts_with_an_empty_pool(tmp_path: Path, ext_dir: Path, key: str):
    # In a process of its own: a test worker's threads (xgboost, Dask, polars) make fork unsafe.
    done = subprocess.run(
        [sys.executable, "-c", _FORKS, str(tmp_path / "a.duckdb"), str(ext_dir), key],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0", "0"]  # parent's pool, child's pool, child's status
