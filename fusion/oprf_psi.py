"""The bank's side of the OPRF match: blind its customers, open only the vendor rows it matched.

Two steps around the vendor's turn (`matcher.oprf_exchange.answer_request`):

1. `request_match` checks the extract's contract as the salted mode does, and blinds, for each
   identifier type of the declared priority in turn, the normalised value of each customer who
   can match by it (`matcher.psi.customer_identifiers`: not invalid, not shared) in customer-id
   order, each on its domain-separated OPRF input (`matcher.oprf_match.oprf_input`), with blinds
   drawn from a fresh 32-byte seed by blocks of rows (`matcher.oprf_match.replay_blinds`). It
   returns the request file to send. The store keeps, in `oprf_requests`, the seed, the
   priority and an HMAC under the seed of the ids and inputs blinded: never an identifier, and
   one seed instead of a blind per input.
2. `finish_match` re-reads the same extract (phones are never stored, and RFC 9497 Finalize
   hashes the input again), checks the HMAC, unblinds and finalises, and derives each input's
   16-byte label and key (`matcher.oprf_match`); a customer's key is its phone label, or with
   several identifiers the composite of one label per type. Reading first, it links the labels
   with the sealed rows of the epoch's loaded OPRF batches in DuckDB and keeps, by the declared
   priority, at most one row per customer and one customer per row (`fusion.match.prioritised`:
   the salted mode's rule, its conflicts counted), then opens those rows only (AES-256-GCM, the
   label as associated data; a v2 row through the row key wrapped under the identifier that
   matched) and checks their lists against the vendor-batch contract. Then, in one
   transaction: the snapshot's customers are stored keyed by label, the opened rows go to
   vendor_apps / vendor_tags keyed by their row label, every sealed row of those batches
   is dropped (a non-matched user's row was never opened; after the match only its count
   remains, in match_runs.reasons), the usual match writes `matches` (`fusion.match.match`), and
   the seed is erased: an answer is used once. A batch whose matched rows do not open or break
   the contract is quarantined in the same transaction, with its report; the others load.

The verifiable mode (VOPRF, RFC 9497 mode 0x01): when the epoch's loaded OPRF batches publish
the vendor's public key (signed in their manifests), the request is blinded in that mode and
keeps the key and the SHA-256 of the elements sent; `finish_match` then refuses, before
anything is unblinded or written, an answer whose batched DLEQ proofs do not verify against that
key for the very elements sent (`matcher.oprf.verify_blocks`). So the vendor cannot evaluate
some customers under another key to split them into groups. Without a published key the request
is in the base mode, as before (`require_proof` refuses that).

Both steps run in this process, or, given an `engine` (`fusion.jobs`), blind and finalise on
it in row chunks (`fusion.jobs.oprf`): the blinds depend only on the seed and a row's position,
so the elements sent and the labels are the same element for element, and so are the matches.
On the cluster only labels are written; the data keys of the matched rows alone are derived
again in this process (`oprf_row_keys`), never on shared storage.

What each side learns: the vendor sees uniformly random group elements and their count (the
number of matchable customers); the bank learns which of its customers are in the batch and
their tags, and of the vendor's other users only how many there were. The vendor's budget caps
the evaluations per epoch, so the bank cannot evaluate the phone space instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TYPE_CHECKING

import polars as pl

from contracts.errors import ConfigError, OprfError
from contracts.schemas import VENDOR_BATCH, MatchMode
from contracts.suites import LABEL_BYTES, ContractReport, RuleResult, validate_vendor_batch
from contracts.taxonomy import load_taxonomy
from fusion.match import (
    MatchRun,
    check_extract,
    identifier_keys_sql,
    links_sql,
    match,
    phone_statuses,
    prioritised,
    priority_counts,
    store_customers,
)
from fusion.store import Store
from matcher.keyed_hash import compose_keys, hmac_digest
from matcher.oprf import OprfMode, blind_with, verify_blocks
from matcher.oprf_exchange import ANSWER, REQUEST, ElementFile
from matcher.oprf_match import (
    SEED_BYTES,
    decode_lists,
    open_rows,
    open_rows_by_identifier,
    oprf_input,
    replay_blinds,
    unblind_labels,
)
from matcher.psi import CustomerIdentifiers, customer_identifiers, usable_priority

if TYPE_CHECKING:
    from fusion.jobs.files import Location
    from fusion.jobs.runner import Engine

__all__ = ["OprfMatchRun", "OprfRequestInfo", "finish_match", "request_match"]

log = logging.getLogger(__name__)

# The inputs MAC names the blinding: a request made before blinds were drawn by blocks of rows
# has a MAC without it, so its answer is refused instead of unblinded into wrong labels.
_MAC_LABEL = b"bankfusion/oprf/request-inputs/v2\n"
_LIST_COLUMNS = [c for c in VENDOR_BATCH.columns if c != "key"]
_OPENED = {
    "key": pl.Binary(),
    "batch_id": pl.String(),
    **{c: VENDOR_BATCH.columns[c] for c in _LIST_COLUMNS},
}


@dataclass(frozen=True)
class OprfRequestInfo:
    """Counts of one request: customers, how many were blinded, why the others were not."""

    request_id: str
    epoch_id: str
    snapshot_date: date
    customers: int
    blinded: int
    invalid: int
    duplicated: int
    reasons: dict[str, int]


@dataclass(frozen=True)
class OprfMatchRun:
    """A finished OPRF match: the match run and what happened to the vendor's sealed rows."""

    run: MatchRun
    request_id: str
    vendor_rows: int  # sealed rows of the epoch's batches the labels were joined with
    opened: int  # rows the bank opened: its matched customers' (one per batch holding them)
    dropped: int  # rows never opened, now deleted: only this count remains of them
    batches: tuple[str, ...]  # batches whose rows were opened (or found none to open)
    quarantined: dict[str, tuple[str, ...]] = field(default_factory=dict)  # batch -> rules
    reasons: dict[str, int] = field(default_factory=dict)  # unusable phones by reason

    def to_dict(self) -> dict[str, object]:
        return _details(
            self.request_id,
            self.vendor_rows,
            self.opened,
            [*self.batches, *self.quarantined],
            self.quarantined,
        )


