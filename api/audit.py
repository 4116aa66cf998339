"""The audit log: one record per request, written by its own thread; it fails closed.

A request never waits on a disk: `add` queues its record, and the writer thread appends what
waits to the service's sealed request trail (`fusion.audit_trail`), one frame a batch. A failed
write keeps its records at the head of the queue and is retried with back-off. While the log
cannot keep up (`queue_limit` records waiting, or writes failing for longer than
`outage_seconds`) `is_open()` is False, and the app answers 503 to every request but
GET /healthz until a write succeeds again. `close()` flushes what waits,
retrying for a while before it gives the rest up (and says so in the service log).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque

from fusion.audit_trail import AuditRecord, AuditTrail

__all__ = ["AuditLog", "AuditRecord"]

log = logging.getLogger("bankfusion.api")
_BATCH = 500  # records per audit write
_BACKOFF = (0.05, 2.0)  # seconds between retries of a failed audit write: first, most
_FLUSH_SECONDS = 10.0  # how long close() keeps retrying before it gives records up


class AuditLog:
    """The queue of audit records and the thread that appends them to the request trail."""

    def __init__(
        self,
        trail: AuditTrail,
        *,
        queue_limit: int = 10_000,
        outage_seconds: float = 5.0,
    ) -> None:
        """Start the writer thread; only it appends to `trail` (closed by `close`)."""
        self.trail = trail
        # Not a bounded queue.Queue: the bound stops new requests (is_open), but the record of
        # a request already let in is always kept, or that request would go unaudited.
        self._waiting: deque[AuditRecord] = deque()
        self._ready = threading.Condition()
        self._limit = queue_limit
        self._outage = outage_seconds
        self._failing_since: float | None = None  # monotonic time of the first failure
        self._closing = False
        self.failures = 0  # failed audit writes since start (each retried)
        self.dropped = 0  # records of requests refused with 503 that found no room
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()

    def add(self, record: AuditRecord, *, admitted: bool = True) -> None:
        """Queue one audit record; its thread writes it within a fraction of a second.

        `admitted=False` marks a request refused because the audit was unavailable: its record
        is dropped (and counted) when the queue is already at its limit.
        """
        with self._ready:
            if not admitted and len(self._waiting) >= self._limit:
                self.dropped += 1
                log.warning("audit queue full: record of a refused %s dropped", record.action)
                return
            self._waiting.append(record)
            self._ready.notify()

    def is_open(self) -> bool:
        """Return whether the audit log keeps up, so a new request may be served.

        False while `queue_limit` records wait, or while writes have failed for longer than
        `outage_seconds`; True again once a write succeeds and the queue drains.
        """
        with self._ready:
            if len(self._waiting) >= self._limit:
                return False
            since = self._failing_since
        return since is None or time.monotonic() - since <= self._outage

    def depth(self) -> int:
        """Return how many audit records wait to be written."""
        with self._ready:
            return len(self._waiting)

    def close(self) -> None:
        """Return once what waits is written, or once writes have failed for a while."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout=_FLUSH_SECONDS + 20)

    def write(self, records: list[AuditRecord]) -> None:
        """Append `records` to the trail as one frame; raises OSError when the disk refuses."""
        self.trail.append(records)

    @property
    def written(self) -> int:
        """Return how many records this service has written to its trail since it started."""
        return self.trail.written

    def _next_batch(self, closing_since: float | None) -> tuple[list[AuditRecord], float | None]:
        """Return the records to write next (none: closed and all written), and since when
        the log has been closing."""
        with self._ready:
            while not self._waiting and not self._closing:
                self._ready.wait()
            if self._closing and closing_since is None:
                closing_since = time.monotonic()
            # Copied, not popped: a failed write keeps them at the head, in order.
            return list(itertools.islice(self._waiting, _BATCH)), closing_since

    def _run(self) -> None:
        try:
            self._drain()
        finally:
            try:
                self.trail.close()
            except OSError:
                log.exception("the request trail's last segment could not be sealed")

    def _drain(self) -> None:
        backoff = _BACKOFF[0]
        closing_since: float | None = None
        while True:
            batch, closing_since = self._next_batch(closing_since)
            if not batch:
                return  # closing, everything written
            try:
                self.write(batch)
            except Exception:
                if not self._failed(backoff, closing_since):
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF[1])
                continue
            with self._ready:
                for _ in batch:
                    self._waiting.popleft()
                if self._failing_since is not None:
                    log.warning("audit writes succeed again")
                self._failing_since = None
            backoff = _BACKOFF[0]

    def _failed(self, backoff: float, closing_since: float | None) -> bool:
        """Count a failed write; return whether to retry it (False: closing, out of time)."""
        with self._ready:
            self.failures += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            waiting = len(self._waiting)
        log.exception("audit write failed; %d record(s) kept, retrying in %.2f s", waiting, backoff)
        if closing_since is not None and time.monotonic() - closing_since > _FLUSH_SECONDS:
            log.error("service closing: %d audit record(s) could not be written", waiting)
            return False
        return True
