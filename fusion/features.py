"""Point-in-time model tables: in-bank features fused with the vendor's data of matched customers.

For a snapshot date and salt epoch, one row per customer in `bank_features` at that date:

    id                 customer_id, branch_id
    label, flag        opened_mb (the label), mb_registered, matched
    demographics ...   the bank extract's features; booleans as 0/1, text dictionary-encoded
    external_*         the vendor's data of the customer's key, from the batch its match used
                       (the newest loaded batch created on or before the snapshot date, as
                       fusion.match chose it when it ran): usage of the 26
                       app categories, active days on the most used apps, app and tag counts
    tags               a CSR matrix beside the table: row i is the table's row i, column j is
                       tag_ids[j], values are the vendor's interest weights

Customers without vendor data at the snapshot (not matched, or matched only to batches created
later) get null external values, an empty CSR row and matched = 0: "no data" is not "zero usage".

Text columns become integer codes rather than one-hot columns: trees split codes as well, one
column per business variable keeps importances and reason codes on the variable the bank knows,
and the code lists live in the manifest, so a scoring table built `like` a training manifest
gets the training codes (a value unseen in training becomes null).

A build can cover one bucket of customers (`CustomerBucket`, hash(customer_id) % count in
DuckDB) with the columns and codes decided for the whole snapshot by `snapshot_manifest`
(aggregate queries only); the buckets' tables, concatenated and sorted by customer_id, are the
whole build's (fusion.jobs.build_feature_buckets runs one task per bucket).

Vectorised throughout: one DuckDB query picks each matched customer's batch and returns the list
columns as Arrow, and `fusion.vendor_features` turns the lists into columns and the CSR with
numpy, never a Python loop per customer.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from contracts.errors import ConfigError, InputFileError, StoreError
from contracts.taxonomy import CURRENT_VERSION, Taxonomy, load_taxonomy
from fusion.bank_columns import ID_COLUMNS, ColumnNote, encode_bank, is_text
from fusion.store import RAW_IDENTIFIER_COLUMNS, Store
from fusion.vendor_features import choose_apps, external_columns, tag_matrix
from matcher.atomic import atomic_path, write_atomic

__all__ = [
    "FUSED",
    "IN_BANK",
    "CustomerBucket",
    "FeatureColumn",
    "FeatureManifest",
    "FeatureSet",
    "build_features",
    "snapshot_manifest",
]

IN_BANK: tuple[str, ...] = ("demographics", "relationship", "assets", "channels", "bank_other")
EXTERNAL: tuple[str, ...] = ("external_category", "external_app", "external_tag")
FUSED: tuple[str, ...] = IN_BANK + EXTERNAL
GROUPS: tuple[str, ...] = (*FUSED, "flag", "label", "id")
Compression = Literal["zstd", "lz4", "snappy", "gzip", "brotli", "uncompressed"]

TABLE_FILE = "features.parquet"
TAGS_FILE = "tags.npz"
MANIFEST_FILE = "manifest.json"

# Each customer's vendor rows come from the batch its match used (matches.batch_id, chosen by
# fusion.match's point-in-time rule), so the model table, the coverage report and the branch
# snapshots describe the same batch even when a batch arrives after the match. The cutoff is a
# guard: a matched batch created after the snapshot would be a bug, and is left out.
_PICK_SQL = """
WITH picked AS (
    SELECT m.customer_id, m.key, m.batch_id
    FROM matches AS m
    JOIN batches AS b ON b.batch_id = m.batch_id
    WHERE m.snapshot_date = $snapshot AND m.salt_epoch = $epoch
      AND b.status = 'loaded' AND b.created_at < $cutoff{bucket}
    QUALIFY row_number() OVER (
        PARTITION BY m.customer_id ORDER BY b.created_at DESC, m.batch_id DESC
    ) = 1
)
SELECT p.customer_id, p.batch_id, a.app_ids, a.app_days, a.app_sessions,
       t.tag_ids, t.tag_weights
FROM picked AS p
JOIN vendor_apps AS a
    ON a.key = p.key AND a.batch_id = p.batch_id AND a.salt_epoch = $epoch
LEFT JOIN vendor_tags AS t
    ON t.key = p.key AND t.batch_id = p.batch_id AND t.salt_epoch = $epoch
