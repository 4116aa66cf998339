"""The bank's side of a run: its keyring and store opened together, the inbox, ingest, publish.

Every pipeline step that touches the store takes a `Bank`: the run folder, the bank's keyring
and the store opened with the keyring's key. `open_bank` opens one for the duration of a block.

Snapshots for analysts are published under versioned keys. Version 1 is the keyring's own key
of each snapshot; `publish_snapshots(bank, rotate_keys=True)` starts the next version for every
snapshot at once (`snapshot_key_versions`), derived from the store key
(`matcher.key_handout`), and writes the files under it. `grant_snapshot_key` seals the current
version's key to one analyst's public key, signed by the bank, and records who got which
version (`snapshot_grants`, `audit_log`). Revoking an analyst is rotating: their key does not
open the next snapshots. A copy they already took, and what they read from it, stays readable
to them: rotation protects only what comes next. `snapshots/manifest.json` names each file and
its key version, so a grant never hands out a version no published file uses.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from contracts.errors import ConfigError, StoreError
from fusion.ingest import Inbox, IngestOutcome, ingest_inbox
from fusion.runfolder import RunFolder
from fusion.snapshots import BRANCH_ID, HEAD_OFFICE
from fusion.store import Store
from matcher.atomic import atomic_path, write_atomic
from matcher.key_handout import (
    bank_handout_public,
    derive_snapshot_key,
    public_key_fingerprint,
    read_public_key,
    seal_handout,
    write_public_key,
)
from matcher.keyring import Keyring

__all__ = [
    "MANIFEST_NAME",
    "Bank",
    "Grant",
    "LedgerCount",
    "PublishedSnapshots",
    "deliver_to_inbox",
    "grant_snapshot_key",
    "ingest_batches",
    "ledger_counts",
    "open_bank",
    "publish_snapshots",
    "published_snapshot_key",
    "snapshot_key",
    "snapshot_key_version",
    "write_bank_handout_key",
]


@dataclass(frozen=True)
class Bank:
    """A run folder with the bank's keyring and its store, open for the steps that need both."""

    folder: RunFolder
    keyring: Keyring
    store: Store


@dataclass(frozen=True)
class LedgerCount:
    """Batches of one ledger status and the rows they hold."""

    batches: int
    rows: int | None

    def to_dict(self) -> dict[str, int | None]:
        """Return {"batches": ..., "rows": ...}."""
        return {"batches": self.batches, "rows": self.rows}


@contextmanager
def open_bank(
    folder: RunFolder, *, keyring: Keyring | None = None, read_only: bool = False
) -> Iterator[Bank]:
    """Yield the run's bank: `keyring` (default: the one in the run folder) and its store."""
    keyring = keyring or Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key(), read_only=read_only) as store:
        if not read_only:
            folder.remove_identifying_jobs()  # a killed match job's identifiers go at once
        yield Bank(folder, keyring, store)


def deliver_to_inbox(files: Iterable[Path], inbox: Inbox) -> list[Path]:
    """Return where each sealed file was copied into the inbox (whole, under a fresh name)."""
    delivered = []
    for path in files:
        target = inbox.inbox / f"{path.stem}-{uuid.uuid4().hex[:8]}.sealed"
        # The worker picks up *.sealed: it must never see a half-copied one.
        with atomic_path(target) as partial:
            shutil.copyfile(path, partial)
        delivered.append(target)
    return delivered


def ingest_batches(bank: Bank, *, clock: Callable[[], datetime]) -> list[IngestOutcome]:
    """Return the verdict on every sealed file in the run's inbox (verify, open, check, load)."""
    return list(
        ingest_inbox(store=bank.store, keyring=bank.keyring, inbox=bank.folder.inbox, clock=clock)
    )


def ledger_counts(store: Store) -> dict[str, LedgerCount]:
    """Return the batch ledger's counts by status (loaded, quarantined, refused, ...)."""
    rows = store.execute(
        "SELECT status, count(*), sum(rows) FROM batches GROUP BY status ORDER BY status"
    ).fetchall()
    return {status: LedgerCount(int(n), rows) for status, n, rows in rows}


MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "bankfusion-snapshots/1"
_RANKINGS = ("acquisition", "rescue", "uplift")
_SCORE_TEXT = ("reason_1", "reason_2", "reason_3", "model_version")


