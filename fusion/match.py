"""The bank's side of matching: load a customer extract keyed, then intersect with vendor keys.

`load_extract` checks the extract's contract, turns identifiers into match keys (`matcher.psi`:
the phone key, or a composite of one key per identifier type of the declared priority) and
writes, for one snapshot date, the `customers` rows (id, branch, key, key status: never a raw
identifier) and the `bank_features` rows (every extract column but the identifiers), replacing
what that snapshot held before. `match` joins the snapshot's keyed customers with the newest
loaded vendor rows of the same salt epoch created on or before the snapshot date, in DuckDB,
and writes `matches` plus a `match_runs` row with the counts.

Several identifiers (mobile number, ID number, device id) match by declared priority, highest
first: every link of the first type is a match (keys are unique per type on both sides, so
links of one type are one to one); a link of a later type is a match only when neither its
customer nor its vendor user (batch and row key) is matched yet. So one customer is matched to
at most one vendor user and one vendor user to at most one customer, and a lower-priority link
that disagrees with a match already made is a conflict, counted (match_runs.conflicts) and
dropped. Per identifier type the run keeps how many customers had a usable key, how many it
linked, how many it matched (what it added beyond the types before it) and its conflicts
(match_runs.by_identifier). When both sides hold only phone keys, one equi-join does it all.

The checks a caller runs before it writes (`fusion.pipeline.matching` does): the snapshot holds
no other extract's customers (`check_same_customers`; `forget_snapshot` clears it for a
replacement), and a vendor batch of the epoch exists by the snapshot date
(`check_vendor_batches`), so a match of nobody is refused with its reason rather than stored.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time

import polars as pl

from contracts.errors import ConfigError, ContractError
from contracts.schemas import BANK_EXTRACT, IDENTIFIER_COLUMNS, IDENTIFIER_TYPES, MatchMode
from contracts.suites import validate_bank_extract
from fusion.store import Store
from matcher.keyed_hash import KEY_BYTES, SaltEpoch
from matcher.psi import (
    DEFAULT_PRIORITY,
    CustomerIdentifiers,
    CustomerKeys,
    check_priority,
    customer_identifiers,
    identifier_keys,
    usable_priority,
)

__all__ = [
    "ExtractLoad",
    "MatchRun",
    "check_extract",
    "check_same_customers",
    "check_vendor_batches",
    "forget_snapshot",
    "identifier_keys_sql",
    "keyed_epochs",
    "links_sql",
    "load_extract",
    "match",
    "phone_statuses",
    "prioritised",
    "priority_counts",
    "store_customers",
]

log = logging.getLogger(__name__)

_RAW = tuple(IDENTIFIER_COLUMNS.values())  # raw identifiers: never stored


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
    """Counts of one match run; `by_identifier` per type: keyed, linked, matched, conflicts."""

    run_id: str
    snapshot_date: date
    salt_epoch: str
    customers: int
    keyed: int
    invalid: int
    duplicated: int
    matched: int
    identifiers: tuple[str, ...] = ("mobile",)
    conflicts: int = 0
    by_identifier: dict[str, dict[str, int]] = field(default_factory=dict)

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
    identifiers: Sequence[str] | None = None,
) -> ExtractLoad:
    """Validate and key a customer extract; store its keys and features for the snapshot date.

    `keys` are the extract's keys when a bucketed job computed them (`fusion.jobs`); they
    must hold every customer of the extract once, in any order. `identifiers` is the declared
    priority (default: every type the extract has a column for, `DEFAULT_PRIORITY`'s order).
    """
    found: CustomerIdentifiers | None = None
    if keys is None:
        found = customer_identifiers(extract, usable_priority(extract.columns, identifiers))
        keys = identifier_keys(found, epoch)
    else:
        keys = _aligned(keys, extract)
    check_extract(extract, phone_statuses(extract, keys, found))
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
    return CustomerKeys(
        frame, keys.invalid, keys.duplicated, keys.reasons, keys.identifiers, keys.by_identifier
    )


def phone_statuses(
    extract: pl.DataFrame,
    keys: CustomerKeys | None = None,
    found: CustomerIdentifiers | None = None,
) -> pl.Series:
    """Return each customer's phone status (ok, invalid, duplicated), which the contract reads."""
    if found is not None and "mobile_status" in found.frame.columns:
        return found.frame["mobile_status"]
    if keys is not None and keys.identifiers == ("mobile",):
        return keys.keys["key_status"]
    return customer_identifiers(extract.select("customer_id", "phone")).frame["mobile_status"]


def check_extract(extract: pl.DataFrame, key_status: pl.Series) -> None:
    """Raise ContractError unless the extract passes its contract (`validate_bank_extract`).

    `key_status` is each customer's phone status. Only phones that fail normalisation count
    against the contract; a shared phone (family members) is valid data that cannot match.
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
    features = extract.drop(_RAW, strict=False).with_columns(snapshot_date=pl.lit(snapshot_date))
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
# The key widths on each side: only phone keys (one width) take the single equi-join. Keys are
# of one width per snapshot (one extract load writes them all) and per batch (the contract), so
# one row of each tells; the candidate batches are few.
_BANK_WIDTH_SQL = """
SELECT octet_length(key) FROM customers
WHERE snapshot_date = $snapshot AND salt_epoch = $epoch AND key IS NOT NULL LIMIT 1
"""
_CANDIDATES_SQL = """
SELECT batch_id FROM batches
WHERE status = 'loaded' AND salt_epoch = $epoch AND created_at <= $until
"""
_BATCH_WIDTH_SQL = "SELECT octet_length(key) FROM vendor_apps WHERE batch_id = $batch LIMIT 1"


def _widths(store: Store, params: Mapping[str, object]) -> tuple[set[int], int]:
    """Return (the key widths of the snapshot's customers and of the candidate batches' rows,
    how many candidate batches there are)."""
    found = store.execute(
        _BANK_WIDTH_SQL, {"snapshot": params["snapshot"], "epoch": params["epoch"]}
    ).fetchall()
    batches = store.execute(
        _CANDIDATES_SQL, {"epoch": params["epoch"], "until": params["until"]}
    ).fetchall()
    for (batch,) in batches:
        found += store.execute(_BATCH_WIDTH_SQL, {"batch": batch}).fetchall()
    return {int(n) for (n,) in found}, len(batches)


_COUNTS_SQL = """
SELECT count(*),
       count(*) FILTER (key_status = 'ok'),
       count(*) FILTER (key_status = 'invalid'),
       count(*) FILTER (key_status = 'duplicated'),
       (SELECT count(*) FROM matches WHERE snapshot_date = $snapshot AND salt_epoch = $epoch)
FROM customers
WHERE snapshot_date = $snapshot AND salt_epoch = $epoch
"""


def _segments(column: str, identifiers: Sequence[str], width: int) -> list[tuple[str, str, str]]:
    """Return (identifier type, condition, key expression) for each type's key in `column`.

    A composite holds one `width`-byte key per IDENTIFIER_TYPES slot; a single-width key is the
    mobile number's (a phone-only extract or a version-1 batch).
    """
    slots = len(IDENTIFIER_TYPES)
    parts = []
    for kind in identifiers:
        at = IDENTIFIER_TYPES.index(kind) * width
        parts.append(
            (kind, f"octet_length({column}) = {slots * width}", f"{column}[{at + 1}:{at + width}]")
        )
        if kind == "mobile":
            parts.append((kind, f"octet_length({column}) = {width}", column))
    return parts


# The sources `match` links: the snapshot's keyed customers, and the vendor rows of the epoch's
# loaded batches created by the snapshot date (row key, batch, its dates).
_BANK_SOURCE = """
SELECT customer_id, key FROM customers
WHERE snapshot_date = $snapshot AND salt_epoch = $epoch AND key_status = 'ok'
"""
_VENDOR_SOURCE = """
SELECT v.key, v.batch_id, b.created_at, b.finished_at
FROM vendor_apps AS v JOIN batches AS b ON b.batch_id = v.batch_id
WHERE v.salt_epoch = $epoch AND b.status = 'loaded' AND b.created_at <= $until
"""


def identifier_keys_sql(identifiers: Sequence[str], width: int, relation: str) -> str:
    """Return a SELECT of every column of `relation` (which has `key`) plus id_type and k: one
    row per identifier key its composite (or single phone) key holds, for each of `identifiers`.
    """
    return " UNION ALL ".join(
        f"SELECT *, '{kind}' AS id_type, {expr} AS k FROM {relation} WHERE {cond}"  # noqa: S608
        for kind, cond, expr in _segments("key", identifiers, width)
    )  # types from check_priority, widths ints and relations of ours: no caller text


def links_sql(identifiers: Sequence[str], width: int, *, bank: str, vendor: str) -> str:
    """Return the SELECT of every link: (customer, vendor row) pairs with equal keys of a type.

    Each identifier key of the vendor is held by the newest batch among those holding it, so a
    key links to one vendor row; a zero key is the bank's gap and links nothing.

    Args:
        identifiers: the declared priority (a link's rank is its type's place in it).
        width: bytes of one identifier's key (32 keyed hash, 16 OPRF label).
        bank: SQL of (customer_id, key) rows; vendor: SQL of (key, batch_id, created_at,
            finished_at) rows. Both built by the caller, never from caller text; `$zero` is
            bound to `width` zero bytes.
    """
    rank = " ".join(f"WHEN '{kind}' THEN {i + 1}" for i, kind in enumerate(identifiers))
    return f"""
WITH bank AS ({bank}), bank_keys AS (
    SELECT customer_id, id_type, k, CASE id_type {rank} END AS rank
    FROM ({identifier_keys_sql(identifiers, width, "bank")}) WHERE k <> $zero
), vendor AS ({vendor}), vendor_keys AS (
    SELECT * FROM ({identifier_keys_sql(identifiers, width, "vendor")})
    QUALIFY row_number() OVER (
        PARTITION BY id_type, k ORDER BY created_at DESC, finished_at DESC, batch_id DESC
    ) = 1
)
SELECT b.customer_id, v.key, v.batch_id, b.id_type, b.rank, b.k
FROM bank_keys AS b JOIN vendor_keys AS v ON v.id_type = b.id_type AND v.k = b.k
"""  # noqa: S608 (built from checked identifier types, integer widths and our own sources)


# A link of rank r is taken when neither its customer nor its vendor row is taken yet; within
# one rank links are one to one, so the order inside a rank does not matter.
_TAKE_SQL = """
INSERT INTO _match_taken
SELECT l.customer_id, l.key, l.batch_id, l.id_type, l.k FROM _match_links AS l
WHERE l.rank = $rank
  AND NOT EXISTS (SELECT 1 FROM _match_taken AS t WHERE t.customer_id = l.customer_id)
  AND NOT EXISTS (SELECT 1 FROM _match_taken AS t WHERE t.key = l.key AND t.batch_id = l.batch_id)
"""
# Per type: customers linked, matched, and links overruled by a match of higher priority.
_BY_TYPE_SQL = """
SELECT l.id_type, count(*) AS linked,
       count(*) FILTER (t.id_type = l.id_type) AS matched,
       count(*) FILTER (t.customer_id IS NULL OR t.key <> l.key OR t.batch_id <> l.batch_id)
           AS conflicts
FROM _match_links AS l
LEFT JOIN _match_taken AS t ON t.customer_id = l.customer_id
GROUP BY l.id_type
"""
# Pairs linked by some type but not matched: the distinct conflicts of the run.
_CONFLICTS_SQL = """
SELECT count(*) FROM (SELECT DISTINCT customer_id, key, batch_id FROM _match_links) AS l
WHERE NOT EXISTS (
    SELECT 1 FROM _match_taken AS t
    WHERE t.customer_id = l.customer_id AND t.key = l.key AND t.batch_id = l.batch_id
)
"""


def _keyed_by_type(
    store: Store, params: Mapping[str, object], identifiers: Sequence[str], width: int
) -> dict[str, int]:
    """Return, per identifier type, the snapshot's customers holding a usable key of it."""
    counts = ", ".join(
        f"count(*) FILTER (({cond}) AND {expr} <> $zero)"
        for _, cond, expr in _segments("key", identifiers, width)
    )
    row = store.execute(
        f"SELECT {counts} FROM customers WHERE snapshot_date = $snapshot "  # noqa: S608 (ours)
        "AND salt_epoch = $epoch AND key_status = 'ok'",
        {"snapshot": params["snapshot"], "epoch": params["epoch"], "zero": params["zero"]},
    ).fetchone()
    keyed = dict.fromkeys(identifiers, 0)
    for (kind, _, _), n in zip(_segments("key", identifiers, width), row or (), strict=False):
        keyed[kind] += int(n)
    return keyed


@contextmanager
def prioritised(
    store: Store, links: str, params: Mapping[str, object], identifiers: Sequence[str]
) -> Iterator[None]:
    """Within the block, `_match_taken` holds the links the priority rule keeps (customer_id,
    key, batch_id, id_type and k, the identifier's key) and `_match_links` every link; both are
    dropped at its end."""
    store.execute(f"CREATE OR REPLACE TEMP TABLE _match_links AS {links}", params)
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _match_taken "
        "(customer_id BIGINT, key BLOB, batch_id VARCHAR, id_type VARCHAR, k BLOB)"
    )
    try:
        for rank in range(1, len(identifiers) + 1):
            store.execute(_TAKE_SQL, {"rank": rank})
        yield
    finally:
        store.execute("DROP TABLE IF EXISTS _match_links")
        store.execute("DROP TABLE IF EXISTS _match_taken")


