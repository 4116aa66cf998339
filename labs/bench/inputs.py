"""The synthetic inputs the benchmarks share: mobile numbers and vendor batches, vectorised."""

from __future__ import annotations

import numpy as np
import polars as pl

__all__ = ["random_mobiles", "synthetic_batch", "unique_mobiles"]


def random_mobiles(n: int, seed: int) -> list[str]:
    """Return `n` valid mobile numbers as strings (duplicates possible), from the seed."""
    rng = np.random.default_rng(seed)
    second = rng.choice(list("3456789"), size=n)
    rest = rng.integers(0, 10**9, size=n)
    return [f"1{s}{r:09d}" for s, r in zip(second, rest, strict=True)]


def unique_mobiles(n: int, seed: int) -> pl.Series:
    """Return `n` distinct valid mobile numbers as strings, without a Python loop."""
    rng = np.random.default_rng(seed)
    numbers = np.unique(rng.integers(13_000_000_000, 20_000_000_000, int(n * 1.01)))
    rng.shuffle(numbers)
    return pl.Series("phone", numbers[:n]).cast(pl.String)


def synthetic_batch(n: int, *, seed: int = 1, tags: int = 47, apps: int = 30) -> pl.DataFrame:
    """Return a valid vendor batch of `n` rows with fixed list lengths, built without row loops."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    keys = pa.array(np.frombuffer(rng.bytes(32 * n), dtype="S32"), type=pa.binary(32))

    def lists(values: np.ndarray, k: int) -> pa.ListArray:
        offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values))

    # Consecutive tag ids from a random start: distinct within a row, valid in the taxonomy.
    start = rng.integers(0, 10_400 - tags, n)[:, None]
    tag_ids = (start + np.arange(tags)[None, :] + 1).astype(np.int32).ravel()
    table = pa.table(
        {
            "key": keys.cast(pa.binary()),
            "app_ids": lists(rng.integers(1, 1301, n * apps).astype(np.int32), apps),
            "app_days": lists(rng.integers(1, 31, n * apps).astype(np.int16), apps),
            "app_sessions": lists(rng.integers(0, 200, n * apps).astype(np.int32), apps),
            "tag_ids": lists(tag_ids, tags),
            "tag_weights": lists(rng.uniform(0.01, 1, n * tags).astype(np.float32), tags),
        }
    )
    return pl.DataFrame(pl.from_arrow(table))
