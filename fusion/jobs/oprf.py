"""The bank's OPRF steps as bucketed jobs: blind and finalise a request in row chunks.

`oprf_blind` (RFC 9497 Blind) and `oprf_finalize` (Finalize, then the labels of
`matcher.oprf_match.derive_row_keys`) run one task per row chunk on any engine. A request's
blinds are never stored or sent to a task: the bank keeps one 32-byte seed, each task draws its
rows' blinds from their blocks' seeds (`matcher.oprf_match.block_blinds`) on its worker, and the
seed reaches the workers through `engine.shared`. So the elements and labels are the ones
`matcher.oprf_match.replay_blinds` gives in one process, element for element, whatever the
engine and the chunk size; `fusion.oprf_psi` runs the match on either.

    <out>/part-00000.parquet              a chunk's blinded elements / labels
    <out>/_work/                          the chunks' inputs, while running
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError, IdentifierError, OprfError
from fusion.jobs.files import Location, join_path, read_chunks, read_parquet, remove, write_parquet
from fusion.jobs.partitions import Parts
from fusion.jobs.runner import Engine
from fusion.jobs.worker_secrets import SecretRef
from matcher.oprf import OprfMode, blind_with, finalize
from matcher.oprf_match import BLIND_BLOCK_ROWS, block_blinds, check_seed, derive_row_keys

__all__ = ["OPRF_CHUNK_ROWS", "oprf_blind", "oprf_finalize", "oprf_row_keys"]

OPRF_CHUNK_ROWS = 100 * BLIND_BLOCK_ROWS  # rows an OPRF task takes
_ELEMENTS = pl.Schema({"blinded": pl.Binary})
_LABELS = pl.Schema({"label": pl.Binary})


def _check_oprf_chunk(chunk_rows: int) -> None:
    if chunk_rows < 1 or chunk_rows % BLIND_BLOCK_ROWS:
        raise ConfigError(
            f"an OPRF job's chunk_rows must be a positive multiple of {BLIND_BLOCK_ROWS} (a "
            f"chunk holds whole blind blocks); got {chunk_rows}",
            setting="chunk_rows",
        )


def _oprf_threads() -> int:
    """Return the threads an OPRF task may use: the polars pool's size, this worker's share.

    `ClusterEngine.start_local` sizes each worker's polars pool to its share of the cores, and
    in this process the pool has every core, so the OPRF's libsodium threads follow suit.
    """
    return max(1, pl.thread_pool_size())


def _in_request(error: OprfError, start: int) -> OprfError:
    """Return `error` (from a chunk starting at row `start`) with its index in the request."""
    index = None if error.index is None else start + error.index
    where = f"in the chunk from row {start}" if index is None else f"at row {index}"
    return OprfError(f"{error} ({where} of the request)", item=error.item, index=index)


def _binary_column(frame: pl.DataFrame, column: str, what: str) -> pl.Series:
    """Return `column` of `frame` as Binary (text as its UTF-8 bytes); refuse other types, nulls."""
    series = frame[column]
    if series.dtype == pl.String:
        series = series.cast(pl.Binary)
    elif series.dtype != pl.Binary:
        raise IdentifierError(
            f"column {column!r} must hold {what} as Binary or String, got {series.dtype}",
            column=column,
        )
    if series.null_count():
        raise IdentifierError(
            f"{series.null_count()} value(s) of {column!r} are null; every row of an OPRF job "
            f"needs {what} (drop the rows before the job)",
            column=column,
        )
    return series


def _stream(
    source: pl.DataFrame | Location | Parts, column: str, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """Yield `column` of `source` in chunks of `chunk_rows` rows (at least one chunk).

    A `Parts` is read file after file, its rows cut into chunks across file boundaries as one
    file would be, so chunks follow row positions whatever files an earlier job wrote.
    """
    if not isinstance(source, Parts):
        yield from read_chunks(source, (column,), chunk_rows)
        return
    held: list[pl.DataFrame] = []
    rows, yielded = 0, False
    for location in source.files:
        for frame in read_chunks(location, (column,), chunk_rows):
            while frame.height:
                take = min(chunk_rows - rows, frame.height)
                held.append(frame[:take])
                rows += take
                frame = frame[take:]
                if rows == chunk_rows:
                    yield pl.concat(held, how="vertical")
                    held, rows, yielded = [], 0, True
    if rows:
        yield pl.concat(held, how="vertical")
    elif not yielded:
        yield pl.DataFrame(schema={column: pl.Binary})


def _aligned(
    inputs: pl.DataFrame | Location,
    column: str,
    evaluated: pl.DataFrame | Parts | Location,
    chunk_rows: int,
) -> Iterator[tuple[int, pl.Series, pl.Series]]:
    """Yield (first row, inputs, evaluated elements) per chunk; refuse an answer of other length."""
    answers = _stream(evaluated, "evaluated", chunk_rows)
    start = 0
    for frame in _stream(inputs, column, chunk_rows):
        answer = next(answers, None)
        if answer is None or answer.height != frame.height:
            got = 0 if answer is None else answer.height
            raise OprfError(
                f"the evaluated elements do not line up with the inputs: {got} against "
                f"{frame.height} in the chunk from row {start}; finalise with the vendor's "
                "answer to this very request, in the order it was sent",
                item="batch",
            )
        yield (
            start,
            _binary_column(frame, column, "OPRF inputs"),
            _binary_column(answer, "evaluated", "evaluated elements"),
        )
        start += frame.height
    if any(extra.height for extra in answers):
        raise OprfError(
            f"the vendor's answer holds more elements than the {start} inputs; finalise with "
            "the answer to this very request",
            item="batch",
        )


@dataclass(frozen=True)
class _BlindTask:
    chunk: str  # the chunk's inputs, column "input"
    start: int  # its first row in the request, a block's first row
    seed: SecretRef[bytes]
    out: str
    mode: OprfMode = OprfMode.OPRF  # the vendor's RFC 9497 mode: it enters HashToGroup


def _blind_chunk(task: _BlindTask) -> int:
    """Blind one chunk of inputs with its blocks' blinds; return the elements written."""
    inputs = read_parquet([task.chunk])["input"].to_list()
    try:
        blinded = blind_with(
            inputs,
            block_blinds(task.seed.resolve(), task.start, len(inputs)),
            mode=task.mode,
            workers=_oprf_threads(),
        )
    except OprfError as error:
        raise _in_request(error, task.start) from None
    write_parquet(pl.DataFrame({"blinded": blinded}, schema=_ELEMENTS), task.out)
    return len(blinded)