ORDER BY p.customer_id
"""
_BUCKET_SQL = " AND hash({column}) % {count} = {index}"


@dataclass(frozen=True)
class FeatureColumn:
    """One column of a feature table: its group, the store table it comes from, what it holds."""

    name: str
    group: str
    source: str
    dtype: str
    description: str = ""


@dataclass(frozen=True)
class CustomerBucket:
    """One of `count` disjoint sets of customers: those with hash(customer_id) % count == index.

    DuckDB's `hash` is computed in the query, so a bucket's rows are filtered before they leave
    the store. The hash is fixed for a DuckDB version, so every task of a job (same library)
    cuts the customers the same way; buckets from different DuckDB versions must not be mixed.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        # Checked as exact ints: condition() writes them into SQL text.
        for name, value in (("index", self.index), ("count", self.count)):
            if type(value) is not int:
                raise ConfigError(
                    f"a customer bucket's {name} must be an int, got {value!r}", setting="bucket"
                )
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"a customer bucket's index must be from 0 to count - 1 ({self.count - 1}), got "
                f"{self.index}",
                setting="bucket",
            )

    def condition(self, column: str) -> str:
        """Return the SQL text ` AND hash(column) % count = index`, for a WHERE clause."""
        return _BUCKET_SQL.format(column=column, count=self.count, index=self.index)


@dataclass(frozen=True)
class FeatureManifest:
    """What a feature table holds and where every column came from; JSON-ready via to_dict()."""

    snapshot_date: date
    salt_epoch: str
    taxonomy_version: str
    rows: int
    matched: int  # customers with vendor data at the snapshot
    in_matches: int  # customers in `matches` for the snapshot and epoch
    columns: tuple[FeatureColumn, ...]
    codes: dict[str, tuple[str, ...]]  # text column -> its values in code order (code = index)
    top_apps: tuple[int, ...]  # app ids of the ext_app_*_days columns, in column order
    batches: dict[str, int]  # batch_id -> customers whose vendor data came from it
    tags: dict[str, Any] = field(default_factory=dict)  # the CSR: group, source, shape, nnz

    def names(self, groups: Iterable[str] = FUSED) -> list[str]:
        """Return the table's columns in `groups`, in table order."""
        wanted = set(groups)
        unknown = wanted.difference(GROUPS)
        if unknown:
            raise ConfigError(
                f"unknown feature group(s) {', '.join(sorted(unknown))}; groups are "
                f"{', '.join(GROUPS)}",
                setting="groups",
            )
        return [c.name for c in self.columns if c.group in wanted]

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as JSON-ready values (the date as ISO text)."""
        document = asdict(self)
        document["snapshot_date"] = self.snapshot_date.isoformat()
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> FeatureManifest:
        """Return the manifest that to_dict() gave `document`."""
        return cls(
            snapshot_date=date.fromisoformat(document["snapshot_date"]),
            salt_epoch=document["salt_epoch"],
            taxonomy_version=document["taxonomy_version"],
            rows=int(document["rows"]),
            matched=int(document["matched"]),
            in_matches=int(document["in_matches"]),
            columns=tuple(FeatureColumn(**c) for c in document["columns"]),
            codes={k: tuple(v) for k, v in document["codes"].items()},
            top_apps=tuple(int(a) for a in document["top_apps"]),
            batches={k: int(v) for k, v in document["batches"].items()},
            tags=dict(document.get("tags", {})),
        )


@dataclass(frozen=True)
class FeatureSet:
    """A point-in-time feature table, its interest-tag CSR matrix and their manifest."""

    table: pl.DataFrame
    tags: sp.csr_matrix
    tag_ids: np.ndarray[Any, np.dtype[np.int32]]  # CSR column j holds tag tag_ids[j]
    manifest: FeatureManifest

    def feature_columns(self, groups: Iterable[str] = FUSED) -> list[str]:
        """Return the model columns of `groups`: IN_BANK for the bank-only model, FUSED for both."""
        return self.manifest.names(groups)

    def write(self, out_dir: Path, *, compression: Compression = "zstd") -> dict[str, Path]:
        """Write the table (Parquet), the CSR (.npz) and the manifest (JSON); return their paths.

        `tags.npz` is scipy's own format (`scipy.sparse.load_npz` reads it) with one extra array,
        `tag_ids`. Each file is written under a temporary name and renamed.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "table": out / TABLE_FILE,
            "tags": out / TAGS_FILE,
            "manifest": out / MANIFEST_FILE,
        }

        with atomic_path(paths["table"]) as tmp:
            self.table.write_parquet(tmp, compression=compression)
        with atomic_path(paths["tags"]) as tmp, tmp.open("wb") as handle:
            np.savez(
                handle,
                format=np.array(b"csr"),
                shape=np.array(self.tags.shape),
                data=self.tags.data,
                indices=self.tags.indices,
                indptr=self.tags.indptr,
                tag_ids=self.tag_ids,
            )
        text = json.dumps(self.manifest.to_dict(), indent=1, ensure_ascii=False) + "\n"
        write_atomic(paths["manifest"], text)
        return paths

    @classmethod
    def read(cls, out_dir: Path) -> FeatureSet:
        """Return the feature set that write() saved under `out_dir`.

        A missing or damaged file is an InputFileError that says how to rebuild the folder.
        """
        out = Path(out_dir)
        try:
            manifest = FeatureManifest.from_dict(
                json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
            )
            with np.load(out / TAGS_FILE, allow_pickle=False) as saved:
                tags = sp.csr_matrix(
                    (saved["data"], saved["indices"], saved["indptr"]),
                    shape=tuple(saved["shape"]),
                )
                tag_ids = saved["tag_ids"]
            table = pl.read_parquet(out / TABLE_FILE)
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            zipfile.BadZipFile,
            pl.exceptions.PolarsError,
        ) as error:
            raise InputFileError(
                f"the feature tables in {out} are missing a file or damaged "
                f"({type(error).__name__}{_file_of(error)}); rebuild them with `fusion features "
                f"--snapshot {out.name} --replace`",
                path=str(out),
            ) from None
        return cls(table, tags, tag_ids, manifest)


