"""The encrypted store on real DuckDB files: opening, keys, locks, plaintext checks, writing."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import fusion.store_attach as attach_module
from contracts.errors import ConfigError, StoreError, StoreLockedError
from contracts.taxonomy import load_taxonomy
from fusion.store import Store, StoreConfig
from fusion.store_instances import close_idle
from fusion.store_migrations import SCHEMA_VERSION
from tests.support.polling import eventually
from tests.support.stores import T0, key_blob, record_batch, store_config, tag_rows

ROOT = Path(__file__).resolve().parents[2]
TAG_MARKER = "ZZSECRETTAG"
BLOB_MARKER = b"ZZBLOBMARKER"


@pytest.fixture
def config(tmp_path: Path, ext_dir: Path) -> StoreConfig:
    return store_config(tmp_path, ext_dir)


@pytest.fixture
def key() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def store(config: StoreConfig, key: str) -> Iterator[Store]:
    with Store.open(config, key=key) as opened:
        yield opened


def _python(code: str, *args: str, key: str, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STORE_KEY": key}
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-c", code, *args], env=env, text=True, cwd=ROOT, **popen
    )


def _files_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# -- schema ------------------------------------------------------------------------


def test_create_migrate_and_reopen_applies_migrations_once(config: StoreConfig, key: str):
    with Store.open(config, key=key) as store:
        assert store.schema_version == SCHEMA_VERSION
        first = store.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
        tables = {r[0] for r in store.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {r[0] for r in store.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    assert [v for v, _ in first] == list(range(1, SCHEMA_VERSION + 1))
    assert {
        "schema_migrations",
        "batches",
        "vendor_apps",
        "vendor_tags",
        "tax_categories",
        "tax_apps",
        "tax_tags",
        "customers",
        "matches",
        "audit_log",
        "uploads",
    } <= tables
    assert {"vendor_apps_latest", "vendor_tags_latest"} <= views
    with Store.open(config, key=key) as store:
        assert store.schema_version == SCHEMA_VERSION
        again = store.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert again == first


def test_customers_have_no_identifier_column(store: Store):
    columns = {
        r[0]
        for r in store.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'customers'"
        ).fetchall()
    }
    assert columns == {
        "customer_id",
        "branch_id",
        "key",
        "salt_epoch",
        "snapshot_date",
        "key_status",
    }
    phones = pl.DataFrame({"customer_id": [1], "branch_id": ["A"], "phone": ["13800138000"]})
    with pytest.raises(StoreError, match="no column phone") as refused:
        store.insert_frame("customers", phones)
    assert "13800138000" not in str(refused.value)


def test_a_newer_schema_is_not_written_by_an_older_build(config: StoreConfig, key: str):
    with Store.open(config, key=key) as store:
        store.execute("INSERT INTO schema_migrations VALUES (?, ?)", [SCHEMA_VERSION + 1, T0])
    with pytest.raises(StoreError, match="newer than this build"):
        Store.open(config, key=key)
    with Store.open(config, key=key, read_only=True) as reader:
        assert reader.schema_version == SCHEMA_VERSION + 1


# -- keys --------------------------------------------------------------------------------------


def test_wrong_key_is_one_refusal_that_never_quotes_a_key(config: StoreConfig, key: str):
    Store.open(config, key=key).close()
    wrong = secrets.token_urlsafe(32)
    with pytest.raises(StoreError, match="did not open with this key") as refused:
        Store.open(config, key=wrong)
    error = refused.value
    assert type(error) is StoreError
    assert wrong not in str(error) and key not in str(error) and wrong not in repr(error)
    # Raised outside DuckDB's error, whose text may quote a key: no chained context to log.
    assert error.__cause__ is None and error.__context__ is None
    with pytest.raises(StoreError, match="did not open with this key"):
        Store.open(config, key=wrong, read_only=True)


@pytest.mark.parametrize(
    "bad",
    [
        12345678901234567890,
        b"0123456789abcdef0123",
        ["0123456789abcdef0123"],
        "k9Q2xz",
        # DuckDB casts the key to BLOB: "\\x41" would mean "A", and non-ASCII fails to cast.
        "0123456789abcdef0123456789abcdef\\x41",
        "0123456789abcdef0123456789abcdef\u00e9",
    ],
)
def test_a_key_that_is_not_long_text_is_refused_without_quoting_it(config: StoreConfig, bad):
    with pytest.raises(ConfigError) as refused:
        Store.open(config, key=bad)
    assert refused.value.setting == "key"
    assert str(bad).strip("[]'b") not in str(refused.value)
    assert not config.path.exists()


def test_a_plain_duckdb_file_is_not_a_store(config: StoreConfig, key: str):
    duckdb.connect(str(config.path)).close()
    with pytest.raises(StoreError, match="wrong key, not a store file, or a damaged one"):
        Store.open(config, key=key)


def test_read_only_open_of_a_missing_file_says_so(config: StoreConfig, key: str):
    with pytest.raises(StoreError, match="there is no store"):
        Store.open(config, key=key, read_only=True)


def test_the_key_is_bound_not_spliced_and_nothing_shows_it(config: StoreConfig):
    # Quotes and a comment marker would break (or rewrite) an ATTACH that spliced the key in.
    token = secrets.token_urlsafe(32)
    key = token + "'\"; --"
    with Store.open(config, key=key) as store:
        catalog = store.execute("SELECT * FROM duckdb_databases()").fetchall()
        settings = store.execute("SELECT name, value FROM duckdb_settings()").fetchall()
        shown = [str(cell) for row in catalog + settings for cell in row] + [repr(store)]
        assert not any(token in cell for cell in shown)
    with Store.open(config, key=key, read_only=True) as reader:
        assert reader.schema_version == SCHEMA_VERSION
    with pytest.raises(StoreError, match="did not open with this key"):
        Store.open(config, key=token)


# -- extension and settings --------------------------------------------------------------------


def test_httpfs_is_loaded_with_signature_checks_and_spills_are_encrypted(store: Store):
    loaded = store.execute(
        "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
    ).fetchone()
    assert loaded == (True,)
    settings = (
        "SELECT current_setting('allow_unsigned_extensions'),"
        " current_setting('temp_file_encryption'), current_database()"
    )
    assert store.execute(settings).fetchone() == (False, True, "db")
    assert store.cursor().execute(settings).fetchone() == (False, True, "db")
    cipher = store.execute(
        "SELECT encrypted, cipher FROM duckdb_databases() WHERE database_name = 'db'"
    ).fetchone()
    assert cipher == (True, "GCM")


def test_a_tampered_httpfs_is_refused_and_no_store_opens_for_writing(
    config: StoreConfig, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    Store.open(config, key=key).close()
    genuine = attach_module._httpfs_file(duckdb.connect())
    assert genuine is not None
    tampered_dir = tmp_path / "tampered" / genuine.parent.name
    tampered_dir.mkdir(parents=True)
    tampered = tampered_dir / genuine.name
    data = bytearray(genuine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(data)
    monkeypatch.setattr(attach_module, "_httpfs_file", lambda con: tampered)
    fresh = StoreConfig(config.path, extension_directory=tmp_path / "fresh-extensions")

    with pytest.raises(StoreError, match=r"pip install duckdb-ext-httpfs==1\.4\.4\.20260205"):
        Store.open(fresh, key=key)
    with Store.open(fresh, key=key, read_only=True) as reader:  # reading needs no OpenSSL
        assert reader.schema_version == SCHEMA_VERSION
        assert reader.execute(
            "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
        ).fetchone() == (False,)


def test_without_the_httpfs_package_no_store_is_created(
    config: StoreConfig, key: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(attach_module, "_httpfs_file", lambda con: None)
    close_idle()  # a pooled instance has httpfs loaded already
    with pytest.raises(StoreError, match=r"pip install duckdb-ext-httpfs==1\.4\.4\.20260205"):
        Store.open(config, key=key)
    assert not config.path.exists()


# -- single writer, read-only readers ----------------------------------------------------------

_HOLD_FOR_WRITING = """
import os, sys
from fusion.store import Store, StoreConfig
config = StoreConfig(sys.argv[1], extension_directory=sys.argv[2])
with Store.open(config, key=os.environ["STORE_KEY"]):
    print("ready", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.slow  # over a second: out of the inner loop
def test_a_second_writer_is_told_the_store_is_locked(config: StoreConfig, key: str):
    Store.open(config, key=key).close()
    holder = _python(
        _HOLD_FOR_WRITING,
        str(config.path),
        str(config.extension_directory),
        key=key,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match="another process holds") as locked:
            Store.open(config, key=key)
        assert "read a published snapshot instead" in str(locked.value)
        with pytest.raises(StoreLockedError):  # DuckDB: no reader while a writer holds the file
            Store.open(config, key=key, read_only=True)
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    Store.open(config, key=key).close()


def test_a_second_open_in_the_same_process_is_locked_too(store: Store, config: StoreConfig, key):
    # DuckDB's file lock is per process; its own registry of open files refuses the second.
    with pytest.raises(StoreLockedError, match="already open in this process"):
        Store.open(config, key=key)
    with pytest.raises(StoreLockedError, match="already open in this process"):
        Store.open(config, key=key, read_only=True)


def test_read_only_opens_spill_into_a_folder_of_their_own(config: StoreConfig, key: str):
    # Two processes spilling into one folder overwrite each other's files (measured: DuckDB
    # then fails with "Computed AES tag differs"), and readers of one snapshot may be many.
    setting = "SELECT current_setting('temp_directory')"
    with Store.open(config, key=key) as store:
        assert store.execute(setting).fetchone() == (f"{config.path}.tmp",)
    with Store.open(config, key=key, read_only=True) as reader:
        (folder,) = reader.execute(setting).fetchone()  # type: ignore[misc]
    assert folder.startswith(f"{config.path}.tmp-{os.getpid()}-")


def test_read_only_open_reads_and_refuses_every_write(config: StoreConfig, key: str):
    with Store.open(config, key=key) as store:
        store.insert_frame("customers", pl.DataFrame({"customer_id": [7], "branch_id": ["A"]}))
    with Store.open(config, key=key, read_only=True) as reader:
        assert reader.read_only
        assert reader.execute("SELECT customer_id FROM customers").fetchall() == [(7,)]
        assert reader.cursor().execute("SELECT count(*) FROM customers").fetchone() == (1,)
        with pytest.raises(StoreError, match="open read-only"):
            reader.execute("INSERT INTO customers (customer_id, branch_id) VALUES (8, 'A')")
        with pytest.raises(StoreError, match="open read-only"):
            reader.insert_frame("customers", pl.DataFrame({"customer_id": [8], "branch_id": ["A"]}))
        with pytest.raises(StoreError, match="open read-only"):
            reader.load_taxonomy(load_taxonomy())
        with pytest.raises(StoreError, match="open read-only"):
            reader.checkpoint()
        with pytest.raises(StoreError, match="open read-only"), reader.transaction():
            reader.execute("DELETE FROM customers")
        assert reader.execute("SELECT count(*) FROM customers").fetchone() == (1,)


# -- nothing in plaintext on disk --------------------------------------------------------------


def _insert_markers(store: Store) -> None:
    store.insert_frame(
        "tax_tags",
        pl.DataFrame(
            {"taxonomy_version": ["t"], "tag_id": [1], "category_id": [1], "name": [TAG_MARKER]}
        ),
    )
    store.insert_frame(
        "vendor_tags", pl.DataFrame({"key": [BLOB_MARKER + bytes(20)], "batch_id": ["b1"]})
    )


def test_the_file_holds_no_plaintext_and_needs_the_key(config: StoreConfig, key: str, tmp_path):
    with Store.open(config, key=key) as store:
        _insert_markers(store)
        store.checkpoint()
    on_disk = config.path.read_bytes()
    assert TAG_MARKER.encode() not in on_disk and BLOB_MARKER not in on_disk
    assert key.encode() not in on_disk
    # Control: the same rows in an unencrypted DuckDB file are readable, so the check can see.
    plain = duckdb.connect(str(tmp_path / "plain.duckdb"))
    plain.execute("CREATE TABLE t (name VARCHAR, key BLOB)")
    plain.execute("INSERT INTO t VALUES (?, ?)", [TAG_MARKER, BLOB_MARKER + bytes(20)])
    plain.close()
    plain_bytes = (tmp_path / "plain.duckdb").read_bytes()
    assert TAG_MARKER.encode() in plain_bytes and BLOB_MARKER in plain_bytes

    with pytest.raises(duckdb.Error, match="without a key"):
        duckdb.connect(str(config.path))
    with Store.open(config, key=key, read_only=True) as reader:
        assert reader.execute("SELECT name FROM tax_tags").fetchone() == (TAG_MARKER,)


_WRITE_THEN_DIE = """
import os, signal, sys
import polars as pl
from fusion.store import Store, StoreConfig
config = StoreConfig(sys.argv[1], extension_directory=sys.argv[2])
store = Store.open(config, key=os.environ["STORE_KEY"])
store.checkpoint()
with store.transaction():
    store.insert_frame("tax_tags", pl.DataFrame(
        {"taxonomy_version": ["t"], "tag_id": [1], "category_id": [1], "name": ["ZZSECRETTAG"]}))
    store.insert_frame("vendor_tags", pl.DataFrame(
        {"key": [b"ZZBLOBMARKER" + bytes(20)], "batch_id": ["b1"]}))
store.execute("BEGIN TRANSACTION")
store.execute("INSERT INTO customers (customer_id, branch_id) VALUES (1, 'uncommitted')")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_an_encrypted_wal_that_recovers(config: StoreConfig, key: str):
    child = _python(_WRITE_THEN_DIE, str(config.path), str(config.extension_directory), key=key)
    assert child.wait(timeout=60) == -9
    wal = Path(f"{config.path}.wal")
    assert wal.exists() and wal.stat().st_size > 0
    for content in (wal.read_bytes(), config.path.read_bytes()):
        assert TAG_MARKER.encode() not in content and BLOB_MARKER not in content
    with pytest.raises(StoreError, match="did not open with this key"):
        Store.open(config, key=secrets.token_urlsafe(32))
    with Store.open(config, key=key) as store:
        assert store.execute("SELECT name FROM tax_tags").fetchall() == [(TAG_MARKER,)]
        assert store.execute("SELECT key FROM vendor_tags").fetchall() == [
            (BLOB_MARKER + bytes(20),)
        ]
        assert store.execute("SELECT count(*) FROM customers").fetchone() == (0,)


_SPILL = (
    "SELECT count(*), max(s) FROM (SELECT hash(i) AS h, 'ZZSPILLMARK' || i::VARCHAR"
    " || md5(i::VARCHAR) AS s FROM range(1000000) t(i) ORDER BY h OFFSET 1)"
)


def _spill_and_watch(store: Store, folder: Path) -> tuple[int, bool]:
    """Run a sort bigger than memory; return the most spill bytes seen and whether any held
    the marker. DuckDB deletes its temp files when the query ends, so a thread reads them while
    it runs."""
    seen = {"bytes": 0, "marker": False}
    done = threading.Event()

    def sample() -> bool:
        total = 0
        for path in folder.glob("*.tmp") if folder.exists() else ():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            total += len(data)
            seen["marker"] = seen["marker"] or b"ZZSPILLMARK" in data
        seen["bytes"] = max(seen["bytes"], total)
        return done.is_set()

    def watch() -> None:
        eventually(sample, timeout=300, interval=0.005, what="the spilling sort to end")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert store.execute(_SPILL).fetchone()[0] == 999_999  # type: ignore[index]
    finally:
        done.set()
        watcher.join()
    return int(seen["bytes"]), bool(seen["marker"])


@pytest.mark.slow  # over a second: out of the inner loop
def test_spill_files_hold_no_plaintext(tmp_path: Path, ext_dir: Path, key: str):
    def small(name: str) -> StoreConfig:
        return StoreConfig(
            tmp_path / f"{name}.duckdb",
            memory_limit="64MB",
            threads=2,
            temp_directory=tmp_path / f"{name}-spill",
            extension_directory=ext_dir,
        )

    with Store.open(small("control"), key=key) as control:
        control.execute("SET temp_file_encryption = false")
        spilled, marker = _spill_and_watch(control, tmp_path / "control-spill")
    assert spilled > 0 and marker, "control: plaintext spill files must be visible to the watcher"

    with Store.open(small("store"), key=key) as store:
        spilled, marker = _spill_and_watch(store, tmp_path / "store-spill")
    assert spilled > 0
    assert not marker


# -- writing -----------------------------------------------------------------------------------


def test_a_failed_transaction_leaves_nothing(store: Store):
    with pytest.raises(RuntimeError), store.transaction():
        record_batch(store, "b1", T0)
        store.insert_frame("vendor_tags", tag_rows([1, 2], "b1", 10))
        with store.transaction():  # nested blocks join the outer one
            store.insert_frame("customers", pl.DataFrame({"customer_id": [1], "branch_id": ["A"]}))
        raise RuntimeError("crash in the middle of a load")
    with pytest.raises(duckdb.ConstraintException), store.transaction():
        record_batch(store, "b2", T0)
        record_batch(store, "b2", T0)
    for table in ("batches", "vendor_tags", "customers"):
        assert store.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    with store.transaction():
        record_batch(store, "b3", T0)
    assert store.execute("SELECT batch_id FROM batches").fetchall() == [("b3",)]


def test_an_error_caught_inside_a_transaction_does_not_pass_for_a_commit(store: Store):
    # DuckDB answers COMMIT on an aborted transaction with a silent rollback.
    with pytest.raises(StoreError, match="aborted by an error caught inside it"):
        with store.transaction():
            record_batch(store, "b1", T0)
            with pytest.raises(duckdb.ConstraintException):
                record_batch(store, "b1", T0)
    assert store.execute("SELECT count(*) FROM batches").fetchone() == (0,)
    with store.transaction():  # the connection is usable again
        record_batch(store, "b1", T0)
    assert store.execute("SELECT count(*) FROM batches").fetchone() == (1,)


def test_insert_frame_matches_columns_by_name(store: Store):
    arrow = pa.table(
        {
            "tag_weights": pa.array([[0.5]], pa.list_(pa.float32())),
            "batch_id": ["b1"],
            "key": pa.array([key_blob(1)], pa.binary()),
            "tag_ids": pa.array([[3]], pa.list_(pa.int32())),
        }
    )
    assert store.insert_frame("vendor_tags", arrow) == 1
    assert store.execute("SELECT key, salt_epoch, tag_ids FROM vendor_tags").fetchall() == [
        (key_blob(1), None, [3])
    ]
    with pytest.raises(StoreError, match="no table"):
        store.insert_frame("vendor_tags; DROP TABLE batches", arrow)


def test_latest_views_take_the_newest_loaded_batch_per_key(store: Store):
    record_batch(store, "b1", T0)
    record_batch(store, "b2", T0 + timedelta(days=1))
    record_batch(store, "b3", T0 + timedelta(days=2), status="quarantined")
    record_batch(store, "b4", T0 + timedelta(days=1))  # ties with b2: the larger id wins
    store.insert_frame("vendor_tags", tag_rows([1, 2, 3], "b1", 10))
    store.insert_frame("vendor_tags", tag_rows([1], "b2", 20))
    store.insert_frame("vendor_tags", tag_rows([1, 2], "b3", 30))
    store.insert_frame("vendor_tags", tag_rows([3], "b4", 40))
    store.insert_frame("vendor_tags", tag_rows([3], "b2", 50))
    latest = store.execute("SELECT key, batch_id FROM vendor_tags_latest ORDER BY key").fetchall()
    assert latest == [(key_blob(1), "b2"), (key_blob(2), "b1"), (key_blob(3), "b4")]
    assert store.execute("SELECT count(*) FROM vendor_tags").fetchone() == (8,)


def test_load_taxonomy_inserts_each_version_once(store: Store):
    taxonomy = load_taxonomy()
    assert store.load_taxonomy(taxonomy) is True
    assert store.load_taxonomy(taxonomy) is False
    counts = store.execute(
        "SELECT (SELECT count(*) FROM tax_categories), (SELECT count(*) FROM tax_apps),"
        " (SELECT count(*) FROM tax_tags)"
    ).fetchone()
    assert counts == (taxonomy.categories.height, taxonomy.n_apps, taxonomy.n_tags)
    assert store.execute("SELECT DISTINCT taxonomy_version FROM tax_tags").fetchall() == [
        (taxonomy.version,)
    ]


def test_cursors_read_committed_rows_from_other_threads(store: Store):
    store.insert_frame("customers", pl.DataFrame({"customer_id": [1, 2], "branch_id": ["A", "B"]}))
    counts: list[int] = []

    def read() -> None:
        cursor = store.cursor()
        counts.append(cursor.execute("SELECT count(*) FROM customers").fetchone()[0])  # type: ignore[index]

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == [2, 2, 2, 2]
