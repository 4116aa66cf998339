"""Published snapshots: encrypted read-only copies of the store for head office and each branch.

`publish_snapshots` writes `head_office.duckdb`, a full copy without the tables only the service
needs, and one `branch_<id>.duckdb` per branch holding only that branch's rows under that
branch's key: row-level security for analysts who open DuckDB themselves. Each file is written
beside its final name and renamed into place (`matcher.atomic.atomic_path`), so a reader sees a
whole snapshot or the previous one.

Every copy also holds the analysts' stable views with their data dictionary
(`fusion.analyst_views`: schema `analyst_v1`, a comment on every view and column), and the run
folder's scores and lists when given (`tables`: whole at head office, the branch's rows in a
branch copy).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

import duckdb
import polars as pl

from contracts.errors import ConfigError, StoreError
from fusion.analyst_views import PUBLISHED_TABLES, create_analyst_views
from fusion.store_attach import STORE_ALIAS, check_key, key_digest, sql_string
from matcher.atomic import atomic_path

__all__ = ["publish_snapshots"]

BRANCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HEAD_OFFICE = "head_office"
# Tables the head-office snapshot leaves empty: token hashes authenticate the service's callers,
# blind seeds would let a reader re-derive the bank's pending OPRF labels, and sealed vendor rows
# are of use to no analyst. They stay in the store.
# Who holds which snapshot key version is the bank's business, not the analysts'.
_STORE_ONLY = (
    "api_tokens",
    "oprf_requests",
    "vendor_oprf_rows",
    "snapshot_key_versions",
    "snapshot_grants",
)

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


def publish_snapshots(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    *,
    head_office_key: str,
    branch_keys: Mapping[str, str],
    store_key_digest: bytes,
    tables: Mapping[str, pl.DataFrame] | None = None,
) -> dict[str, Path]:
    """Write the head-office and per-branch encrypted snapshots; return their paths by name.

    `con` is the store's connection, with the store attached as `STORE_ALIAS` and httpfs loaded.
    `head_office.duckdb` is a full copy. `branch_<id>.duckdb` holds that branch's customers
    and matches, the newest vendor rows of the matched keys, the taxonomy and the migration
    ledger; never the batch ledger or the audit log. Every key must differ from the store's
    (`store_key_digest`) and from the others, so that no key opens two files. Each file is one
    consistent read: publish between loads for a consistent set. `tables` are frames with a
    `branch_id` column named in `fusion.analyst_views.PUBLISHED_TABLES` (scores, lists).
    """
    keys = _snapshot_keys(head_office_key, branch_keys)
    digests = [key_digest(k) for k in keys.values()]
    if len(set(digests)) != len(digests) or store_key_digest in digests:
        raise ConfigError(
            "every snapshot needs its own key, different from the store's key and from the "
            "other snapshots' (one key would open two files); take them from the keyring",
            setting="branch_keys",
        )
    extra = dict(tables or {})
    unknown = sorted(set(extra) - set(PUBLISHED_TABLES))
    if unknown:
        raise ConfigError(
            f"tables {unknown} cannot go into a snapshot; it takes {list(PUBLISHED_TABLES)}",
            setting="tables",
        )
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: _write_snapshot(con, out_dir, name, key, extra) for name, key in keys.items()}


def _snapshot_keys(head_office_key: str, branch_keys: Mapping[str, str]) -> dict[str, str]:
    """Return every snapshot's checked key by name, head office first."""
    keys = {HEAD_OFFICE: check_key(head_office_key, "head_office_key")}
    for branch, branch_key in branch_keys.items():
        if not isinstance(branch, str) or not BRANCH_ID.fullmatch(branch):
            raise ConfigError(
                f"branch id {branch!r} cannot name a file: use letters, digits, '.', '_', '-'",
                setting="branch_keys",
            )
        if branch == HEAD_OFFICE:
            raise ConfigError(
                f"branch id {HEAD_OFFICE!r} is taken by the head-office copy",
                setting="branch_keys",
            )
        keys[branch] = check_key(branch_key, f"branch_keys[{branch!r}]")
    return keys


