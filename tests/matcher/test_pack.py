"""The vendor's packing: raw phones never leave, keys are unique, counts say what was dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import ConfigError
from contracts.schemas import VENDOR_BATCH, VENDOR_BATCH_V2
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.envelope import open_sealed
from matcher.identity import normalize_id_numbers, normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash
from matcher.keyring import init_local_pair
from matcher.pack import build_batch, pack_users

NOW = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldFiles:
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(customers=2_000, seed=3), out)
    return WorldFiles(out)


@pytest.mark.slow  # seconds: the full suite runs it, test-fast does not
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


def test_a_batch_keyed_by_several_identifiers_keeps_one_row_per_user(tmp_path: Path):
    users = pl.DataFrame(
        {
            "phone": ["13800000001", "13800000002", "13800000003", "13800000004"],
            "id_number": ["11010519491231002X", "11010519491231002x", None, "110105194912310038"],
            "device_id": [None, "AB" * 16, "0" * 32, "cd" * 16],
            "app_ids": [[1], [2], [3], [4]],
            "app_days": [[1], [2], [3], [4]],
            "app_sessions": [[1], [2], [3], [4]],
            "tag_ids": [[1], [2], [3], [4]],
            "tag_weights": [[0.5], [0.5], [0.5], [0.5]],
        }
    )
    epoch = SaltEpoch.generate("e1")
    kinds = ("mobile", "id_number", "device_id")
    batch, rejected, duplicates = build_batch(users, epoch, identifiers=kinds)
    assert batch.height == 4 and not rejected and not duplicates
    assert batch.schema == VENDOR_BATCH_V2.polars_schema
    assert batch["key"].bin.size().to_list() == [96] * 4
    # Each slot holds its type's keyed hash; the shared ID number (rows 0 and 1) is in neither.
    ids = keyed_hash(normalize_id_numbers(users["id_number"]).values, epoch, domain="id_number")
    devices = keyed_hash(pl.Series(["ab" * 16, "cd" * 16]), epoch, domain="device_id")
    keys = batch["key"].to_list()
    assert keys[3][32:64] == ids[3] and ids[0] not in (keys[0][32:64], keys[1][32:64])
    assert keys[1][64:] == devices[0] and keys[3][64:] == devices[1]
    assert keys[0][:32] == keyed_hash(pl.Series(["13800000001"]), epoch, domain="mobile")[0]

    bank, vendor = init_local_pair(tmp_path / "bank", tmp_path / "vendor", vendor_id="vendor-a")
    vendor.import_salt(bank.export_salt(bank.current_salt().epoch_id), make_current=True)
    source = tmp_path / "users.parquet"
    users.write_parquet(source)
    sealed = tmp_path / "batch.sealed"
    result = pack_users(source, sealed, keyring=vendor, now=NOW)
    assert result.identifiers == kinds
    assert result.identifier_counts == {
        "mobile_keys": 4,
        "id_number_keys": 1,
        "id_number_shared": 2,
        "id_number_unusable": 1,
        "device_id_keys": 2,
        "device_id_shared": 0,
        "device_id_unusable": 2,
    }
    opened = tmp_path / "payload.parquet"
    manifest = open_sealed(
        sealed, opened, recipient_keys=bank.recipient_private, vendor_keys=bank.vendor_public
    ).manifest
    assert manifest.contract == "vendor_batch/v2"
    assert manifest.identifiers == "mobile,id_number,device_id"
    # No raw identifier in the sealed file or the payload, in any case or form.
    for blob in (sealed.read_bytes(), opened.read_bytes()):
        for raw in ("1101051949123100", "ab" * 16, "AB" * 16, "cd" * 16, "1380000000"):
            assert raw.encode() not in blob
