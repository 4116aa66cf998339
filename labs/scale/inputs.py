"""Scale inputs of any size, streamed to Parquet: a bank extract and the vendor's keyed users.

`write_scale_inputs` writes a bank extract and the vendor's keyed users for `customers` bank
customers and `vendor_ratio` times as many vendor users, one chunk of rows at a time (a chunk is
generated, written as a row group and dropped), so a 10M x 30M pair never sits in memory. Every
chunk is a pure function of (seed, chunk number): the same config gives the same rows.

    bank/customers.parquet   customer_id, branch_id, phone (dirty text, as a bank extract writes
                             it), eight numeric features of the data mart, opened_mb (the label)
    bank/fusion.duckdb       the bank's encrypted store once that extract is loaded and matched
                             against the vendor's batch (`labs.scale.store`): what the feature
                             build reads
    vendor/keys.parquet      key (32-byte keyed hash of the phone), app_ids, tag_ids
    bank-keys/               the bank keyring: its current salt epoch keyed the vendor file, its
                             store key opens the store
    models/                  a registry holding "acquisition": a small xgboost model of the fused
                             columns, trained once on a feature build of about `train_rows`
                             customers (one customer bucket), what the scoring stage runs
    manifest.json            the config and the counts below

Who is who. Person p owns the mobile number 13e9 + (a * p + b) mod 7e9 (a, b drawn from the seed,
a coprime to 7e9): an affine bijection of the mobile space, so numbers are distinct by
construction and computed per chunk, with no table of numbers taken so far. Bank customer i is
person i; chunk c's vendor-only users are persons from a range reserved for chunk c past the bank.
Within each chunk of bank rows the world's phone rules apply (`labs.world.phones`, shared by both
generators): ~1% of customers give an unusable phone, 0.25% of customers (in pairs) give the
number of another customer of the same chunk, phones are written in the world's eight dirty
styles, and `coverage` (65%) of the customers with a valid phone who are not giving someone
else's number are at the vendor, mixed among the chunk's vendor-only users in a random order.
So the expected matches are exact: covered customers whose number is not shared
(`ScaleSummary.expected_matches`).

Lists. The vendor file holds 1-8 app ids and 1-12 tag ids a user (means 4.5 and 6.5), consecutive
ids from a popularity-skewed start, so distinct within a row. The world (`labs.world`) gives a user
several times more apps and tags; at 30M users such lists would not fit in memory as int32, and a
run writes them again (the key partitions copy them all, the matches those of the matched users).
The jobs move lists without looking inside, at a cost linear in their bytes, so short lists keep
the files and the generation small while still exercising list columns through partitioning and
joins.

The vendor's own keyed hashing is not a bank stage: the file is written already keyed, with phones
normalised (`matcher.identity`) and hashed (`matcher.keyed_hash`) chunk by chunk.
"""

from __future__ import annotations

import datetime
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb
from rich.console import Console

from fusion.features import CustomerBucket, build_features, snapshot_manifest
from fusion.models.classifier import ScoreModel, decile_edges
from fusion.models.design import DesignSpec, design_matrix, feature_labels
from fusion.progress import progress_bar
from fusion.registry import Registry
from fusion.store import Store, StoreConfig
from labs.scale.store import SNAPSHOT, StoreChunk, store_writer
from labs.world.errors import WorldError
from labs.world.personas import sigmoid
from labs.world.phones import (
    MOBILE_BASE,
    MOBILE_SPACE,
    VENDOR_PLUS86_SHARE,
    bank_phones,
    dirty_phones,
    vendor_phones,
)
from matcher.atomic import atomic_path
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash
from matcher.keyring import Keyring

__all__ = [
    "MODEL",
    "ScaleConfig",
    "ScaleInputs",
    "ScaleSummary",
    "scale_inputs",
    "write_scale_inputs",
]

_FORMAT = "bankfusion-scale-inputs/v2"
MODEL = "acquisition"  # the registered model the scoring stage runs

