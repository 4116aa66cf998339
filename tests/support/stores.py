"""Store configs on real DuckDB files, and the batch and tag rows the store tests insert."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from fusion.store import Store, StoreConfig

__all__ = ["T0", "key_blob", "record_batch", "store_config", "tag_rows"]

T0 = datetime(2026, 1, 5, 9, 0)


def store_config(folder: Path, extensions: Path) -> StoreConfig:
    """Return the config of a two-thread store `fusion.duckdb` in `folder`.

    `extensions` is the DuckDB extension folder, one per session, so httpfs is copied in once.
    """
    return StoreConfig(folder / "fusion.duckdb", threads=2, extension_directory=extensions)


def key_blob(n: int) -> bytes:
    """Return a 32-byte match key that is the number `n`, big-endian."""
    return n.to_bytes(32, "big")


def record_batch(store: Store, batch_id: str, finished: datetime, status: str = "loaded") -> None:
    """Insert a ledger row for a batch of vendor-1 that finished at `finished` in `status`."""
    store.execute(
        "INSERT INTO batches (batch_id, vendor_id, sealed_sha256, status, rows, received_at,"
        " finished_at) VALUES (?, 'vendor-1', ?, ?, 0, ?, ?)",
        [batch_id, "ab" * 32, status, finished, finished],
    )


def tag_rows(keys: list[int], batch_id: str, first_tag: int) -> pl.DataFrame:
    """Return vendor_tags rows of epoch e1: each key gets tags first_tag and first_tag + 1."""
    return pl.DataFrame(
        {
            "key": [key_blob(k) for k in keys],
            "salt_epoch": ["e1"] * len(keys),
            "batch_id": [batch_id] * len(keys),
            "tag_ids": [[first_tag, first_tag + 1] for _ in keys],
            "tag_weights": [[0.5, 0.25] for _ in keys],
        },
        schema_overrides={"tag_weights": pl.List(pl.Float32)},
    )