def _details(
    request_id: str,
    vendor_rows: int,
    opened: int,
    batch_ids: Sequence[str],
    failed: Mapping[str, ContractReport | tuple[str, ...]],
) -> dict[str, object]:
    """Return what match_runs.reasons keeps of an OPRF match: counts and batch ids only."""
    return {
        "mode": MatchMode.OPRF.value,
        "request_id": request_id,
        "vendor_rows": vendor_rows,
        "opened": opened,
        "dropped_unopened": vendor_rows - opened,
        "batches": sorted(b for b in batch_ids if b not in failed),
        "quarantined": {
            b: list(r.failed if isinstance(r, ContractReport) else r) for b, r in failed.items()
        },
    }


def request_match(
    store: Store,
    extract: pl.DataFrame,
    *,
    epoch_id: str,
    snapshot_date: date,
    now: datetime,
    workers: int | None = None,
    engine: Engine | None = None,
    job_dir: Location | None = None,
    require_proof: bool = False,
    identifiers: Sequence[str] | None = None,
) -> tuple[OprfRequestInfo, ElementFile]:
    """Blind the extract's matchable customers for the vendor's OPRF epoch `epoch_id`.

    In the verifiable mode when the epoch's loaded OPRF batches publish a public key (the
    answer must then carry proofs for it), else in the base mode.

    Returns the request's counts and the file to send (`ElementFile.write`). Nothing of the
    extract is stored yet: `finish_match` stores it with the match.

    Args:
        workers: OPRF threads in this process; every core by default.
        engine: where to blind: None in this process; else the bucketed job `oprf_blind` on
            this engine (the same elements).
        job_dir: with an engine, the folder its job files go to, one the workers can reach (a
            shared mount or object store for a remote cluster); None: a temporary folder on
            this machine (in-process or a local cluster). The files are removed at the end.
        require_proof: refuse to make a base-mode request (no loaded batch of the epoch
            publishes a key yet).
        identifiers: the declared priority, highest first (default: every type the extract
            has a column for, mobile number > ID number > device id).

    Raises:
        ContractError: the extract breaks its contract (nothing is kept).
        ConfigError: the epoch's batches disagree on their key, or `require_proof` and none
            publishes one.
    """
    found = _identifiers(extract, usable_priority(extract.columns, identifiers))
    public = _published_key(store, epoch_id, snapshot_date)
    if require_proof and public is None:
        raise ConfigError(
            f"no loaded OPRF batch of epoch {epoch_id!r} by {snapshot_date} publishes the "
            "vendor's VOPRF public key, so its answer could not be verified; ingest the "
            "vendor's verifiable batch (fusion vendor pack --mode oprf) first",
            setting="epoch",
        )
    mode = OprfMode.OPRF if public is None else OprfMode.VOPRF
    inputs, seed = _inputs(found), secrets.token_bytes(SEED_BYTES)
    request_id = str(uuid.uuid4())
    blinded = _blind(inputs, seed, mode, workers=workers, engine=engine, job_dir=job_dir)
    with store.transaction():
        store.execute(
            "INSERT INTO oprf_requests (request_id, salt_epoch, snapshot_date, customers, "
            "blinded, inputs_mac, blind_seed, created_at, oprf_public_key, blinded_sha256, "
            "identifiers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                request_id,
                epoch_id,
                snapshot_date,
                extract.height,
                len(inputs),
                _inputs_mac(seed, found),
                seed,
                now.replace(tzinfo=None),
                public,
                hashlib.sha256(b"".join(blinded)).digest() if public else None,
                ",".join(found.identifiers),
            ],
        )
    log.info(
        "OPRF request %s (epoch %s, snapshot %s): %d of %d customers blinded",
        request_id,
        epoch_id,
        snapshot_date,
        len(inputs),
        extract.height,
    )
    info = OprfRequestInfo(
        request_id=request_id,
        epoch_id=epoch_id,
        snapshot_date=snapshot_date,
        customers=extract.height,
        blinded=len(inputs),
        invalid=found.invalid,
        duplicated=found.duplicated,
        reasons=found.reasons,
    )
    return info, ElementFile(REQUEST, request_id, epoch_id, tuple(blinded), mode)