def _write_snapshot(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    name: str,
    key: str,
    tables: Mapping[str, pl.DataFrame],
) -> Path:
    final = out_dir / (f"{name}.duckdb" if name == HEAD_OFFICE else f"branch_{name}.duckdb")
    alias = f"snapshot_{secrets.token_hex(6)}"
    cur = con.cursor()  # its own connection: USE and BEGIN stay off the store's
    try:
        with atomic_path(final) as tmp:
            wal = tmp.with_name(tmp.name + ".wal")
            attached = False
            try:
                cur.execute(
                    f"ATTACH {sql_string(str(tmp))} AS {alias} "
                    "(TYPE duckdb, ENCRYPTION_KEY ?, ENCRYPTION_CIPHER 'GCM')",
                    [key],
                )
                attached = True
                _fill_snapshot(cur, alias, name)
                cur.execute("BEGIN")  # one commit for the tables, views and ~300 comments
                _add_tables(cur, alias, name, tables)
                cur.execute(f"USE {alias}")  # the views bind to the snapshot's own tables
                create_analyst_views(cur, alias)
                cur.execute("COMMIT")
                cur.execute("USE memory")
                cur.execute(f"DETACH {alias}")  # checkpoints and closes: one file, no WAL
                attached = False
                if wal.exists():
                    raise StoreError(f"{final.name} kept a WAL after closing; not publishing it")
            except BaseException:
                if attached:
                    _detach(cur, alias)
                wal.unlink(missing_ok=True)
                raise
    finally:
        cur.close()
    return final


def _fill_snapshot(cur: duckdb.DuckDBPyConnection, alias: str, name: str) -> None:
    """Copy what the snapshot `name` holds from the store into the attached `alias`."""
    if name != HEAD_OFFICE:
        _fill_branch(cur, alias, name)
        return
    cur.execute(f"COPY FROM DATABASE {STORE_ALIAS} TO {alias}")  # tables, views, keys
    copied = {
        r[0]
        for r in cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [alias]
        ).fetchall()
    }
    for table in _STORE_ONLY:
        if table in copied:  # a store opened read-only may predate a table
            cur.execute(f"DELETE FROM {alias}.main.{table}")  # noqa: S608 (names are ours)


def _add_tables(
    cur: duckdb.DuckDBPyConnection, alias: str, name: str, tables: Mapping[str, pl.DataFrame]
) -> None:
    """Copy the run folder's frames into the snapshot: whole at head office, else the branch's."""
    for table, frame in tables.items():
        view = f"publish_{secrets.token_hex(4)}"
        cur.register(view, frame)
        try:
            where = "" if name == HEAD_OFFICE else " WHERE branch_id = $branch"
            params = {} if name == HEAD_OFFICE else {"branch": name}
            cur.execute(
                f"CREATE TABLE {alias}.main.{table} AS SELECT * FROM {view}{where}",  # noqa: S608
                params,
            )
        finally:
            cur.unregister(view)


def _detach(cur: duckdb.DuckDBPyConnection, alias: str) -> None:
    """Roll back and detach a half-written snapshot; errors here would hide the first one."""
    with suppress(duckdb.Error):
        cur.execute("ROLLBACK")
    with suppress(duckdb.Error):
        cur.execute("USE memory")
        cur.execute(f"DETACH {alias}")


def _fill_branch(cur: duckdb.DuckDBPyConnection, alias: str, branch: str) -> None:
    """Create the branch's tables in the attached snapshot with the live DDL, then fill them."""
    ddl = dict(
        cur.execute(
            "SELECT table_name, sql FROM duckdb_tables() "
            "WHERE database_name = ? AND schema_name = 'main'",
            [STORE_ALIAS],
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
