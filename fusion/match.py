"""The bank's side of matching: load a customer extract keyed, then intersect with vendor keys.

`load_extract` checks the extract's contract, turns phones into match keys (`matcher.psi`) and
writes, for one snapshot date, the `customers` rows (id, branch, key, key status: never the phone)
and the `bank_features` rows (every extract column but phone and ID number), replacing what that
snapshot held before. `match` joins the snapshot's keyed customers with the newest loaded vendor
rows of the same salt epoch created on or before the snapshot date, in one DuckDB statement,
and writes `matches` plus a `match_runs` row with the counts.

The checks a caller runs before it writes (`fusion.pipeline.matching` does): the snapshot holds
no other extract's customers (`check_same_customers`; `forget_snapshot` clears it for a
replacement), and a vendor batch of the epoch exists by the snapshot date
(`check_vendor_batches`), so a match of nobody is refused with its reason rather than stored.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time

import polars as pl

from contracts.errors import ConfigError, ContractError
from contracts.schemas import BANK_EXTRACT, MatchMode
from contracts.suites import validate_bank_extract
from fusion.store import Store
from matcher.keyed_hash import SaltEpoch
from matcher.psi import CustomerKeys, customer_keys

__all__ = [
    "ExtractLoad",
    "MatchRun",
    "check_extract",
    "check_same_customers",
    "check_vendor_batches",
    "forget_snapshot",
    "keyed_epochs",
    "load_extract",
    "match",
    "store_customers",
]

log = logging.getLogger(__name__)

_RAW = ("phone", "id_number")


@dataclass(frozen=True)
class ExtractLoad:
    """Counts of one extract load; never an identifier."""

    snapshot_date: date
    salt_epoch: str
    customers: int
    keyed: int
    invalid: int
    duplicated: int
    reasons: dict[str, int]


@dataclass(frozen=True)
class MatchRun:
    """Counts of one match run."""

    run_id: str
    snapshot_date: date
    salt_epoch: str
    customers: int
    keyed: int
    invalid: int
    duplicated: int
    matched: int

    @property
    def coverage(self) -> float:
        return self.matched / self.customers if self.customers else 0.0


def load_extract(
    store: Store,
    extract: pl.DataFrame,
    *,
    epoch: SaltEpoch,
    snapshot_date: date,
    now: datetime,
    keys: CustomerKeys | None = None,
) -> ExtractLoad:
    """Validate and key a customer extract; store its keys and features for the snapshot date.

    `keys` are the extract's keys when a bucketed job computed them (`fusion.jobs`); they
    must hold every customer of the extract once, in any order.
    """
    if keys is None:
        keys = customer_keys(extract["customer_id"], extract["phone"], epoch)
    else:
        keys = _aligned(keys, extract)
    check_extract(extract, keys.keys["key_status"])
    store_customers(store, extract, keys.keys, epoch_id=epoch.epoch_id, snapshot_date=snapshot_date)
    log.info(
        "extract %s loaded under epoch %s at %s: %d customers, %d keyed, %d invalid, %d duplicated",
        snapshot_date,
        epoch.epoch_id,
        now.isoformat(timespec="seconds"),
        extract.height,
        keys.keyed,
        keys.invalid,
        keys.duplicated,
    )
    return ExtractLoad(
        snapshot_date=snapshot_date,
        salt_epoch=epoch.epoch_id,
        customers=extract.height,
        keyed=keys.keyed,
        invalid=keys.invalid,
        duplicated=keys.duplicated,
        reasons=keys.reasons,
    )


def _aligned(keys: CustomerKeys, extract: pl.DataFrame) -> CustomerKeys:
    """Return `keys` in the extract's row order; refuse keys of another set of customers."""
    frame = extract.select("customer_id").join(
        keys.keys, on="customer_id", how="left", maintain_order="left"
    )
    if keys.keys.height != extract.height or frame["key_status"].null_count():
        raise ConfigError(
            f"the keys given hold {keys.keys.height:,} customers but the extract "
            f"{extract.height:,}, or other ids; key this same extract",
            setting="keys",
        )
    return CustomerKeys(frame, keys.invalid, keys.duplicated, keys.reasons)


def check_extract(extract: pl.DataFrame, key_status: pl.Series) -> None:
    """Raise ContractError unless the extract passes its contract (`validate_bank_extract`).

    Only phones that fail normalisation count against the contract; a shared phone (family
    members) is valid data that simply cannot be matched.
    """
    if extract.height == 0:
        raise ContractError(
            "the extract has no rows: export the customers of the snapshot again",
            contract=BANK_EXTRACT.contract,
        )
    reasons = key_status.replace({"ok": None, "duplicated": None}).cast(pl.String)
    validate_bank_extract(extract, phone_reasons=reasons).raise_if_failed(
        "fix these rows in the bank's export and run `fusion match` again; nothing was stored"
    )