def _file_of(error: Exception) -> str:
    name = getattr(error, "filename", None)
    return f": {Path(name).name}" if name else ""


# -- in-bank part ------------------------------------------------------------------------------


def _read_bank(store: Store, snapshot_date: date, where: str = "") -> pl.DataFrame:
    """Return bank_features at the snapshot, one row per customer, ordered by customer_id.

    `where` narrows the rows (a CustomerBucket's condition); narrowed to none, the result is
    empty rather than an error as long as the snapshot itself has customers.
    """
    found = store.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'bank_features'"
    ).fetchone()
    if not found or not found[0]:
        raise StoreError(
            f"{store.path} has no bank_features table yet; match a bank extract first "
            "(fusion match --extract EXTRACT.parquet --snapshot DATE)",
            path=str(store.path),
        )
    bank = store.execute(
        f"SELECT * EXCLUDE (snapshot_date) FROM bank_features WHERE snapshot_date = ?{where} "  # noqa: S608 (where: CustomerBucket ints)
        "ORDER BY customer_id",
        [snapshot_date],
    ).pl()
    if bank.height == 0 and (not where or not _snapshot_loaded(store, snapshot_date)):
        dates = store.execute(
            "SELECT DISTINCT snapshot_date FROM bank_features ORDER BY 1 DESC LIMIT 5"
        ).fetchall()
        listed = ", ".join(str(d[0]) for d in dates) or "none"
        raise ConfigError(
            f"bank_features holds no customer at snapshot {snapshot_date} (latest snapshots: "
            f"{listed}); load that extract or pick a loaded snapshot",
            setting="snapshot_date",
        )
    _refuse_repeats(store, snapshot_date, bank.height - bank["customer_id"].n_unique())
    leaked = RAW_IDENTIFIER_COLUMNS.intersection(bank.columns)
    if leaked:  # the store refuses these columns; a hand-made table must not slip them through
        raise StoreError(
            f"bank_features has raw identifier column(s) {', '.join(sorted(leaked))}; only "
            "keyed hashes may be stored",
            path=str(store.path),
        )
    return bank


def _snapshot_loaded(store: Store, snapshot_date: date) -> bool:
    found = store.execute(
        "SELECT count(*) FROM (SELECT 1 FROM bank_features WHERE snapshot_date = ? LIMIT 1)",
        [snapshot_date],
    ).fetchone()
    return bool(found and found[0])


def _refuse_repeats(store: Store, snapshot_date: date, duplicated: int) -> None:
    if duplicated:
        raise StoreError(
            f"bank_features holds {duplicated} repeated customer rows at {snapshot_date}; "
            "reload that snapshot's extract once",
            path=str(store.path),
        )