_BANK_FILE = "bank/customers.parquet"
_STORE_FILE = "bank/fusion.duckdb"
_VENDOR_FILE = "vendor/keys.parquet"
_KEYRING = "bank-keys"
_MODELS_DIR = "models"
_MANIFEST = "manifest.json"
_CUSTOMER_ID_BASE = 100_000_000
_BRANCHES = 40  # B001..B040, as in labs.world
_APPS, _TAGS = 1_300, 10_400  # the taxonomy's id ranges
_TRAINED_AT = datetime.datetime(2026, 10, 1, 6, 0, tzinfo=datetime.UTC)
_PARQUET: dict[str, Any] = {"compression": "zstd", "compression_level": 1}
_BANK_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("branch_id", pa.large_string()),
        ("phone", pa.large_string()),
        ("age", pa.int16()),
        ("tenure_months", pa.int32()),
        ("ukey_holder", pa.int8()),
        ("online_banking", pa.int8()),
        ("n_products", pa.int8()),
        ("aum_month_avg", pa.float64()),
        ("time_deposit", pa.float64()),
        ("wealth_mgmt", pa.float64()),
        ("opened_mb", pa.int8()),
    ]
)
_VENDOR_SCHEMA = pa.schema(
    [
        ("key", pa.binary()),
        ("app_ids", pa.list_(pa.int32())),
        ("tag_ids", pa.list_(pa.int32())),
    ]
)


@dataclass(frozen=True, kw_only=True)
class ScaleConfig:
    """How many customers, the seed, and the shape of the vendor file; the rest is fixed here."""

    customers: int
    seed: int = 8
    vendor_ratio: float = 3.0  # vendor users per bank customer
    coverage: float = 0.65  # share of customers with a valid, own phone who are at the vendor
    apps_max: int = 8  # app ids a vendor user holds: 1..apps_max
    tags_max: int = 12  # tag ids a vendor user holds: 1..tags_max
    chunk_rows: int = 1 << 18  # bank rows per generated chunk (and row group)
    train_rows: int = 50_000  # about this many customers (one bucket) train the scoring model

    def __post_init__(self) -> None:
        checks = (
            ("customers", self.customers >= 100, ">= 100"),
            ("vendor_ratio", self.vendor_ratio >= 1.0, ">= 1"),
            ("coverage", 0.0 <= self.coverage <= 1.0, "in [0, 1]"),
            ("apps_max", 1 <= self.apps_max <= 64, "in [1, 64]"),
            ("tags_max", 1 <= self.tags_max <= 64, "in [1, 64]"),
            ("chunk_rows", self.chunk_rows >= 1_000, ">= 1000"),
            ("train_rows", self.train_rows >= 100, ">= 100"),
        )
        for name, ok, wanted in checks:
            if not ok:
                raise WorldError(f"scale {name} must be {wanted}, got {getattr(self, name)!r}")

    @property
    def vendor_users(self) -> int:
        """Return the vendor file's rows: round(vendor_ratio x rows) for each bank chunk."""
        full, last = divmod(self.customers, self.chunk_rows)
        return full * round(self.vendor_ratio * self.chunk_rows) + round(self.vendor_ratio * last)

    @property
    def folder_name(self) -> str:
        return f"customers-{self.customers}-seed-{self.seed}"


@dataclass(frozen=True, kw_only=True)
class ScaleSummary:
    """What a generated inputs folder holds; the counts the tests and the bench check against."""

    customers: int
    vendor_users: int
    covered: int  # bank customers the vendor file holds
    invalid_phones: int  # customers whose phone does not normalise
    shared_phones: int  # customers whose valid phone another customer also gives
    expected_matches: int  # covered customers whose phone is not shared
    seconds: float
    bank_bytes: int
    vendor_bytes: int
    store_bytes: int


@dataclass(frozen=True)
class ScaleInputs:
    """A generated inputs folder: its config, summary and files (see the module's layout)."""

    root: Path
    config: ScaleConfig
    summary: ScaleSummary

    @property
    def bank(self) -> Path:
        return self.root / _BANK_FILE

    @property
    def store(self) -> Path:
        return self.root / _STORE_FILE

    @property
    def vendor(self) -> Path:
        return self.root / _VENDOR_FILE

    @property
    def keyring(self) -> Path:
        return self.root / _KEYRING

    @property
    def registry(self) -> Path:
        return self.root / _MODELS_DIR

    @classmethod
    def open(cls, root: Path) -> ScaleInputs:
        """Return the inputs folder at `root`, checking its manifest and files are there."""
        try:
            document = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise WorldError(
                f"{root} holds no readable scale manifest ({error}); generate it with "
                "labs.scale.scale_inputs"
            ) from None
        if document.get("format") != _FORMAT:
            raise WorldError(f"{root} is not a {_FORMAT} folder; generate it again")
        try:
            config = ScaleConfig(**document["config"])
            summary = ScaleSummary(**document["summary"])
        except (KeyError, TypeError) as error:  # written by an older generator
            raise WorldError(
                f"{root} has a manifest this generator cannot read ({error}); generate it again"
            ) from None
        inputs = cls(root, config, summary)
        missing = [p for p in (inputs.bank, inputs.store, inputs.vendor, inputs.keyring,
                               inputs.registry) if not p.exists()]  # fmt: skip
        if missing:
            raise WorldError(f"{root} lacks {', '.join(str(p) for p in missing)}; generate again")
        return inputs


