"""Uploads and the ingest worker: sealed files received from vendors, judged one at a time.

The store's own connection belongs to the worker thread (DuckDB keeps a single writer; batches
load one at a time, in arrival order). The worker writes each upload's verdict to the `uploads`
table, so GET /v1/batches and GET /v1/uploads survive a restart. At start, sealed files a
previous run left in the inbox are queued again, partial uploads a crash left behind are
deleted, and the quarantine and the archive are pruned to their bounds. A vendor has at
most a set number of uploads streaming in or waiting, so one vendor cannot fill the bank's
disk or starve the others' batches.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from contracts.errors import BatchRefused
from fusion.ingest import Inbox, IngestOutcome, ingest_file
from fusion.retention import Retention
from fusion.store import Store
from matcher.envelope import read_manifest
from matcher.keyring import Keyring

__all__ = ["Upload", "Uploads"]

log = logging.getLogger("bankfusion.api")
# How uploads are named in the inbox: <vendor id>-<upload id>.sealed.
_UPLOADED = re.compile(r"^(?P<vendor>.+)-(?P<upload>[0-9a-f]{24})\.sealed$")
_MAX_KEPT = 10_000  # uploads whose verdict GET /v1/batches can still show from memory


def _naive_utc(moment: datetime) -> datetime:
    """Return `moment` as the store keeps timestamps: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass
