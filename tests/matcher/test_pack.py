"""The vendor's packing: raw phones never leave, keys are unique, counts say what was dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import ConfigError
from contracts.schemas import VENDOR_BATCH
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.envelope import open_sealed
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import init_local_pair
from matcher.pack import build_batch, pack_users

NOW = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldFiles:
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(customers=2_000, seed=3), out)
    return WorldFiles(out)


def test_packed_vendor_output_holds_no_raw_phone(world: WorldFiles, tmp_path: Path):
    bank, vendor = init_local_pair(tmp_path / "bank", tmp_path / "vendor", vendor_id="vendor-a")

    sealed = tmp_path / "out" / "batch.sealed"
    result = pack_users(world.vendor_users, sealed, keyring=vendor, now=NOW)
    users = pl.read_parquet(world.vendor_users)
    assert result.rows == users.height - sum(result.rejected.values()) - result.duplicates_dropped
    # Nothing but the sealed file is left beside it (the plaintext temp file is gone).
    assert [p.name for p in sealed.parent.iterdir()] == ["batch.sealed"]

    opened = tmp_path / "payload.parquet"
    open_sealed(
        sealed, opened, recipient_keys=bank.recipient_private, vendor_keys=bank.vendor_public
    )
    payload = pl.read_parquet(opened)
    assert payload.schema == VENDOR_BATCH.polars_schema
    phones = normalize_phones(users["phone"]).values.drop_nulls().to_list()
    for blob in (sealed.read_bytes(), opened.read_bytes()):
        hits = [p for p in phones[:2_000] if p.encode() in blob]
        assert hits == []


def test_build_batch_drops_rejects_and_duplicates_and_counts_them():
    users = pl.DataFrame(
        {
            "phone": ["+86 138 0000 0001", "13800000001", "12800000000", None, "139-0000-0002"],
            "app_ids": [[1], [2], [3], [4], [5]],
            "app_days": [[1], [2], [3], [4], [5]],
            "app_sessions": [[1], [2], [3], [4], [5]],
            "tag_ids": [[1], [2], [3], [4], [5]],
            "tag_weights": [[0.5], [0.5], [0.5], [0.5], [0.5]],
        }
    )
    batch, rejected, duplicates = build_batch(users, SaltEpoch.generate("e1"))
    assert batch.height == 2 and duplicates == 1
    assert rejected == {"bad_prefix": 1, "missing": 1}
    assert batch["app_ids"].to_list() == [[1], [5]]  # the first of duplicated phones wins
    assert "phone" not in batch.columns and batch.schema == VENDOR_BATCH.polars_schema


def test_users_without_a_phone_column_get_a_precise_error():
    with pytest.raises(ConfigError, match="'phone' column"):
        build_batch(pl.DataFrame({"mobile": ["13800000000"]}), SaltEpoch.generate("e1"))