def finish_match(
    store: Store,
    extract: pl.DataFrame,
    answer: ElementFile,
    *,
    now: datetime,
    workers: int | None = None,
    engine: Engine | None = None,
    job_dir: Location | None = None,
) -> OprfMatchRun:
    """Apply the vendor's answer: store the customers keyed by label, open the matched rows,
    drop the rest and write the snapshot's matches. See the module docstring.

    Args:
        extract: the extract the request was made from (the same ids and phones).
        answer: the vendor's answer to a request this store made and has not used.
        workers: OPRF threads in this process; every core by default.
        engine: where to finalise: None in this process; else the bucketed job `oprf_finalize`
            on this engine (the same labels, so the same matches).
        job_dir: as for `request_match`.

    Raises:
        OprfError: the answer is not for a pending request of this store, holds invalid
            elements, or (verifiable mode) its proofs fail; nothing is written and the request
            stays pending.
        ConfigError: the extract is not the one the request was made from, or no OPRF batch
            of the epoch is loaded for the snapshot; nothing is written, the request stays
            pending.
    """
    if answer.kind != ANSWER:
        raise ConfigError("finish_match takes the vendor's answer file", setting="answer")
    epoch_id, snapshot_date, seed, identifiers = _pending(store, answer)
    found = _identifiers(extract, identifiers)
    _check_inputs(store, answer.request_id, seed, found)
    _check_proofs(store, answer, workers=workers)
    labels, keys_of = _unblind(
        _inputs(found), answer.elements, seed, workers=workers, engine=engine, job_dir=job_dir
    )
    batches = _oprf_batches(store, epoch_id, snapshot_date)
    if (_published_key(store, epoch_id, snapshot_date) is None) != (answer.mode is OprfMode.OPRF):
        raise ConfigError(
            f"request {answer.request_id} was made in the {answer.mode.name} mode, but the "
            f"loaded batches of epoch {epoch_id!r} are sealed in the other one, so no label "
            "would match; make a new request now that the batches are in",
            setting="answer",
        )
    ids = [b for b, _ in batches]
    vendor_rows = _count_rows(store, ids)
    keys = _label_keys(found, labels)
    taken, resolved = _assign(store, keys, ids, identifiers)
    opened, failed = _open_matched(
        store, taken, dict(batches), _request_rows(found), keys_of, identifiers
    )
    details = _details(answer.request_id, vendor_rows, opened.height, ids, failed)
    with store.transaction():
        store_customers(store, extract, keys, epoch_id=epoch_id, snapshot_date=snapshot_date)
        _load_opened(store, epoch_id, ids, opened, failed, now)
        done = OprfMatchRun(
            run=match(
                store,
                epoch_id=epoch_id,
                snapshot_date=snapshot_date,
                now=now,
                details=details | resolved,
                identifiers=identifiers,
                key_bytes=LABEL_BYTES,
            ),
            request_id=answer.request_id,
            vendor_rows=vendor_rows,
            opened=opened.height,
            dropped=vendor_rows - opened.height,
            batches=tuple(b for b in ids if b not in failed),
            quarantined={b: r.failed for b, r in failed.items()},
            reasons=found.reasons,
        )
        store.execute(
            "UPDATE oprf_requests SET blind_seed = NULL, finished_at = ? WHERE request_id = ?",
            [now.replace(tzinfo=None), answer.request_id],
        )
    log.info(
        "OPRF match %s: %d vendor rows, %d opened, %d dropped unopened, %d batches quarantined",
        answer.request_id,
        vendor_rows,
        opened.height,
        vendor_rows - opened.height,
        len(failed),
    )
    return done