def _resolve_taxonomy(
    store: Store, batch_ids: list[str], asked: str | None, like: FeatureManifest | None
) -> Taxonomy:
    used: list[str] = []
    if batch_ids:
        rows = store.execute(
            "SELECT DISTINCT taxonomy_version FROM batches WHERE batch_id IN "
            "(SELECT unnest(?::VARCHAR[])) AND taxonomy_version IS NOT NULL",
            [batch_ids],
        ).fetchall()
        used = sorted(str(r[0]) for r in rows)
    version = asked or (like.taxonomy_version if like is not None else None)
    if version is None:
        if len(used) > 1:
            raise ConfigError(
                f"the batches at this snapshot use taxonomy versions {', '.join(used)}; pass "
                "taxonomy_version to say which ids the columns follow",
                setting="taxonomy_version",
            )
        version = used[0] if used else CURRENT_VERSION
    elif any(u != version for u in used):
        raise ConfigError(
            f"taxonomy_version {version!r} differs from the batches' {', '.join(used)}; app and "
            "tag ids are only comparable within one version",
            setting="taxonomy_version",
        )
    return load_taxonomy(version)


# -- the build ---------------------------------------------------------------------------------


def build_features(
    store: Store,
    *,
    snapshot_date: date,
    salt_epoch: str,
    taxonomy_version: str | None = None,
    top_apps: int = 64,
    like: FeatureManifest | None = None,
    customers: CustomerBucket | None = None,
) -> FeatureSet:
    """Return the point-in-time feature set of every customer in bank_features at the snapshot.

    Args:
        store: the bank's store (read-only opens work: the build only reads).
        snapshot_date: the bank extract's date; vendor data counts when its batch was created
            on or before the end of that day (naive UTC, as the store keeps times).
        salt_epoch: the epoch of the match run whose `matches` join customers to vendor keys.
        taxonomy_version: the app and tag ids the columns follow; by default the version of the
            batches used (CURRENT_VERSION when none is).
        top_apps: how many of the most used apps get a column of active days.
        like: a training manifest; its text codes, top apps and taxonomy version are reused so
            that a scoring table has exactly the training columns.
        customers: only this bucket's customers (rows, counts and the manifest's counts are the
            bucket's); needs `like`, `snapshot_manifest`'s or a training manifest, so every
            bucket has the columns and codes of the whole snapshot.
    """
    _check_top_apps(top_apps)
    if customers is not None and like is None:
        raise ConfigError(
            "a bucket's text codes and top apps must be those of the whole snapshot; pass "
            "like=snapshot_manifest(...) (or a training manifest) with customers",
            setting="like",
        )
    where = "" if customers is None else customers.condition("customer_id")
    picked = "" if customers is None else customers.condition("m.customer_id")
    with store.transaction():  # one consistent read of bank and vendor tables
        bank = _read_bank(store, snapshot_date, where)
        vendor = store.execute(
            _PICK_SQL.format(bucket=picked),
            _pick_params(snapshot_date, salt_epoch),
        ).fetch_arrow_table()
        in_matches = _in_matches(store, snapshot_date, salt_epoch, where)
        batch_ids = pc.unique(vendor["batch_id"]).to_pylist() if vendor.num_rows else []
        taxonomy = _resolve_taxonomy(store, batch_ids, taxonomy_version, like)
    return _assemble(
        bank, vendor, in_matches, taxonomy, snapshot_date, salt_epoch, top_apps=top_apps, like=like
    )


def snapshot_manifest(
    store: Store,
    *,
    snapshot_date: date,
    salt_epoch: str,
    taxonomy_version: str | None = None,
    top_apps: int = 64,
) -> FeatureManifest:
    """Return the manifest build_features gives the whole snapshot, from aggregate queries only.

    The `like` of bucketed builds (`CustomerBucket`): text codes are the distinct values of the
    snapshot's bank_features, top apps are counted over every picked vendor row of a customer
    at the snapshot, and the taxonomy version is resolved over every picked batch, as the whole
    build decides them, so the buckets' tables have the whole build's columns and codes. Only
    aggregates leave DuckDB (counts, distinct text values, per-app reach), never a row per
    customer; the columns come from the build's own code run on zero rows.

    Args: as `build_features`.
    """
    _check_top_apps(top_apps)
    params = _pick_params(snapshot_date, salt_epoch)
    with store.transaction():  # one consistent read, as the build's
        bank = _read_bank(store, snapshot_date, " AND false")  # its columns and checks only
        counted = store.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM bank_features "
            "WHERE snapshot_date = ?",
            [snapshot_date],
        ).fetchone()
        rows = int(counted[0]) if counted else 0
        _refuse_repeats(store, snapshot_date, rows - (int(counted[1]) if counted else 0))
        codes = _text_codes(store, bank, snapshot_date)
        usage = _snapshot_usage(store, params)
        in_matches = _in_matches(store, snapshot_date, salt_epoch, "")
        taxonomy = _resolve_taxonomy(store, usage.batch_ids, taxonomy_version, None)
        empty = store.execute(_PICK_SQL.format(bucket=" AND false"), params).fetch_arrow_table()

    apps = taxonomy.apps.sort("app_id")
    decided = FeatureManifest(
        snapshot_date=snapshot_date,
        salt_epoch=salt_epoch,
        taxonomy_version=taxonomy.version,
        rows=0,
        matched=0,
        in_matches=0,
        columns=(),
        codes=codes,
        top_apps=tuple(choose_apps(_reach(usage.reach, taxonomy), apps, top_apps).tolist()),
        batches={},
    )
    shape = _assemble(
        bank, empty, in_matches, taxonomy, snapshot_date, salt_epoch, top_apps=0, like=decided
    ).manifest
    return replace(
        shape,
        rows=rows,
        matched=sum(int(r[1]) for r in usage.used),
        batches={str(r[0]): int(r[1]) for r in usage.used},
        tags={
            **shape.tags,
            "shape": [rows, shape.tags["shape"][1]],
            "nnz": sum(int(r[2]) for r in usage.used),
        },
    )