class Upload:
    """A sealed file received from a vendor and what the ingest worker made of it."""

    upload_id: str
    token_id: str
    vendor_id: str | None
    path: Path
    claimed_batch_id: str | None
    received_at: datetime
    outcome: IngestOutcome | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Uploads:
    """The uploads received (`received`, by upload id) and the worker thread that ingests them."""

    def __init__(
        self,
        *,
        store: Store,
        keyring: Keyring,
        inbox: Inbox,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        clock: Callable[[], datetime],
        quarantine_retention: Retention | None = None,
        archive_retention: Retention | None = None,
    ) -> None:
        """Start the worker; `cursor()` gives the calling thread's cursor, for reads.

        The retentions bound the quarantine and the archive (None: `inbox`'s own).
        """
        self._store = store
        self._keyring = keyring
        self.inbox = replace(
            inbox,
            quarantine_retention=quarantine_retention or inbox.quarantine_retention,
            archive_retention=archive_retention or inbox.archive_retention,
        )
        self._cursor = cursor
        self._clock = clock
        self.received: dict[str, Upload] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Upload | None] = queue.Queue()
        self._streaming: Counter[str] = Counter()  # uploads of each vendor streaming in now
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    @staticmethod
    def new_id() -> str:
        """Return a fresh upload id: 24 hex digits."""
        return secrets.token_hex(12)

    def path_for(self, vendor_id: str, upload_id: str) -> Path:
        """Return where an upload of `vendor_id` goes in the inbox (found again at start)."""
        return self.inbox.inbox / f"{vendor_id}-{upload_id}.sealed"

    def submit(self, upload: Upload) -> None:
        """Queue a received sealed file for the single ingest worker."""
        with self._lock:
            self.received[upload.upload_id] = upload
            if len(self.received) > _MAX_KEPT:
                # Forget the oldest judged uploads; their verdicts stay in the ledger.
                judged = [k for k, u in self.received.items() if u.done.is_set()]
                for key in judged[: len(self.received) - _MAX_KEPT]:
                    del self.received[key]
        self._queue.put(upload)

    def claiming(self, batch_id: str) -> list[Upload]:
        """Return the uploads whose (unverified) manifest claimed `batch_id`, oldest first."""
        # Under the lock: request threads read while the event loop's `submit` inserts.
        with self._lock:
            return [u for u in self.received.values() if u.claimed_batch_id == batch_id]

    def admit(self, vendor_id: str, limit: int) -> bool:
        """Reserve room for one more upload of `vendor_id`, or return False when it is full.

        A vendor has at most `limit` uploads streaming in or waiting for the ingest worker. A
        True must be followed by `release` once the upload is queued (or abandoned).
        """
        with self._lock:
            waiting = sum(
                1
                for u in self.received.values()
                if u.vendor_id == vendor_id and not u.done.is_set()
            )
            if waiting + self._streaming[vendor_id] >= limit:
                return False
            self._streaming[vendor_id] += 1
            return True

    def release(self, vendor_id: str) -> None:
        """Return the room `admit` reserved (the upload is queued now, or abandoned)."""
        with self._lock:
            self._streaming[vendor_id] -= 1
            if self._streaming[vendor_id] <= 0:
                del self._streaming[vendor_id]

    def pending(self) -> int:
        """Return how many uploads wait for the ingest worker."""
        return self._queue.qsize()

    def verdict(self, batch_id: str, vendor_id: str | None) -> str | None:
        """Return the stored verdict of the newest upload claiming `batch_id`, or None.

        `vendor_id` None (an admin) means any vendor's upload.
        """
        rows = (
            self._cursor()
            .execute(
                "SELECT status FROM uploads WHERE claimed_batch_id = ? "
                "AND (CAST(? AS VARCHAR) IS NULL OR vendor_id = ?) "
                "ORDER BY received_at DESC, judged_at DESC LIMIT 1",
                [batch_id, vendor_id, vendor_id],
            )
            .fetchall()  # read to the end: an unread result keeps its transaction open
        )
        return str(rows[0][0]) if rows else None

    def status_of(self, upload_id: str, vendor_id: str | None) -> tuple[str | None, str] | None:
        """Return (the batch id it claimed, its status) of upload `upload_id`, or None.

        From memory while the worker holds it ("received" until judged), else from the
        `uploads` table. `vendor_id` None (an admin) sees any upload; a vendor only its own, so
        "not yours" and "unknown" are the same None.
        """
        with self._lock:
            upload = self.received.get(upload_id)
        if upload is not None:
            if vendor_id is not None and upload.vendor_id != vendor_id:
                return None
            outcome = upload.outcome if upload.done.is_set() else None
            return upload.claimed_batch_id, outcome.status if outcome else "received"
        rows = (
            self._cursor()
            .execute(
                "SELECT claimed_batch_id, status FROM uploads WHERE upload_id = ? "
                "AND (CAST(? AS VARCHAR) IS NULL OR vendor_id = ?)",
                [upload_id, vendor_id, vendor_id],
            )
            .fetchall()
        )
        return (rows[0][0], str(rows[0][1])) if rows else None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Return once every queued upload is ingested (tests and shutdown), or False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            uploads = list(self.received.values())
        for upload in uploads:
            if not upload.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def resume(self) -> None:
        """Queue the sealed files a previous run left in the inbox; delete partial uploads;
        prune the quarantine and the archive to their bounds."""
        self._remove_partial()
        self.inbox.ensure().tidy(now=self._clock())
        found = self.inbox.pending()
        for path in found:
            named = _UPLOADED.match(path.name)
            try:
                claimed: str | None = read_manifest(path).batch_id
            except BatchRefused:
                claimed = None  # the worker refuses and ledgers it
            self.submit(
                Upload(
                    upload_id=named["upload"] if named else self.new_id(),
                    token_id="inbox",  # noqa: S106 - no request brought it: found at start
                    # The route names a file after the token's vendor, which it checked
                    # against the manifest; other files (`fusion ingest`) are the bank's own.
                    vendor_id=named["vendor"] if named else None,
                    path=path,
                    claimed_batch_id=claimed,
                    received_at=self._clock(),
                )
            )
        if found:
            log.info("queued %d sealed file(s) found in the inbox at start", len(found))

    def _remove_partial(self) -> None:
        """Delete uploads a crash left half-written: never renamed into place, never accepted."""
        # An upload streams into atomic_path's temporary beside its final name:
        # `.<vendor>-<upload>.sealed.<random>.tmp`. Temporaries of other writers stay.
        for part in self.inbox.inbox.glob(".*.tmp"):
            if _UPLOADED.match(part.name[1:].rsplit(".", 2)[0]):
                part.unlink(missing_ok=True)
        # Where earlier versions of the service streamed uploads.
        for part in self.inbox.work.glob(".upload-*.part"):
            part.unlink(missing_ok=True)

    def close(self) -> None:
        """Return once the worker has judged every queued upload."""
        self._queue.put(None)
        self._thread.join(timeout=300)

    def _run(self) -> None:
        while True:
            upload = self._queue.get()
            if upload is None:
                return
            try:
                upload.outcome = self._judge(upload)
                try:
                    self._write_verdict(upload, upload.outcome)
                except Exception:
                    # The verdict stays in memory (and a loaded batch in the ledger); a restart
                    # forgets a refusal, as before the `uploads` table.
                    log.exception("verdict of upload %s not written", upload.upload_id)
            finally:
                upload.done.set()

    def _judge(self, upload: Upload) -> IngestOutcome:
        """Return what ingesting `upload` gave; "failed" when the ingest itself crashed."""
        try:
            return ingest_file(
                upload.path,
                store=self._store,
                keyring=self._keyring,
                inbox=self.inbox,
                now=self._clock(),
            )
        except Exception:
            # The sealed file stays in the inbox: `fusion ingest` (or a restart) retries it.
            # The vendor learns "failed", never why; the bank's log has the traceback.
            log.exception("ingest of upload %s failed", upload.upload_id)
            return IngestOutcome(
                upload.claimed_batch_id, upload.vendor_id, "failed", 0, ("ingest_error",)
            )

    def _write_verdict(self, upload: Upload, outcome: IngestOutcome) -> None:
        """Write what the worker made of `upload` to the `uploads` table (status, never cause)."""
        self._store.execute(
            "INSERT OR REPLACE INTO uploads (upload_id, vendor_id, claimed_batch_id, ledger_id, "
            "status, received_at, judged_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                upload.upload_id,
                upload.vendor_id,
                upload.claimed_batch_id,
                outcome.ledger_id,  # None when the ingest failed: it wrote no ledger row
                outcome.status,
                _naive_utc(upload.received_at),
                _naive_utc(self._clock()),
            ],
        )