@dataclass(frozen=True)
class PublishedSnapshots:
    """The files a publish wrote, by snapshot name, and the key version they are under."""

    paths: dict[str, Path]
    key_version: int
    rotated: bool


@dataclass(frozen=True)
class Grant:
    """A key handout written for one analyst: where, for what, sealed to which public key."""

    path: Path
    snapshot: str
    label: str
    key_version: int
    recipient_sha256: str
    bank_key_sha256: str


def snapshot_key_version(store: Store) -> int:
    """Return the snapshot key version in force (1 until the first rotation)."""
    row = store.execute("SELECT max(version) FROM snapshot_key_versions").fetchone()
    return int(row[0]) if row and row[0] is not None else 1


def snapshot_key(keyring: Keyring, name: str, version: int) -> str:
    """Return snapshot `name`'s key ("head_office" or a branch id) at key version `version`."""
    if version == 1:
        return keyring.head_office_key() if name == HEAD_OFFICE else keyring.branch_store_key(name)
    return derive_snapshot_key(keyring.store_key(), name, version)


def published_snapshot_key(keyring: Keyring, snapshots: Path, name: str = HEAD_OFFICE) -> str:
    """Return the key that opens the published file of snapshot `name` in `snapshots`.

    The version is the one the last publish wrote the files under (its manifest; version 1 for
    files published before key versions existed). The service and the campaign sandbox open
    the head-office snapshot with it.
    """
    version = _manifest(snapshots).get("key_version", 1)
    return snapshot_key(keyring, name, int(version))


def publish_snapshots(
    bank: Bank, *, rotate_keys: bool = False, now: datetime | None = None, actor: str = "cli"
) -> PublishedSnapshots:
    """Write head office's and each branch's snapshot under the current (or a new) key version.

    With `rotate_keys` the next version is recorded first, so a publish that fails half-way is
    simply run again under the same version. The run folder's scores and lists go in too.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    store = bank.store
    if rotate_keys:
        with store.transaction():
            version = snapshot_key_version(store) + 1
            store.execute(
                "INSERT INTO snapshot_key_versions (version, created_at, actor) VALUES (?, ?, ?)",
                [version, now, actor],
            )
            _audit(store, now, actor, "snapshot keys rotated", f"key_version={version}")
    version = snapshot_key_version(store)
    branches = [
        str(r[0])
        for r in store.execute("SELECT DISTINCT branch_id FROM customers ORDER BY 1").fetchall()
    ]
    paths = store.publish(
        bank.folder.snapshots,
        head_office_key=snapshot_key(bank.keyring, HEAD_OFFICE, version),
        branch_keys={b: snapshot_key(bank.keyring, b, version) for b in branches},
        tables=_run_tables(bank.folder.scores, bank.folder.lists),
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "key_version": version,
        "published_at": now.isoformat(),
        "snapshots": {name: path.name for name, path in paths.items()},
    }
    write_atomic(
        bank.folder.snapshots / MANIFEST_NAME,
        json.dumps(manifest, indent=2, sort_keys=True) + "\n",
    )
    return PublishedSnapshots(paths, version, rotate_keys)


def grant_snapshot_key(
    bank: Bank,
    *,
    snapshot: str,
    label: str,
    public_key: Path,
    out: Path | None = None,
    now: datetime | None = None,
    actor: str = "cli",
) -> Grant:
    """Seal the current key of `snapshot` to the analyst's public key; audit it; write it.

    `snapshot` is "head_office" or a branch id whose snapshot the last publish wrote under the
    key version now in force. The handout goes to `out` (default: <run>/handouts/); it holds
    the key only sealed, so it may travel by mail.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if not isinstance(label, str) or not BRANCH_ID.fullmatch(label):
        raise ConfigError(
            f"label must be 1-64 letters, digits, '.', '_' or '-' naming the analyst, got "
            f"{label!r}",
            setting="label",
        )
    recipient = read_public_key(public_key)
    version = snapshot_key_version(bank.store)
    _check_published(bank.folder.snapshots, snapshot, version)
    key = snapshot_key(bank.keyring, snapshot, version)
    store_key = bank.keyring.store_key()
    handout = seal_handout(
        key=key,
        snapshot=snapshot,
        label=label,
        key_version=version,
        recipient=recipient,
        store_key=store_key,
        issued_at=now,
    )
    fingerprint = public_key_fingerprint(recipient)
    naive = now.replace(tzinfo=None)
    with bank.store.transaction():
        bank.store.execute(
            "INSERT INTO snapshot_grants (granted_at, actor, snapshot, label, key_version, "
            "recipient_sha256) VALUES (?, ?, ?, ?, ?, ?)",
            [naive, actor, snapshot, label, version, fingerprint],
        )
        _audit(
            bank.store,
            naive,
            actor,
            "snapshot grant",
            f"snapshot={snapshot} label={label} key_version={version} "
            f"recipient_sha256={fingerprint[:16]}",
        )
    path = out or bank.folder.root / "handouts" / f"{label}.{snapshot}.v{version}.handout.json"
    if path.exists():
        raise ConfigError(f"{path} exists; give --out another file", setting="out")
    write_atomic(path, handout)
    bank_key = public_key_fingerprint(bank_handout_public(store_key))
    return Grant(path, snapshot, label, version, fingerprint, bank_key)


