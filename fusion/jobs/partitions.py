"""Rows by key bucket: `bucket_of`, the part files a job writes per bucket, and their readers.

Keys are 32-byte keyed hashes, so their first bits spread rows evenly: a job cuts its rows into
buckets by the key's first byte(s) (`bucket_of`, 256 buckets by default) and runs one task per
bucket, so a worker holds one bucket at a time.

    <out>/bucket=00007/part-00003.parquet   partition_by_key: chunk 3's rows of bucket 7
    <out>/bucket=00007.parquet              a bucket's result (a join, a bucket's scores)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import polars as pl

from contracts.errors import ConfigError, IdentifierError
from fusion.jobs.files import Location, join_path, read_chunks, read_parquet, write_parquet
from matcher.keyed_hash import KEY_BYTES

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_CHUNK_ROWS",
    "MAX_BUCKETS",
    "Partitions",
    "Parts",
    "bucket_file",
    "bucket_of",
    "check_buckets",
    "part_file",
    "partition_by_key",
    "write_buckets",
]

DEFAULT_BUCKETS = 256  # the key's first byte
DEFAULT_CHUNK_ROWS = 1_000_000  # rows a keying task hashes, or a partitioning pass reads
MAX_BUCKETS = 1 << 16  # bucket_of reads the key's first two bytes


def check_buckets(buckets: int) -> int:
    """Return `buckets` if it is a power of two from 1 to 65536; raise `ConfigError` if not."""
    if not 1 <= buckets <= MAX_BUCKETS or buckets & (buckets - 1):
        raise ConfigError(
            f"buckets must be a power of two from 1 to {MAX_BUCKETS} (the key's first bits); "
            f"got {buckets}",
            setting="buckets",
        )
    return buckets


def bucket_of(key: str | pl.Expr, buckets: int = DEFAULT_BUCKETS) -> pl.Expr:
    """Return each key's bucket: its first log2(`buckets`) bits as an integer (UInt32).

    With 256 buckets that is the key's first byte. Keys are keyed hashes, so buckets are even;
    a null key has a null bucket.
    """
    check_buckets(buckets)
    column = pl.col(key) if isinstance(key, str) else key
    first = column.bin.slice(0, 2).bin.reinterpret(dtype=pl.UInt16, endianness="big")
    return (first.cast(pl.UInt32) // (MAX_BUCKETS // buckets)).alias("bucket")


def bucket_file(base: str, bucket: int) -> str:
    """Return the file of bucket `bucket`'s result under `base`."""
    return join_path(base, f"bucket={bucket:05d}.parquet")


def part_file(base: str, bucket: int, chunk: int) -> str:
    """Return the file of chunk `chunk`'s rows of bucket `bucket` under `base`."""
    return join_path(base, f"bucket={bucket:05d}", f"part-{chunk:05d}.parquet")


def write_buckets(frame: pl.DataFrame, key: str, base: str, buckets: int, chunk: int) -> list[int]:
    """Return the buckets of `frame`'s rows (non-null keys), each written to its part file."""
    keyed = frame.with_columns(bucket_of(key, buckets).alias("__bucket"))
    written = []
    parts = keyed.partition_by("__bucket", as_dict=True, include_key=False, maintain_order=True)
    for (bucket,), part in sorted(parts.items(), key=lambda item: cast(int, item[0][0])):
        write_parquet(part, part_file(base, cast(int, bucket), chunk))
        written.append(cast(int, bucket))
    return written


@dataclass(frozen=True)
class Partitions:
    """Parquet part files by key bucket: `files[b]` holds bucket b's parts in input order.

    Every part has the key and `columns` (the key among them).
    """

    buckets: int
    files: tuple[tuple[str, ...], ...]
    rows: int
    columns: tuple[str, ...]

    def read(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Return every bucket's rows in bucket order (a whole table: for small results)."""
        locations = [f for parts in self.files for f in parts]
        if not locations:
            raise ConfigError("the partitions hold no rows", setting="partitions")
        return read_parquet(locations, columns)


@dataclass(frozen=True)
class Parts:
    """Parquet files a job wrote, in bucket or chunk order, and the schema they share."""

    files: tuple[str, ...]
    rows: int
    schema: pl.Schema = field(default_factory=pl.Schema)

    def read(self, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """Return the rows of every file in order (a whole table: for small results)."""
        if not self.files:
            empty = pl.DataFrame(schema=self.schema)
            return empty if columns is None else empty.select(columns)
        return read_parquet(self.files, columns)


def _checked_keys(frame: pl.DataFrame, key: str, chunk: int) -> pl.DataFrame:
    """Return `frame`'s rows with a key; raise unless every key is 32 bytes of Binary."""
    if frame[key].dtype != pl.Binary:
        raise IdentifierError(
            f"column {key!r} must hold 32-byte keys (Binary), got {frame[key].dtype}",
            column=key,
        )
    keyed = frame.filter(pl.col(key).is_not_null())
    short = int((keyed[key].bin.size() != KEY_BYTES).sum())
    if short:
        raise IdentifierError(
            f"{short} value(s) of {key!r} in chunk {chunk} are not {KEY_BYTES} bytes; "
            "partition keyed hashes (matcher.keyed_hash), not raw identifiers",
            column=key,
        )
    return keyed


def partition_by_key(
    source: pl.DataFrame | Location,
    out: Location,
    *,
    key: str = "key",
    columns: Sequence[str] = (),
    buckets: int = DEFAULT_BUCKETS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Partitions:
    """Return `source`'s rows written as Parquet parts per key bucket under `out`.

    Streams the source in chunks of `chunk_rows` rows and writes, per chunk, one part per bucket
    it has (`<out>/bucket=00007/part-00003.parquet`), so memory is bounded by a chunk. Rows
    without a key cannot match and are left out. Runs in this process: it only moves bytes.

    Args:
        source: a frame, or a Parquet file (any fsspec location) with `key` and `columns`.
        out: the folder of the parts.
        key: the 32-byte key column (Binary).
        columns: the other columns to keep beside the key.
        buckets: a power of two up to 65536; both sides of a join need the same.
        chunk_rows: rows read at a time.
    """
    check_buckets(buckets)
    wanted = [key, *(c for c in columns if c != key)]
    per_bucket: list[list[str]] = [[] for _ in range(buckets)]
    rows = 0
    for chunk, frame in enumerate(read_chunks(source, wanted, chunk_rows)):
        keyed = _checked_keys(frame, key, chunk)
        for bucket in write_buckets(keyed, key, os.fspath(out), buckets, chunk):
            per_bucket[bucket].append(part_file(os.fspath(out), bucket, chunk))
        rows += keyed.height
    return Partitions(buckets, tuple(tuple(f) for f in per_bucket), rows, tuple(wanted))
