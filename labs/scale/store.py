"""The bank's store of scale inputs: the encrypted DuckDB file the feature build reads, any size.

`StoreWriter` fills `bank/fusion.duckdb` (key: the inputs keyring's store key) chunk by chunk
while `labs.scale.inputs` generates the extract and the vendor file, with what the bank's store
holds once that extract is loaded and matched against the vendor's batch, at snapshot `SNAPSHOT`
under the inputs' salt epoch:

    bank_features  every customer: the extract's columns but the phone, as `fusion.match`
                   stores them
    customers      customer_id, branch_id, key (the keyed hash of the phone; null unless
                   "ok"), key_status ("ok", "duplicated" for a shared phone, "invalid")
    batches        one loaded vendor batch (`BATCH_ID`) created the day before the snapshot,
                   taxonomy CURRENT_VERSION (its tables loaded too, as ingest loads them)
    vendor_apps    every user of the vendor file: key, app_ids (the file's lists), app_days and
                   app_sessions drawn per app
    vendor_tags    every user: key, tag_ids (the file's lists), tag_weights drawn per tag
    matches        the customers the salted match finds: at the vendor, phone not shared
    match_runs     that match's counts

The rows go in through `Store.insert_frame`, the insert of ingest and of the match, one chunk at
a time, so memory is bounded by a chunk. The vendor's extra lists (days, sessions, weights) come
from a random stream of their own per chunk, so the Parquet inputs do not change with them. The
matches are the generator's: the tests check them against the matcher's own rules
(`matcher.psi.customer_keys` joined with the vendor's keys), and the bench against the PSI
join's count.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from contracts.taxonomy import CURRENT_VERSION, load_taxonomy
from fusion.store import Store, StoreConfig

__all__ = ["BATCH_ID", "SNAPSHOT", "StoreChunk", "StoreWriter", "store_writer"]

SNAPSHOT = datetime.date(2026, 9, 30)
BATCH_ID = "scale-batch-0001"
_CREATED = datetime.datetime(2026, 9, 29, 6, 0)  # naive UTC, as the store keeps times
_MATCHED_AT = datetime.datetime(2026, 9, 30, 22, 0)
_RUN_ID = "scale-match-0001"
# DuckDB's share of the generating process: inserts stream, so a bounded buffer pool suffices.
_MEMORY_LIMIT = "2GB"


@dataclass(frozen=True)
class StoreChunk:
    """One chunk's store rows: the extract's rows, the vendor's rows and which of them matched.

    `customer_keys` and `key_status` are per bank row; `matched_rows` are positions in `vendor`
    and `matched_ids` their customers' ids, in the same order.
    """

    index: int
    bank: pa.Table  # the extract's rows, phone included (dropped here)
    customer_keys: pl.Series  # Binary, null unless the status is "ok"
    key_status: pl.Series  # String
    vendor: pa.Table  # key, app_ids, tag_ids
    matched_rows: np.ndarray[Any, Any]
    matched_ids: np.ndarray[Any, Any]


def _lists_like(lists: pa.ChunkedArray | pa.Array, values: np.ndarray[Any, Any]) -> pa.ListArray:
    """Return list rows with the lengths of `lists` holding `values` (one per element)."""
    column = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    offsets = column.offsets
    base = offsets[0].as_py()
    if base:
        offsets = pa.array(np.asarray(offsets) - base, type=offsets.type)
    return pa.ListArray.from_arrays(offsets, pa.array(values))


class StoreWriter:
    """The store of one inputs folder, written a chunk at a time (use as a context manager)."""

    def __init__(self, path: Path, key: str, *, seed: int, epoch_id: str) -> None:
        self.path = path
        self.seed = seed
        self.epoch_id = epoch_id
        self.store = Store.open(StoreConfig(path, memory_limit=_MEMORY_LIMIT), key=key)
        self.counts = {"customers": 0, "keyed": 0, "invalid": 0, "duplicated": 0, "matched": 0}
        self.vendor_rows = 0
        self.bank_table = False

    def add(self, chunk: StoreChunk) -> None:
        """Insert one chunk's customers, features, vendor rows and matches."""
        store = self.store
        bank = pl.DataFrame(pl.from_arrow(chunk.bank))
        features = bank.drop("phone").with_columns(snapshot_date=pl.lit(SNAPSHOT))
        if not self.bank_table:
            self.bank_table = store.create_table_like("bank_features", features)
        customers = pl.DataFrame(
            {
                "customer_id": bank["customer_id"],
                "branch_id": bank["branch_id"],
                "key": chunk.customer_keys,
                "key_status": chunk.key_status,
            }
        ).with_columns(salt_epoch=pl.lit(self.epoch_id), snapshot_date=pl.lit(SNAPSHOT))
        vendor = chunk.vendor
        rng = np.random.default_rng((self.seed, 0x5704E, chunk.index))
        apps = vendor["app_ids"].combine_chunks()
        tags = vendor["tag_ids"].combine_chunks()
        days = rng.integers(1, 31, len(apps.values)).astype(np.int16)
        sessions = (days * rng.integers(1, 9, len(apps.values))).astype(np.int32)
        weights = (0.05 + 0.95 * rng.random(len(tags.values))).astype(np.float32)
        tagged = {
            "key": vendor["key"],
            "salt_epoch": pa.repeat(self.epoch_id, vendor.num_rows),
            "batch_id": pa.repeat(BATCH_ID, vendor.num_rows),
        }
        matches = pa.table(
            {
                "customer_id": pa.array(chunk.matched_ids, pa.int64()),
                "key": vendor["key"].take(pa.array(chunk.matched_rows, pa.int64())),
                "salt_epoch": pa.repeat(self.epoch_id, len(chunk.matched_rows)),
                "batch_id": pa.repeat(BATCH_ID, len(chunk.matched_rows)),
                "matched_at": pa.repeat(pa.scalar(_MATCHED_AT), len(chunk.matched_rows)),
                "snapshot_date": pa.repeat(pa.scalar(SNAPSHOT), len(chunk.matched_rows)),
                "id_type": pa.repeat("mobile", len(chunk.matched_rows)),
            }
        )
        with store.transaction():
            store.insert_frame("bank_features", features)
            store.insert_frame("customers", customers)
            store.insert_frame(
                "vendor_apps",
                pa.table(
                    {
                        **tagged,
                        "app_ids": apps,
                        "app_days": _lists_like(apps, days),
                        "app_sessions": _lists_like(apps, sessions),
                    }
                ),
            )
            store.insert_frame(
                "vendor_tags",
                pa.table({**tagged, "tag_ids": tags, "tag_weights": _lists_like(tags, weights)}),
            )
            store.insert_frame("matches", matches)
        status = chunk.key_status.value_counts()
        by_status = dict(zip(status["key_status"], status["count"], strict=True))
        self.counts["customers"] += bank.height
        self.counts["keyed"] += by_status.get("ok", 0)
        self.counts["invalid"] += by_status.get("invalid", 0)
        self.counts["duplicated"] += by_status.get("duplicated", 0)
        self.counts["matched"] += len(chunk.matched_rows)
        self.vendor_rows += vendor.num_rows

    def finish(self) -> None:
        """Record the batch and the match run, and write everything to the file."""
        store = self.store
        with store.transaction():
            store.load_taxonomy(load_taxonomy(CURRENT_VERSION))
            store.execute(
                "INSERT INTO batches (batch_id, vendor_id, sealed_sha256, status, rows, "
                "salt_epoch, taxonomy_version, mode, reasons, received_at, finished_at, "
                "created_at) VALUES (?, 'scale-vendor', ?, 'loaded', ?, ?, ?, 'salted', '[]', "
                "?, ?, ?)",
                [
                    BATCH_ID,
                    "0" * 64,
                    self.vendor_rows,
                    self.epoch_id,
                    CURRENT_VERSION,
                    _CREATED,
                    _CREATED,
                    _CREATED,
                ],
            )
            counts = self.counts
            store.execute(
                "INSERT INTO match_runs (run_id, salt_epoch, snapshot_date, customers, keyed, "
                "invalid, duplicated, matched, reasons, finished_at, identifiers, conflicts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?, 0)",
                [
                    _RUN_ID,
                    self.epoch_id,
                    SNAPSHOT,
                    counts["customers"],
                    counts["keyed"],
                    counts["invalid"],
                    counts["duplicated"],
                    counts["matched"],
                    _MATCHED_AT,
                    json.dumps(["mobile"]),
                ],
            )
        store.checkpoint()

    def close(self) -> None:
        self.store.close()


@contextmanager
def store_writer(path: Path, key: str, *, seed: int, epoch_id: str) -> Iterator[StoreWriter]:
    """Yield a `StoreWriter` of the store at `path`; finished and closed when the block ends."""
    writer = StoreWriter(path, key, seed=seed, epoch_id=epoch_id)
    try:
        yield writer
        writer.finish()
    finally:
        writer.close()