def write_bank_handout_key(keyring: Keyring, path: Path) -> str:
    """Write the bank's handout verification key (hex) to `path`; return its SHA-256.

    Analysts pin this file (received from the bank out of band) to check every handout.
    """
    public = bank_handout_public(keyring.store_key())
    write_public_key(path, public)
    return public_key_fingerprint(public)


def _audit(store: Store, at: datetime, actor: str, action: str, detail: str) -> None:
    store.execute(
        'INSERT INTO audit_log ("at", actor, role, action, detail, status) '
        "VALUES (?, ?, 'bank', ?, ?, 'ok')",
        [at, actor, action, detail],
    )


def _check_published(folder: Path, snapshot: str, version: int) -> None:
    """Refuse a grant for a snapshot the last publish did not write under `version`."""
    manifest = _manifest(folder)
    written = manifest.get("snapshots", {})
    if snapshot not in written:
        known = ", ".join(sorted(written)) or "none"
        raise ConfigError(
            f"no published snapshot {snapshot!r} (published: {known}); run `fusion publish` "
            "first, or name head_office or a branch id that has customers",
            setting="branch",
        )
    if manifest.get("key_version") != version:
        raise StoreError(
            f"the snapshots in {folder} were written under key version "
            f"{manifest.get('key_version')}, but version {version} is in force (a rotation "
            "whose publish did not finish); run `fusion publish` again, then grant"
        )


def _manifest(folder: Path) -> dict[str, Any]:
    """Return the last publish's manifest in `folder` ({} before the first)."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _run_tables(scores_dir: Path, lists_dir: Path) -> dict[str, pl.DataFrame]:
    """Return the run folder's scores and lists as the snapshot's published_* tables."""
    tables: dict[str, pl.DataFrame] = {}
    scores = [
        _ranking(name, pl.read_parquet(scores_dir / f"{name}.parquet"))
        for name in _RANKINGS
        if (scores_dir / f"{name}.parquet").is_file()
    ]
    if scores:
        tables["published_scores"] = pl.concat(scores)
    lists = [
        _list_rows(path.parent.name, pl.read_parquet(path))
        for path in sorted(lists_dir.glob("*/*.parquet"))
    ]
    if lists:
        tables["published_lists"] = pl.concat(lists)
    return tables


def _score_column(frame: pl.DataFrame) -> pl.Expr:
    """The score of a score file: `score`, or the uplift file's `predicted_uplift`."""
    name = "score" if "score" in frame.columns else "predicted_uplift"
    if name not in frame.columns or not {"customer_id", "branch_id"} <= set(frame.columns):
        raise ConfigError(
            f"a score or list file has columns {frame.columns}; expected customer_id, "
            "branch_id and score (or predicted_uplift), as `fusion score` writes them",
            setting="scores",
        )
    return pl.col(name).cast(pl.Float64).alias("score")


def _ranking(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    texts = [
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(pl.String).alias(c)
        for c in _SCORE_TEXT
    ]
    decile = pl.col("decile") if "decile" in frame.columns else pl.lit(None)
    return frame.select(
        pl.lit(name).alias("ranking"),
        pl.col("customer_id").cast(pl.Int64),
        pl.col("branch_id").cast(pl.String),
        _score_column(frame),
        decile.cast(pl.Int8).alias("decile"),
        *texts,
    )


def _list_rows(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.lit(name).alias("list_name"),
        pl.col("branch_id").cast(pl.String),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("list_rank"),
        pl.col("customer_id").cast(pl.Int64),
        _score_column(frame),
    )
