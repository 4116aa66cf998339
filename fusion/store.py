"""The bank's one encrypted DuckDB file: opening, connections, transactions, inserts.

How a store opens (docs/architecture.md, "Storage"); every step is checked, none is skipped
quietly:

1. An in-memory DuckDB instance loads the signed `httpfs` (`fusion.store_attach.load_httpfs`):
   its OpenSSL is what lets DuckDB write an encrypted file, so a writer without it is refused
   with the command that fixes it. Instances are pooled per process
   (`fusion.store_instances`): the signature check hashes the whole 25 MB extension, so a
   closed store's instance, its file detached, serves the next open.
2. `SET temp_file_encryption = true`: spill files are plaintext otherwise (measured).
3. The file is attached as `db` with its key bound as a parameter
   (`fusion.store_attach.attach_encrypted`), then `USE db`. Keys are checked before they reach
   DuckDB, and every failure to attach becomes one detail-free `StoreError`.
4. A writer applies the pending migrations (`fusion.store_migrations`) in one transaction.

One process writes; others read published snapshots (`Store.publish`, `fusion.snapshots`),
never the live file. Threads of the writing process use `Store.cursor()`: DuckDB connections
are not thread-safe, cursors of one connection are.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import duckdb
import polars as pl
import pyarrow as pa

from contracts.errors import ConfigError, StoreError
from contracts.taxonomy import Taxonomy
from fusion.snapshots import publish_snapshots
from fusion.store_attach import (
    HTTPFS_FIX,
    STORE_ALIAS,
    attach_encrypted,
    check_key,
    key_digest,
)
from fusion.store_instances import StoreInstance, give_back, take
from fusion.store_migrations import MIGRATIONS, SCHEMA_MIGRATIONS_DDL, SCHEMA_VERSION

__all__ = ["Store", "StoreConfig"]

# Bank extract columns that must never reach the store: only their keyed hashes may.
RAW_IDENTIFIER_COLUMNS = frozenset({"phone", "id_number", "device_id"})


@dataclass(frozen=True)
class StoreConfig:
    """Where the store lives and how much of the machine DuckDB may use.

    `temp_directory` defaults to `<path>.tmp` for the writer and to a directory private to the
    process for a read-only open: two processes spilling into one directory overwrite each
    other's files (measured: DuckDB then fails with "Computed AES tag differs"). Spill files are
    encrypted either way. `extension_directory` defaults to the directory the httpfs package
    installed, so opening writes nothing under the home directory.
    """

    path: Path
    _: KW_ONLY
    memory_limit: str | None = None  # DuckDB size text, e.g. "8GB"; None: DuckDB's 80% of RAM
    threads: int | None = None  # None: one per core
    temp_directory: Path | None = None
    extension_directory: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser().resolve())
        if self.temp_directory is not None:
            object.__setattr__(self, "temp_directory", Path(self.temp_directory).resolve())
        if self.extension_directory is not None:
            resolved = Path(self.extension_directory).resolve()
            object.__setattr__(self, "extension_directory", resolved)
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ConfigError(
                f"threads must be a positive integer or None, got {self.threads!r}",
                setting="threads",
            )


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Store:
    """An open encrypted store. Make one with `Store.open`; close it or use it as a context.

    `execute`, `insert_frame` and `transaction` use the store's one connection and belong to the
    thread that opened it; other threads take a `cursor()` each.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: StoreConfig,
        *,
        read_only: bool,
        httpfs_loaded: bool,
        key_digest: bytes,
        instance: StoreInstance | None = None,
    ) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
        self._instance = instance  # the pooled instance the store's file is attached on
        self.config = config
        self.read_only = read_only
        self.httpfs_loaded = httpfs_loaded
        self._key_digest = key_digest
        self._depth = 0  # nesting of transaction() blocks on the store's connection

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        config_or_path: StoreConfig | str | os.PathLike[str],
        *,
        key: str,
        read_only: bool = False,
        clock: Callable[[], datetime] = _utc_now,
    ) -> Store:
        """Return the store at the path, created and migrated when opened for writing.

        Raises ConfigError for a malformed key or setting, StoreLockedError while another
        process writes the file, and StoreError otherwise: one message for a wrong key and for a
        file that is not a store, raised with no DuckDB error attached.
        """
        config = (
            config_or_path
            if isinstance(config_or_path, StoreConfig)
            else StoreConfig(Path(config_or_path))
        )
        key = check_key(key, "key")
        path = config.path
        if read_only and not path.is_file():
            raise StoreError(
                f"there is no store at {path}; analysts open a published snapshot "
                "(fusion publish writes them)",
                path=str(path),
            )
        if not read_only and not path.parent.is_dir():
            raise StoreError(
                f"the folder {path.parent} does not exist; create it before the store",
                path=str(path),
            )
        instance = take(config.extension_directory)
        con = instance.root.cursor()
        try:
            # DuckDB draws its own progress bar on stdout for long queries: a job's output is ours.
            con.execute("SET enable_progress_bar = false")
            store = cls._attach(con, config, key=key, read_only=read_only, instance=instance)
            if not read_only:
                store._migrate(clock)
        except BaseException:
            con.close()
            give_back(instance, STORE_ALIAS)
            raise
        return store

    @classmethod
    def _attach(
        cls,
        con: duckdb.DuckDBPyConnection,
        config: StoreConfig,
        *,
        key: str,
        read_only: bool,
        instance: StoreInstance,
    ) -> Store:
        path = config.path
        httpfs_problem = instance.httpfs_problem
        if httpfs_problem is not None and not read_only:
            raise StoreError(
                f"refusing to open {path} for writing: httpfs is not loaded "
                f"({httpfs_problem}). DuckDB writes encrypted files safely only with the OpenSSL "
                f"in its signed httpfs extension; install it with `{HTTPFS_FIX}`",
                path=str(path),
            )
        # Without httpfs (read-only) this stays on and spilling fails closed: measured.
        con.execute("SET temp_file_encryption = true")
        temp_directory = config.temp_directory
        if temp_directory is None:
            suffix = ".tmp" if not read_only else f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
            temp_directory = path.with_name(path.name + suffix)
        cls._set(con, "temp_directory", str(temp_directory))
        if config.memory_limit is not None:
            cls._set(con, "memory_limit", config.memory_limit)
        if config.threads is not None:
            cls._set(con, "threads", config.threads)

        attach_encrypted(con, path, alias=STORE_ALIAS, key=key, read_only=read_only)
        con.execute(f"USE {STORE_ALIAS}")
        return cls(
            con,
            config,
            read_only=read_only,
            httpfs_loaded=httpfs_problem is None,
            key_digest=key_digest(key),
            instance=instance,
        )

    @staticmethod
    def _set(con: duckdb.DuckDBPyConnection, setting: str, value: object) -> None:
        try:
            con.execute(f"SET {setting} = ?", [value])
        except duckdb.Error as err:
            raise ConfigError(f"DuckDB refused {setting}: {err}", setting=setting) from err

    def _migrate(self, clock: Callable[[], datetime]) -> None:
        with self.transaction():
            self.execute(SCHEMA_MIGRATIONS_DDL)
            current = self.schema_version
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this build's "
                    f"{SCHEMA_VERSION}; upgrade the platform before writing to it",
                    path=str(self.path),
                )
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    self.execute(statement)
                self.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    [migration.version, clock()],
                )

    # -- connections and statements ------------------------------------------------------------

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The store's one connection, for the thread that opened the store."""
        if self._con is None:
            raise StoreError("the store is closed", path=str(self.path))
        return self._con

    def cursor(self, of: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
        """Return a new cursor on the store, one per thread: of the store's connection, or of
        `of` (another cursor), so a thread need not touch a connection another thread runs."""
        cur = (of if of is not None else self.connection).cursor()
        cur.execute(f"USE {STORE_ALIAS}")
        return cur

    def on_cursor(self, cur: duckdb.DuckDBPyConnection) -> Store:
        """Return this store bound to `cur` (a cursor of `cursor()`), for another thread.

        The returned store runs `execute`, `insert_frame` and `transaction` on `cur`; closing it
        closes `cur` only. The service uses it so a route can call a pipeline step while the
        ingest worker holds the store's own connection.
        """
        return Store(
            cur,
            self.config,
            read_only=self.read_only,
            httpfs_loaded=self.httpfs_loaded,
            key_digest=self._key_digest,
        )

    @property
    def path(self) -> Path:
        return self.config.path

    @property
    def schema_version(self) -> int:
        """Return the highest migration applied to the file (0 if it has no migration table)."""
        con = self.connection
        found = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? "
            "AND schema_name = 'main' AND table_name = 'schema_migrations'",
            [STORE_ALIAS],
        ).fetchone()
        if not found or not found[0]:
            return 0
        row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0

    def execute(
        self, sql: str, params: Sequence[object] | Mapping[str, object] | None = None
    ) -> duckdb.DuckDBPyConnection:
        """Run one statement on the store's connection and return it for fetching."""
        con = self.connection
        try:
            return con.execute(sql, params) if params is not None else con.execute(sql)
        except duckdb.InvalidInputException as err:
            if self.read_only and "read-only mode" in str(err):
                raise self._read_only_error() from err
            if "AES tag" in str(err):  # a block fails authentication: damaged or altered
                raise StoreError(
                    f"{self.path} is damaged: a block of it fails its authentication tag (a "
                    "disk fault, an interrupted copy, or an edit by something other than "
                    "DuckDB); restore the file from the bank's backup, or rebuild the run "
                    "(ingest the vendor's batches again, then match)",
                    path=str(self.path),
                ) from None
            raise

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Run the block in one transaction: COMMIT on success, ROLLBACK on any exception.

        A block inside another joins it, so helpers can open their own. DuckDB turns COMMIT into
        a silent rollback when a statement failed and its error was caught inside the block;
        that raises StoreError here instead of passing for a commit.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        con = self.connection
        con.execute("BEGIN TRANSACTION")
        self._depth = 1
        try:
            yield self
            self._commit(con)
        except BaseException:
            with suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    def _commit(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.execute("SELECT 1")  # fails only when the transaction is already aborted
        except duckdb.TransactionException:
            aborted = True
        else:
            aborted = False
        if aborted:
            raise StoreError(
                "the transaction was aborted by an error caught inside it, so nothing was "
                "written; let the error propagate, or retry the whole block",
                path=str(self.path),
            )
        con.execute("COMMIT")

    def insert_frame(self, table: str, frame: pl.DataFrame | pa.Table) -> int:
        """Insert a polars or Arrow frame into `table`, columns matched by name; return the rows.

        Columns the frame lacks are NULL; a column the table lacks is refused by name (never by
        value), which keeps raw phone and ID number columns out of the store.
        """
        if self.read_only:
            raise self._read_only_error()
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        if not isinstance(arrow, pa.Table):
            raise ConfigError(
                f"frame must be a polars DataFrame or pyarrow Table, got {type(frame).__name__}",
                setting="frame",
            )
        con = self.connection
        columns = {
            str(r[0])
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() "
                "WHERE database_name = ? AND schema_name = 'main' AND table_name = ?",
                [STORE_ALIAS, table],
            ).fetchall()
        }
        if not columns:
            raise StoreError(f"there is no table {table!r} in the store", path=str(self.path))
        unknown = [c for c in arrow.column_names if c not in columns]
        if unknown:
            why = ""
            if RAW_IDENTIFIER_COLUMNS.intersection(unknown):
                why = "; raw phones and ID numbers never enter the store, only keyed hashes"
            message = f"{table} has no column {', '.join(unknown)}{why}"
            raise StoreError(message, path=str(self.path))
        with self.registered(arrow) as view:
            # `table` is a name found in the catalog above, `view` one made here.
            insert = f'INSERT INTO "{table}" BY NAME SELECT * FROM {view}'  # noqa: S608
            row = con.execute(insert).fetchone()
        return int(row[0]) if row else 0

    @contextmanager
    def registered(self, frame: pl.DataFrame | pa.Table) -> Iterator[str]:
        """Yield the name of a view of `frame` on the store's connection, dropped after the block.

        For joins of in-memory rows with stored tables; the frame is read in place, not copied.
        """
        arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        view = f"_frame_{secrets.token_hex(8)}"
        self.connection.register(view, arrow)
        try:
            yield view
        finally:
            self.connection.unregister(view)

    def create_table_like(self, table: str, frame: pl.DataFrame) -> bool:
        """Create `table` with the columns and types of `frame` unless it exists; True if made.

        For tables whose columns follow the data (the bank extract's features). A raw phone or
        ID number column is refused by name, as `insert_frame` refuses it.
        """
        if self.read_only:
            raise self._read_only_error()
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", table):
            raise ConfigError(f"table name {table!r} must be lower_snake_case", setting="table")
        raw = RAW_IDENTIFIER_COLUMNS.intersection(frame.columns)
        if raw:
            raise StoreError(
                f"{table} cannot have column {', '.join(sorted(raw))}: raw phones and ID numbers "
                "never enter the store, only keyed hashes",
                path=str(self.path),
            )
        exists = self.connection.execute(
            "SELECT count(*) FROM duckdb_tables() "
            "WHERE database_name = ? AND schema_name = 'main' AND table_name = ?",
            [STORE_ALIAS, table],
        ).fetchone()
        if exists and exists[0]:
            return False
        view = f"_frame_{secrets.token_hex(8)}"
        self.connection.register(view, frame.head(0).to_arrow())
        try:
            # `table` matched the pattern above; `view` is a name made here.
            self.connection.execute(f'CREATE TABLE "{table}" AS SELECT * FROM {view}')  # noqa: S608
        finally:
            self.connection.unregister(view)
        return True

    def load_taxonomy(self, taxonomy: Taxonomy) -> bool:
        """Store a taxonomy version once; return False if that version was already there."""
        if self.read_only:
            raise self._read_only_error()
        version = pl.lit(taxonomy.version).alias("taxonomy_version")
        with self.transaction():
            row = self.execute(
                "SELECT count(*) FROM tax_categories WHERE taxonomy_version = ?",
                [taxonomy.version],
            ).fetchone()
            if row and row[0]:
                return False
            self.insert_frame("tax_categories", taxonomy.categories.with_columns(version))
            self.insert_frame("tax_apps", taxonomy.apps.with_columns(version))
            self.insert_frame("tax_tags", taxonomy.tags.with_columns(version))
        return True

    def checkpoint(self) -> None:
        """Write the WAL into the file (DuckDB also does so past 16 MB of WAL and at close)."""
        if self.read_only:
            raise self._read_only_error()
        self.execute(f"CHECKPOINT {STORE_ALIAS}")

    def _read_only_error(self) -> StoreError:
        return StoreError(
            f"{self.path} is open read-only (a snapshot for analysts); writes go through the "
            "one writing process (the fusion service or CLI)",
            path=str(self.path),
        )

    # -- snapshots -----------------------------------------------------------------------------

    def publish(
        self,
        out_dir: Path,
        *,
        head_office_key: str,
        branch_keys: Mapping[str, str],
        tables: Mapping[str, pl.DataFrame] | None = None,
    ) -> dict[str, Path]:
        """Write the head-office and per-branch encrypted snapshots; return their paths by name.

        `head_office.duckdb` is a full copy. `branch_<id>.duckdb` holds that branch's customers
        and matches, the newest vendor rows of the matched keys, the taxonomy and the migration
        ledger; never the batch ledger or the audit log. Each file is written under a temporary
        name and renamed, so a reader sees a whole snapshot or the previous one. Every key must
        differ from the store's and from the others, so that no key opens two files. Each file
        is one consistent read: publish between loads for a consistent set. Every copy holds
        the analyst views (`fusion.analyst_views`); `tables` adds the run folder's scores and
        lists (`fusion.snapshots.publish_snapshots`).
        """
        if not self.httpfs_loaded:
            raise StoreError(
                f"publishing writes encrypted files and needs httpfs; install it with "
                f"`{HTTPFS_FIX}`",
                path=str(self.path),
            )
        return publish_snapshots(
            self.connection,
            out_dir,
            head_office_key=head_office_key,
            branch_keys=branch_keys,
            store_key_digest=self._key_digest,
            tables=tables,
        )

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store's connection and its cursors, and detach the file (DuckDB
        checkpoints a writer's); the instance goes back to the pool. Closing twice is harmless.
        """
        if self._con is not None:
            con, self._con = self._con, None
            con.close()
        if self._instance is not None:
            instance, self._instance = self._instance, None
            give_back(instance, STORE_ALIAS)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._con is None else "read-only" if self.read_only else "read-write"
        return f"Store({str(self.path)!r}, {state})"