# -- blinding and unblinding, in this process or on an engine ------------------------------------

_KeysOf = Callable[[Sequence[int]], list[bytes]]
"""Returns the data keys of the request rows asked for (ascending positions)."""


@contextmanager
def _job_folder(job_dir: Location | None) -> Iterator[str]:
    """Yield a fresh folder for one job's files; remove it, and them, when the block ends."""
    from fusion.jobs.files import join_path, remove

    if job_dir is None:
        with tempfile.TemporaryDirectory(prefix="bankfusion-oprf-") as folder:
            yield folder
        return
    folder = join_path(job_dir, f"oprf-{uuid.uuid4().hex[:12]}")
    try:
        yield folder
    finally:
        remove(folder)


def _input_frame(inputs: Sequence[bytes]) -> pl.DataFrame:
    return pl.DataFrame({"input": inputs}, schema={"input": pl.Binary})


def _blind(
    inputs: Sequence[bytes],
    seed: bytes,
    mode: OprfMode,
    *,
    workers: int | None,
    engine: Engine | None,
    job_dir: Location | None,
) -> list[bytes]:
    """Return the blinded elements of `inputs` under `seed`, in this process or on `engine`."""
    if engine is None:
        return blind_with(inputs, replay_blinds(inputs, seed).blinds, mode=mode, workers=workers)
    from fusion.jobs.oprf import oprf_blind

    with _job_folder(job_dir) as folder:
        parts = oprf_blind(engine, _input_frame(inputs), seed, f"{folder}/blinded", mode=mode)
        return [bytes(b) for b in parts.read()["blinded"]]


def _unblind(
    inputs: Sequence[bytes],
    evaluated: Sequence[bytes],
    seed: bytes,
    *,
    workers: int | None,
    engine: Engine | None,
    job_dir: Location | None,
) -> tuple[list[bytes], _KeysOf]:
    """Return the labels of the request's rows and how to get the data keys of some of them.

    In this process every data key is derived with its label; on an engine only labels come
    back, and the data keys of the rows asked for are derived again here, when asked.
    """
    if engine is None:
        labels, data_keys = unblind_labels(replay_blinds(inputs, seed), evaluated, workers=workers)
        return labels, lambda rows: [data_keys[i] for i in rows]
    from fusion.jobs.oprf import oprf_finalize, oprf_row_keys

    frame = _input_frame(inputs)
    answer = pl.DataFrame({"evaluated": evaluated}, schema={"evaluated": pl.Binary})
    with _job_folder(job_dir) as folder:
        parts = oprf_finalize(engine, frame, answer, seed, f"{folder}/labels")
        labels = [bytes(label) for label in parts.read()["label"]]

    def keys_of(rows: Sequence[int]) -> list[bytes]:
        return oprf_row_keys(frame, answer, seed, rows, workers=workers)[1]

    return labels, keys_of


