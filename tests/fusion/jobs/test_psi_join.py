"""The salted PSI join by bucket: a plain polars join of the same keys, on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from contracts.errors import ConfigError
from fusion.jobs.keying import key_customers
from fusion.jobs.partitions import partition_by_key
from fusion.jobs.psi_join import join_keys
from fusion.jobs.runner import Engine, InProcessEngine
from tests.support.job_worlds import EngineWorld, by_customer, match_on, reference_matches


def test_psi_join_equals_the_single_process_join(engine: Engine, ew: EngineWorld, tmp_path: Path):
    _, matches = match_on(engine, ew, tmp_path)
    reference = reference_matches(ew)
    assert_frame_equal(by_customer(matches), reference)
    assert reference.height > 1_000
    # Identical on both engines row for row, not only as sets: bucket order, then input order.
    in_process = match_on(InProcessEngine(), ew, tmp_path / "again")[1]
    assert_frame_equal(matches, in_process)


def test_join_needs_the_same_buckets_and_the_columns_asked(ew: EngineWorld, tmp_path: Path):
    keyed = key_customers(InProcessEngine(), ew.extract.head(50), ew.epoch, tmp_path / "k")
    vendor = partition_by_key(ew.vendor.head(50), tmp_path / "v", buckets=16)
    with pytest.raises(ConfigError, match="same bucket count"):
        join_keys(InProcessEngine(), keyed, vendor, tmp_path / "m")
    vendor = partition_by_key(ew.vendor.head(50), tmp_path / "v256", columns=["batch_id"])
    with pytest.raises(ConfigError, match="lacks column"):
        join_keys(InProcessEngine(), keyed, vendor, tmp_path / "m", columns=["app_ids"])
