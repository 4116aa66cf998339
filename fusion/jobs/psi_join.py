"""The salted PSI join by key bucket: the customers whose key the vendor holds.

<out>/bucket=00007.parquet            customer_id, key and the vendor columns asked
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from contracts.errors import ConfigError
from fusion.jobs.files import Location, read_parquet, require_columns, write_parquet
from fusion.jobs.keying import KeyedCustomers
from fusion.jobs.partitions import Partitions, Parts, bucket_file
from fusion.jobs.runner import Engine

__all__ = ["join_keys"]


@dataclass(frozen=True)
class _JoinTask:
    bank: tuple[str, ...]
    vendor: tuple[str, ...]
    columns: tuple[str, ...]
    out: str


def _join_bucket(task: _JoinTask) -> int:
    """Join one bucket's keyed customers with the vendor's keys; return the matches written."""
    bank = read_parquet(task.bank, ("customer_id", "key")).filter(pl.col("key").is_not_null())
    vendor = read_parquet(task.vendor, ("key", *task.columns))
    matched = bank.join(vendor, on="key", how="inner", maintain_order="left")
    write_parquet(matched.select("customer_id", "key", *task.columns), task.out)
    return matched.height


def join_keys(
    engine: Engine,
    customers: KeyedCustomers,
    vendor: Partitions,
    out: Location,
    *,
    columns: Sequence[str] = (),
) -> Parts:
    """Return the customers whose key the vendor holds: customer_id, key and vendor `columns`.

    One "psi-join" task per bucket both sides have: only customers with status "ok" carry a key,
    so invalid and shared phones never match. A key the vendor holds twice (two batches) gives
    two rows; picking one is the caller's rule (`fusion.match` keeps the newest batch).

    Args:
        engine: where the tasks run.
        customers: `key_customers`'s result.
        vendor: the vendor's keys by bucket (`partition_by_key`, same bucket count), with
            `columns`.
        out: the folder of the matches, one Parquet file per bucket.
        columns: vendor columns to carry into the matches (e.g. batch_id).
    """
    if vendor.buckets != customers.keys.buckets:
        raise ConfigError(
            f"the vendor's keys are in {vendor.buckets} buckets and the customers' in "
            f"{customers.keys.buckets}; partition both sides with the same bucket count",
            setting="buckets",
        )
    extra = tuple(c for c in columns if c not in ("customer_id", "key"))
    require_columns(vendor.columns, extra, "the vendor's partitions")
    both = [b for b in range(vendor.buckets) if customers.keys.files[b] and vendor.files[b]]
    tasks = [
        _JoinTask(customers.keys.files[b], vendor.files[b], extra, bucket_file(os.fspath(out), b))
        for b in both
    ]
    counts = engine.map_buckets(_join_bucket, tasks, stage="psi-join")
    files = tuple(t.out for t, n in zip(tasks, counts, strict=True))
    schema = pl.Schema({"customer_id": pl.Int64, "key": pl.Binary})
    return Parts(files, sum(counts), schema)