def oprf_blind(
    engine: Engine,
    inputs: pl.DataFrame | Location,
    seed: bytes,
    out: Location,
    *,
    column: str = "input",
    chunk_rows: int = OPRF_CHUNK_ROWS,
    mode: OprfMode = OprfMode.OPRF,
) -> Parts:
    """Return the blinded elements of `inputs`, in input order, one Parquet file per row chunk.

    The bank's first OPRF step (RFC 9497 Blind) as "oprf-blind" tasks: element for element
    `blind_with(inputs, replay_blinds(inputs, seed).blinds)`, on any engine and any chunk size.
    Each task draws its rows' blinds from their blocks' seeds (`block_blinds`); the seed reaches
    the workers through `engine.shared`, never inside a task, and the blinds are never written.
    The elements (column "blinded", 32 bytes) are what the bank sends: uniformly random group
    elements whatever the inputs (RFC 9497 section 3.3.1), so the files may leave the bank.

    Args:
        engine: where the tasks run.
        inputs: a frame or a Parquet file (any fsspec location) with the OPRF inputs in order,
            Binary or String (normalised identifiers, e.g. 11 ASCII digits), no nulls.
        seed: the request's 32 random bytes, kept by the bank to finalise the answer.
        out: the folder of the element files (`part-00000.parquet`, ...).
        column: the column of `inputs` that holds them.
        chunk_rows: rows a task takes, a multiple of `BLIND_BLOCK_ROWS`.
        mode: the RFC 9497 mode the vendor sealed its rows in (VOPRF: verifiable).
    """
    check_seed(seed)
    _check_oprf_chunk(chunk_rows)

    def chunks() -> Iterator[tuple[int, pl.DataFrame]]:
        start = 0
        for frame in _stream(inputs, column, chunk_rows):
            yield start, pl.DataFrame([_binary_column(frame, column, "OPRF inputs").alias("input")])
            start += frame.height

    task = partial(_BlindTask, mode=OprfMode(mode))
    return _chunk_job(engine, chunks(), seed, _blind_chunk, task, out, "oprf-blind", _ELEMENTS)