# -- internals ----------------------------------------------------------------------------------


def _identifiers(extract: pl.DataFrame, identifiers: Sequence[str]) -> CustomerIdentifiers:
    found = customer_identifiers(extract, identifiers)
    check_extract(extract, phone_statuses(extract, found=found))
    return found


def _request_rows(found: CustomerIdentifiers) -> pl.DataFrame:
    """Return the request's rows in order: customer_id, id_type, and the normalised value.

    For each identifier type of the priority in turn, the customers who can match by it, in
    customer-id order (the mobile number alone: the order of requests made before several
    identifiers existed).
    """
    frame = found.frame
    return pl.concat(
        [
            frame.filter(pl.col(f"{kind}_status") == "ok")
            .sort("customer_id")
            .select("customer_id", id_type=pl.lit(kind), value=pl.col(kind))
            for kind in found.identifiers
        ]
    )


def _inputs(found: CustomerIdentifiers) -> list[bytes]:
    """Return the OPRF inputs of the request's rows (domain-separated per identifier type)."""
    rows = _request_rows(found)
    return [oprf_input(kind, value) for kind, value in rows.select("id_type", "value").iter_rows()]


def _inputs_mac(seed: bytes, found: CustomerIdentifiers, *, label: bytes = _MAC_LABEL) -> bytes:
    """Return HMAC-SHA256 under the request's seed of its ordered (customer id, input) pairs."""
    rows = _request_rows(found).with_columns(input=pl.Series(_inputs(found), dtype=pl.Binary))
    lines = "\n".join(
        f"{customer}:{data.decode('ascii')}"
        for customer, data in rows.select("customer_id", "input").iter_rows()
    )
    return hmac_digest(seed, label + lines.encode("ascii"))


def _check_inputs(store: Store, request_id: str, seed: bytes, found: CustomerIdentifiers) -> None:
    """Raise unless `found` holds the very ids and phones the request blinded, the same way."""
    stored = _stored_mac(store, request_id)
    if secrets.compare_digest(_inputs_mac(seed, found), stored):
        return
    if secrets.compare_digest(_inputs_mac(seed, found, label=b""), stored):
        raise ConfigError(
            f"request {request_id} was made by an earlier bankfusion, which drew its blinds "
            "another way, so its answer cannot be unblinded here; make a new request from this "
            "extract",
            setting="answer",
        )
    raise ConfigError(
        f"the extract is not the one request {request_id} was made from (its matchable "
        "customers or their phones differ); pass that same extract, or make a new request from "
        "this one",
        setting="extract",
    )


def _published_key(store: Store, epoch_id: str, snapshot_date: date) -> str | None:
    """Return the VOPRF public key (hex) the epoch's loaded OPRF batches publish, or None.

    Batches of one epoch must agree: all with the same key, or all without one (base mode).
    """
    until = datetime.combine(snapshot_date, time.max)
    keys = {
        row[0]
        for row in store.execute(
            "SELECT DISTINCT oprf_public_key FROM batches WHERE status = 'loaded' AND mode = ? "
            "AND salt_epoch = ? AND created_at <= ?",
            [MatchMode.OPRF.value, epoch_id, until],
        ).fetchall()
    }
    if len(keys) > 1:
        raise ConfigError(
            f"the loaded OPRF batches of epoch {epoch_id!r} do not agree on the vendor's VOPRF "
            f"public key ({len(keys - {None})} keys, {'some' if None in keys else 'none'} "
            "without one); one epoch has one key: ask the vendor to pack the epoch again",
            setting="epoch",
        )
    return next(iter(keys), None)