class _Mobiles:
    """Person number -> mobile number: an affine bijection of the 7e9 mobile numbers."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng((seed, 0x70E))
        # 7e9 = 2^9 * 5^9 * 7, so any a not divisible by 2, 5 or 7 is invertible mod 7e9. a < 1.3e9
        # keeps a * p inside int64 for every p < 7e9.
        while True:
            a = int(rng.integers(10**9 // 3, 13 * 10**8))
            if a % 2 and a % 5 and a % 7:
                break
        self.a, self.b = np.int64(a), np.int64(rng.integers(0, MOBILE_SPACE))

    def __call__(self, person: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return MOBILE_BASE + (self.a * person.astype(np.int64) + self.b) % MOBILE_SPACE


@dataclass(frozen=True)
class _Chunk:
    bank: pa.Table
    vendor: pa.Table
    covered: int
    invalid: int
    shared: int
    expected: int
    store: StoreChunk


def _lists(counts: np.ndarray[Any, Any], starts: np.ndarray[Any, Any]) -> pa.ListArray:
    """Return list rows of `counts[i]` consecutive ids from `starts[i]`, built without a loop."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    within = np.arange(offsets[-1], dtype=np.int32) - np.repeat(offsets[:-1], counts)
    values = (np.repeat(starts, counts) + within).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _bank_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray[Any, Any]]:
    """Return the extract's numeric features and a label that depends on them."""
    age = np.clip(rng.normal(41.0, 13.0, n), 18, 85).astype(np.int16)
    tenure = np.minimum(rng.exponential(70.0, n), (age - 17) * 12.0).astype(np.int32)
    ukey = rng.random(n) < 0.35
    online = rng.random(n) < np.clip(0.85 - 0.01 * (age - 18), 0.1, 0.85)
    products = (1 + rng.poisson(1.4, n)).astype(np.int8)
    aum = np.round(rng.lognormal(9.5, 1.6, n), 2)
    time_deposit = np.round(np.where(rng.random(n) < 0.45, aum * rng.beta(2, 3, n), 0.0), 2)
    wealth = np.round(np.where(rng.random(n) < 0.2, aum * rng.beta(2, 4, n), 0.0), 2)
    # The real case's top variables, as in labs.world: young, U-key, wealth management, tenure,
    # time deposits.
    logit = (
        -2.6
        - 0.045 * (age - 40.0)
        + 0.8 * ukey
        + 0.6 * (wealth > 0)
        - 0.004 * tenure
        + 0.3 * (time_deposit > 0)
        + 0.4 * online
    )
    return {
        "age": age,
        "tenure_months": tenure,
        "ukey_holder": ukey.astype(np.int8),
        "online_banking": online.astype(np.int8),
        "n_products": products,
        "aum_month_avg": aum,
        "time_deposit": time_deposit,
        "wealth_mgmt": wealth,
        "opened_mb": (rng.random(n) < sigmoid(logit)).astype(np.int8),
    }


