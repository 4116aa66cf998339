"""Vendor batches broken one contract rule at a time: each entry breaks row `ROW` of a batch."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from contracts.taxonomy import load_taxonomy

__all__ = ["BREAKAGES", "ROW"]

_TAXONOMY = load_taxonomy()
ROW = 7  # the row each breakage hits


def _set(
    column: str, value: object, dtype: pl.DataType | None = None
) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def edit(frame: pl.DataFrame) -> pl.DataFrame:
        target = dtype or frame.schema[column]
        return frame.with_columns(
            pl.when(pl.int_range(pl.len()) == ROW)
            .then(pl.lit(value, dtype=target))
            .otherwise(pl.col(column))
            .alias(column)
        )

    return edit


BREAKAGES: dict[str, Callable[[pl.DataFrame], pl.DataFrame]] = {
    "key_not_null": _set("key", None),
    "key_32_bytes": _set("key", b"short"),
    "key_unique": lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == ROW)
        .then(pl.col("key").first())
        .otherwise(pl.col("key"))
        .alias("key")
    ),
    "no_nulls": _set("tag_weights", [None]),
    "apps_aligned": _set("app_days", [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
    "tags_aligned": _set("tag_weights", [0.5] * 40),
    "apps_known": _set("app_ids", [_TAXONOMY.max_app_id + 1]),
    "tags_known": _set("tag_ids", [0]),
    "days_in_range": _set("app_days", [31]),
    "sessions_in_range": _set("app_sessions", [-1]),
    "weights_in_range": _set("tag_weights", [1.5]),
    "tags_distinct": _set("tag_ids", [5, 5]),
}