def priority_counts(store: Store) -> tuple[int, dict[str, tuple[int, int, int]]]:
    """Return (conflicts, per type: linked, matched, conflicts) inside `prioritised`."""
    found = {
        str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in store.execute(_BY_TYPE_SQL).fetchall()
    }
    row = store.execute(_CONFLICTS_SQL).fetchone()
    return (int(row[0]) if row else 0), found


def _match_by_priority(
    store: Store, params: Mapping[str, object], identifiers: Sequence[str], width: int
) -> tuple[int, dict[str, dict[str, int]]]:
    """Insert the matches by declared priority; return (conflicts, counts per type)."""
    links = links_sql(identifiers, width, bank=_BANK_SOURCE, vendor=_VENDOR_SOURCE)
    bound = {k: params[k] for k in ("snapshot", "epoch", "until", "zero")}
    with prioritised(store, links, bound, identifiers):
        store.execute(
            "INSERT INTO matches (customer_id, key, salt_epoch, batch_id, matched_at, "
            "snapshot_date, id_type) SELECT customer_id, key, $epoch, batch_id, $now, $snapshot, "
            "id_type FROM _match_taken",
            {k: params[k] for k in ("epoch", "now", "snapshot")},
        )
        conflicts, found = priority_counts(store)
    keyed = _keyed_by_type(store, params, identifiers, width)
    names = ("keyed", "linked", "matched", "conflicts")
    return conflicts, {
        kind: dict(zip(names, (keyed[kind], *found.get(kind, (0, 0, 0))), strict=True))
        for kind in identifiers
    }