def _text_codes(
    store: Store, bank: pl.DataFrame, snapshot_date: date
) -> dict[str, tuple[str, ...]]:
    """Return each text column's distinct values at the snapshot, in code order."""
    codes: dict[str, tuple[str, ...]] = {}
    for name, dtype in bank.schema.items():
        if name not in ID_COLUMNS and is_text(dtype):
            quoted = '"' + name.replace('"', '""') + '"'
            values = store.execute(
                f"SELECT DISTINCT {quoted}::VARCHAR FROM bank_features "  # noqa: S608 (quoted name)
                f"WHERE snapshot_date = ? AND {quoted} IS NOT NULL",
                [snapshot_date],
            ).fetchall()
            # sorted by polars, as encode_bank sorts a whole table's values
            codes[name] = tuple(pl.Series(name, [v[0] for v in values], pl.String).sort())
    return codes


@dataclass(frozen=True)
class _SnapshotUsage:
    """Aggregates of the vendor rows picked at a snapshot, as the whole build would pick them."""

    batch_ids: list[str]  # every picked batch
    used: list[tuple[Any, ...]]  # (batch_id, customers, tags) of customers at the snapshot
    reach: list[tuple[Any, ...]]  # (app id, customers using it) of customers at the snapshot


def _snapshot_usage(store: Store, params: dict[str, Any]) -> _SnapshotUsage:
    """Return the batches, per-batch counts and app reach of the snapshot's picked vendor rows."""
    whole = _PICK_SQL.format(bucket="")
    at_snapshot = (  # picked rows of customers at the snapshot, as the build keeps them
        f"SELECT * FROM ({whole}) AS v WHERE v.customer_id IN "  # noqa: S608 (our SQL)
        "(SELECT customer_id FROM bank_features WHERE snapshot_date = $snapshot)"
    )
    batch_ids = [
        str(r[0])
        for r in store.execute(
            f"SELECT DISTINCT batch_id FROM ({whole}) AS v",  # noqa: S608 (our SQL)
            params,
        ).fetchall()
    ]
    used = store.execute(
        f"SELECT batch_id, count(*), sum(coalesce(len(tag_ids), 0)) FROM ({at_snapshot}) "  # noqa: S608 (our SQL)
        "GROUP BY batch_id ORDER BY batch_id",
        params,
    ).fetchall()
    reach = store.execute(
        f"SELECT app, count(*) FROM (SELECT unnest(app_ids) AS app FROM ({at_snapshot})) "  # noqa: S608 (our SQL)
        "WHERE app IS NOT NULL GROUP BY app",
        params,
    ).fetchall()
    return _SnapshotUsage(batch_ids, used, reach)


def _reach(rows: list[tuple[Any, ...]], taxonomy: Taxonomy) -> np.ndarray[Any, Any]:
    """Return customers per app id from (app, count) rows, refusing apps outside the taxonomy."""
    reach = np.zeros(taxonomy.max_app_id + 1, dtype=np.int64)
    known = np.zeros(taxonomy.max_app_id + 1, dtype=bool)
    known[taxonomy.apps["app_id"].to_numpy()] = True
    for app, count in rows:
        if not 0 <= app < known.size or not known[app]:
            raise StoreError(f"vendor_apps holds app ids outside taxonomy {taxonomy.version}")
        reach[app] = count
    return reach