@dataclass(frozen=True)
class _FinalizeTask:
    chunk: str  # the chunk's inputs and evaluated elements, columns "input" and "evaluated"
    start: int  # its first row in the request, a block's first row
    seed: SecretRef[bytes]
    out: str


def _finalize_chunk(task: _FinalizeTask) -> int:
    """Unblind and finalise one chunk; write its labels only; return the labels written."""
    frame = read_parquet([task.chunk])
    inputs, evaluated = frame["input"].to_list(), frame["evaluated"].to_list()
    blinds = block_blinds(task.seed.resolve(), task.start, len(inputs))
    try:
        outputs = finalize(inputs, blinds, evaluated, workers=_oprf_threads())
    except OprfError as error:
        raise _in_request(error, task.start) from None
    # derive_row_keys derives the data keys too (a small cost beside finalize's); they
    # are dropped here, never written, never returned: see oprf_finalize.
    labels, _ = derive_row_keys(outputs)
    write_parquet(pl.DataFrame({"label": labels}, schema=_LABELS), task.out)
    return len(labels)


def oprf_finalize(
    engine: Engine,
    inputs: pl.DataFrame | Location,
    evaluated: pl.DataFrame | Parts | Location,
    seed: bytes,
    out: Location,
    *,
    column: str = "input",
    chunk_rows: int = OPRF_CHUNK_ROWS,
) -> Parts:
    """Return each input's 16-byte match label, in input order, one Parquet file per chunk.

    The bank's last OPRF step (RFC 9497 Finalize, then `derive_row_keys`) as "oprf-finalize"
    tasks: element for element the labels of `unblind_labels(replay_blinds(inputs, seed),
    evaluated)`, and the labels the vendor computes directly (`derive_row_keys(evaluate(key,
    inputs))`). Each task rebuilds its rows' blinds from the seed (shared through
    `engine.shared`, never inside a task).

    Only labels are written (column "label"). A data key opens its vendor row, so it is as
    secret as the row; a label only says which row to look for, is published in the vendor's
    batch anyway, and says nothing of the data key (another part of the pseudorandom HKDF
    output, `derive_row_keys`). Files on shared storage outlive a run, so the data keys never
    reach them: the bank joins the labels with the vendor's batch, then re-derives the keys of
    the matched rows alone, in its own process, with `oprf_row_keys`.

    Args:
        engine: where the tasks run.
        inputs: the inputs given to `oprf_blind`, in the same order (a frame or Parquet file).
        evaluated: the vendor's answer (a frame, Parts or Parquet file with column
            "evaluated", e.g. `matcher.oprf_exchange.answer_request`'s elements), in the order
            the blinded elements were sent.
        seed: the seed the request was blinded with.
        out: the folder of the label files.
        column: the column of `inputs` that holds them.
        chunk_rows: rows a task takes, a multiple of `BLIND_BLOCK_ROWS`.

    Raises:
        OprfError: the answer has another length than the inputs, or an invalid element.
    """
    check_seed(seed)
    _check_oprf_chunk(chunk_rows)
    chunks = (
        (start, pl.DataFrame([ids.alias("input"), answer]))
        for start, ids, answer in _aligned(inputs, column, evaluated, chunk_rows)
    )
    return _chunk_job(
        engine, chunks, seed, _finalize_chunk, _FinalizeTask, out, "oprf-finalize", _LABELS
    )


