"""What the running service holds: the store, keys, and the parts each route leans on.

One process, one DuckDB writer. `Service` composes the parts, each in its own module: the
audit log (`api.audit`), the uploads and their ingest worker (`api.uploads`), the token book
(`api.auth`), the scorer (`api.scoring`) and the request metrics (`api.metrics`). The store's
own connection belongs to the ingest worker; every other thread takes a cursor of its own
(`cursor()`), which DuckDB allows concurrently in one process. A route that calls a pipeline
step takes `with bank()`: the run folder and keyring with the store bound to that cursor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from api.audit import AuditLog, AuditRecord
from api.auth import TokenGate
from api.metrics import RequestMetrics
from api.scoring import CurrentScorer
from api.uploads import Uploads
from fusion.audit_trail import AuditTrail
from fusion.pipeline.bank import Bank
from fusion.retention import Retention
from fusion.runfolder import RunFolder
from fusion.store import Store
from matcher.keyring import Keyring

__all__ = ["Service", "query_share", "utc_now"]


def query_share(limit: int) -> int:
    """Return how many of `limit` query slots one caller may hold: half, at least one."""
    return max(1, limit // 2) if limit > 0 else 0


def utc_now() -> datetime:
    """Return the current time, in UTC (the service's default clock)."""
    return datetime.now(UTC)


class Service:
    """The state every route shares; built by `create_app`'s lifespan, closed at shutdown."""

    def __init__(
        self,
        folder: RunFolder,
        keyring: Keyring,
        store: Store,
        *,
        clock: Callable[[], datetime] = utc_now,
        audit_queue_limit: int = 10_000,
        audit_outage_seconds: float = 5.0,
        quarantine_retention: Retention | None = None,
        archive_retention: Retention | None = None,
    ) -> None:
        self.folder = folder
        self.keyring = keyring
        self.store = store
        self.clock = clock
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursor_lock = threading.Lock()
        # Cursors are made from this one, never from the store's own connection, which the
        # ingest worker may be using at that moment.
        self._factory = store.cursor()
        self._queries: dict[str, int] = {}  # analyst queries running now, per caller
        self._query_lock = threading.Lock()
        self.outcomes_lock = threading.Lock()  # POST /v1/outcomes: check and insert as one
        # Campaign writes (declare, plan, promote, close, deliver) and readouts, one at a time:
        # two plans must not both find a customer free, nor two promotions pass one gate.
        self.campaign_lock = threading.Lock()
        self.metrics = RequestMetrics()
        self.tokens = TokenGate(store, self.cursor, clock=clock)
        self.scorer = CurrentScorer(folder)
        self.audit = AuditLog(
            AuditTrail(folder.audit_trail, keyring.audit_trail_key()),
            queue_limit=audit_queue_limit,
            outage_seconds=audit_outage_seconds,
        )
        self.uploads = Uploads(
            store=store,
            keyring=keyring,
            inbox=folder.inbox,
            cursor=self.cursor,
            clock=clock,
            quarantine_retention=quarantine_retention,
            archive_retention=archive_retention,
        )
        self.uploads.resume()

    @classmethod
    def start(
        cls,
        run: Path,
        *,
        audit_queue_limit: int = 10_000,
        audit_outage_seconds: float = 5.0,
        quarantine_retention: Retention | None = None,
        archive_retention: Retention | None = None,
    ) -> Service:
        """Return the service of run folder `run`: the bank's keyring and its store, opened."""
        folder = RunFolder(Path(run))
        keyring = Keyring.open(folder.bank_keys)
        folder.inbox.ensure()
        store = Store.open(folder.store, key=keyring.store_key())
        try:
            return cls(
                folder,
                keyring,
                store,
                audit_queue_limit=audit_queue_limit,
                audit_outage_seconds=audit_outage_seconds,
                quarantine_retention=quarantine_retention,
                archive_retention=archive_retention,
            )
        except BaseException:
            store.close()
            raise

    def record(self, record: AuditRecord, seconds: float, *, admitted: bool = True) -> None:
        """Count a finished request for /metrics and queue its audit record.

        `admitted=False` marks a request refused because the audit was unavailable: its record
        is dropped (and counted) when the queue is already at its limit.
        """
        method, _, route = record.action.partition(" ")
        self.metrics.count(method=method, route=route, status=record.status, seconds=seconds)
        self.audit.add(record, admitted=admitted)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor on the store (made on first use)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            with self._cursor_lock:
                cur = self.store.cursor(of=self._factory)
                self._cursors.append(cur)
            self._local.cursor = cur
        return cur

    @contextmanager
    def bank(self) -> Iterator[Bank]:
        """Yield the run's bank with the store bound to this thread's cursor; release it after.

        Use it in the route's own body, never in a dependency: FastAPI may run a dependency
        on another thread than the route, and a cursor belongs to one thread. Never close the
        bound store: that would close the thread's cached cursor. On leaving, the cursor's last
        result is ended: a result read with fetchone() keeps its transaction open while the
        thread idles, and DuckDB then refuses every second change of one keyed row (a campaign's
        stage) as a write conflict.
        """
        cur = self.cursor()
        try:
            yield Bank(self.folder, self.keyring, self.store.on_cursor(cur))
        finally:
            cur.execute("SELECT 1").fetchall()

    def take_query_slot(self, limit: int, caller: str = "") -> bool:
        """Return whether `caller` may run a query now; True takes a slot.

        Fewer than `limit` run in all, and one caller holds at most `query_share(limit)` of
        them, so that one analyst cannot take every slot.
        """
        with self._query_lock:
            mine = self._queries.get(caller, 0)
            if sum(self._queries.values()) >= limit or mine >= query_share(limit):
                return False
            self._queries[caller] = mine + 1
            return True

    def running_queries(self, caller: str | None = None) -> int:
        """Return how many analyst queries run now: all of them, or `caller`'s."""
        with self._query_lock:
            return sum(self._queries.values()) if caller is None else self._queries.get(caller, 0)

    def release_query_slot(self, caller: str = "") -> None:
        """Give back a slot `take_query_slot` gave `caller`."""
        with self._query_lock:
            left = self._queries.get(caller, 0) - 1
            if left > 0:
                self._queries[caller] = left
            else:
                self._queries.pop(caller, None)

    def snapshot_path(self) -> Path:
        """Return the published head-office snapshot analysts' queries read."""
        return self.folder.snapshots / "head_office.duckdb"

    def close(self) -> None:
        """Finish the queued work, flush the audit log and close the store."""
        self.uploads.close()
        self.audit.close()
        with self._cursor_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
            self._factory.close()
        self.store.close()
