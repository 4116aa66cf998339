"""Salted-hash PSI on a real world: the matched set is exactly the true intersection."""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from fusion.ingest import Inbox, ingest_file
from fusion.jobs import InProcessEngine
from fusion.match import load_extract, match
from fusion.pipeline.matching import cluster_keys
from fusion.runfolder import RunFolder
from fusion.store import Store
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.identity import id_check_characters, normalize_device_ids, normalize_phones
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import init_local_pair
from matcher.pack import pack_users
from matcher.psi import customer_identifiers, customer_keys, identifier_keys
from tests.support.factories import vendor_batch

SNAPSHOT = date(2026, 9, 30)
DATA_TIME = datetime(2026, 9, 30, 6, tzinfo=UTC)
NOW = datetime(2026, 10, 1, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldFiles:
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(customers=2_000, seed=11, snapshot_date=SNAPSHOT), out)
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


@pytest.mark.slow  # seconds: the full suite runs it, test-fast does not
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
    # Unusable phones are counted by reason; their customers still match by another identifier.
    assert sum(loaded.reasons.values()) > 0 and loaded.invalid <= sum(loaded.reasons.values())
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
    assert not {"phone", "id_number", "device_id"} & set(columns["column_name"].to_list())
    raw = (tmp_path / "bank" / "fusion.duckdb").read_bytes()
    for phone in phones:
        assert phone not in dump and phone not in caplog.text and phone.encode() not in raw
    # ... nor any ID number or device id, in any form the extract wrote it or matching used it:
    # one scan for everything shaped like either, then a set intersection.
    written = [*extract["id_number"].to_list(), *extract["device_id"].drop_nulls().to_list()]
    normal = normalize_device_ids(extract["device_id"]).values.drop_nulls().to_list()
    shaped = re.compile(rb"[0-9]{17}[0-9Xx]|[0-9A-Fa-f-]{32,36}")
    for text in (raw, dump.encode(), caplog.text.encode()):
        assert not set(shaped.findall(text)) & {v.encode() for v in [*written, *normal]}


def _id(first17: str) -> str:
    return first17 + id_check_characters(pl.Series([first17]))[0]


I1, I2, I4 = _id("11010519800101001"), _id("11010519800101002"), _id("11010519800101004")
D3 = "d3" * 16
# The bank: C5 gives C4's phone (family); C3's phone is nobody's at the vendor.
EXTRACT = pl.DataFrame(
    {
        "customer_id": [1, 2, 3, 4, 5],
        "branch_id": ["B001"] * 5,
        "phone": ["13800000001", "13800000002", "13800000003", "13800000004", "13800000004"],
        "id_number": [I1, I2, None, I4, None],
        "device_id": [None, None, D3.upper(), None, None],
        "age": pl.Series([30, 40, 50, 60, 35], dtype=pl.Int16),
        "mb_registered": [True, False, True, False, False],
    }
)
# The vendor: V1 has C1's phone, V2 C1's ID number (another person's file), V3 C2's ID number
# and C3's device, V4 the family phone with C4's ID number.
USERS = (
    vendor_batch(4, seed=3)
    .drop("key")
    .with_columns(
        phone=pl.Series(["13800000001", "13900000002", "13900000003", "13800000004"]),
        id_number=pl.Series([None, I1, I2, I4]),
        device_id=pl.Series([None, None, D3, None]),
    )
)


@pytest.mark.parametrize(
    ("priority", "expected", "conflicts", "unusable"),
    [
        (None, {1: "mobile", 2: "id_number", 4: "id_number"}, 2, (1, 0)),
        (
            ("id_number", "mobile", "device_id"),
            {1: "id_number", 2: "id_number", 4: "id_number"},
            2,
            (0, 1),
        ),
        (("mobile",), {1: "mobile"}, 0, (2, 0)),
        (("device_id", "mobile"), {3: "device_id", 1: "mobile"}, 0, (0, 2)),
    ],
)
def test_one_customer_one_vendor_user_by_declared_priority_with_conflicts_counted(
    tmp_path: Path,
    priority: tuple[str, ...] | None,
    expected: dict[int, str],
    conflicts: int,
    unusable: tuple[int, int],
):
    bank = Bank(tmp_path)
    users = tmp_path / "users.parquet"
    USERS.write_parquet(users)
    bank.send(users)
    epoch = bank.keys.current_salt()
    with bank.store() as store:
        load_extract(store, EXTRACT, epoch=epoch, snapshot_date=SNAPSHOT, now=NOW,
                     identifiers=priority)  # fmt: skip
        run = match(store, epoch_id=epoch.epoch_id, snapshot_date=SNAPSHOT, now=NOW,
                    identifiers=priority or ("mobile", "id_number", "device_id"))  # fmt: skip
        found = dict(store.execute("SELECT customer_id, id_type FROM matches").fetchall())
        pairs = store.execute("SELECT count(DISTINCT key), count(*) FROM matches").fetchone()
        kept = store.execute(
            "SELECT identifiers, conflicts, by_identifier FROM match_runs"
        ).fetchone()
    assert found == expected and run.conflicts == conflicts
    assert pairs == (len(expected), len(expected))  # one vendor user per customer and back
    assert kept is not None and kept[0] == ",".join(run.identifiers) and kept[1] == conflicts
    # What each identifier added: matched counts by type add up to the run's.
    assert sum(c["matched"] for c in run.by_identifier.values()) == run.matched
    # A customer without a usable key has its first identifier's status (duplicated, invalid).
    assert (run.duplicated, run.invalid) == unusable


@pytest.mark.slow
def test_keys_by_bucket_on_an_engine_equal_the_keys_in_process(world: WorldFiles, tmp_path: Path):
    extract = pl.read_parquet(world.customers)
    epoch = SaltEpoch.generate("e1")
    kinds = ("mobile", "id_number", "device_id")
    local = identifier_keys(customer_identifiers(extract, kinds), epoch)
    folder = RunFolder(tmp_path / "run").ensure()
    bucketed = cluster_keys(InProcessEngine(), folder, extract, epoch, kinds)
    assert bucketed.keys.sort("customer_id").equals(local.keys.sort("customer_id"))
    assert (bucketed.invalid, bucketed.duplicated) == (local.invalid, local.duplicated)
    assert bucketed.by_identifier == local.by_identifier