def _chunk_job(
    engine: Engine,
    chunks: Iterable[tuple[int, pl.DataFrame]],
    secret: object,
    run: Callable[[Any], int],
    task: Callable[[str, int, Any, str], Any],
    out: Location,
    stage: str,
    schema: pl.Schema,
) -> Parts:
    """Run one `stage` task per (first row, frame) chunk with `secret` shared; return the parts.

    Each chunk is written under `<out>/_work` (removed at the end, on success or failure: the
    chunks may hold identifiers) and `task(chunk file, first row, secret ref, output file)`
    builds the task that `run` runs; `run` returns the rows it wrote.
    """
    base, work = os.fspath(out), join_path(out, "_work")
    written = []
    try:
        for index, (start, frame) in enumerate(chunks):
            chunk = join_path(work, "chunks", f"chunk-{index:05d}.parquet")
            write_parquet(frame, chunk)
            written.append((chunk, start, join_path(base, f"part-{index:05d}.parquet")))
        with engine.shared(secret) as ref:
            counts = engine.map_buckets(
                run,
                [task(chunk, first, ref, target) for chunk, first, target in written],
                stage=stage,
            )
    finally:
        remove(work)
    return Parts(tuple(target for _, _, target in written), sum(counts), schema)


def oprf_row_keys(
    inputs: pl.DataFrame | Location,
    evaluated: pl.DataFrame | Parts | Location,
    seed: bytes,
    rows: Sequence[int],
    *,
    column: str = "input",
    chunk_rows: int = OPRF_CHUNK_ROWS,
    workers: int | None = None,
) -> tuple[list[bytes], list[bytes]]:
    """Return (labels, data keys) of the inputs at positions `rows`, computed in this process.

    After `oprf_finalize` and the join of its labels with the vendor's batch, the bank needs
    the data keys of the matched rows only: this finalises those rows again (blinds from their
    blocks' seeds) and keeps the keys in memory, never on disk. Inputs and answer are streamed
    in chunks, so memory holds a chunk and the keys asked for. The labels come back too, so a
    caller can check them against the ones `oprf_finalize` wrote.

    Args:
        inputs: the inputs given to `oprf_blind`, in the same order.
        evaluated: the vendor's answer, as for `oprf_finalize`.
        seed: the seed the request was blinded with.
        rows: positions in the request (from 0), ascending, without repeats.
        column: the column of `inputs` that holds them.
        chunk_rows: rows read at a time, a multiple of `BLIND_BLOCK_ROWS`.
        workers: OPRF threads; every core by default.
    """
    check_seed(seed)
    _check_oprf_chunk(chunk_rows)
    wanted = np.asarray(rows, dtype=np.int64)
    if wanted.size and (wanted[0] < 0 or np.any(np.diff(wanted) <= 0)):
        raise ConfigError(
            "rows must be request positions from 0, ascending, without repeats",
            setting="rows",
        )
    labels: list[bytes] = []
    data_keys: list[bytes] = []
    total = 0
    for start, ids, answer in _aligned(inputs, column, evaluated, chunk_rows):
        total = start + ids.len()
        picked = wanted[(wanted >= start) & (wanted < total)] - start
        if not picked.size:
            continue
        blinds: list[bytes] = []
        for block in np.unique(picked // BLIND_BLOCK_ROWS).tolist():
            first = start + block * BLIND_BLOCK_ROWS
            drawn = block_blinds(seed, first, min(BLIND_BLOCK_ROWS, total - first))
            in_block = picked[picked // BLIND_BLOCK_ROWS == block] - block * BLIND_BLOCK_ROWS
            blinds.extend(drawn[i] for i in in_block.tolist())
        outputs = finalize(
            ids.gather(picked).to_list(),
            blinds,
            answer.gather(picked).to_list(),
            workers=workers,
        )
        chunk_labels, chunk_keys = derive_row_keys(outputs)
        labels.extend(chunk_labels)
        data_keys.extend(chunk_keys)
    if wanted.size and wanted[-1] >= total:
        raise ConfigError(
            f"row {int(wanted[-1])} is past the request's {total} rows", setting="rows"
        )
    return labels, data_keys
