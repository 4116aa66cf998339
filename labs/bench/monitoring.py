"""Benchmark of monitoring: the stability of 10M scores and 70 input columns against one read.

A synthetic scoring run (a score and 70 columns: 60 numeric with missing values and heavy
tails, 10 categorical codes) is written to Parquet in row groups; its first million rows play
the training population whose bins and counts (`fusion.monitoring.column_bins`) the run is
compared with. The figure is the time to read the whole file and count every row into those
bins (then the PSI and 70 CSIs), against the time to read the same file once and do nothing with
it: what monitoring adds to the read a scoring run's consumer pays anyway.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from labs.bench.figures import Figure, best_of, cpu_count

if TYPE_CHECKING:
    from fusion.monitoring import Bins

__all__ = ["bench_monitoring", "synthetic_scores"]

_NUMERIC = 60
_CATEGORICAL = 10
_CHUNK = 1_000_000


def _chunk(rng: np.random.Generator, n: int, shift: float) -> pa.Table:
    """Return `n` rows of a score and 70 columns; `shift` moves a third of the numeric ones."""
    columns: dict[str, Any] = {"score": rng.beta(2.0, 8.0 - shift, n)}
    for j in range(_NUMERIC):
        moved = shift if j % 3 == 0 else 0.0
        values = rng.lognormal(j % 5 + moved, 1.0, n).astype(np.float32)
        values[rng.random(n) < 0.05 + 0.01 * (j % 4)] = np.nan  # no vendor data
        columns[f"x{j:02d}"] = values
    for j in range(_CATEGORICAL):
        columns[f"c{j:02d}"] = rng.integers(0, 4 + 3 * j, n).astype(np.int16)
    return pa.table(columns)


def synthetic_scores(path: Path, rows: int, *, seed: int = 11, shift: float = 0.5) -> Path:
    """Return `path`, written with `rows` synthetic scored rows in row groups of a million."""
    rng = np.random.default_rng(seed)
    writer: pq.ParquetWriter | None = None
    try:
        for start in range(0, rows, _CHUNK):
            n = min(_CHUNK, rows - start)
            table = _chunk(rng, n, 0.0 if start == 0 else shift)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=_CHUNK)
    finally:
        if writer is not None:
            writer.close()
    return path


def _read_once(path: Path) -> int:
    """Return the rows of `path`, read batch by batch into polars and dropped."""
    rows = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_CHUNK):
        rows += pl.from_arrow(batch).height  # type: ignore[union-attr]
    return rows


def _count(
    frame: pl.DataFrame, bins: Mapping[str, Bins], codes: Mapping[str, list[str]], name: str
) -> tuple[str, np.ndarray[Any, Any]]:
    return name, bins[name].count(frame[name], codes.get(name))


def _monitor(
    path: Path, bins: Mapping[str, Bins], codes: Mapping[str, list[str]], threads: int
) -> dict[str, float]:
    """Return the PSI / CSI of every column of `path` against `bins`, read batch by batch."""
    from fusion.monitoring import population_stability

    totals = {name: np.zeros(len(b.counts), dtype=np.int64) for name, b in bins.items()}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_CHUNK):
            frame = pl.DataFrame(pl.from_arrow(batch))
            counted = pool.map(partial(_count, frame, bins, codes), list(bins))
            for name, counts in counted:
                totals[name] += counts
    return {name: population_stability(bins[name].counts, totals[name]) for name in bins}


def bench_monitoring(work: Path, *, rows: int = 10_000_000) -> Iterator[Figure]:
    """Seconds to monitor `rows` scores and 70 columns, against reading them once."""
    from fusion.monitoring import column_bins

    path = synthetic_scores(work / "scored.parquet", rows)
    training = pl.DataFrame(pl.from_arrow(pq.ParquetFile(path).read_row_group(0)))
    # Categorical columns arrive as integer codes into their text, as a feature table's do.
    text = [f"category {i}" for i in range(64)]
    codes = {name: text for name in training.columns if name.startswith("c")}
    bins = {name: column_bins(training[name], codes=codes.get(name)) for name in training.columns}
    del training
    threads = cpu_count()
    read_s = best_of(lambda: _read_once(path), 2)
    found: dict[str, float] = {}
    monitor_s = best_of(lambda: found.update(_monitor(path, bins, codes, threads)), 2)
    moved = sum(v >= 0.1 for v in found.values())
    yield Figure(
        name="monitoring.stability_10m_70_s",
        value=monitor_s,
        unit="s",
        baseline=read_s,
        baseline_name="reading the same Parquet file once (polars frames, batch by batch)",
        ratio=read_s / monitor_s,
        target=">= 0.33x (monitoring at most 3 reads)",
        met=read_s / monitor_s >= 0.33,
        note=f"{rows:,} rows, a score and {len(bins) - 1} columns ({_CATEGORICAL} categorical); "
        f"{moved} indices >= 0.1 (a third of the numeric columns were shifted); {threads} threads",
    )