def _match_phones(store: Store, params: Mapping[str, object], candidates: int) -> None:
    """Insert the matches of phone keys on both sides: one equi-join (the fast path; its
    matches' id_type stays NULL, as every match's was before several identifiers)."""
    # Matches have no order; letting DuckDB drop insertion order lets the insert run on
    # every thread.
    sql = _MATCH_SQL if candidates <= 1 else _MATCH_SQL + _NEWEST_PER_CUSTOMER
    store.execute("SET preserve_insertion_order = false")
    try:
        store.execute(sql, {k: params[k] for k in ("epoch", "snapshot", "until", "now")})
    finally:
        store.execute("RESET preserve_insertion_order")


def _resolved_before(
    details: dict[str, object], conflicts: int, by_type: dict[str, dict[str, int]]
) -> tuple[int, dict[str, dict[str, int]]]:
    """Return the run's conflicts and per-type counts, with those a caller resolved before the
    match taken from (and out of) `details`: the OPRF mode links sealed rows it never opens."""
    found = details.pop("conflicts", None)
    links = details.pop("links", None)
    if isinstance(found, int):
        conflicts = found
    if isinstance(links, Mapping):
        for kind, counts in by_type.items():
            counts.update(links.get(kind, {"linked": counts["matched"], "conflicts": 0}))
    return conflicts, by_type