def _chunk(
    config: ScaleConfig, mobiles: _Mobiles, epoch: SaltEpoch, index: int, begin: int, end: int
) -> _Chunk:
    """Return bank rows [begin, end) and the vendor rows reserved for them: chunk `index`."""
    rng = np.random.default_rng((config.seed, 0xC4, index))
    n = end - begin
    person = np.arange(begin, end, dtype=np.int64)
    # The world's phone rules on this chunk: styles, invalid kinds, pairs that share a number.
    phones = bank_phones(mobiles(person), rng)
    phone = dirty_phones(phones, rng)
    features = _bank_features(rng, n)
    branch = "B" + pl.Series(rng.integers(1, _BRANCHES + 1, n)).cast(pl.String).str.zfill(3)
    bank = pa.table(
        {
            "customer_id": pa.array(_CUSTOMER_ID_BASE + person),
            "branch_id": branch.to_arrow(),
            "phone": phone.to_arrow(),
            **{name: pa.array(values) for name, values in features.items()},
        }
    ).cast(_BANK_SCHEMA)

    valid = phones.valid
    candidates = np.flatnonzero(valid & ~phones.copy)
    k = min(round(config.coverage * int(valid.sum())), len(candidates))
    covered = np.sort(rng.choice(candidates, size=k, replace=False))
    rows = round(config.vendor_ratio * n)
    reserved = math.ceil(config.vendor_ratio * config.chunk_rows)
    fresh = config.customers + index * reserved + np.arange(rows - k, dtype=np.int64)
    people = rng.permutation(np.concatenate([person[covered], fresh]))
    written = vendor_phones(mobiles(people), rng.random(rows) < VENDOR_PLUS86_SHARE)
    keys = keyed_hash(normalize_phones(written).values, epoch, domain="mobile")
    # Popular apps and tags first: a start near the top of the id range is likelier.
    apps = _lists(
        rng.integers(1, config.apps_max + 1, rows),
        1 + (rng.random(rows) ** 2 * (_APPS - config.apps_max)).astype(np.int32),
    )
    tags = _lists(
        rng.integers(1, config.tags_max + 1, rows),
        1 + (rng.random(rows) ** 2 * (_TAGS - config.tags_max)).astype(np.int32),
    )
    vendor = pa.table([keys.to_arrow().cast(pa.binary()), apps, tags], schema=_VENDOR_SCHEMA)
    # What the salted match finds: a vendor row of a bank customer whose phone is not shared.
    at_bank = np.flatnonzero(people < config.customers)
    matched = at_bank[~phones.shared[people[at_bank] - begin]]
    return _Chunk(
        bank=bank,
        vendor=vendor,
        covered=k,
        invalid=int((~valid).sum()),
        shared=int(phones.shared.sum()),
        expected=int((~phones.shared[covered]).sum()),
        store=StoreChunk(
            index=index,
            bank=bank,
            customer_keys=_customer_keys(phones.given, valid & ~phones.shared, epoch),
            key_status=pl.Series(
                "key_status",
                np.where(~valid, "invalid", np.where(phones.shared, "duplicated", "ok")),
                pl.String,
            ),
            vendor=vendor,
            matched_rows=matched,
            matched_ids=_CUSTOMER_ID_BASE + people[matched],
        ),
    )


def _customer_keys(
    given: np.ndarray[Any, Any], ok: np.ndarray[Any, Any], epoch: SaltEpoch
) -> pl.Series:
    """Return the keyed hash of each customer's number where `ok` (a valid, own phone), else null.

    The number a customer gives, in normal form, is what `matcher.identity` makes of its dirty
    spelling in the extract (the tests check the two agree).
    """
    numbers = pl.Series("phone", given).cast(pl.String)
    hashed = keyed_hash(numbers.filter(pl.Series(ok)), epoch, domain="mobile")
    keys = pl.Series("key", [None] * len(given), pl.Binary)
    return keys.scatter(np.flatnonzero(ok), hashed)


