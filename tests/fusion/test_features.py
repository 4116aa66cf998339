"""Point-in-time feature tables on a real encrypted store: hand-checked sums, CSR alignment,
the manifest, and no raw identifier in any written file."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from contracts.errors import ConfigError
from contracts.taxonomy import load_taxonomy
from fusion.features import FUSED, IN_BANK, FeatureManifest, FeatureSet, build_features
from fusion.ingest import Inbox, ingest_file
from fusion.match import load_extract, match
from fusion.store import Store
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.identity import normalize_id_numbers, normalize_phones
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import init_local_pair
from matcher.pack import PackOptions, build_batch, pack_users

S1 = date(2026, 9, 30)
S2 = date(2026, 10, 31)
TAXONOMY = load_taxonomy()
GROUPS = {*FUSED, "flag", "label", "id"}


def _app(code: str, rank: int) -> int:
    """Return the app id of the category's rank-th most popular app."""
    cat = TAXONOMY.categories.filter(pl.col("code") == code)["category_id"][0]
    apps = TAXONOMY.apps.filter(
        (pl.col("category_id") == cat) & (pl.col("popularity_rank") == rank)
    )
    return int(apps["app_id"][0])


G1, G2, F1 = _app("games", 1), _app("games", 2), _app("food_delivery", 1)


# -- a tiny world by hand ----------------------------------------------------------------------

PHONES = {11: "13800000011", 12: "13800000012", 13: "13800000013", 14: "13800000014"}


def _extract() -> pl.DataFrame:
    ids = list(PHONES)
    return pl.DataFrame(
        {
            "customer_id": ids,
            "branch_id": ["B001", "B001", "B002", "B002"],
            "phone": [f"+86 {PHONES[i]}" for i in ids],
            "id_number": ["11010519491231002X"] * 4,
            "age": [25, 40, 33, 61],
            "gender": ["F", "M", None, "M"],
            "aum_month_avg": [1000.0, 25_000.5, 0.0, 7.25],
            "ukey_holder": [True, False, True, False],
            "atm_txn_count_3m": [3, 0, 1, 9],
            "mb_registered": [False, False, True, False],
            "opened_mb": [True, False, None, False],
        },
        schema_overrides={"age": pl.Int16, "atm_txn_count_3m": pl.Int32},
    )


Lists = tuple[list[int], list[int], list[int], list[int], list[float]]


def _vendor(epoch: SaltEpoch, rows: dict[int, Lists]) -> pl.DataFrame:
    """Return a keyed vendor batch: customer -> (app_ids, days, sessions, tag_ids, weights)."""
    users = pl.DataFrame(
        {
            "phone": [PHONES[c] for c in rows],
            "app_ids": [r[0] for r in rows.values()],
            "app_days": [r[1] for r in rows.values()],
            "app_sessions": [r[2] for r in rows.values()],
            "tag_ids": [r[3] for r in rows.values()],
            "tag_weights": [r[4] for r in rows.values()],
        }
    )
    batch, rejected, _ = build_batch(users, epoch)
    assert batch.height == len(rows) and not any(rejected.values())
    return batch


def _load_batch(
    store: Store, batch: pl.DataFrame, batch_id: str, created: datetime, status: str = "loaded"
) -> None:
    """Load rows and ledger entry as ingest does, with a chosen vendor data time."""
    tagged = batch.with_columns(salt_epoch=pl.lit(EPOCH.epoch_id), batch_id=pl.lit(batch_id))
    with store.transaction():
        store.insert_frame(
            "vendor_apps",
            tagged.select("key", "salt_epoch", "batch_id", "app_ids", "app_days", "app_sessions"),
        )
        store.insert_frame(
            "vendor_tags", tagged.select("key", "salt_epoch", "batch_id", "tag_ids", "tag_weights")
        )
        store.execute(
            "INSERT INTO batches (batch_id, vendor_id, sealed_sha256, status, rows, salt_epoch,"
            " taxonomy_version, received_at, finished_at, created_at)"
            " VALUES (?, 'vendor-a', ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                batch_id,
                secrets.token_hex(32),
                status,
                batch.height,
                EPOCH.epoch_id,
                TAXONOMY.version,
                created,
                created,
                created,
            ],
        )