def _check_top_apps(top_apps: int) -> None:
    if top_apps < 0 or isinstance(top_apps, bool):
        raise ConfigError(f"top_apps must be >= 0, got {top_apps!r}", setting="top_apps")


def _pick_params(snapshot_date: date, salt_epoch: str) -> dict[str, Any]:
    cutoff = datetime.combine(snapshot_date + timedelta(days=1), time())
    return {"snapshot": snapshot_date, "epoch": salt_epoch, "cutoff": cutoff}


def _in_matches(store: Store, snapshot_date: date, salt_epoch: str, where: str) -> int:
    """Return how many customers `matches` holds for the snapshot and epoch (within `where`)."""
    condition = f"snapshot_date = ? AND salt_epoch = ?{where}"
    row = store.execute(
        f"SELECT count(DISTINCT customer_id) FROM matches WHERE {condition}",  # noqa: S608 (bucket ints)
        [snapshot_date, salt_epoch],
    ).fetchone()
    return int(row[0]) if row else 0


def _assemble(
    bank: pl.DataFrame,
    vendor: pa.Table,
    in_matches: int,
    taxonomy: Taxonomy,
    snapshot_date: date,
    salt_epoch: str,
    *,
    top_apps: int,
    like: FeatureManifest | None,
) -> FeatureSet:
    """Return the feature set of the `bank` rows fused with their picked `vendor` rows."""
    table_ids = bank["customer_id"].to_numpy()
    vendor_ids = vendor["customer_id"].to_numpy()
    positions = np.searchsorted(table_ids, vendor_ids)
    present = (positions < len(table_ids)) & (
        table_ids[np.minimum(positions, len(table_ids) - 1)] == vendor_ids
    )
    if not present.all():  # matched customers missing from this snapshot's bank_features
        vendor = vendor.filter(pa.array(present))
        positions = positions[present]

    encoded = encode_bank(bank, snapshot_date, codes_like=None if like is None else like.codes)
    external = external_columns(
        vendor, taxonomy, top_apps=top_apps, chosen_apps=None if like is None else like.top_apps
    )
    tags, tag_ids = tag_matrix(bank.height, positions, external.tags, taxonomy)
    tag_sums = np.asarray(tags @ np.ones(tags.shape[1], dtype=np.float64)).ravel()
    block = external.frame.with_columns(
        pl.Series("ext_tag_weight_sum", tag_sums[positions], dtype=pl.Float32),
        pl.Series("customer_id", vendor["customer_id"].to_numpy(), dtype=pl.Int64),
    )
    ext_entries = _entries(external.notes, block.schema)
    ext_entries.append(
        FeatureColumn(
            "ext_tag_weight_sum", "external_tag", "vendor_tags", "Float32", "sum of tag weights"
        )
    )
    fused = encoded.frame.join(block, on="customer_id", how="left", maintain_order="left")
    matched = np.zeros(bank.height, dtype=np.int8)
    matched[positions] = 1
    fused = fused.with_columns(pl.Series("matched", matched))
    entries = [
        *_entries(encoded.notes, encoded.frame.schema),
        *ext_entries,
        FeatureColumn(
            "matched", "flag", "matches", "Int8", "1 = vendor data at the snapshot, 0 = none"
        ),
    ]
    used = pc.value_counts(vendor["batch_id"]).to_pylist() if vendor.num_rows else []
    manifest = FeatureManifest(
        snapshot_date=snapshot_date,
        salt_epoch=salt_epoch,
        taxonomy_version=taxonomy.version,
        rows=fused.height,
        matched=int(matched.sum()),
        in_matches=in_matches,
        columns=tuple(entries),
        codes=encoded.codes,
        top_apps=external.top_apps,
        batches={
            str(v["values"]): int(v["counts"]) for v in sorted(used, key=lambda v: str(v["values"]))
        },
        tags={
            "name": "tags",
            "group": "external_tag",
            "source": "vendor_tags",
            "file": TAGS_FILE,
            "shape": list(tags.shape),
            "nnz": int(tags.nnz),
            "columns": f"tag ids of taxonomy {taxonomy.version}, ascending (array tag_ids)",
        },
    )
    return FeatureSet(fused.select(e.name for e in entries), tags, tag_ids, manifest)


def _entries(notes: Mapping[str, ColumnNote], schema: pl.Schema) -> list[FeatureColumn]:
    """Return the manifest entries of noted columns, typed as `schema` holds them."""
    return [
        FeatureColumn(name, note.group, note.source, str(schema[name]), note.description)
        for name, note in notes.items()
    ]