def write_scale_inputs(
    config: ScaleConfig,
    out: Path,
    *,
    epoch: SaltEpoch,
    store_key: str,
    console: Console | None = None,
) -> ScaleSummary:
    """Return the counts of the bank and vendor files and the store written under `out`.

    Streams both files and the store (`labs.scale.store`, encrypted with `store_key`) one chunk
    of `config.chunk_rows` bank rows (and its vendor rows) at a time, then trains the scoring
    model on a feature build of one customer bucket of about `config.train_rows` and writes the
    manifest. The vendor keys are keyed hashes under `epoch`; the same config and epoch give
    the same rows.
    """
    start = time.perf_counter()
    mobiles = _Mobiles(config.seed)
    bank_path, vendor_path = out / _BANK_FILE, out / _VENDOR_FILE
    bank_path.parent.mkdir(parents=True, exist_ok=True)
    vendor_path.parent.mkdir(parents=True, exist_ok=True)
    bounds = [
        (i, b, min(b + config.chunk_rows, config.customers))
        for i, b in enumerate(range(0, config.customers, config.chunk_rows))
    ]
    counts = {"covered": 0, "invalid": 0, "shared": 0, "expected": 0, "vendor": 0}
    with (
        pq.ParquetWriter(bank_path, _BANK_SCHEMA, **_PARQUET) as bank,
        pq.ParquetWriter(vendor_path, _VENDOR_SCHEMA, **_PARQUET) as vendor,
        store_writer(
            out / _STORE_FILE, store_key, seed=config.seed, epoch_id=epoch.epoch_id
        ) as store,
        progress_bar(console, "scale inputs", len(bounds)) as advance,
    ):
        for index, begin, end in bounds:
            chunk = _chunk(config, mobiles, epoch, index, begin, end)
            bank.write_table(chunk.bank, row_group_size=chunk.bank.num_rows)
            vendor.write_table(chunk.vendor, row_group_size=max(chunk.vendor.num_rows, 1))
            store.add(chunk.store)
            counts["covered"] += chunk.covered
            counts["invalid"] += chunk.invalid
            counts["shared"] += chunk.shared
            counts["expected"] += chunk.expected
            counts["vendor"] += chunk.vendor.num_rows
            del chunk
            advance()
    _train(out / _STORE_FILE, store_key, out / _MODELS_DIR, config, epoch.epoch_id)
    summary = ScaleSummary(
        customers=config.customers,
        vendor_users=counts["vendor"],
        covered=counts["covered"],
        invalid_phones=counts["invalid"],
        shared_phones=counts["shared"],
        expected_matches=counts["expected"],
        seconds=time.perf_counter() - start,
        bank_bytes=bank_path.stat().st_size,
        vendor_bytes=vendor_path.stat().st_size,
        store_bytes=(out / _STORE_FILE).stat().st_size,
    )
    document = {
        "format": _FORMAT,
        "config": asdict(config),
        "summary": asdict(summary),
        "salt_epoch": epoch.epoch_id,
    }
    (out / _MANIFEST).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return summary


def scale_inputs(
    config: ScaleConfig, cache: Path, *, console: Console | None = None
) -> ScaleInputs:
    """Return the inputs of `config` under `cache`, generating them only when they are absent.

    The folder is named by size and seed (`customers-N-seed-S`); a folder whose manifest holds
    another config or format is generated again. A new folder gets its own bank keyring (the
    salt that keys the vendor file) and is built beside its final name, then renamed, so an
    interrupted generation never leaves a folder that looks complete.
    """
    root = cache / config.folder_name
    try:
        found = ScaleInputs.open(root)
    except WorldError:
        found = None
    if found is not None and found.config == config:
        return found
    with atomic_path(root) as staging:
        staging.mkdir(mode=0o700)  # it holds a bank keyring
        keyring = Keyring.init(staging / _KEYRING, role="bank")
        write_scale_inputs(
            config,
            staging,
            epoch=keyring.current_salt(),
            store_key=keyring.store_key(),
            console=console,
        )
        if root.exists():  # a folder cannot be renamed over a folder that holds files
            shutil.rmtree(root)
    return ScaleInputs.open(root)


def _train(store_path: Path, key: str, models: Path, config: ScaleConfig, epoch_id: str) -> None:
    """Register a small acquisition model of the fused columns, trained on one customer bucket.

    The bucket (about `config.train_rows` customers) is built from the store as the feature
    build builds any bucket (`build_features` like the snapshot's manifest), so the model reads
    exactly the columns the timed build writes.
    """
    count = max(1, config.customers // config.train_rows)
    with Store.open(StoreConfig(store_path, memory_limit="2GB"), key=key, read_only=True) as store:
        manifest = snapshot_manifest(store, snapshot_date=SNAPSHOT, salt_epoch=epoch_id)
        sample = build_features(
            store,
            snapshot_date=SNAPSHOT,
            salt_epoch=epoch_id,
            like=manifest,
            customers=CustomerBucket(0, count),
        )
    spec = DesignSpec(tuple(sample.feature_columns()))
    x = design_matrix(sample, spec)
    y = sample.table["opened_mb"].to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "tree_method": "hist"}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=spec.names), 40)
    model = ScoreModel(MODEL, booster, spec, feature_labels(sample.manifest, spec), np.zeros(9))
    model.decile_edges = decile_edges(model.predict(x))
    Registry(models).save(model, created_at=_TRAINED_AT)
