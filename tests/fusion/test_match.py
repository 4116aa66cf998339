"""Salted-hash PSI on a real world: the matched set is exactly the true intersection."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from fusion.ingest import Inbox, ingest_file
from fusion.match import load_extract, match
from fusion.store import Store
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import init_local_pair
from matcher.pack import pack_users
from matcher.psi import customer_keys

SNAPSHOT = date(2026, 9, 30)
DATA_TIME = datetime(2026, 9, 30, 6, tzinfo=UTC)
NOW = datetime(2026, 10, 1, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldFiles:
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(customers=4_000, seed=11, snapshot_date=SNAPSHOT), out)
    return WorldFiles(out)


class Bank:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys, self.vendor = init_local_pair(
            root / "bank-keys", root / "vendor-keys", vendor_id="vendor-a"
        )
        self.inbox = Inbox(root / "bank").ensure()

    def store(self) -> Store:
        return Store.open(self.root / "bank" / "fusion.duckdb", key=self.keys.store_key())

    def send(self, users: Path, *, when: datetime = DATA_TIME, name: str = "b.sealed") -> str:
        sealed = self.inbox.inbox / name
        packed = pack_users(users, sealed, keyring=self.vendor, now=when)
        with self.store() as store:
            outcome = ingest_file(sealed, store=store, keyring=self.keys, inbox=self.inbox, now=NOW)
        assert outcome.status == "loaded", outcome
        return packed.batch_id


def _truth(world: WorldFiles) -> set[int]:
    return set(pl.read_parquet(world.intersection)["customer_id"].to_list())


def test_customer_keys_exclude_invalid_and_shared_phones():
    keys = customer_keys(
        pl.Series([1, 2, 3, 4, 5]),
        pl.Series(["13800000001", "+86 138 0000 0001", "12345", None, "139-0000-0002"]),
        SaltEpoch.generate("e1"),
    )
    assert keys.keys["key_status"].to_list() == [
        "duplicated",
        "duplicated",
        "invalid",
        "invalid",
        "ok",
    ]
    assert keys.keys["key"].is_not_null().to_list() == [False, False, False, False, True]
    assert (keys.invalid, keys.duplicated, keys.keyed) == (2, 2, 1)


def test_match_equals_the_true_intersection_with_rotation_and_a_second_batch(
    world: WorldFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bank = Bank(tmp_path)
    extract = pl.read_parquet(world.customers)
    truth = _truth(world)
    first = bank.send(world.vendor_users)
    with caplog.at_level(logging.DEBUG), bank.store() as store:
        loaded = load_extract(
            store, extract, epoch=bank.keys.current_salt(), snapshot_date=SNAPSHOT, now=NOW
        )
        run = match(
            store, epoch_id=bank.keys.current_salt().epoch_id, snapshot_date=SNAPSHOT, now=NOW
        )
        matched = store.execute("SELECT customer_id, batch_id FROM matches").pl()
        assert store.execute(
            "SELECT count(*) FROM customers WHERE key_status = 'ok'"
        ).fetchone() == (loaded.keyed,)
    assert loaded.invalid > 0 and loaded.duplicated > 0
    assert run.matched == len(truth) and set(matched["customer_id"].to_list()) == truth
    assert set(matched["batch_id"].to_list()) == {first}

    # A second batch (a third of the users, sent later) wins for its keys; the match is the same.
    users = pl.read_parquet(world.vendor_users)
    part = tmp_path / "part.parquet"
    users.head(users.height // 3).write_parquet(part)
    second = bank.send(part, when=DATA_TIME.replace(hour=8), name="b2.sealed")
    with bank.store() as store:
        rerun = match(
            store, epoch_id=bank.keys.current_salt().epoch_id, snapshot_date=SNAPSHOT, now=NOW
        )
        batches = store.execute("SELECT DISTINCT batch_id FROM matches").pl()["batch_id"].to_list()
    assert rerun.matched == len(truth) and set(batches) == {first, second}

    # A batch created after the snapshot does not count for it.
    late = tmp_path / "late.parquet"
    users.tail(10).write_parquet(late)
    bank.send(late, when=datetime(2026, 10, 2, tzinfo=UTC), name="late.sealed")
    with bank.store() as store:
        assert match(
            store, epoch_id=bank.keys.current_salt().epoch_id, snapshot_date=SNAPSHOT, now=NOW
        ).matched == len(truth)

    # Epoch rotation: both sides re-key; the new epoch's match is again exact.
    new_epoch = bank.keys.rotate("salt")
    bank.vendor.import_salt(bank.keys.export_salt(new_epoch), make_current=True)
    bank.send(world.vendor_users, name="b3.sealed")
    with bank.store() as store:
        load_extract(
            store, extract, epoch=bank.keys.salt(new_epoch), snapshot_date=SNAPSHOT, now=NOW
        )
        rotated = match(store, epoch_id=new_epoch, snapshot_date=SNAPSHOT, now=NOW)
        ids = store.execute(
            "SELECT customer_id FROM matches WHERE salt_epoch = ?", [new_epoch]
        ).pl()
        old = store.execute(
            "SELECT count(*) FROM matches WHERE salt_epoch <> ?", [new_epoch]
        ).fetchone()
        runs = store.execute("SELECT count(*) FROM match_runs").fetchone()
    assert rotated.matched == len(truth) and set(ids["customer_id"].to_list()) == truth
    assert old == (len(truth),) and runs == (4,)

    # No raw phone in the store's tables, the logs or the store file.
    phones = normalize_phones(extract["phone"]).values.drop_nulls().to_list()[:300]
    with bank.store() as store:
        dump = "".join(
            str(store.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("customers", "matches", "match_runs", "bank_features")
        )
        columns = store.execute("SELECT DISTINCT column_name FROM duckdb_columns()").pl()
    assert not {"phone", "id_number"} & set(columns["column_name"].to_list())
    raw = (tmp_path / "bank" / "fusion.duckdb").read_bytes()
    for phone in phones:
        assert phone not in dump and phone not in caplog.text and phone.encode() not in raw