def store_customers(
    store: Store, extract: pl.DataFrame, keys: pl.DataFrame, *, epoch_id: str, snapshot_date: date
) -> None:
    """Replace the snapshot's customers (id, branch, key, key status) and features.

    Args:
        keys: customer_id, key (null unless ok), key_status: a keyed hash in the salted mode,
            an OPRF label in the OPRF mode. Never a phone: the extract's raw columns stay out.
    """
    customers = (
        keys.select("customer_id", "key", "key_status")
        .join(extract.select("customer_id", "branch_id"), on="customer_id", how="left")
        .with_columns(salt_epoch=pl.lit(epoch_id), snapshot_date=pl.lit(snapshot_date))
    )
    features = extract.drop(_RAW).with_columns(snapshot_date=pl.lit(snapshot_date))
    with store.transaction():
        store.execute(
            "DELETE FROM customers WHERE snapshot_date = ? AND salt_epoch = ?",
            [snapshot_date, epoch_id],
        )
        store.insert_frame("customers", customers)
        if not store.create_table_like("bank_features", features):
            store.execute("DELETE FROM bank_features WHERE snapshot_date = ?", [snapshot_date])
        store.insert_frame("bank_features", features)


# The equi-join on (key, epoch) first, then, when several batches could hold a key, the newest
# loaded batch created by the end of the snapshot date among each customer's hits: the window
# runs over the matches, not over every vendor row. Apps and tags arrive in the same batch, so
# apps decide. With one candidate batch the window is skipped: the batch contract makes keys
# unique within a batch, and the window costs time on every run.
_MATCH_SQL = """
INSERT INTO matches (customer_id, key, salt_epoch, batch_id, matched_at, snapshot_date)
SELECT c.customer_id, c.key, c.salt_epoch, v.batch_id, $now, c.snapshot_date
FROM customers AS c
JOIN vendor_apps AS v ON v.key = c.key AND v.salt_epoch = c.salt_epoch
JOIN batches AS b ON b.batch_id = v.batch_id
WHERE c.snapshot_date = $snapshot AND c.salt_epoch = $epoch AND c.key_status = 'ok'
  AND b.status = 'loaded' AND b.created_at <= $until
"""
_NEWEST_PER_CUSTOMER = """
QUALIFY row_number() OVER (
    PARTITION BY c.customer_id ORDER BY b.created_at DESC, b.finished_at DESC, v.batch_id DESC
) = 1
"""
_CANDIDATE_BATCHES_SQL = """
SELECT count(*) FROM batches
WHERE status = 'loaded' AND salt_epoch = $epoch AND created_at <= $until
"""


_COUNTS_SQL = """
SELECT count(*),
       count(*) FILTER (key_status = 'ok'),
       count(*) FILTER (key_status = 'invalid'),
       count(*) FILTER (key_status = 'duplicated'),
       (SELECT count(*) FROM matches WHERE snapshot_date = $snapshot AND salt_epoch = $epoch)
FROM customers
WHERE snapshot_date = $snapshot AND salt_epoch = $epoch
"""


def match(
    store: Store,
    *,
    epoch_id: str,
    snapshot_date: date,
    now: datetime,
    details: Mapping[str, object] | None = None,
) -> MatchRun:
    """Intersect the snapshot's customers with the vendor's keys of `epoch_id`; return counts.

    `details` is kept with the run (match_runs.reasons, JSON): the OPRF mode's counts of vendor
    rows opened and dropped.
    """
    params = {
        "epoch": epoch_id,
        "snapshot": snapshot_date,
        "until": datetime.combine(snapshot_date, time.max),
        "now": now.replace(tzinfo=None),
    }
    run_id = str(uuid.uuid4())
    with store.transaction():
        store.execute(
            "DELETE FROM matches WHERE snapshot_date = ? AND salt_epoch = ?",
            [snapshot_date, epoch_id],
        )
        # Matches have no order; letting DuckDB drop insertion order lets the insert run on
        # every thread.
        candidates = store.execute(
            _CANDIDATE_BATCHES_SQL, {"epoch": epoch_id, "until": params["until"]}
        ).fetchone()
        sql = _MATCH_SQL if candidates and candidates[0] <= 1 else _MATCH_SQL + _NEWEST_PER_CUSTOMER
        store.execute("SET preserve_insertion_order = false")
        try:
            store.execute(sql, params)
        finally:
            store.execute("RESET preserve_insertion_order")
        row = store.execute(_COUNTS_SQL, {"snapshot": snapshot_date, "epoch": epoch_id}).fetchone()
        assert row is not None
        customers, keyed, invalid, duplicated, matched = (int(x) for x in row)
        store.execute(
            "INSERT INTO match_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                epoch_id,
                snapshot_date,
                customers,
                keyed,
                invalid,
                duplicated,
                matched,
                json.dumps(dict(details or {})),
                params["now"],
            ],
        )
    log.info(
        "match %s (epoch %s, snapshot %s): %d of %d customers matched",
        run_id,
        epoch_id,
        snapshot_date,
        matched,
        customers,
    )
    return MatchRun(run_id, snapshot_date, epoch_id, customers, keyed, invalid, duplicated, matched)


