"""Attaching an encrypted DuckDB file: the signed httpfs, key checks, and one refusal for a bad key.

Every connection that opens an encrypted store file goes through here: the store's own
(`fusion.store.Store.open`), the analyst query sandbox (`fusion.query`) and the snapshot writer
(`fusion.snapshots`).

1. `load_httpfs` installs and loads `httpfs` from the file the PyPI package `duckdb-ext-httpfs`
   ships, with DuckDB's signature check on. httpfs brings OpenSSL; without it DuckDB 1.4.4 can
   read an encrypted file but refuses to write one, so a writer without httpfs is refused with
   the command that fixes it.
2. `attach_encrypted` runs `ATTACH <file> AS <alias> (ENCRYPTION_KEY ?, ENCRYPTION_CIPHER 'GCM')`
   with the key bound as a parameter (the path cannot be one: it is quoted by `sql_string`).
   DuckDB casts the key to a BLOB and quotes it in the error when that fails (non-ASCII, a stray
   backslash) or when it is not text, so keys are checked first (`check_key`), and every failure
   to attach becomes one detail-free `StoreError` with no DuckDB error attached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path

import duckdb

from contracts.errors import ConfigError, StoreError, StoreLockedError

__all__ = ["attach_encrypted", "check_key", "key_digest", "load_httpfs", "sql_string"]

HTTPFS_DISTRIBUTION = "duckdb-ext-httpfs"
HTTPFS_PIN = "1.4.4.20260205"
HTTPFS_FIX = f"pip install {HTTPFS_DISTRIBUTION}=={HTTPFS_PIN}"
MIN_KEY_CHARS = 32  # DuckDB derives the AES key with one SHA-256: a short key is a guessable key
STORE_ALIAS = "db"  # the name a store file is attached as on the store's own connection
WRONG_KEY = (
    "the store did not open with this key: wrong key, not a store file, or a damaged one "
    "(restore it from the bank's backup)"
)


def sql_string(text: str) -> str:
    """Return `text` as a SQL string literal, for statements DuckDB will not parameterise."""
    if "\x00" in text:
        raise ConfigError("a path must not contain a NUL character", setting="path")
    return "'" + text.replace("'", "''") + "'"


def check_key(key: object, setting: str) -> str:
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


def key_digest(key: str) -> bytes:
    """Return the SHA-256 of a key: compared to tell keys apart without keeping them."""
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


def load_httpfs(
    con: duckdb.DuckDBPyConnection, *, extension_directory: Path | None = None
) -> str | None:
    """Install and load the signed httpfs; return None when it is loaded, else why not.

    `extension_directory` defaults to the directory the httpfs package installed, so loading
    writes nothing under the home directory.
    """
    shipped = _httpfs_file(con)
    if shipped is None:
        return (
            f"the package {HTTPFS_DISTRIBUTION} with an httpfs build for DuckDB "
            f"{duckdb.__version__} is not installed"
        )
    # The package lays the file out as a DuckDB extension directory (<dir>/v1.4.4/<platform>/),
    # so by default INSTALL finds it in place and copies nothing.
    directory = extension_directory or shipped.parents[2]
    try:
        con.execute("SET extension_directory = ?", [str(directory)])
        con.execute(f"INSTALL {sql_string(str(shipped))}")
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


def attach_encrypted(
    con: duckdb.DuckDBPyConnection, path: Path, *, alias: str, key: str, read_only: bool
) -> None:
    """Attach the encrypted file `path` as `alias` on `con`, or raise a detail-free StoreError.

    Raises StoreLockedError while another process writes the file (or this one has it open),
    and StoreError otherwise: one message for a wrong key and for a file that is not a store.
    DuckDB's text may quote the key, so it is dropped and never attached as a cause. `alias`
    must be a name made by the caller: it is written into the statement.
    """
    options = "TYPE duckdb, ENCRYPTION_KEY ?, ENCRYPTION_CIPHER 'GCM'"
    if read_only:
        options += ", READ_ONLY"
    failure: StoreError | None = None
    try:
        con.execute(f"ATTACH {sql_string(str(path))} AS {alias} ({options})", [key])
    except duckdb.Error as err:
        failure = _attach_failure(str(err), path)
    if failure is not None:
        raise failure  # outside the except block: no __context__ holding DuckDB's text


def _attach_failure(message: str, path: Path) -> StoreError:
    """Turn DuckDB's ATTACH error into ours; DuckDB's text may quote the key, so it is dropped."""
    if "Could not set lock on file" in message:
        holder = re.search(r"PID (\d+)", message)
        pid = f" (PID {holder.group(1)})" if holder else ""
        return StoreLockedError(
            f"another process holds {path}{pid}, writing or reading (`fusion sql`, the "
            "service, a cluster job); DuckDB allows one writer and no reader beside it. Stop it "
            "or wait for it to finish, or read a published snapshot instead",
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
    return StoreError(f"{WRONG_KEY} ({path})", path=str(path))
