"""Benchmarks of a vendor batch's way in: the contract check, and ingest stage by stage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from labs.bench.figures import Figure, best_of
from labs.bench.inputs import synthetic_batch

__all__ = ["bench_contracts", "bench_ingest"]


def bench_contracts(work: Path, *, n: int = 1_000_000) -> Iterator[Figure]:
    """Vendor-batch contract rows/s (warm GX) against the 0.5M rows/s requirement."""
    del work
    from contracts.suites import validate_vendor_batch
    from contracts.taxonomy import load_taxonomy

    batch = synthetic_batch(n)
    taxonomy = load_taxonomy()
    start = time.perf_counter()
    validate_vendor_batch(batch, taxonomy=taxonomy, expected_rows=n)
    cold = time.perf_counter() - start
    warm = best_of(lambda: validate_vendor_batch(batch, taxonomy=taxonomy, expected_rows=n), 2)
    required = 500_000.0
    yield Figure(
        name="contracts.vendor_batch_rows_per_s",
        value=n / warm,
        unit="rows/s",
        baseline=required,
        baseline_name="requirement",
        ratio=n / warm / required,
        target=">= 0.5M rows/s",
        met=n / warm >= required,
        note=f"13 GX rules on {n:,} rows; first call incl. GX import {cold:.2f} s",
    )


def bench_ingest(work: Path, *, n: int = 1_000_000) -> Iterator[Figure]:
    """Ingest rows/s of a 1M-user sealed batch, split by stage, against a plain DuckDB load."""
    import duckdb

    from fusion.ingest import Inbox, ingest_file
    from fusion.store import Store
    from matcher.keyring import init_local_pair
    from matcher.pack import pack_users

    bank, vendor = init_local_pair(work / "bank-keys", work / "vendor-keys", vendor_id="bench")
    batch = synthetic_batch(n)
    users = batch.drop("key").with_columns(
        phone=pl.Series([f"13{i:09d}" for i in range(n)], dtype=pl.String)
    )
    users_path = work / "users.parquet"
    users.write_parquet(users_path)
    inbox = Inbox(work / "bank").ensure()
    sealed = inbox.inbox / "bench.sealed"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pack_s = best_of(lambda: pack_users(users_path, sealed, keyring=vendor, now=now), 1)
    with Store.open(work / "bank" / "fusion.duckdb", key=bank.store_key()) as store:
        start = time.perf_counter()
        outcome = ingest_file(sealed, store=store, keyring=bank, inbox=inbox, now=now)
        total = time.perf_counter() - start
    plain = work / "plain.parquet"
    batch.write_parquet(plain, compression="zstd")

    def baseline_load() -> None:
        con = duckdb.connect(str(work / "plain.duckdb"))
        con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_parquet(?)", [str(plain)])
        con.close()

    base = best_of(baseline_load, 1)
    split = ", ".join(f"{k} {v:.2f} s" for k, v in outcome.seconds.items())
    yield Figure(
        name="ingest.rows_per_s",
        value=n / total,
        unit="rows/s",
        baseline=n / base,
        baseline_name="plain DuckDB load of the same plaintext Parquet, no crypto, no contract",
        ratio=base / total,
        target="reported",
        met=None,
        note=f"{outcome.status}; {split}; vendor pack {pack_s:.1f} s",
    )