def keyed_epochs(store: Store, snapshot_date: date) -> list[str]:
    """Return the salt epochs under which the snapshot's customers are stored (matched)."""
    rows = store.execute(
        "SELECT DISTINCT salt_epoch FROM customers WHERE snapshot_date = ? ORDER BY salt_epoch",
        [snapshot_date],
    ).fetchall()
    return [str(r[0]) for r in rows]


# Counts only: the stored customers, the extract's, and both (INTERSECT is distinct).
_SAME_CUSTOMERS_SQL = """
WITH stored AS (SELECT customer_id FROM customers WHERE snapshot_date = $snapshot)
SELECT (SELECT count(DISTINCT customer_id) FROM stored),
       (SELECT count(DISTINCT customer_id) FROM {view}),
       (SELECT count(*) FROM (
           SELECT customer_id FROM stored INTERSECT SELECT customer_id FROM {view}
       ))
"""


def check_same_customers(
    store: Store, extract: pl.DataFrame, *, snapshot_date: date, replace: bool = False
) -> bool:
    """Return True when the snapshot holds another extract's customers and `replace` allows
    replacing them (`forget_snapshot` first); False when it holds none or the same ones.

    Matching the same customers again (a new salt epoch, a newer vendor batch) replaces nothing
    the bank made; another extract for the same date would replace the stored one, so without
    `replace` it raises ConfigError.
    """
    if "customer_id" not in extract.columns:
        return False  # the extract's contract names the missing column
    with store.registered(extract.select("customer_id")) as view:
        # `view` is a name the store made (Store.registered), not user text.
        row = store.execute(
            _SAME_CUSTOMERS_SQL.format(view=view), {"snapshot": snapshot_date}
        ).fetchone()
    stored, given, common = (int(x) for x in row) if row else (0, 0, 0)
    if stored == 0 or stored == given == common:
        return False
    if replace:
        return True
    raise ConfigError(
        f"snapshot {snapshot_date} already holds {stored:,} customers of another extract (this "
        f"one has {given:,}, {given - common:,} of them not stored); matching it would replace "
        "them: give this extract its own --snapshot date, or pass --replace to replace the "
        "snapshot's customers and bank features",
        setting="snapshot",
    )


def forget_snapshot(store: Store, snapshot_date: date) -> None:
    """Remove the snapshot's customers, matches and bank features under every salt epoch.

    For an extract that replaces the snapshot's (`--replace`): keys of the old extract under
    other epochs would otherwise outlive the bank features they describe. match_runs keeps the
    history.
    """
    with store.transaction():
        store.execute("DELETE FROM matches WHERE snapshot_date = ?", [snapshot_date])
        store.execute("DELETE FROM customers WHERE snapshot_date = ?", [snapshot_date])
        exists = store.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = 'bank_features'"
        ).fetchone()
        if exists and exists[0]:
            store.execute("DELETE FROM bank_features WHERE snapshot_date = ?", [snapshot_date])


# The loaded salted batches by epoch, the epoch of the newest batch last. A batch without a
# creation date never matches (`_MATCH_SQL` compares it with the snapshot date).
_BATCH_DATES_SQL = """
SELECT salt_epoch, min(created_at)
FROM batches
WHERE status = 'loaded' AND coalesce(mode, 'salted') <> $oprf AND created_at IS NOT NULL
GROUP BY salt_epoch
ORDER BY max(created_at)
"""


def check_vendor_batches(store: Store, *, epoch_id: str, snapshot_date: date) -> None:
    """Raise ConfigError unless a loaded salted vendor batch of `epoch_id` was created by the
    end of `snapshot_date` (without one, every customer would go unmatched)."""
    until = datetime.combine(snapshot_date, time.max)
    found = {
        str(epoch): first
        for epoch, first in store.execute(
            _BATCH_DATES_SQL, {"oprf": MatchMode.OPRF.value}
        ).fetchall()
    }
    if epoch_id in found and found[epoch_id] <= until:
        return
    if epoch_id in found:
        why = (
            f"the first batch of epoch {epoch_id} was created on {found[epoch_id].date()}, after "
            f"{snapshot_date}; match a snapshot dated on or after it, or ingest a batch of the "
            "vendor's data as of that date"
        )
    elif found:
        newest = list(found)[-1]  # the epoch of the newest batch (ordered by the SQL)
        why = (
            f"the loaded batches are under salt epoch {', '.join(sorted(found))}: after a salt "
            f"rotation the vendor packs its data again under {epoch_id} (fusion vendor pack) and "
            f"the bank ingests it; until then match under the old epoch (--epoch {newest})"
        )
    else:
        why = "no vendor batch is loaded at all; ingest the vendor's batch first (fusion ingest)"
    raise ConfigError(
        f"no loaded vendor batch under salt epoch {epoch_id} was created on or before "
        f"{snapshot_date}, so no customer could match; nothing was stored: {why}",
        setting="epoch",
    )
