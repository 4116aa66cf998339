"""The bank's one encrypted DuckDB file: opening, schema migrations, transactions, snapshots.

How a store opens (DESIGN.md, "Storage"); every step is checked, none is skipped quietly:

1. An in-memory DuckDB connection installs and loads `httpfs` from the file the PyPI package
   `duckdb-ext-httpfs` ships, with DuckDB's signature check on. httpfs brings OpenSSL; without it
   DuckDB 1.4.4 can read an encrypted file but refuses to write one, so a writer without httpfs
   is refused here with the command that fixes it.
2. `SET temp_file_encryption = true`: spill files are plaintext otherwise (measured).
3. `ATTACH <file> AS db (ENCRYPTION_KEY ?, ENCRYPTION_CIPHER 'GCM')` with the key bound as a
   parameter (the path cannot be one: it is quoted), then `USE db`. DuckDB casts the key to a
   BLOB and quotes it in the error when that fails (non-ASCII, a stray backslash) or when it is
   not text, so keys are checked before they reach DuckDB, and every failure to attach becomes
   one detail-free `StoreError` with no DuckDB error attached.
4. A writer applies the pending migrations in one transaction.

One process writes; others read published snapshots (`Store.publish`), never the live file.
Threads of the writing process use `Store.cursor()`: DuckDB connections are not thread-safe,
cursors of one connection are.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import duckdb
import polars as pl
import pyarrow as pa

from contracts.errors import ConfigError, StoreError, StoreLockedError
from contracts.taxonomy import Taxonomy

__all__ = ["SCHEMA_VERSION", "Store", "StoreConfig"]

HTTPFS_DISTRIBUTION = "duckdb-ext-httpfs"
HTTPFS_PIN = "1.4.4.20260205"
_HTTPFS_FIX = f"pip install {HTTPFS_DISTRIBUTION}=={HTTPFS_PIN}"

MIN_KEY_CHARS = 32  # DuckDB derives the AES key with one SHA-256: a short key is a guessable key
_ALIAS = "db"
_WRONG_KEY = "the store did not open with this key: wrong key, or not a store file"
# Bank extract columns that must never reach the store: only their keyed hashes may.
RAW_IDENTIFIER_COLUMNS = frozenset({"phone", "id_number"})
_BRANCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HEAD_OFFICE = "head_office"


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


@dataclass(frozen=True)
class Migration:
    """One schema step: `statements` run in order, in the transaction of every pending step."""

    version: int
    name: str
    statements: tuple[str, ...]


_SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL
)"""

_LATEST_VIEW = """
CREATE VIEW {view} AS
SELECT v.*
FROM {table} AS v
JOIN batches AS b ON b.batch_id = v.batch_id
WHERE b.status = 'loaded'
QUALIFY row_number() OVER (
    PARTITION BY v.salt_epoch, v.key
    ORDER BY b.finished_at DESC NULLS LAST, v.batch_id DESC
) = 1"""

