"""Match keys by bucket: `matcher.psi.customer_keys` of the whole extract, on both engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from fusion.jobs.keying import key_customers
from fusion.jobs.runner import Engine, InProcessEngine
from matcher.identity import normalize_phones
from matcher.psi import customer_keys
from tests.support.job_worlds import BUCKETS, CHUNK_ROWS, EngineWorld, by_customer, reference_keys


def test_customer_keys_equal_the_single_process_keys(
    engine: Engine, ew: EngineWorld, tmp_path: Path
):
    keyed = key_customers(
        engine, ew.extract, ew.epoch, tmp_path / "keys", buckets=BUCKETS, chunk_rows=CHUNK_ROWS
    )
    reference = customer_keys(ew.extract["customer_id"], ew.extract["phone"], ew.epoch)
    assert_frame_equal(by_customer(keyed.read()), by_customer(reference.keys))
    assert (keyed.customers, keyed.invalid, keyed.duplicated, keyed.keyed) == (
        ew.extract.height,
        reference.invalid,
        reference.duplicated,
        reference.keyed,
    )
    assert keyed.reasons == reference.reasons
    assert not (tmp_path / "keys" / "_work").exists()
    # The rule that needed the buckets: some shared phones are held by customers in different
    # chunks, and they are still found.
    phones = normalize_phones(ew.extract["phone"]).values
    spans = (
        pl.DataFrame({"phone": phones, "chunk": np.arange(ew.extract.height) // CHUNK_ROWS})
        .drop_nulls("phone")
        .group_by("phone")
        .agg(pl.len(), pl.col("chunk").n_unique())
        .filter(pl.col("len") > 1)
    )
    assert reference.duplicated > 0 and (spans["chunk"] > 1).any()


def test_keys_from_a_parquet_extract_stream_in_chunks(ew: EngineWorld, tmp_path: Path):
    keyed = key_customers(
        InProcessEngine(), ew.world.customers, ew.epoch, tmp_path / "k", buckets=4, chunk_rows=1000
    )
    assert len(keyed.unkeyed) == 3
    assert_frame_equal(by_customer(keyed.read()), reference_keys(ew))