def _check_proofs(store: Store, answer: ElementFile, *, workers: int | None) -> None:
    """Raise OprfError unless the answer proves itself as its request's mode asks (VOPRF)."""
    row = store.execute(
        "SELECT oprf_public_key, blinded_sha256 FROM oprf_requests WHERE request_id = ?",
        [answer.request_id],
    ).fetchone()
    public, digest = row if row else (None, None)
    wanted = OprfMode.OPRF if public is None else OprfMode.VOPRF
    if answer.mode is not wanted:
        raise OprfError(
            f"request {answer.request_id} was made in the {wanted.name} mode, the answer is "
            f"{answer.mode.name}; ask the vendor to answer the request file as sent",
            item="answer file",
        )
    if public is None:
        return
    echoed = hashlib.sha256(b"".join(answer.echo)).digest()
    if not secrets.compare_digest(echoed, bytes(digest)):
        raise OprfError(
            f"the answer to request {answer.request_id} echoes other blinded elements than the "
            "ones sent; refused, nothing written: ask the vendor to answer the request as sent",
            item="answer file",
        )
    block = verify_blocks(
        bytes.fromhex(public), answer.echo, answer.elements, answer.proofs, workers=workers
    )
    if block is not None:
        log.warning("OPRF answer %s: proof of block %d fails", answer.request_id, block)
        raise OprfError(
            f"the vendor's answer to request {answer.request_id} fails its VOPRF proof (block "
            f"{block}): some elements were not evaluated under the key the vendor's batches "
            "published, which could split the bank's customers into groups; refused, nothing "
            "written, the request stays pending: raise it with the vendor",
            item="proof",
        )


def _label_keys(found: CustomerIdentifiers, labels: Sequence[bytes]) -> pl.DataFrame:
    """Return customer_id, key and key_status: each matchable customer's phone label, or with
    several identifiers the composite of its labels (zeros where it has none), else null."""
    rows = _request_rows(found).with_columns(label=pl.Series(labels, dtype=pl.Binary))
    frame = found.frame.select("customer_id", "key_status")
    parts = {}
    for kind in found.identifiers:
        mine = rows.filter(pl.col("id_type") == kind).select("customer_id", "label")
        parts[kind] = frame.join(mine, on="customer_id", how="left", maintain_order="left")["label"]
    if found.identifiers == ("mobile",):
        key = parts["mobile"]
    else:
        composite = compose_keys(parts, LABEL_BYTES)
        key = pl.select(pl.when(frame["key_status"] == "ok").then(composite)).to_series()
    return frame.with_columns(key=key.alias("key")).select("customer_id", "key", "key_status")


def _assign(
    store: Store, keys: pl.DataFrame, batch_ids: Sequence[str], identifiers: Sequence[str]
) -> tuple[pl.DataFrame, dict[str, object]]:
    """Return (customer_id, key = row label, batch_id, id_type of each row to open; the run's
    conflicts and, per type, its links and conflicts: what only this step sees).

    The salted mode's priority rule over the sealed rows' labels: a customer gets at most one
    row, a row at most one customer, before anything is opened.
    """
    kinds = {"customer_id": pl.Int64, "batch_id": pl.String, "id_type": pl.String}
    empty = pl.DataFrame(schema=kinds | {"key": pl.Binary, "k": pl.Binary})
    if not batch_ids:
        return empty, {}
    with store.registered(keys.filter(pl.col("key").is_not_null())) as view:
        links = links_sql(
            identifiers,
            LABEL_BYTES,
            bank=f"SELECT customer_id, key FROM {view}",  # noqa: S608 (view is ours)
            vendor="SELECT r.label AS key, r.batch_id, b.created_at, b.finished_at "
            "FROM vendor_oprf_rows AS r JOIN batches AS b ON b.batch_id = r.batch_id "
            "WHERE list_contains($batches, r.batch_id)",
        )
        params = {"zero": bytes(LABEL_BYTES), "batches": list(batch_ids)}
        with prioritised(store, links, params, identifiers):
            taken = store.execute("SELECT * FROM _match_taken ORDER BY batch_id, customer_id").pl()
            conflicts, found = priority_counts(store)
    per_type = {kind: {"linked": n[0], "conflicts": n[2]} for kind, n in found.items()}
    return (taken if taken.height else empty), {"conflicts": conflicts, "links": per_type}


