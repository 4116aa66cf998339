"""Scale inputs: the promised overlap, invalid and shared phones, from the seed; the cache.

The inputs are checked against the matcher's own rules (normalise, key, the shared-phone rule of
`customer_keys`), not against the generator's bookkeeping alone.
"""

from __future__ import annotations

import base64
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from labs.scale import ScaleConfig, ScaleInputs, ScaleSummary, scale_inputs, write_scale_inputs
from labs.world import WorldError
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash
from matcher.psi import customer_keys

EPOCH = SaltEpoch("e-scale", bytes(range(32)))
STORE_KEY = base64.b64encode(bytes(range(32, 64))).decode()
# 5,000 customers in chunks of 2,000, 2,000 and 1,000: the chunk rules meet at the boundaries.
CONFIG = ScaleConfig(customers=5_000, seed=3, chunk_rows=2_000)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScaleSummary]:
    root = tmp_path_factory.mktemp("scale")
    return root, write_scale_inputs(CONFIG, root, epoch=EPOCH, store_key=STORE_KEY)


def _frames(root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return (
        pl.read_parquet(root / "bank" / "customers.parquet"),
        pl.read_parquet(root / "vendor" / "keys.parquet"),
    )


def test_inputs_hold_the_promised_overlap_invalid_and_shared_phones(
    generated: tuple[Path, ScaleSummary],
):
    root, summary = generated
    bank, vendor = _frames(root)
    assert bank.height == summary.customers == 5_000
    assert vendor.height == summary.vendor_users == CONFIG.vendor_users == 15_000
    assert bank["customer_id"].is_unique().all()

    phones = normalize_phones(bank["phone"])
    assert phones.n_rejected == summary.invalid_phones == 50  # 1% in each chunk
    valid = phones.values.drop_nulls()
    assert int(valid.is_duplicated().sum()) == summary.shared_phones == 24  # 0.25% pairs a chunk
    assert summary.shared_phones == 2 * (5 + 5 + 2)

    at_vendor = vendor["key"].implode()
    every_key = keyed_hash(valid, EPOCH, domain="mobile")
    # Every covered customer is at the vendor once; a shared phone's owner may be (its key then
    # found twice in the extract), yet never matches: customer_keys gives a shared phone no key.
    assert every_key.filter(every_key.is_in(at_vendor)).n_unique() == summary.covered
    keys = customer_keys(bank["customer_id"], bank["phone"], EPOCH).keys
    assert keys["key"].is_in(at_vendor).sum() == summary.expected_matches
    assert summary.expected_matches < summary.covered
    assert summary.covered / valid.len() == pytest.approx(CONFIG.coverage, abs=0.005)
    assert vendor["key"].is_unique().all() and vendor["key"].bin.size().eq(32).all()


def test_vendor_lists_are_short_distinct_and_in_the_taxonomy(generated: tuple[Path, ScaleSummary]):
    _, vendor = _frames(generated[0])
    for column, most, top in (
        ("app_ids", CONFIG.apps_max, 1_300),
        ("tag_ids", CONFIG.tags_max, 10_400),
    ):
        lengths = vendor[column].list.len()
        assert lengths.min() == 1 and lengths.max() == most
        values = vendor[column].explode()
        assert values.min() >= 1 and values.max() <= top
        assert (vendor[column].list.n_unique() == lengths).all()


def test_inputs_are_a_function_of_the_config_and_epoch(
    generated: tuple[Path, ScaleSummary], tmp_path: Path
):
    root, summary = generated
    again = write_scale_inputs(CONFIG, tmp_path / "again", epoch=EPOCH, store_key=STORE_KEY)
    for first, second in zip(_frames(root), _frames(tmp_path / "again"), strict=True):
        assert_frame_equal(first, second)
    assert again.expected_matches == summary.expected_matches
    other, _ = _frames_of(ScaleConfig(customers=5_000, seed=4, chunk_rows=2_000), tmp_path)
    assert not other["phone"].equals(_frames(root)[0]["phone"])


def _frames_of(config: ScaleConfig, tmp_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    write_scale_inputs(config, tmp_path / f"seed-{config.seed}", epoch=EPOCH, store_key=STORE_KEY)
    return _frames(tmp_path / f"seed-{config.seed}")


def test_cached_inputs_are_reused_and_a_broken_folder_is_refused(tmp_path: Path):
    config = ScaleConfig(customers=1_000, seed=5)
    first = scale_inputs(config, tmp_path)
    assert first.root == tmp_path / "customers-1000-seed-5"
    stamp = (first.root / "manifest.json").stat().st_mtime_ns
    assert scale_inputs(config, tmp_path).summary == first.summary
    assert (first.root / "manifest.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    first.store.unlink()
    with pytest.raises(WorldError, match="lacks"):
        ScaleInputs.open(first.root)
    assert scale_inputs(config, tmp_path).store.exists()  # generated again


def test_a_bad_config_is_refused_naming_the_setting():
    with pytest.raises(WorldError, match="customers must be >= 100") as caught:
        ScaleConfig(customers=10)
    assert isinstance(caught.value, ValueError)
