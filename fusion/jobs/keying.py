"""The job that keys a customer extract: each customer's match key, written by key bucket.

Two stages, the rules of `matcher.psi.customer_keys` on the whole extract, for one identifier
type (the mobile number by default; `fusion.pipeline.matching.cluster_keys` runs one job per
type and combines them): "keyed-hash" normalises and hashes each row chunk and writes its rows
by key bucket; "duplicates" then marks, per bucket, keys held by two or more customers (a
shared value has one key, so all its holders land in one bucket, whichever chunks they came
from).

    <out>/keys/bucket=00007.parquet       customer_id, key, key_status of one bucket
    <out>/unkeyed/part-00000.parquet      customers whose phone did not normalise
    <out>/_work/                          row chunks and per-chunk bucket parts, while running
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import polars as pl

from contracts.schemas import IDENTIFIER_COLUMNS
from fusion.jobs.files import (
    Location,
    join_path,
    read_chunks,
    read_parquet,
    remove,
    write_parquet,
)
from fusion.jobs.partitions import (
    DEFAULT_BUCKETS,
    DEFAULT_CHUNK_ROWS,
    Partitions,
    bucket_file,
    check_buckets,
    part_file,
    write_buckets,
)
from fusion.jobs.runner import Engine
from fusion.jobs.worker_secrets import SecretRef
from matcher.identity import normalize
from matcher.keyed_hash import SaltEpoch, keyed_hash

__all__ = ["KeyedCustomers", "key_customers"]

_KEY_STATUS = pl.String


@dataclass(frozen=True)
class KeyedCustomers:
    """Customers' match keys as `matcher.psi.customer_keys` gives them, written by bucket.

    `keys` holds, per bucket, customer_id, key (null when duplicated) and key_status ("ok" or
    "duplicated"); `unkeyed` the customers whose phone did not normalise (key_status "invalid").
    """

    keys: Partitions
    unkeyed: tuple[str, ...]
    customers: int
    invalid: int
    duplicated: int
    reasons: dict[str, int]

    @property
    def keyed(self) -> int:
        return self.customers - self.invalid - self.duplicated

    def read(self) -> pl.DataFrame:
        """Return customer_id, key, key_status of every customer (a whole table: small runs)."""
        files = [f for parts in self.keys.files for f in parts] + list(self.unkeyed)
        return read_parquet(files)


@dataclass(frozen=True)
class _HashTask:
    chunk: str
    index: int
    salt: SecretRef[SaltEpoch]
    buckets: int
    hashed: str  # folder of the per-chunk bucket parts
    unkeyed: str  # this chunk's invalid rows
    kind: str = "mobile"  # the identifier type keyed


@dataclass(frozen=True)
class _Hashed:
    unkeyed: str
    buckets: tuple[int, ...]
    rows: int
    invalid: int
    reasons: dict[str, int]


def _hash_chunk(task: _HashTask) -> _Hashed:
    """Key one chunk of the extract; write its keyed rows by bucket and its invalid rows apart.

    Duplicates are not decided here: a phone shared across chunks has one key, so its rows meet
    in one bucket, where `_settle_bucket` sees them all.
    """
    frame = read_parquet([task.chunk])
    normalised = normalize(task.kind, frame[IDENTIFIER_COLUMNS[task.kind]])
    keys = keyed_hash(normalised.values, task.salt.resolve(), domain=task.kind)
    hashed = pl.DataFrame([frame["customer_id"], keys.alias("key")])
    invalid = hashed.filter(pl.col("key").is_null()).with_columns(
        key_status=pl.lit("invalid", _KEY_STATUS)
    )
    write_parquet(invalid, task.unkeyed)
    keyed = hashed.filter(pl.col("key").is_not_null())
    written = write_buckets(keyed, "key", task.hashed, task.buckets, task.index)
    return _Hashed(
        task.unkeyed, tuple(written), frame.height, invalid.height, normalised.reason_counts()
    )


@dataclass(frozen=True)
class _SettleTask:
    parts: tuple[str, ...]
    out: str


def _settle_bucket(task: _SettleTask) -> tuple[int, int]:
    """Apply the shared-phone rule to one bucket; return (rows, duplicated)."""
    frame = read_parquet(task.parts)
    shared = pl.col("key").is_duplicated()
    settled = frame.select(
        "customer_id",
        pl.when(shared).then(None).otherwise(pl.col("key")).alias("key"),
        pl.when(shared)
        .then(pl.lit("duplicated"))
        .otherwise(pl.lit("ok"))
        .cast(_KEY_STATUS)
        .alias("key_status"),
    )
    write_parquet(settled, task.out)
    return settled.height, int((settled["key_status"] == "duplicated").sum())


def key_customers(
    engine: Engine,
    extract: pl.DataFrame | Location,
    epoch: SaltEpoch,
    out: Location,
    *,
    buckets: int = DEFAULT_BUCKETS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    kind: str = "mobile",
) -> KeyedCustomers:
    """Return every customer's match key under `epoch`, written by bucket under `out`.

    The same keys, statuses and counts as `matcher.psi.customer_keys` on the whole extract, in
    two stages: "keyed-hash" normalises and hashes each row chunk and writes its rows by key
    bucket; "duplicates" then marks, per bucket, keys held by two or more customers (a shared
    phone has one key, so all its holders land in one bucket, whichever chunks they came from).
    The salt reaches the workers through `engine.shared`, never inside a task.

    Args:
        engine: where the tasks run.
        extract: the bank's extract (a frame or a Parquet file) with customer_id and phone.
        epoch: the salt epoch agreed with the vendor.
        out: the job's folder (any fsspec location the workers can reach).
        buckets: key buckets, a power of two; the vendor's partitions need the same.
        chunk_rows: rows a keying task takes.
        kind: the identifier type to key (its column: `IDENTIFIER_COLUMNS`).
    """
    check_buckets(buckets)
    base, work = os.fspath(out), join_path(out, "_work")
    try:
        hashed = _hash_stage(engine, extract, epoch, (base, work), (buckets, chunk_rows), kind=kind)
        parts: list[list[str]] = [[] for _ in range(buckets)]
        for index, done in enumerate(hashed):
            for bucket in done.buckets:
                parts[bucket].append(part_file(join_path(work, "hashed"), bucket, index))
        filled = [b for b in range(buckets) if parts[b]]
        settled = engine.map_buckets(
            _settle_bucket,
            [_SettleTask(tuple(parts[b]), bucket_file(join_path(base, "keys"), b)) for b in filled],
            stage="duplicates",
        )
    finally:
        remove(work)
    files: list[tuple[str, ...]] = [() for _ in range(buckets)]
    for bucket in filled:
        files[bucket] = (bucket_file(join_path(base, "keys"), bucket),)
    reasons: dict[str, int] = {}
    for done in hashed:
        for reason, count in done.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    return KeyedCustomers(
        keys=Partitions(
            buckets,
            tuple(files),
            sum(rows for rows, _ in settled),
            ("customer_id", "key", "key_status"),
        ),
        unkeyed=tuple(done.unkeyed for done in hashed),
        customers=sum(done.rows for done in hashed),
        invalid=sum(done.invalid for done in hashed),
        duplicated=sum(dup for _, dup in settled),
        reasons=reasons,
    )


def _hash_stage(
    engine: Engine,
    extract: pl.DataFrame | Location,
    epoch: SaltEpoch,
    folders: tuple[str, str],
    sizes: tuple[int, int],
    *,
    kind: str,
) -> list[_Hashed]:
    """Run the "keyed-hash" stage: the extract cut into chunks, each keyed and bucketed.

    `folders` is (the job's base, its work folder); `sizes` (buckets, rows per chunk).
    """
    (base, work), (buckets, chunk_rows) = folders, sizes
    columns = ("customer_id", IDENTIFIER_COLUMNS[kind])
    chunks = []
    for index, frame in enumerate(read_chunks(extract, columns, chunk_rows)):
        chunks.append(join_path(work, "chunks", f"chunk-{index:05d}.parquet"))
        write_parquet(frame, chunks[-1])
    with engine.shared(epoch) as salt:
        tasks = [
            _HashTask(
                chunk=chunk,
                index=i,
                salt=salt,
                buckets=buckets,
                hashed=join_path(work, "hashed"),
                unkeyed=join_path(base, "unkeyed", f"part-{i:05d}.parquet"),
                kind=kind,
            )
            for i, chunk in enumerate(chunks)
        ]
        hashed = engine.map_buckets(_hash_chunk, tasks, stage="keyed-hash")
    remove(join_path(work, "chunks"))  # chunks hold raw identifiers: gone once they are keyed
    return hashed
