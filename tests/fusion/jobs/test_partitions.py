"""Key buckets and the partitions of a keyed table: the same rows on disk and in an object store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from contracts.errors import ConfigError, IdentifierError
from fusion.jobs.files import read_parquet
from fusion.jobs.partitions import bucket_of, partition_by_key


def test_bucket_is_the_keys_first_bits():
    keys = pl.DataFrame({"key": [bytes([0x07, 0xC8]) + bytes(30), bytes([0xFF]) * 32, None]})
    assert keys.select(bucket_of("key", 256))["bucket"].to_list() == [0x07, 0xFF, None]
    assert keys.select(bucket_of("key", 16))["bucket"].to_list() == [0x0, 0xF, None]
    assert keys.select(bucket_of("key", 65536))["bucket"].to_list() == [0x07C8, 0xFFFF, None]
    assert keys.select(bucket_of("key", 1))["bucket"].to_list() == [0, 0, None]
    for bad in (0, 3, 100, 1 << 17):
        with pytest.raises(ConfigError, match="power of two"):
            bucket_of("key", bad)


def test_partitions_refuse_what_is_not_a_key(tmp_path: Path):
    raw = pl.DataFrame({"key": [b"13800138000"]})
    with pytest.raises(IdentifierError, match="not 32 bytes"):
        partition_by_key(raw, tmp_path / "p")
    with pytest.raises(IdentifierError, match="Binary"):
        partition_by_key(pl.DataFrame({"key": ["ab"]}), tmp_path / "p")
    with pytest.raises(ConfigError, match="lacks column"):
        partition_by_key(pl.DataFrame({"k": [bytes(32)]}), tmp_path / "p")


def _keyed_rows(n: int) -> pl.DataFrame:
    """`n` rows of random 32-byte keys (a few null) with a list column and a row number."""
    rng = np.random.default_rng(5)
    keys: list[bytes | None] = [rng.bytes(32) for _ in range(n)]
    for i in range(0, n, 97):
        keys[i] = None
    return pl.DataFrame(
        {
            "key": pl.Series(keys, dtype=pl.Binary),
            "tags": [list(range(i % 5)) for i in range(n)],
            "row": np.arange(n),
        }
    )


def test_local_and_object_store_parts_hold_the_same_rows_in_input_order(tmp_path: Path):
    frame = _keyed_rows(3_000)
    local = partition_by_key(
        frame, tmp_path / "p", columns=["tags", "row"], buckets=8, chunk_rows=800
    )
    # A location fsspec does not map to a disk (an object store) takes the chunked writer.
    remote = partition_by_key(
        frame, f"memory://{tmp_path.name}/p", columns=["tags", "row"], buckets=8, chunk_rows=800
    )
    keyed = frame.filter(pl.col("key").is_not_null())
    assert local.rows == remote.rows == keyed.height
    assert local.columns == remote.columns == ("key", "tags", "row")
    expected = keyed.with_columns(bucket_of("key", 8)).partition_by(
        "bucket", as_dict=True, include_key=False, maintain_order=True
    )
    for bucket in range(8):
        # 800 rows held at a time: a bucket's part every 100 of its rows, parts in order.
        assert len(local.files[bucket]) == -(-expected[(bucket,)].height // 100)
        assert local.files[bucket][0] == str(
            tmp_path / "p" / f"bucket={bucket:05d}" / "part-00000.parquet"
        )
        for parts in (local.files[bucket], remote.files[bucket]):
            assert_frame_equal(read_parquet(parts), expected[(bucket,)])
    assert_frame_equal(local.read(), remote.read())


def test_a_short_key_keeps_no_part(tmp_path: Path):
    frame = _keyed_rows(500).with_columns(
        pl.when(pl.col("row") == 321)
        .then(pl.lit(b"13800138000"))
        .otherwise(pl.col("key"))
        .alias("key")
    )
    frame.write_parquet(tmp_path / "keys.parquet")
    with pytest.raises(IdentifierError, match="1 value"):
        partition_by_key(tmp_path / "keys.parquet", tmp_path / "p", columns=["row"])
    assert not list((tmp_path / "p").rglob("*.parquet"))