EPOCH = SaltEpoch.generate("e-test")
# customer 11: newest batch by S1 is "new" (created late on S1 itself); "mid" by S2; "late" never.
# customer 12: only "old" (a newer quarantined batch must not count).
# customer 13: only in "mid": unmatched at S1, matched at S2. Customer 14 is never at the vendor.
BATCHES: dict[str, tuple[datetime, str, dict[int, Lists]]] = {
    "old": (
        datetime(2026, 9, 1, 8),
        "loaded",
        {
            11: ([G1], [30], [300], [5], [0.9]),
            12: ([F1], [3], [0], [1], [0.125]),
        },
    ),
    "new": (
        datetime(2026, 9, 30, 23, 59),
        "loaded",
        {11: ([G1, F1, G2], [10, 20, 5], [50, 40, 10], [7, 3, 10_400], [0.5, 0.25, 1.0])},
    ),
    "quarantined": (
        datetime(2026, 9, 15),
        "quarantined",
        {12: ([G2], [9], [9], [2], [0.5])},
    ),
    "mid": (
        datetime(2026, 10, 1, 0, 0),
        "loaded",
        {
            11: ([G2], [1], [2], [4], [0.75]),
            13: ([G2, G1], [4, 2], [8, 2], [9, 8], [0.5, 0.5]),
        },
    ),
    "late": (
        datetime(2026, 12, 1),
        "loaded",
        {11: ([F1], [30], [999], [6], [1.0]), 14: ([F1], [1], [1], [6], [1.0])},
    ),
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    with Store.open(tmp_path / "fusion.duckdb", key=secrets.token_urlsafe(32)) as opened:
        for batch_id, (created, status, rows) in BATCHES.items():
            _load_batch(opened, _vendor(EPOCH, rows), batch_id, created, status)
        for snapshot in (S1, S2):
            load_extract(opened, _extract(), epoch=EPOCH, snapshot_date=snapshot, now=now)
            match(opened, epoch_id=EPOCH.epoch_id, snapshot_date=snapshot, now=now)
        yield opened


def _row(features: FeatureSet, customer_id: int) -> dict[str, object]:
    return features.table.filter(pl.col("customer_id") == customer_id).row(0, named=True)


def _tags(features: FeatureSet, customer_id: int) -> dict[int, float]:
    """Return the customer's CSR row as {tag_id: weight}."""
    i = features.table["customer_id"].to_list().index(customer_id)
    row = features.tags[i]
    return {int(features.tag_ids[j]): float(w) for j, w in zip(row.indices, row.data, strict=True)}


def test_matched_customer_gets_the_hand_computed_sums(store: Store):
    features = build_features(store, snapshot_date=S1, salt_epoch=EPOCH.epoch_id, top_apps=2)
    c11 = _row(features, 11)
    assert c11["matched"] == 1
    assert (c11["ext_games_days"], c11["ext_games_sessions"], c11["ext_games_apps"]) == (15, 60, 2)
    assert (c11["ext_food_delivery_days"], c11["ext_food_delivery_sessions"]) == (20, 40)
    assert c11["ext_games_share"] == pytest.approx(0.6)
    assert c11["ext_food_delivery_share"] == pytest.approx(0.4)
    assert c11["ext_travel_days"] == 0 and c11["ext_travel_share"] == 0.0
    assert (c11["ext_n_apps"], c11["ext_days_total"], c11["ext_sessions_total"]) == (3, 35, 100)
    assert c11["ext_n_tags"] == 3 and c11["ext_tag_weight_sum"] == pytest.approx(1.75)
    assert _tags(features, 11) == {3: 0.25, 7: 0.5, 10_400: 1.0}
    # Top apps by reach among matched customers (F1: 2 users), ties to the lower app id.
    assert features.manifest.top_apps == (F1, min(G1, G2))
    assert (c11[f"ext_app_{F1}_days"], c11[f"ext_app_{min(G1, G2)}_days"]) == (20, 10)

    c12 = _row(features, 12)  # "old" only: the newer quarantined batch is ignored
    assert c12["matched"] == 1 and c12["ext_food_delivery_days"] == 3
    assert c12["ext_games_days"] == 0 and c12[f"ext_app_{F1}_days"] == 3
    assert c12["ext_sessions_total"] == 0 and c12["ext_food_delivery_share"] is None
    assert _tags(features, 12) == {1: 0.125}


def test_unmatched_customers_have_null_external_values_and_empty_tag_rows(store: Store):
    features = build_features(store, snapshot_date=S1, salt_epoch=EPOCH.epoch_id)
    external = features.feature_columns(["external_category", "external_app", "external_tag"])
    assert len(external) == 26 * 4 + 3 + 64 + 2
    for customer in (13, 14):  # 13 is at the vendor only from a batch made after S1
        row = _row(features, customer)
        assert row["matched"] == 0
        assert all(row[c] is None for c in external)
        assert _tags(features, customer) == {}
    unmatched = features.table.filter(pl.col("matched") == 0)
    assert unmatched.select(external).null_count().row(0) == (unmatched.height,) * len(external)
    assert features.manifest.matched == 2 and features.manifest.in_matches == 2


def test_point_in_time_uses_the_newest_batch_made_by_the_snapshot(store: Store):
    at_s1 = build_features(store, snapshot_date=S1, salt_epoch=EPOCH.epoch_id)
    at_s2 = build_features(store, snapshot_date=S2, salt_epoch=EPOCH.epoch_id)
    # S1: "new" (created 23:59 on S1) wins over "old"; "mid" (00:00 the next day) is too late.
    assert _row(at_s1, 11)["ext_n_apps"] == 3
    assert at_s1.manifest.batches == {"new": 1, "old": 1}
    # S2: "mid" wins; "late" was created after every snapshot and never shows.
    assert _row(at_s2, 11)["ext_n_apps"] == 1 and _row(at_s2, 11)["ext_games_days"] == 1
    assert _tags(at_s2, 11) == {4: 0.75}
    assert _row(at_s2, 13)["matched"] == 1 and _row(at_s2, 13)["ext_games_days"] == 6
    assert _row(at_s2, 14)["matched"] == 0
    assert at_s2.manifest.batches == {"mid": 2, "old": 1}
    assert 6 not in at_s2.tag_ids[at_s2.tags.indices].tolist()  # the "late" batch's tag


def test_bank_columns_are_numeric_with_codes_in_the_manifest(store: Store):
    features = build_features(store, snapshot_date=S1, salt_epoch=EPOCH.epoch_id)
    table, manifest = features.table, features.manifest
    assert manifest.codes == {"gender": ("F", "M")}
    assert table["gender"].to_list() == [0, 1, None, 1]
    assert table["ukey_holder"].to_list() == [1, 0, 1, 0]
    assert table["opened_mb"].to_list() == [1, 0, None, 0]
    assert table["aum_month_avg"].to_list() == [1000.0, 25_000.5, 0.0, 7.25]
    assert table["customer_id"].to_list() == [11, 12, 13, 14]
    assert all(dtype.is_numeric() for name, dtype in table.schema.items() if name != "branch_id")
    # A scoring table built like the training one keeps the training codes and apps.
    later = build_features(store, snapshot_date=S2, salt_epoch=EPOCH.epoch_id, like=manifest)
    assert later.table.columns == table.columns and later.manifest.codes == manifest.codes
    assert later.manifest.top_apps == manifest.top_apps


def test_manifest_names_every_column_with_group_and_source(store: Store, tmp_path: Path):
    features = build_features(store, snapshot_date=S1, salt_epoch=EPOCH.epoch_id)
    manifest = features.manifest
    by_name = {c.name: c for c in manifest.columns}
    assert list(by_name) == features.table.columns
    assert all(c.group in GROUPS and c.source and c.dtype for c in manifest.columns)
    groups = {name: by_name[name].group for name in by_name}
    assert groups["customer_id"] == groups["branch_id"] == "id"
    assert groups["opened_mb"] == "label"
    assert groups["mb_registered"] == groups["matched"] == "flag"
    assert groups["age"] == groups["gender"] == "demographics"
    assert groups["aum_month_avg"] == "assets" and groups["ukey_holder"] == "relationship"
    assert groups["atm_txn_count_3m"] == "channels"
    assert by_name["ext_games_days"].source == "vendor_apps"
    assert by_name["ext_n_tags"].source == "vendor_tags"
    assert manifest.tags["shape"] == [4, TAXONOMY.n_tags] and manifest.snapshot_date == S1

    in_bank = features.feature_columns(IN_BANK)
    fused = features.feature_columns()
    assert in_bank == ["age", "gender", "aum_month_avg", "ukey_holder", "atm_txn_count_3m"]
    assert fused[: len(in_bank)] == in_bank and len(fused) == len(in_bank) + 26 * 4 + 3 + 64 + 2
    assert not {"customer_id", "opened_mb", "mb_registered", "matched"} & set(fused)
    with pytest.raises(ConfigError, match="unknown feature group"):
        features.feature_columns(["assets", "external"])

    paths = features.write(tmp_path / "out")
    document = json.loads(paths["manifest"].read_text())
    assert FeatureManifest.from_dict(document) == manifest
    again = FeatureSet.read(tmp_path / "out")
    assert again.table.equals(features.table) and again.manifest == manifest
    assert (again.tags != features.tags).nnz == 0 and np.array_equal(
        again.tag_ids, features.tag_ids
    )
    assert (sp.load_npz(paths["tags"]) != features.tags).nnz == 0  # scipy reads it as is


def test_unknown_snapshot_and_conflicting_taxonomy_are_refused(store: Store):
    with pytest.raises(ConfigError, match="no customer at snapshot 2026-01-01") as caught:
        build_features(store, snapshot_date=date(2026, 1, 1), salt_epoch=EPOCH.epoch_id)
    assert caught.value.setting == "snapshot_date"
    with pytest.raises(ConfigError, match="taxonomy_version"):
        build_features(store, snapshot_date=S1, salt_epoch=EPOCH.epoch_id, taxonomy_version="x")
    other_epoch = build_features(store, snapshot_date=S1, salt_epoch="e-other")
    assert other_epoch.manifest.matched == 0 and other_epoch.tags.nnz == 0


# -- a small synthetic world through the real pipeline -----------------------------------------


@dataclass(frozen=True)
class Built:
    features: FeatureSet
    world: WorldFiles
    vendor: pl.DataFrame  # the keyed batch as loaded: key + lists
    keys: pl.DataFrame  # customer_id, key of matched customers


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """World -> vendor pack and seal -> bank ingest -> extract load -> match -> features."""

    root = tmp_path_factory.mktemp("features-world")
    world = WorldFiles(root / "world")
    generate_world(WorldConfig(customers=600, seed=11), world.root)
    bank, vendor = init_local_pair(root / "bank-keys", root / "vendor-keys", vendor_id="vendor-a")
    inbox = Inbox(root / "bank").ensure()
    sealed = inbox.inbox / "b1.sealed"
    created = datetime(2026, 9, 29, 10, tzinfo=UTC)
    # Keyed by the phone alone, so `build_batch` below rebuilds the very keys the bank loaded.
    only_phone = PackOptions(identifiers=("mobile",))
    pack_users(world.vendor_users, sealed, keyring=vendor, now=created, options=only_phone)
    epoch = bank.current_salt()
    now = datetime(2026, 10, 1, 9, tzinfo=UTC)
    with Store.open(root / "bank" / "fusion.duckdb", key=bank.store_key()) as store:
        assert ingest_file(sealed, store=store, keyring=bank, inbox=inbox, now=now).status == (
            "loaded"
        )
        extract = pl.read_parquet(world.customers)
        load_extract(store, extract, epoch=epoch, snapshot_date=S1, now=now)
        match(store, epoch_id=epoch.epoch_id, snapshot_date=S1, now=now)
        features = build_features(store, snapshot_date=S1, salt_epoch=epoch.epoch_id)
        keys = store.execute("SELECT customer_id, key FROM matches").pl()
    batch, _, _ = build_batch(pl.read_parquet(world.vendor_users), epoch)
    return Built(features, world, batch, keys)


def test_csr_rows_follow_the_table_and_columns_follow_tag_ids(built: Built):
    features = built.features
    table = features.table.select("customer_id").with_row_index("row")
    exploded = (
        built.keys.join(built.vendor, on="key")
        .join(table, on="customer_id")
        .select("row", "tag_ids", "tag_weights")
        .explode("tag_ids", "tag_weights")
    )
    column = {int(t): j for j, t in enumerate(features.tag_ids)}
    expected = sp.coo_matrix(
        (
            exploded["tag_weights"].to_numpy(),
            (exploded["row"].to_numpy(), [column[t] for t in exploded["tag_ids"].to_list()]),
        ),
        shape=features.tags.shape,
    ).tocsr()
    assert features.tags.shape == (features.table.height, TAXONOMY.n_tags)
    assert np.array_equal(features.tag_ids, np.arange(1, TAXONOMY.n_tags + 1))
    assert features.tags.dtype == np.float32 and features.tags.has_canonical_format
    assert (features.tags != expected).nnz == 0 and features.tags.nnz == exploded.height
    lengths = np.diff(features.tags.indptr)
    assert np.array_equal(lengths > 0, features.table["matched"].to_numpy() == 1)
    assert np.array_equal(lengths[lengths > 0], features.table["ext_n_tags"].drop_nulls())


def test_category_sums_equal_an_independent_group_by(built: Built):
    apps = TAXONOMY.apps.join(TAXONOMY.categories, on="category_id").select("app_id", "code")
    usage = (
        built.keys.join(built.vendor, on="key")
        .select("customer_id", "app_ids", "app_days", "app_sessions")
        .explode("app_ids", "app_days", "app_sessions")
        .join(apps, left_on="app_ids", right_on="app_id")
        .filter(pl.col("code") == "food_delivery")
        .group_by("customer_id")
        .agg(pl.col("app_days").cast(pl.Int32).sum(), pl.col("app_sessions").sum())
    )
    table = built.features.table.filter(pl.col("matched") == 1)
    got = table.select("customer_id", "ext_food_delivery_days", "ext_food_delivery_sessions")
    merged = got.join(usage, on="customer_id", how="left").fill_null(0)
    assert merged.height == built.keys.height > 0
    assert (merged["ext_food_delivery_days"] == merged["app_days"]).all()
    assert (merged["ext_food_delivery_sessions"] == merged["app_sessions"]).all()


def test_written_files_hold_no_phone_or_id_number(built: Built, tmp_path: Path):
    paths = built.features.write(tmp_path / "features", compression="uncompressed")
    blobs = [p.read_bytes() for p in paths.values()]
    extract = pl.read_parquet(built.world.customers, columns=["phone", "id_number"])
    phones = normalize_phones(extract["phone"]).values.drop_nulls().to_list()
    ids = normalize_id_numbers(extract["id_number"]).values.drop_nulls().to_list()
    raw = extract["phone"].drop_nulls().to_list() + extract["id_number"].to_list()
    assert len(phones) > 500 and len(ids) > 500
    needles = [v.encode() for v in phones + ids + raw if len(v) >= 8]
    needles += [int(p).to_bytes(8, "little") for p in phones]  # a phone stored as a number
    assert not [n for n in needles for blob in blobs if n in blob]
    assert not {"phone", "id_number", "key"} & set(built.features.table.columns)