def _oprf_batches(store: Store, epoch_id: str, snapshot_date: date) -> list[tuple[str, str]]:
    """Return (batch_id, taxonomy version) of the epoch's loaded OPRF batches by the snapshot."""
    until = datetime.combine(snapshot_date, time.max)
    batches = [
        (str(b), str(t))
        for b, t in store.execute(
            "SELECT batch_id, taxonomy_version FROM batches WHERE status = 'loaded' "
            "AND mode = ? AND salt_epoch = ? AND created_at <= ? ORDER BY batch_id",
            [MatchMode.OPRF.value, epoch_id, until],
        ).fetchall()
    ]
    if not batches:
        # Before anything is written: the request stays pending, so the same answer can be
        # used once the batch is in (a new request would spend the vendor's budget again).
        raise ConfigError(
            f"no loaded OPRF batch of epoch {epoch_id!r} was created on or before {snapshot_date}"
            ", so there is nothing to open; ingest the vendor's batch for this snapshot, then run"
            " the match again with the same answer",
            setting="answer",
        )
    return batches


def _load_opened(
    store: Store,
    epoch_id: str,
    batch_ids: Sequence[str],
    opened: pl.DataFrame,
    failed: Mapping[str, ContractReport],
    now: datetime,
) -> None:
    """Quarantine the failed batches, load the opened rows, drop every sealed row of the batches.

    Runs inside the caller's transaction.
    """
    for batch_id, report in failed.items():
        _quarantine(store, batch_id, report, now)
    if opened.height:
        tagged = opened.with_columns(salt_epoch=pl.lit(epoch_id))
        store.insert_frame(
            "vendor_apps",
            tagged.select("key", "salt_epoch", "batch_id", "app_ids", "app_days", "app_sessions"),
        )
        store.insert_frame(
            "vendor_tags",
            tagged.select("key", "salt_epoch", "batch_id", "tag_ids", "tag_weights"),
        )
    if batch_ids:
        store.execute(
            "DELETE FROM vendor_oprf_rows WHERE list_contains(?, batch_id)", [list(batch_ids)]
        )


def _pending(store: Store, answer: ElementFile) -> tuple[str, date, bytes, tuple[str, ...]]:
    row = store.execute(
        "SELECT salt_epoch, snapshot_date, blinded, blind_seed, identifiers FROM oprf_requests "
        "WHERE request_id = ?",
        [answer.request_id],
    ).fetchone()
    if row is None:
        raise OprfError(
            f"no OPRF request {answer.request_id} was made from this store; answer files are "
            "read by the bank that wrote the request",
            item="answer file",
        )
    epoch_id, snapshot_date, blinded, seed, identifiers = row
    if seed is None:
        raise OprfError(
            f"request {answer.request_id} was already answered and used; make a new request "
            "for a new match",
            item="answer file",
        )
    if answer.epoch_id != epoch_id or len(answer) != blinded:
        raise OprfError(
            f"the answer does not fit request {answer.request_id} (epoch {answer.epoch_id!r} "
            f"with {len(answer):,} elements, expected {epoch_id!r} with {blinded:,}); ask the "
            "vendor to answer the request file as sent",
            item="answer file",
        )
    # A request made before several identifiers existed blinded phones only.
    priority = tuple(str(identifiers).split(",")) if identifiers else ("mobile",)
    return str(epoch_id), snapshot_date, bytes(seed), priority


def _stored_mac(store: Store, request_id: str) -> bytes:
    row = store.execute(
        "SELECT inputs_mac FROM oprf_requests WHERE request_id = ?", [request_id]
    ).fetchone()
    assert row is not None  # _pending found it
    return bytes(row[0])


def _count_rows(store: Store, batch_ids: Sequence[str]) -> int:
    if not batch_ids:
        return 0
    row = store.execute(
        "SELECT count(*) FROM vendor_oprf_rows WHERE list_contains(?, batch_id)", [batch_ids]
    ).fetchone()
    return int(row[0]) if row else 0


