"""Key buckets and the partitions of a keyed table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from contracts.errors import ConfigError, IdentifierError
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
