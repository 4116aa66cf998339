"""Rows by key bucket: `bucket_of`, the part files a job writes per bucket, and their readers.

Keys are 32-byte keyed hashes, so their first bits spread rows evenly: a job cuts its rows into
buckets by the key's first byte(s) (`bucket_of`, 256 buckets by default) and runs one task per
bucket, so a worker holds one bucket at a time.

    <out>/bucket=00007/part-00003.parquet   partition_by_key: bucket 7's fourth part (its rows
                                            in input order across parts), or keying: chunk 3's
                                            rows of bucket 7
    <out>/bucket=00007.parquet              a bucket's result (a join, a bucket's scores)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import polars as pl
from polars.io.partition import FileProviderArgs, SinkedPathsCallbackArgs

from contracts.errors import ConfigError, IdentifierError
from fusion.jobs.files import (
    Location,
    is_local,
    join_path,
    read_chunks,
    read_parquet,
    remove,
    require_columns,
    write_parquet,
)
from matcher.keyed_hash import KEY_BYTES

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_CHUNK_ROWS",
    "MAX_BUCKETS",
    "PARTITION_CHUNK_ROWS",
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
DEFAULT_CHUNK_ROWS = 1_000_000  # rows a keying task hashes
# Rows partition_by_key holds at a time: a bucket's rows go to a part file every
# PARTITION_CHUNK_ROWS / buckets rows (16,384 with 256 buckets).
PARTITION_CHUNK_ROWS = 1 << 22
MAX_BUCKETS = 1 << 16  # bucket_of reads the key's first two bytes
_SHORT = MAX_BUCKETS  # the partition of keys that are not KEY_BYTES long: no bucket's number


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
    chunk_rows: int = PARTITION_CHUNK_ROWS,
) -> Partitions:
    """Return `source`'s rows written as Parquet parts per key bucket under `out`.

    Each bucket's rows go to its folder in input order, a part file every `chunk_rows` /
    `buckets` rows (`<out>/bucket=00007/part-00003.parquet`: bucket 7's fourth part), so about
    `chunk_rows` rows wait in memory. Rows without a key cannot match and are left out. Runs in
    this process: it only moves bytes.

    On a local or mounted file system (`out`, and `source` when it is a file) the rows stream
    through one polars query, read, cut and written on every core; elsewhere (an object store
    through fsspec) the source is read `chunk_rows` rows at a time and each chunk's bucket
    parts are written one by one. Both give the same rows in each bucket, in the same order.

    Args:
        source: a frame, or a Parquet file (any fsspec location) with `key` and `columns`.
        out: the folder of the parts.
        key: the 32-byte key column (Binary).
        columns: the other columns to keep beside the key.
        buckets: a power of two up to 65536; both sides of a join need the same.
        chunk_rows: rows held in memory at a time (see above).
    """
    check_buckets(buckets)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}", setting="chunk_rows")
    wanted = [key, *(c for c in columns if c != key)]
    if is_local(out) and (isinstance(source, pl.DataFrame) or is_local(source)):
        return _stream_buckets(source, os.fspath(out), wanted, buckets, chunk_rows)
    per_bucket: list[list[str]] = [[] for _ in range(buckets)]
    rows = 0
    for chunk, frame in enumerate(read_chunks(source, wanted, chunk_rows)):
        keyed = _checked_keys(frame, key, chunk)
        for bucket in write_buckets(keyed, key, os.fspath(out), buckets, chunk):
            per_bucket[bucket].append(part_file(os.fspath(out), bucket, chunk))
        rows += keyed.height
    return Partitions(buckets, tuple(tuple(f) for f in per_bucket), rows, tuple(wanted))


def _stream_buckets(
    source: pl.DataFrame | Location, out: str, wanted: list[str], buckets: int, chunk_rows: int
) -> Partitions:
    """Partition a local source into local parts with one streaming polars query.

    Keys that are not 32 bytes land in a partition of their own (`_SHORT`), counted and removed
    once the query ends, so the source is read once.
    """
    key = wanted[0]
    if isinstance(source, pl.DataFrame):
        rows, what = source.lazy(), "the frame"
    else:
        rows, what = pl.scan_parquet(os.fspath(source)), os.fspath(source)
    schema = rows.collect_schema()
    require_columns(schema.names(), wanted, what)
    if schema[key] != pl.Binary:
        raise IdentifierError(
            f"column {key!r} must hold 32-byte keys (Binary), got {schema[key]}", column=key
        )
    bucket = (
        pl.when(pl.col(key).bin.size() == KEY_BYTES)
        .then(bucket_of(key, buckets))
        .otherwise(pl.lit(_SHORT, pl.UInt32))
        .alias("bucket")
    )
    named: dict[str, tuple[int, int]] = {}  # file -> (bucket, its part number)
    written: dict[str, int] = {}  # file -> rows

    def name(part: FileProviderArgs) -> str:
        number = (int(part.partition_keys.item(0, 0)), part.index_in_partition)
        relative = f"bucket={number[0]:05d}/part-{number[1]:05d}.parquet"
        named[join_path(out, relative)] = number
        return relative

    def record(done: SinkedPathsCallbackArgs) -> None:
        written.update((p.path, p.num_rows) for p in done.paths)

    rows.select(wanted).filter(pl.col(key).is_not_null()).sink_parquet(
        pl.PartitionBy(
            out,
            key=bucket,
            include_key=False,
            file_path_provider=name,
            max_rows_per_file=max(1, chunk_rows // buckets),
        ),
        compression="zstd",
        mkdir=True,
        sinked_paths_callback=record,
    )
    return _partitions(named, written, wanted, buckets)


def _partitions(
    named: dict[str, tuple[int, int]], written: dict[str, int], wanted: list[str], buckets: int
) -> Partitions:
    """Return the parts a streaming pass wrote, by bucket in part order; raise on short keys."""
    short = [f for f, (bucket, _) in named.items() if bucket == _SHORT]
    if short:
        count = sum(written.get(f, 0) for f in short)
        for location in named:
            remove(location)
        raise IdentifierError(
            f"{count} value(s) of {wanted[0]!r} are not {KEY_BYTES} bytes; partition keyed "
            "hashes (matcher.keyed_hash), not raw identifiers; no part was kept",
            column=wanted[0],
        )
    per_bucket: list[list[tuple[int, str]]] = [[] for _ in range(buckets)]
    for location, (bucket, part) in named.items():
        per_bucket[bucket].append((part, location))
    files = tuple(tuple(f for _, f in sorted(parts)) for parts in per_bucket)
    return Partitions(buckets, files, sum(written.values()), tuple(wanted))