def _open_matched(
    store: Store,
    taken: pl.DataFrame,
    taxonomies: dict[str, str],
    request_rows: pl.DataFrame,
    keys_of: _KeysOf,
    identifiers: Sequence[str],
) -> tuple[pl.DataFrame, dict[str, ContractReport]]:
    """Return (opened rows with key = row label and batch_id, failed batches' reports).

    For each match the priority rule made, the rows holding its identifier's label are read in
    every batch of the epoch (the match keeps the newest; an older batch's row is its fallback
    should the newest not open); then the keys of the request rows that matched alone are asked
    for, and each batch's rows are opened and checked on their own, so one bad batch is
    quarantined without holding back the others.
    """
    empty = pl.DataFrame(schema=_OPENED)
    if taken.is_empty():
        return empty, {}
    position = request_rows.select("customer_id", "id_type").with_row_index("idx")
    sealed_rows = (
        "(SELECT label AS key, sealed, batch_id FROM vendor_oprf_rows "
        "WHERE list_contains($batches, batch_id)) AS r"
    )
    with store.registered(taken.join(position, on=["customer_id", "id_type"])) as view:
        hits = store.execute(
            f"SELECT r.batch_id, t.idx, t.id_type, r.key AS label, r.sealed FROM {view} AS t "  # noqa: S608
            f"JOIN ({identifier_keys_sql(identifiers, LABEL_BYTES, sealed_rows)}) AS r "
            "ON r.id_type = t.id_type AND r.k = t.k ORDER BY r.batch_id, t.idx",
            {"batches": list(taxonomies)},
        ).pl()
    wanted = sorted(set(hits["idx"].to_list()))
    data_keys = dict(zip(wanted, keys_of(wanted) if wanted else [], strict=True))
    frames, failed = [], {}
    for (batch_id,), part in hits.group_by("batch_id", maintain_order=True):
        row_keys = [data_keys[i] for i in part["idx"].to_list()]
        labels, sealed = part["label"].to_list(), part["sealed"].to_list()
        try:
            if len(labels[0]) == LABEL_BYTES:  # layout v1: sealed under the phone label's key
                payloads = open_rows(sealed, labels, row_keys)
            else:
                payloads = open_rows_by_identifier(
                    sealed, labels, part["id_type"].to_list(), row_keys
                )
            lists = decode_lists(payloads)
        except OprfError as exc:
            failed[str(batch_id)] = _unopened_report(str(batch_id), part.height, exc)
            continue
        rows = lists.with_columns(key=pl.Series(labels, dtype=pl.Binary)).select(
            "key", *_LIST_COLUMNS
        )
        report = validate_vendor_batch(
            rows,
            taxonomy=load_taxonomy(taxonomies[str(batch_id)]),
            expected_rows=rows.height,
            batch_id=str(batch_id),
            key_bytes=LABEL_BYTES,
        )
        if not report.passed:
            failed[str(batch_id)] = report
            continue
        frames.append(rows.with_columns(batch_id=pl.lit(str(batch_id))))
    opened = pl.concat(frames).select("key", "batch_id", *_LIST_COLUMNS) if frames else empty
    return opened, failed


def _unopened_report(batch_id: str, rows: int, error: OprfError) -> ContractReport:
    rule = RuleResult(
        rule="matched_rows_open",
        description="every matched row opens with the key derived with its label, in layout v1",
        passed=False,
        failed_rows=1,
        example_rows=() if error.index is None else (error.index,),
    )
    return ContractReport(
        contract="vendor_oprf_batch/v1", rows=rows, rules=(rule,), batch_id=batch_id
    )


def _quarantine(store: Store, batch_id: str, report: ContractReport, now: datetime) -> None:
    store.execute(
        "UPDATE batches SET status = 'quarantined', reasons = ?, report = ?, finished_at = ? "
        "WHERE batch_id = ?",
        [
            json.dumps(list(report.failed)),
            json.dumps(report.to_dict()),
            now.replace(tzinfo=None),
            batch_id,
        ],
    )
    log.warning(
        "OPRF batch %s quarantined at match time: its matched rows broke %s; ask the vendor to "
        "pack it again",
        batch_id,
        ", ".join(report.failed),
    )
