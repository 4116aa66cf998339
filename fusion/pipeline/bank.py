"""The bank's side of a run: its keyring and store opened together, the inbox, ingest, publish.

Every pipeline step that touches the store takes a `Bank`: the run folder, the bank's keyring
and the store opened with the keyring's key. `open_bank` opens one for the duration of a block.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fusion.ingest import Inbox, IngestOutcome, ingest_inbox
from fusion.runfolder import RunFolder
from fusion.store import Store
from matcher.atomic import atomic_path
from matcher.keyring import Keyring

__all__ = [
    "Bank",
    "LedgerCount",
    "deliver_to_inbox",
    "ingest_batches",
    "ledger_counts",
    "open_bank",
    "publish_snapshots",
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


def publish_snapshots(bank: Bank) -> dict[str, Path]:
    """Return the encrypted read-only snapshots written: head office's and one per branch."""
    branches = [
        row[0]
        for row in bank.store.execute(
            "SELECT DISTINCT branch_id FROM customers ORDER BY 1"
        ).fetchall()
    ]
    return bank.store.publish(
        bank.folder.snapshots,
        head_office_key=bank.keyring.head_office_key(),
        branch_keys={b: bank.keyring.branch_store_key(b) for b in branches},
    )