# Timestamps are naive UTC. No index on `key`: measured on 1M + 333k rows, an ART index made
# base-table point lookups 70x faster (21 -> 0.3 ms) but did not help lookups through the
# *_latest views (22 ms either way), made the file 4.5x larger (71 -> 315 MB) and inserts 2.6x
# slower; every consumer reads through the views or scans whole batches.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="ledger, vendor data, taxonomy, customers, matches, audit log",
        statements=(
            """
            CREATE TABLE batches (
                batch_id VARCHAR PRIMARY KEY,
                vendor_id VARCHAR,
                sealed_sha256 VARCHAR NOT NULL,
                status VARCHAR NOT NULL CHECK (
                    status IN ('received', 'loaded', 'quarantined', 'duplicate', 'refused')
                ),
                rows BIGINT,
                salt_epoch VARCHAR,
                taxonomy_version VARCHAR,
                mode VARCHAR,
                reasons VARCHAR,
                report VARCHAR,
                received_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP
            )""",
            """
            CREATE TABLE vendor_apps (
                key BLOB NOT NULL,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                app_ids INTEGER[],
                app_days SMALLINT[],
                app_sessions INTEGER[]
            )""",
            """
            CREATE TABLE vendor_tags (
                key BLOB NOT NULL,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                tag_ids INTEGER[],
                tag_weights FLOAT[]
            )""",
            _LATEST_VIEW.format(view="vendor_apps_latest", table="vendor_apps"),
            _LATEST_VIEW.format(view="vendor_tags_latest", table="vendor_tags"),
            """
            CREATE TABLE tax_categories (
                taxonomy_version VARCHAR NOT NULL,
                category_id SMALLINT NOT NULL,
                code VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                name_zh VARCHAR,
                PRIMARY KEY (taxonomy_version, category_id)
            )""",
            """
            CREATE TABLE tax_apps (
                taxonomy_version VARCHAR NOT NULL,
                app_id INTEGER NOT NULL,
                category_id SMALLINT NOT NULL,
                name VARCHAR NOT NULL,
                popularity_rank INTEGER,
                PRIMARY KEY (taxonomy_version, app_id)
            )""",
            """
            CREATE TABLE tax_tags (
                taxonomy_version VARCHAR NOT NULL,
                tag_id INTEGER NOT NULL,
                category_id SMALLINT NOT NULL,
                topic VARCHAR,
                name VARCHAR NOT NULL,
                PRIMARY KEY (taxonomy_version, tag_id)
            )""",
            # Keyed hashes only: the raw phone and ID number never enter the store.
            """
            CREATE TABLE customers (
                customer_id BIGINT NOT NULL,
                branch_id VARCHAR NOT NULL,
                key BLOB,
                salt_epoch VARCHAR,
                snapshot_date DATE
            )""",
            """
            CREATE TABLE matches (
                customer_id BIGINT NOT NULL,
                key BLOB NOT NULL,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                matched_at TIMESTAMP
            )""",
            # "at" is a reserved word in DuckDB (AT TIME ZONE): name it in quotes in SQL.
            """
            CREATE TABLE audit_log (
                "at" TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL,
                role VARCHAR,
                action VARCHAR NOT NULL,
                detail VARCHAR,
                rows BIGINT,
                status VARCHAR
            )""",
        ),
    ),
    Migration(
        version=2,
        name="matching: batch data dates, customer key status, match runs",
        statements=(
            # The vendor's data date (manifest created_at): point-in-time features pick the
            # newest batch created on or before a snapshot date.
            "ALTER TABLE batches ADD COLUMN created_at TIMESTAMP",
            # ok | invalid | duplicated: only 'ok' customers carry a key and can match.
            "ALTER TABLE customers ADD COLUMN key_status VARCHAR",
            "ALTER TABLE matches ADD COLUMN snapshot_date DATE",
            """
            CREATE TABLE match_runs (
                run_id VARCHAR PRIMARY KEY,
                salt_epoch VARCHAR NOT NULL,
                snapshot_date DATE NOT NULL,
                customers BIGINT NOT NULL,
                keyed BIGINT NOT NULL,
                invalid BIGINT NOT NULL,
                duplicated BIGINT NOT NULL,
                matched BIGINT NOT NULL,
                reasons VARCHAR,
                finished_at TIMESTAMP NOT NULL
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=3,
        name="service: API tokens (hashes only), campaign outcomes",
        statements=(
            # A token is shown once; only its SHA-256 is kept. `branches` is a comma-separated
            # list for analysts (NULL: every branch), `vendor_id` ties a vendor token to a signer.
            """
            CREATE TABLE api_tokens (
                token_id VARCHAR PRIMARY KEY,
                token_sha256 BLOB NOT NULL UNIQUE,
                role VARCHAR NOT NULL CHECK (
                    role IN ('vendor', 'analyst', 'campaign_tool', 'admin')
                ),
                branches VARCHAR,
                vendor_id VARCHAR,
                label VARCHAR,
                created_at TIMESTAMP NOT NULL,
                revoked_at TIMESTAMP
            )""",
            # Contact and response results a campaign tool reports back, for evaluation and
            # retraining; one row per (campaign, customer), the newest report wins.
            """
            CREATE TABLE outcomes (
                campaign_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                treatment BOOLEAN NOT NULL,
                contacted BOOLEAN,
                responded BOOLEAN NOT NULL,
                occurred_at TIMESTAMP,
                recorded_at TIMESTAMP NOT NULL,
                token_id VARCHAR NOT NULL
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=4,
        name="OPRF mode: sealed vendor rows until matched, the bank's pending requests",
        statements=(
            # A vendor row sealed under F_k(phone): the bank opens the matched ones at match time
            # (into vendor_apps/vendor_tags, keyed by label) and then drops every row of the
            # batch, so nothing of a non-matched user stays beyond its count (match_runs).
            """
            CREATE TABLE vendor_oprf_rows (
                label BLOB NOT NULL,
                sealed BLOB NOT NULL,
                salt_epoch VARCHAR NOT NULL,
                batch_id VARCHAR NOT NULL
            )""",
            # A request sent and not yet answered: the seed its blinds are drawn from (erased
            # when the answer is used) and a MAC under that seed of the ids it blinded, so the
            # answer is applied to the same customers. Never a phone.
            """
            CREATE TABLE oprf_requests (
                request_id VARCHAR PRIMARY KEY,
                salt_epoch VARCHAR NOT NULL,
                snapshot_date DATE NOT NULL,
                customers BIGINT NOT NULL,
                blinded BIGINT NOT NULL,
                inputs_mac BLOB NOT NULL,
                blind_seed BLOB,
                created_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=5,
        name="service: the verdict of every upload, for its vendor after a restart",
        statements=(
            # One row per upload the service's ingest worker judged. A refused file is ledgered
            # under its digest, never the batch id it claimed, so without this row its vendor's
            # GET /v1/batches/{id} would be a 404 after a restart. `status` only: a refusal's
            # cause stays in the ledger and the bank's log. `ledger_id` is the ledger row the
            # verdict wrote or found (NULL when it failed, or for a refused file found in the
            # inbox at start, whose digest the service did not take).
            """
            CREATE TABLE uploads (
                upload_id VARCHAR PRIMARY KEY,
                vendor_id VARCHAR,
                claimed_batch_id VARCHAR,
                ledger_id VARCHAR,
                status VARCHAR NOT NULL CHECK (
                    status IN ('loaded', 'quarantined', 'duplicate', 'refused', 'failed')
                ),
                received_at TIMESTAMP NOT NULL,
                judged_at TIMESTAMP NOT NULL
            )""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
# Tables the head-office snapshot leaves empty: token hashes authenticate the service's callers,
# blind seeds would let a reader re-derive the bank's pending OPRF labels, and sealed vendor rows
# are of use to no analyst. They stay in the store.
_STORE_ONLY = ("api_tokens", "oprf_requests", "vendor_oprf_rows")

# What a branch snapshot holds. Tables not named here (the batch ledger, the audit log, anything
# a later migration adds) stay in the head-office copy only: a new table is private by default.
# Vendor rows are the version each branch customer was matched with; the
# versions kept for point-in-time training stay at head office.
# A branch's customers are those it holds at the newest snapshot: a customer who moved keeps
# no trace in the old branch's copy. Their matches are the newest snapshot's, and the vendor rows
# are exactly the batches those matches used (never a batch newer than the snapshot).
_BRANCH_CUSTOMERS = """
    SELECT customer_id FROM db.main.customers
    WHERE branch_id = $branch AND snapshot_date = (SELECT max(snapshot_date) FROM db.main.customers)
"""
_BRANCH_MATCHES = """
    SELECT * FROM db.main.matches
    WHERE snapshot_date = (SELECT max(snapshot_date) FROM db.main.customers)
      AND customer_id IN (@customers)
""".replace("@customers", _BRANCH_CUSTOMERS)
_BRANCH_VENDOR = """
    SELECT DISTINCT v.* FROM db.main.@table AS v
    JOIN (@matches) AS m ON m.key = v.key AND m.batch_id = v.batch_id
""".replace("@matches", _BRANCH_MATCHES)
_BRANCH_ROWS = """
    SELECT * FROM db.main.@table
    WHERE branch_id = $branch AND snapshot_date = (SELECT max(snapshot_date) FROM db.main.customers)
"""
_BRANCH_TABLES: dict[str, str] = {
    "schema_migrations": "SELECT * FROM db.main.schema_migrations",
    "tax_categories": "SELECT * FROM db.main.tax_categories",
    "tax_apps": "SELECT * FROM db.main.tax_apps",
    "tax_tags": "SELECT * FROM db.main.tax_tags",
    "customers": _BRANCH_ROWS.replace("@table", "customers"),
    # Created by the first extract load (its columns follow the extract), hence optional.
    "bank_features": _BRANCH_ROWS.replace("@table", "bank_features"),
    "matches": _BRANCH_MATCHES,
    "vendor_apps": _BRANCH_VENDOR.replace("@table", "vendor_apps"),
    "vendor_tags": _BRANCH_VENDOR.replace("@table", "vendor_tags"),
}
# Same names as at head office, so one query runs on either copy.
_BRANCH_VIEWS = (
    "CREATE VIEW vendor_apps_latest AS SELECT * FROM vendor_apps",
    "CREATE VIEW vendor_tags_latest AS SELECT * FROM vendor_tags",
)


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _sql_string(text: str) -> str:
    """Quote text as a SQL string literal, for the statements DuckDB will not parameterise."""
    if "\x00" in text:
        raise ConfigError("a path must not contain a NUL character", setting="path")
    return "'" + text.replace("'", "''") + "'"


def _check_key(key: object, setting: str) -> str:
    """Return the key if it is long enough text; the message never quotes it."""
    if not isinstance(key, str):
        raise ConfigError(
            f"{setting} must be text (str), got {type(key).__name__}; pass the DuckDB key "
            "from the keyring",
            setting=setting,
        )
    if "\\" in key or not all(" " <= ch <= "~" for ch in key):
        raise ConfigError(
            f"{setting} must be printable ASCII without backslashes: DuckDB casts the key to a "
            "BLOB, so it reads \\xNN escapes and refuses other characters (keyring keys are "
            "base64)",
            setting=setting,
        )
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{setting} is shorter than {MIN_KEY_CHARS} characters; DuckDB stretches it with "
            "a single SHA-256, so use a random key from the keyring (e.g. secrets.token_hex(32))",
            setting=setting,
        )
    return key


def _key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _httpfs_file(con: duckdb.DuckDBPyConnection) -> Path | None:
    """Return the httpfs binary the PyPI package installed for this DuckDB and platform."""
    try:
        dist = importlib.metadata.distribution(HTTPFS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    row = con.execute("PRAGMA platform").fetchone()
    platform = str(row[0]) if row else ""
    for file in dist.files or ():
        parts = file.parts
        if (
            file.name == "httpfs.duckdb_extension"
            and len(parts) >= 3
            and parts[-3] == f"v{duckdb.__version__}"
            and parts[-2] == platform
        ):
            located = Path(str(dist.locate_file(file))).resolve()
            return located if located.is_file() else None
    return None


def _load_httpfs(con: duckdb.DuckDBPyConnection, config: StoreConfig) -> str | None:
    """Install and load the signed httpfs; return None when it is loaded, else why not."""
    shipped = _httpfs_file(con)
    if shipped is None:
        return (
            f"the package {HTTPFS_DISTRIBUTION} with an httpfs build for DuckDB "
            f"{duckdb.__version__} is not installed"
        )
    # The package lays the file out as a DuckDB extension directory (<dir>/v1.4.4/<platform>/),
    # so by default INSTALL finds it in place and copies nothing.
    directory = config.extension_directory or shipped.parents[2]
    try:
        con.execute("SET extension_directory = ?", [str(directory)])
        con.execute(f"INSTALL {_sql_string(str(shipped))}")
        con.execute("LOAD httpfs")  # DuckDB checks the extension's signature here
    except duckdb.Error as err:
        return f"DuckDB could not install or load it: {err}"
    row = con.execute(
        "SELECT loaded, current_setting('allow_unsigned_extensions') "
        "FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
    ).fetchone()
    if row is None or not row[0]:
        return "DuckDB does not list it as loaded"
    if row[1]:
        return "this DuckDB allows unsigned extensions, so the load proves nothing"
    return None


def _attach_failure(message: str, path: Path) -> StoreError:
    """Turn DuckDB's ATTACH error into ours; DuckDB's text may quote the key, so it is dropped."""
    if "Could not set lock on file" in message:
        holder = re.search(r"PID (\d+)", message)
        pid = f" (PID {holder.group(1)})" if holder else ""
        return StoreLockedError(
            f"another process is writing {path}{pid}; DuckDB allows one writer and no reader "
            "beside it. Stop it, or open a published snapshot read-only",
            path=str(path),
        )
    if "Unique file handle conflict" in message:
        return StoreLockedError(
            f"{path} is already open in this process; share that Store (its cursor() serves "
            "other threads)",
            path=str(path),
        )
    if "Permission denied" in message:
        return StoreError(
            f"permission denied on {path} or its folder; run as the store's owner", path=str(path)
        )
    return StoreError(f"{_WRONG_KEY} ({path})", path=str(path))


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
    ) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
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
        key = _check_key(key, "key")
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
        con = duckdb.connect(":memory:")
        try:
            store = cls._attach(con, config, key=key, read_only=read_only)
            if not read_only:
                store._migrate(clock)
        except BaseException:
            con.close()
            raise
        return store

    @classmethod
    def _attach(
        cls, con: duckdb.DuckDBPyConnection, config: StoreConfig, *, key: str, read_only: bool
    ) -> Store:
        path = config.path
        # No network and no community code: the only extension is the signed httpfs from PyPI.
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET allow_community_extensions = false")
        httpfs_problem = _load_httpfs(con, config)
        if httpfs_problem is not None and not read_only:
            raise StoreError(
                f"refusing to open {path} for writing: httpfs is not loaded "
                f"({httpfs_problem}). DuckDB writes encrypted files safely only with the OpenSSL "
                f"in its signed httpfs extension; install it with `{_HTTPFS_FIX}`",
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

        options = "TYPE duckdb, ENCRYPTION_KEY ?, ENCRYPTION_CIPHER 'GCM'"
        if read_only:
            options += ", READ_ONLY"
        failure: StoreError | None = None
        try:
            con.execute(f"ATTACH {_sql_string(str(path))} AS {_ALIAS} ({options})", [key])
        except duckdb.Error as err:
            failure = _attach_failure(str(err), path)
        if failure is not None:
            raise failure  # outside the except block: no __context__ holding DuckDB's text
        con.execute(f"USE {_ALIAS}")
        return cls(
            con,
            config,
            read_only=read_only,
            httpfs_loaded=httpfs_problem is None,
            key_digest=_key_digest(key),
        )

    @staticmethod
    def _set(con: duckdb.DuckDBPyConnection, setting: str, value: object) -> None:
        try:
            con.execute(f"SET {setting} = ?", [value])
        except duckdb.Error as err:
            raise ConfigError(f"DuckDB refused {setting}: {err}", setting=setting) from err

    def _migrate(self, clock: Callable[[], datetime]) -> None:
        with self.transaction():
            self.execute(_SCHEMA_MIGRATIONS_DDL)
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
        cur.execute(f"USE {_ALIAS}")
        return cur

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
            [_ALIAS],
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
                [_ALIAS, table],
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
            [_ALIAS, table],
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
        self.execute(f"CHECKPOINT {_ALIAS}")

    def _read_only_error(self) -> StoreError:
        return StoreError(
            f"{self.path} is open read-only (a snapshot for analysts); writes go through the "
            "one writing process (the fusion service or CLI)",
            path=str(self.path),
        )

    # -- snapshots -----------------------------------------------------------------------------

    def publish(
        self, out_dir: Path, *, head_office_key: str, branch_keys: Mapping[str, str]
    ) -> dict[str, Path]:
        """Write the head-office and per-branch encrypted snapshots; return their paths by name.

        `head_office.duckdb` is a full copy. `branch_<id>.duckdb` holds that branch's customers
        and matches, the newest vendor rows of the matched keys, the taxonomy and the migration
        ledger; never the batch ledger or the audit log. Each file is written under a temporary
        name and renamed, so a reader sees a whole snapshot or the previous one. Every key must
        differ from the store's and from the others, so that no key opens two files. Each file
        is one consistent read: publish between loads for a consistent set.
        """
        if not self.httpfs_loaded:
            raise StoreError(
                f"publishing writes encrypted files and needs httpfs; install it with "
                f"`{_HTTPFS_FIX}`",
                path=str(self.path),
            )
        keys = {HEAD_OFFICE: _check_key(head_office_key, "head_office_key")}
        for branch, branch_key in branch_keys.items():
            if not isinstance(branch, str) or not _BRANCH_ID.fullmatch(branch):
                raise ConfigError(
                    f"branch id {branch!r} cannot name a file: use letters, digits, '.', '_', '-'",
                    setting="branch_keys",
                )
            if branch == HEAD_OFFICE:
                raise ConfigError(
                    f"branch id {HEAD_OFFICE!r} is taken by the head-office copy",
                    setting="branch_keys",
                )
            keys[branch] = _check_key(branch_key, f"branch_keys[{branch!r}]")
        digests = [_key_digest(k) for k in keys.values()]
        if len(set(digests)) != len(digests) or self._key_digest in digests:
            raise ConfigError(
                "every snapshot needs its own key, different from the store's key and from the "
                "other snapshots' (one key would open two files); take them from the keyring",
                setting="branch_keys",
            )
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {HEAD_OFFICE: self._write_snapshot(out_dir, HEAD_OFFICE, keys[HEAD_OFFICE])}
        for branch in branch_keys:
            written[branch] = self._write_snapshot(out_dir, branch, keys[branch])
        return written

    def _write_snapshot(self, out_dir: Path, name: str, key: str) -> Path:
        final = out_dir / (f"{name}.duckdb" if name == HEAD_OFFICE else f"branch_{name}.duckdb")
        tmp = out_dir / f".{final.name}.{secrets.token_hex(6)}.tmp"
        wal = tmp.with_name(tmp.name + ".wal")
        alias = f"snapshot_{secrets.token_hex(6)}"
        cur = self.connection.cursor()  # its own connection: USE and BEGIN stay off the store's
        attached = False
        try:
            cur.execute(
                f"ATTACH {_sql_string(str(tmp))} AS {alias} "
                "(TYPE duckdb, ENCRYPTION_KEY ?, ENCRYPTION_CIPHER 'GCM')",
                [key],
            )
            attached = True
            if name == HEAD_OFFICE:
                cur.execute(f"COPY FROM DATABASE {_ALIAS} TO {alias}")  # tables, views, keys
                for table in _STORE_ONLY:
                    cur.execute(f"DELETE FROM {alias}.main.{table}")  # noqa: S608 (names are ours)
            else:
                _fill_branch(cur, alias, name)
            cur.execute("USE memory")
            cur.execute(f"DETACH {alias}")  # checkpoints and closes: one file, no WAL
            attached = False
            if wal.exists():
                raise StoreError(f"{final.name} kept a WAL after closing; not publishing it")
            _fsync(tmp)
            os.replace(tmp, final)
            _fsync(out_dir)
        except BaseException:
            if attached:
                with suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                with suppress(duckdb.Error):
                    cur.execute("USE memory")
                    cur.execute(f"DETACH {alias}")
            tmp.unlink(missing_ok=True)
            wal.unlink(missing_ok=True)
            raise
        finally:
            cur.close()
        return final

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint (when writing) and close; closing twice is harmless."""
        if self._con is not None:
            con, self._con = self._con, None
            con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._con is None else "read-only" if self.read_only else "read-write"
        return f"Store({str(self.path)!r}, {state})"


def _fill_branch(cur: duckdb.DuckDBPyConnection, alias: str, branch: str) -> None:
    """Create the branch's tables in the attached snapshot with the live DDL, then fill them."""
    ddl = dict(
        cur.execute(
            "SELECT table_name, sql FROM duckdb_tables() "
            "WHERE database_name = ? AND schema_name = 'main'",
            [_ALIAS],
        ).fetchall()
    )
    cur.execute(f"USE {alias}")
    cur.execute("BEGIN TRANSACTION")  # one read of the live store for the whole branch
    try:
        for table, select in _BRANCH_TABLES.items():
            if table not in ddl:  # a table a later step creates (bank_features) is not there yet
                continue
            cur.execute(ddl[table])
            insert = f"INSERT INTO {table} {select}"
            if "$branch" in select:
                cur.execute(insert, {"branch": branch})
            else:
                cur.execute(insert)
        for view in _BRANCH_VIEWS:
            cur.execute(view)
    except BaseException:
        with suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
