"""A job's files: Parquet read and written at any fsspec location, streamed in row chunks.

A task reads Parquet files and writes Parquet files under its job's folder: a local path in
tests, shared storage (a mount, the same path on every host) or an object store inside the bank
on a cluster. Only file locations travel through Dask, never rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import cast

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from contracts.errors import ConfigError
from matcher.atomic import atomic_path

__all__ = [
    "Location",
    "is_local",
    "join_path",
    "open_fs",
    "read_chunks",
    "read_parquet",
    "remove",
    "require_columns",
    "write_parquet",
]

Location = str | os.PathLike[str]


def join_path(base: Location, *names: str) -> str:
    """Return `base`/`names`... as text (a URL keeps its scheme)."""
    return "/".join([os.fspath(base).rstrip("/"), *names])


def open_fs(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the file system that holds `location` and the path on it."""
    fs, path = fsspec.core.url_to_fs(location)
    return fs, path


def is_local(location: Location) -> bool:
    """Return whether `location` is on a local or mounted file system (not an object store)."""
    return isinstance(open_fs(os.fspath(location))[0], LocalFileSystem)


def write_parquet(frame: pl.DataFrame, location: str) -> None:
    """Write `frame` to `location` (zstd) so that readers see all of it or none.

    On a local or mounted file system through `matcher.atomic.atomic_path`. Not flushed to disk:
    a job's files are rewritten whole when a task or the job runs again. An object store
    publishes an object whole when its upload closes, so there the file is written in place.
    """
    fs, path = open_fs(location)
    if isinstance(fs, LocalFileSystem):
        with atomic_path(path, durable=False) as tmp:
            frame.write_parquet(tmp, compression="zstd")
        return
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as handle:
        frame.write_parquet(handle, compression="zstd")


def read_parquet(locations: Sequence[str], columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Return the rows of every file in order (`columns` of them, or all)."""
    frames = []
    for location in locations:
        fs, path = open_fs(location)
        with fs.open(path, "rb") as handle:
            frames.append(pl.read_parquet(handle, columns=None if columns is None else [*columns]))
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def remove(location: str) -> None:
    """Remove the file or folder at `location`, if there is one."""
    fs, path = open_fs(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def require_columns(present: Sequence[str], wanted: Sequence[str], what: str) -> None:
    """Raise `ConfigError` naming the columns of `wanted` that `present` lacks."""
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ConfigError(
            f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(present)}",
            setting="columns",
        )


def read_chunks(
    source: pl.DataFrame | Location, columns: Sequence[str], chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """Yield `columns` of `source` in chunks of at most `chunk_rows` rows (at least one chunk).

    A Parquet source is streamed row group by row group, never read whole: one pyarrow reader
    over the whole file keeps the raw bytes of every row group it has read until it ends (its
    memory grew by the file's size on disk), so each row group gets a reader of its own, and
    chunks are cut across row groups as one reader would.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}", setting="chunk_rows")
    if isinstance(source, pl.DataFrame):
        require_columns(source.columns, columns, "the frame")
        frame = source.select(columns)
        yield from frame.iter_slices(chunk_rows) if frame.height else [frame]
        return
    fs, path = open_fs(os.fspath(source))
    with fs.open(path, "rb") as handle:
        reader = pq.ParquetFile(handle)
        require_columns(reader.schema_arrow.names, columns, os.fspath(source))
        yield from _cut(_batches(reader, columns, chunk_rows), chunk_rows, reader, columns)


def _batches(
    reader: pq.ParquetFile, columns: Sequence[str], chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    for group in range(reader.num_row_groups):
        yield from reader.iter_batches(
            batch_size=chunk_rows, row_groups=[group], columns=[*columns]
        )


def _cut(
    batches: Iterator[pa.RecordBatch],
    chunk_rows: int,
    reader: pq.ParquetFile,
    columns: Sequence[str],
) -> Iterator[pl.DataFrame]:
    """Yield the batches' rows regrouped into chunks of `chunk_rows` (an empty file: one)."""
    held: list[pa.RecordBatch] = []
    rows, yielded = 0, False
    for whole in batches:
        batch = whole
        while batch.num_rows:
            take = min(chunk_rows - rows, batch.num_rows)
            held.append(batch.slice(0, take))
            rows += take
            batch = batch.slice(take)
            if rows == chunk_rows:
                yield cast(pl.DataFrame, pl.from_arrow(pa.Table.from_batches(held)))
                held, rows, yielded = [], 0, True
    if rows:
        yield cast(pl.DataFrame, pl.from_arrow(pa.Table.from_batches(held)))
    elif not yielded:
        empty = cast(pl.DataFrame, pl.from_arrow(reader.schema_arrow.empty_table()))
        yield empty.select(columns)