def match(
    store: Store,
    *,
    epoch_id: str,
    snapshot_date: date,
    now: datetime,
    details: Mapping[str, object] | None = None,
    identifiers: Sequence[str] | None = None,
    key_bytes: int = KEY_BYTES,
) -> MatchRun:
    """Intersect the snapshot's customers with the vendor's keys of `epoch_id`; return counts.

    Args:
        identifiers: the declared priority, highest first. None: `DEFAULT_PRIORITY`, of which
            the run keeps the types some customer holds a key of.
        key_bytes: the width of one identifier's key: 32 (keyed hash) or 16 (OPRF label).
        details: kept with the run (match_runs.reasons, JSON): the OPRF mode's counts of vendor
            rows opened and dropped; its `conflicts` and per-type `links` (linked, conflicts),
            when given, are the run's (the OPRF mode resolves them before it opens any row).
    """
    declared = identifiers is not None
    identifiers = check_priority(DEFAULT_PRIORITY if identifiers is None else identifiers)
    params = {
        "epoch": epoch_id,
        "snapshot": snapshot_date,
        "until": datetime.combine(snapshot_date, time.max),
        "now": now.replace(tzinfo=None),
        "zero": bytes(key_bytes),
    }
    run_id = str(uuid.uuid4())
    with store.transaction():
        store.execute(
            "DELETE FROM matches WHERE snapshot_date = ? AND salt_epoch = ?",
            [snapshot_date, epoch_id],
        )
        by_type: dict[str, dict[str, int]] = {}
        widths, candidates = _widths(store, params)
        if widths <= {key_bytes} and "mobile" in identifiers:
            _match_phones(store, params, candidates)
            conflicts = 0
        else:
            conflicts, by_type = _match_by_priority(store, params, identifiers, key_bytes)
        row = store.execute(_COUNTS_SQL, {"snapshot": snapshot_date, "epoch": epoch_id}).fetchone()
        assert row is not None
        customers, keyed, invalid, duplicated, matched = (int(x) for x in row)
        if not by_type:
            by_type = {
                "mobile": {"keyed": keyed, "linked": matched, "matched": matched, "conflicts": 0}
            }
        extra = dict(details or {})
        conflicts, by_type = _resolved_before(extra, conflicts, by_type)
        if not declared:  # the types the extract had: those some customer holds a key of
            held = tuple(t for t in identifiers if by_type.get(t, {}).get("keyed"))
            identifiers = held or identifiers[:1]
            by_type = {t: by_type.get(t, {}) for t in identifiers if t in by_type} or by_type
        run = MatchRun(
            run_id, snapshot_date, epoch_id, customers, keyed, invalid, duplicated, matched,
            identifiers=identifiers, conflicts=conflicts, by_identifier=by_type,
        )  # fmt: skip
        _record_run(store, run, extra, finished_at=now.replace(tzinfo=None))
    log.info(
        "match %s (epoch %s, snapshot %s): %d of %d customers matched, %d conflicts",
        run_id, epoch_id, snapshot_date, matched, customers, conflicts,
    )  # fmt: skip
    return run


def _record_run(
    store: Store, run: MatchRun, reasons: Mapping[str, object], *, finished_at: datetime
) -> None:
    """Insert `run` into match_runs, with `reasons` (JSON) and the time it finished."""
    store.execute(
        "INSERT INTO match_runs (run_id, salt_epoch, snapshot_date, customers, keyed, "
        "invalid, duplicated, matched, reasons, finished_at, identifiers, conflicts, "
        "by_identifier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run.run_id, run.salt_epoch, run.snapshot_date, run.customers, run.keyed,
            run.invalid, run.duplicated, run.matched, json.dumps(dict(reasons)), finished_at,
            ",".join(run.identifiers), run.conflicts, json.dumps(run.by_identifier),
        ],
    )  # fmt: skip


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
