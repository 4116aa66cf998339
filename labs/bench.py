"""Benchmarks behind `make bench`: each figure is measured beside a baseline in the same run.

A figure is a value, its unit, the baseline measured in the same process on the same inputs,
and their ratio oriented so that > 1 means "better than the baseline" for rates and "faster than
the budget" for times. Results go to `<out>/latest.json` (and a timestamped copy) and print as a
table. Speed is never asserted by unit tests; the targets here are checked and reported.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash

if TYPE_CHECKING:
    from labs.scale import ScaleRun

__all__ = ["BENCHMARKS", "Figure", "run_benchmarks"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure with the baseline it is judged against."""

    name: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


Benchmark = Callable[[Path], Iterator[Figure]]


def _best_of(
    fn: Callable[[], object], repeats: int, *, setup: Callable[[], object] | None = None
) -> float:
    """Return the shortest wall time of `repeats` calls (the least disturbed run).

    `setup` runs untimed before each call (e.g. `os.sync`, so that one pass's fsync does not
    pay for the write-back of the files the previous pass left dirty).
    """
    best = float("inf")
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _random_mobiles(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    second = rng.choice(list("3456789"), size=n)
    rest = rng.integers(0, 10**9, size=n)
    return [f"1{s}{r:09d}" for s, r in zip(second, rest, strict=True)]


def bench_keyed_hash(work: Path, *, n: int = 2_000_000) -> Iterator[Figure]:
    """Keyed hashing keys/s against a single-thread hashlib.sha256 loop over the same strings."""
    del work
    phones = _random_mobiles(n, seed=11)
    messages = [f"mobile|{p}" for p in phones]
    series = normalize_phones(pl.Series("phone", phones)).values
    epoch = SaltEpoch.generate("bench")
    sha256 = hashlib.sha256

    def plain() -> None:
        for m in messages:
            sha256(m.encode()).digest()

    baseline = n / _best_of(plain, 2)
    value = n / _best_of(lambda: keyed_hash(series, epoch, domain="mobile"), 3)
    ratio = value / baseline
    yield Figure(
        name="keyed_hash.keys_per_s",
        value=value,
        unit="keys/s",
        baseline=baseline,
        baseline_name="hashlib.sha256 loop, 1 thread, same strings",
        ratio=ratio,
        target=">= 0.9x",
        met=ratio >= 0.9,
        note=f"{n:,} keys; HMAC-SHA256 (2 compressions) vs plain SHA-256 (1)",
    )


def bench_world(work: Path, *, customers: int = 1_000_000) -> Iterator[Figure]:
    """World generation seconds for 1M customers against the 30 s budget."""
    from labs.world import WorldConfig, generate_world

    out = work / "world-1m"
    start = time.perf_counter()
    summary = generate_world(WorldConfig(customers=customers, seed=1), out)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    budget = 30.0
    yield Figure(
        name="world.generate_1m_s",
        value=seconds,
        unit="s",
        baseline=budget,
        baseline_name="budget (issue target)",
        ratio=budget / seconds,
        target="<= 30 s",
        met=seconds <= budget,
        note=f"{summary.bank_customers:,} customers, {summary.vendor_users:,} vendor users",
    )


def synthetic_batch(n: int, *, seed: int = 1, tags: int = 47, apps: int = 30) -> pl.DataFrame:
    """Return a valid vendor batch of `n` rows with fixed list lengths, built without row loops."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    keys = pa.array(np.frombuffer(rng.bytes(32 * n), dtype="S32"), type=pa.binary(32))

    def lists(values: np.ndarray, k: int) -> pa.ListArray:
        offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values))

    # Consecutive tag ids from a random start: distinct within a row, valid in the taxonomy.
    start = rng.integers(0, 10_400 - tags, n)[:, None]
    tag_ids = (start + np.arange(tags)[None, :] + 1).astype(np.int32).ravel()
    table = pa.table(
        {
            "key": keys.cast(pa.binary()),
            "app_ids": lists(rng.integers(1, 1301, n * apps).astype(np.int32), apps),
            "app_days": lists(rng.integers(1, 31, n * apps).astype(np.int16), apps),
            "app_sessions": lists(rng.integers(0, 200, n * apps).astype(np.int32), apps),
            "tag_ids": lists(tag_ids, tags),
            "tag_weights": lists(rng.uniform(0.01, 1, n * tags).astype(np.float32), tags),
        }
    )
    return pl.DataFrame(pl.from_arrow(table))


def bench_contracts(work: Path, *, n: int = 1_000_000) -> Iterator[Figure]:
    """Vendor-batch contract rows/s (warm GX) against the 0.5M rows/s requirement."""
    del work
    from contracts.suites import validate_vendor_batch
    from contracts.taxonomy import load_taxonomy

    batch = synthetic_batch(n)
    taxonomy = load_taxonomy()
    start = time.perf_counter()
    validate_vendor_batch(batch, taxonomy=taxonomy, expected_rows=n)
    cold = time.perf_counter() - start
    warm = _best_of(lambda: validate_vendor_batch(batch, taxonomy=taxonomy, expected_rows=n), 2)
    required = 500_000.0
    yield Figure(
        name="contracts.vendor_batch_rows_per_s",
        value=n / warm,
        unit="rows/s",
        baseline=required,
        baseline_name="requirement",
        ratio=n / warm / required,
        target=">= 0.5M rows/s",
        met=n / warm >= required,
        note=f"13 GX rules on {n:,} rows; first call incl. GX import {cold:.2f} s",
    )


def bench_envelope(work: Path, *, megabytes: int = 256, rounds: int = 5) -> Iterator[Figure]:
    """Sealed-batch open MB/s against raw AES-256-GCM passes over the same bytes and chunks.

    Both baselines are measured in this run, in interleaved rounds (best of each, so a busy
    machine disturbs them alike): the ciphertext decrypted in memory (the cipher alone, no I/O)
    and a raw pass disk to disk (read, decrypt, write a new file, fsync), which does the same
    I/O as opening and is the one the >= 0.7x target is judged against.
    """
    import os

    # The baselines measure the AEAD primitive itself, so this bench (alone outside matcher/)
    # imports it; every key of the sealed files still comes from a keyring.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from matcher.envelope import Manifest, open_sealed, seal
    from matcher.keyring import Keyring

    payload = work / "payload.bin"
    chunk = 4 << 20
    with payload.open("wb") as handle:
        for _ in range(megabytes // 4):
            handle.write(os.urandom(chunk))
    size = payload.stat().st_size
    bank = Keyring.init(work / "envelope-bank", role="bank")
    vendor = Keyring.init(work / "envelope-vendor", role="vendor", vendor_id="bench")
    recipient_kid, recipient = bank.current_recipient()
    signing_kid, signer = vendor.current_signer()
    manifest = Manifest.new(
        batch_id="00000000-0000-4000-8000-000000000000",
        vendor_id="bench",
        signing_kid=signing_kid,
        recipient_kid=recipient_kid,
        salt_epoch="e1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        rows=0,
        taxonomy_version="2026.1",
        contract="vendor_batch/v1",
    )
    sealed = {2: work / "payload.v2.sealed", 1: work / "payload.v1.sealed"}

    def seal_once(version: int) -> float:
        return _best_of(
            lambda: seal(
                payload,
                sealed[version],
                manifest=manifest,
                recipient=recipient.public_key(),
                signer=signer,
                format_version=version,
            ),
            1,
        )

    seal_s = {version: seal_once(version) for version in sealed}
    opened = work / "opened.bin"

    def open_pass(version: int, *, check: bool) -> Callable[[], object]:
        return lambda: open_sealed(
            sealed[version],
            opened,
            recipient_keys=lambda kid: recipient,
            vendor_keys=lambda vendor_id, kid: signer.public_key(),
            check_payload_digest=check,
        )

    # The raw passes: the same payload under one AES-256-GCM key in the same 4 MiB chunks,
    # decrypted into a preallocated buffer, with none of the format's work.
    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    raw_sealed = work / "raw.bin"
    with payload.open("rb") as src, raw_sealed.open("wb") as dst:
        for block in iter(lambda: src.read(chunk), b""):
            dst.write(aead.encrypt(nonce, block, None))
    step = chunk + 16
    cipher_buffer, plain_buffer = memoryview(bytearray(step)), memoryview(bytearray(chunk))

    def raw_disk_pass() -> None:
        with raw_sealed.open("rb", buffering=0) as src, opened.open("wb", buffering=0) as dst:
            while got := src.readinto(cipher_buffer):
                plain = plain_buffer[: got - 16]
                aead.decrypt_into(nonce, cipher_buffer[:got], None, plain)
                dst.write(plain)
            os.fsync(dst.fileno())

    ciphertext = raw_sealed.read_bytes()
    blocks = [ciphertext[at : at + step] for at in range(0, len(ciphertext), step)]
    del ciphertext

    def raw_memory_pass() -> None:
        for block in blocks:
            aead.decrypt_into(nonce, block, None, plain_buffer[: len(block) - 16])

    def fresh_disk() -> None:
        # Every disk pass writes a new file, as opening does. Freeing the previous pass's
        # output inside the timed region cost up to 0.8 s here (ext4 mounted with discard).
        opened.unlink(missing_ok=True)
        os.sync()

    passes: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "open": (open_pass(2, check=False), fresh_disk),
        "checked": (open_pass(2, check=True), fresh_disk),
        "v1": (open_pass(1, check=False), fresh_disk),
        "disk": (raw_disk_pass, fresh_disk),
        "memory": (raw_memory_pass, None),
    }
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(rounds):
        for name, (run, setup) in passes.items():
            best[name] = min(best[name], _best_of(run, 1, setup=setup))
    blocks.clear()
    for f in (payload, *sealed.values(), opened, raw_sealed):
        f.unlink(missing_ok=True)
    mb = size / 1e6
    disk_name = "raw AES-256-GCM pass disk to disk (read, decrypt, write, fsync)"
    ran = f"{mb:,.0f} MB in 4 MiB chunks, best of {rounds} interleaved rounds"
    yield Figure(
        name="envelope.open_mb_per_s",
        value=mb / best["open"],
        unit="MB/s",
        baseline=mb / best["disk"],
        baseline_name=disk_name,
        ratio=best["disk"] / best["open"],
        target=">= 0.7x",
        met=best["disk"] / best["open"] >= 0.7,
        note=f"{ran}; format v2 opened as ingest runs it (check_payload_digest=False: GCM tags,"
        f" signature over their digest); format v1 the same way {mb / best['v1']:,.0f} MB/s"
        f" ({best['disk'] / best['v1']:.2f}x); seal v2 {mb / seal_s[2]:,.0f} MB/s,"
        f" v1 {mb / seal_s[1]:,.0f} MB/s",
    )
    yield Figure(
        name="envelope.open_vs_memory_aes",
        value=mb / best["open"],
        unit="MB/s",
        baseline=mb / best["memory"],
        baseline_name="raw AES-256-GCM pass in memory (decrypt only, into a preallocated buffer)",
        ratio=best["memory"] / best["open"],
        target="reported",
        met=None,
        note=f"{ran}; the same open as above; this baseline does no I/O, while opening writes"
        " and fsyncs the plaintext as the disk-to-disk pass does",
    )
    yield Figure(
        name="envelope.open_checked_mb_per_s",
        value=mb / best["checked"],
        unit="MB/s",
        baseline=mb / best["disk"],
        baseline_name=disk_name,
        ratio=best["disk"] / best["checked"],
        target="reported",
        met=None,
        note=f"{ran}; format v2 with check_payload_digest=True (the plaintext SHA-256 the vendor"
        " signed, on its own thread: what binds the content to the vendor against a holder of"
        f" the data key); {best['memory'] / best['checked']:.3f}x of the in-memory pass",
    )


def bench_ingest(work: Path, *, n: int = 1_000_000) -> Iterator[Figure]:
    """Ingest rows/s of a 1M-user sealed batch, split by stage, against a plain DuckDB load."""
    import duckdb

    from fusion.ingest import Inbox, ingest_file
    from fusion.store import Store
    from matcher.keyring import init_local_pair
    from matcher.pack import pack_users

    bank, vendor = init_local_pair(work / "bank-keys", work / "vendor-keys", vendor_id="bench")
    batch = synthetic_batch(n)
    users = batch.drop("key").with_columns(
        phone=pl.Series([f"13{i:09d}" for i in range(n)], dtype=pl.String)
    )
    users_path = work / "users.parquet"
    users.write_parquet(users_path)
    inbox = Inbox(work / "bank").ensure()
    sealed = inbox.inbox / "bench.sealed"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pack_s = _best_of(lambda: pack_users(users_path, sealed, keyring=vendor, now=now), 1)
    with Store.open(work / "bank" / "fusion.duckdb", key=bank.store_key()) as store:
        start = time.perf_counter()
        outcome = ingest_file(sealed, store=store, keyring=bank, inbox=inbox, now=now)
        total = time.perf_counter() - start
    plain = work / "plain.parquet"
    batch.write_parquet(plain, compression="zstd")

    def baseline_load() -> None:
        con = duckdb.connect(str(work / "plain.duckdb"))
        con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM read_parquet(?)", [str(plain)])
        con.close()

    base = _best_of(baseline_load, 1)
    split = ", ".join(f"{k} {v:.2f} s" for k, v in outcome.seconds.items())
    yield Figure(
        name="ingest.rows_per_s",
        value=n / total,
        unit="rows/s",
        baseline=n / base,
        baseline_name="plain DuckDB load of the same plaintext Parquet, no crypto, no contract",
        ratio=base / total,
        target="reported",
        met=None,
        note=f"{outcome.status}; {split}; vendor pack {pack_s:.1f} s",
    )


def _unique_mobiles(n: int, seed: int) -> pl.Series:
    """Return `n` distinct valid mobile numbers as strings, without a Python loop."""
    rng = np.random.default_rng(seed)
    numbers = np.unique(rng.integers(13_000_000_000, 20_000_000_000, int(n * 1.01)))
    rng.shuffle(numbers)
    return pl.Series("phone", numbers[:n]).cast(pl.String)


def bench_psi(work: Path, *, bank: int = 1_000_000, vendor: int = 3_000_000) -> Iterator[Figure]:
    """Bank 1M x vendor 3M: keyed hashing keys/s, and the PSI join against a raw DuckDB join."""
    from datetime import date

    from fusion.match import match
    from fusion.store import Store
    from matcher.keyring import Keyring
    from matcher.psi import customer_keys

    keyring = Keyring.init(work / "psi-keys", role="bank")
    epoch = keyring.current_salt()
    phones = _unique_mobiles(bank + vendor, seed=5)
    shared = int(bank * 0.65)
    bank_phones = phones.head(bank)
    vendor_phones = pl.concat([bank_phones.head(shared), phones.tail(vendor - shared)])
    start = time.perf_counter()
    bank_keys = customer_keys(pl.Series("customer_id", np.arange(bank)), bank_phones, epoch)
    vendor_keys = customer_keys(pl.Series("customer_id", np.arange(vendor)), vendor_phones, epoch)
    hash_s = time.perf_counter() - start
    snapshot = date(2026, 9, 30)
    now = datetime(2026, 10, 1)
    with Store.open(work / "psi.duckdb", key=keyring.store_key()) as store:
        store.insert_frame(
            "customers",
            bank_keys.keys.with_columns(
                branch_id=pl.lit("B001"),
                salt_epoch=pl.lit(epoch.epoch_id),
                snapshot_date=pl.lit(snapshot),
            ),
        )
        store.execute(
            "INSERT INTO batches (batch_id, vendor_id, sealed_sha256, status, rows, salt_epoch,"
            " received_at, finished_at, created_at)"
            " VALUES ('b1', 'v', 'x', 'loaded', ?, ?, ?, ?, ?)",
            [vendor, epoch.epoch_id, now, now, datetime(2026, 9, 30)],
        )
        store.insert_frame(
            "vendor_apps",
            vendor_keys.keys.select("key").with_columns(
                salt_epoch=pl.lit(epoch.epoch_id),
                batch_id=pl.lit("b1"),
                app_ids=pl.lit([1], dtype=pl.List(pl.Int32)),
            ),
        )
        store.checkpoint()

        def run_match() -> None:
            match(store, epoch_id=epoch.epoch_id, snapshot_date=snapshot, now=now)

        # Warm DuckDB's buffer with both tables first (a count-only join), so neither side pays
        # for the first decrypting read of the file; match re-runs also delete the last matches.
        count_s = _best_of(
            lambda: store.execute(
                "SELECT count(*) FROM customers c JOIN vendor_apps v ON v.key = c.key"
            ).fetchall(),
            3,
        )
        run_s = _best_of(run_match, 3)

        def raw_join() -> None:
            # The same keys joined and the same result rows (the columns `matches` holds)
            # written to a table of the same store: what is left is the matching logic.
            store.execute(
                "CREATE OR REPLACE TABLE raw_join AS SELECT c.customer_id, v.key, v.salt_epoch,"
                " v.batch_id, $now AS matched_at, $snapshot AS snapshot_date"
                " FROM customers c JOIN vendor_apps v ON v.key = c.key",
                {"now": now, "snapshot": snapshot},
            )

        raw_s = _best_of(raw_join, 3)
        matched = store.execute("SELECT count(*) FROM matches").fetchone()
    keys = bank + vendor
    yield Figure(
        name="psi.keyed_hash_keys_per_s",
        value=keys / hash_s,
        unit="keys/s",
        baseline=None,
        baseline_name="(see keyed_hash.keys_per_s for the hashlib baseline)",
        ratio=None,
        target="reported",
        met=None,
        note=f"normalise + duplicate check + HMAC of {bank:,} bank and {vendor:,} vendor phones",
    )
    yield Figure(
        name="psi.join_s",
        value=run_s,
        unit="s",
        baseline=raw_s,
        baseline_name="raw DuckDB join of the same 32-byte keys writing the same rows, same store",
        ratio=raw_s / run_s,
        target="<= 1.5x the raw join (ratio >= 0.67)",
        met=run_s <= 1.5 * raw_s,
        note=f"{matched[0] if matched else 0:,} matches + counts + run row in one transaction,"
        f" the snapshot's earlier matches deleted first; a count-only join {count_s:.2f} s",
    )


def bench_oprf(work: Path, *, bank: int = 100_000, vendor: int = 1_000_000) -> Iterator[Figure]:
    """Bank 100k x vendor 1M: our OPRF PSI with payload against openmined-psi, end to end.

    Both parties run in this process, stage by stage, on the same ids. Ours (matcher.oprf_match):
    the vendor seals one 185-byte payload a user (`encode_lists` of a synthetic batch with 10 apps
    and 10 tags a row, the factory's average size), the bank blinds its ids, the vendor answers
    under an `EvaluationBudget`, the bank unblinds them into labels and opens the rows whose
    label the vendor's batch holds. Theirs: openmined-psi 2.x (P-256, single-threaded C++) with
    reveal_intersection=True, which carries no payload. Ours runs on every core and again on one
    worker, so the per-core comparison is in the same run; both results are checked against the
    true intersection (and ours against the payloads sealed).
    """
    del work
    import private_set_intersection.python as psi  # openmined.psi (the dev extra)

    from matcher.oprf import OprfServerKey
    from matcher.oprf_match import (
        EvaluationBudget,
        encode_lists,
        open_matched,
        request,
        seal_rows,
        unblind_labels,
    )

    shared = int(bank * 0.65)
    phones = _unique_mobiles(vendor + bank - shared, seed=9).to_list()
    vendor_str = phones[:vendor]
    order = np.random.default_rng(9).permutation(bank)  # bank's own order, shared ids mixed in
    pool = phones[:shared] + phones[vendor:]
    bank_str = [pool[j] for j in order.tolist()]
    truth = {i: int(j) for i, j in enumerate(order.tolist()) if j < shared}  # bank i -> vendor j
    vendor_ids = [p.encode() for p in vendor_str]
    bank_ids = [p.encode() for p in bank_str]
    lists = synthetic_batch(vendor, seed=9, tags=10, apps=10)
    start = time.perf_counter()
    payloads = encode_lists(lists)
    del lists
    encode_s = time.perf_counter() - start
    payload_bytes = sum(map(len, payloads)) / vendor

    def lap(stages: dict[str, float], name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = now - since
        return now

    def theirs() -> dict[str, float]:
        stages: dict[str, float] = {}
        server = psi.server.CreateWithNewKey(True)
        client = psi.client.CreateWithNewKey(True)
        at = time.perf_counter()
        setup = server.CreateSetupMessage(1e-9, bank, vendor_str, psi.DataStructure.GCS)
        at = lap(stages, "vendor setup", at)
        sent = client.CreateRequest(bank_str)
        at = lap(stages, "bank request", at)
        response = server.ProcessRequest(sent)
        at = lap(stages, "vendor process", at)
        found = client.GetIntersection(setup, response)
        lap(stages, "bank intersect", at)
        if sorted(found) != sorted(truth):
            raise RuntimeError(f"openmined-psi found {len(found):,} of {len(truth):,} matches")
        return stages

    def ours(workers: int) -> tuple[dict[str, float], list[tuple[bytes, bytes]], list[bytes]]:
        stages: dict[str, float] = {}
        key = OprfServerKey.generate()
        budget = EvaluationBudget("bench", declared_customers=bank)
        at = time.perf_counter()
        rows = seal_rows(key, vendor_ids, payloads, workers=workers)
        at = lap(stages, "vendor seal_rows", at)
        state, blinded = request(bank_ids, workers=workers)
        at = lap(stages, "bank request", at)
        evaluated = budget.answer(key, blinded, workers=workers)
        at = lap(stages, "vendor answer", at)
        labels, data_keys = unblind_labels(state, evaluated, workers=workers)
        at = lap(stages, "bank unblind", at)
        opened = open_matched(dict(rows), labels, data_keys)
        lap(stages, "bank match+open", at)
        if opened.keys() != truth.keys() or any(payloads[truth[i]] != p for i, p in opened.items()):
            raise RuntimeError(f"OPRF match opened {len(opened):,} of {len(truth):,} matches")
        return stages, rows, labels

    cores = _cpus()
    cpu = time.process_time()
    their = theirs()
    their_cpu = (time.process_time() - cpu) / sum(their.values())
    mine, rows, labels = ours(cores)
    # The match stage's alternative, on the same rows and labels: a polars join on the label,
    # then a dict of the matched rows only (what open_matched would take instead).
    start = time.perf_counter()
    vendor_frame = pl.DataFrame(
        {
            "label": pl.Series([r[0] for r in rows], dtype=pl.Binary),
            "sealed": pl.Series([r[1] for r in rows], dtype=pl.Binary),
        }
    )
    joined = pl.DataFrame({"label": pl.Series(labels, dtype=pl.Binary)}).join(
        vendor_frame, on="label"
    )
    dict(zip(joined["label"].to_list(), joined["sealed"].to_list(), strict=True))
    join_s = time.perf_counter() - start
    del rows, labels, vendor_frame, joined
    single, _, _ = ours(1)
    theirs_s = sum(their.values())

    def split(stages: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())

    def bank_rate(stages: dict[str, float], workers: int) -> float:
        return bank / (stages["bank request"] + stages["bank unblind"]) / workers

    ran = (
        f"{bank:,} bank x {vendor:,} vendor ids (11-digit mobiles), {len(truth):,} shared, both"
        f" parties in one process on {cores} CPUs"
    )
    theirs_note = (
        f"openmined-psi 2.0.6 reveal_intersection, GCS, fpr 1e-9, 1 thread ({their_cpu:.2f} CPU"
        f" per wall s): {split(their)}"
    )
    baseline_name = "openmined-psi (reveal intersection, no payload), same ids, same run"
    for name, stages, workers in (("end_to_end_s", mine, cores), ("end_to_end_1core_s", single, 1)):
        total = sum(stages.values())
        yield Figure(
            name=f"oprf.{name}",
            value=total,
            unit="s",
            baseline=theirs_s,
            baseline_name=baseline_name,
            ratio=theirs_s / total,
            target="<= 0.67x theirs" if workers == cores else "reported (per core)",
            met=total <= 0.67 * theirs_s if workers == cores else None,
            note=f"{ran}; ours {workers} worker(s), {payload_bytes:.0f}-byte payloads: "
            f"{split(stages)}; theirs {theirs_note}"
            + (
                f"; match+open is dict(rows) and lookups, vs a polars join on the label"
                f" {join_s:.2f} s before any opening; payload encode_lists {encode_s:.1f} s,"
                " not timed"
                if workers == cores
                else ""
            ),
        )
    their_bank = bank / (their["bank request"] + their["bank intersect"])
    for workers, stages in ((cores, mine), (1, single)):
        yield Figure(
            name=f"oprf.bank_items_per_s_per_core_{workers}w",
            value=bank_rate(stages, workers),
            unit="items/s/core",
            baseline=their_bank,
            baseline_name="openmined-psi client CreateRequest + GetIntersection, 1 thread",
            ratio=bank_rate(stages, workers) / their_bank,
            target="reported",
            met=None,
            note=f"bank request + unblind_labels on {workers} worker(s), {bank:,} ids, divided"
            f" by the workers; bank match+open {stages['bank match+open']:.2f} s besides",
        )


def _pipeline_store(work: Path, customers: int, seed: int, tag: str) -> tuple[Any, Any, Path]:
    """Return (world config, bank keyring, store path) after world -> pack -> ingest -> match."""
    from datetime import time as clock_time

    from fusion.ingest import Inbox, ingest_file
    from fusion.match import load_extract, match
    from fusion.store import Store
    from labs.world import WorldConfig, WorldFiles, generate_world
    from matcher.keyring import init_local_pair
    from matcher.pack import pack_users

    config = WorldConfig(customers=customers, seed=seed)
    world = WorldFiles(work / f"{tag}-world")
    generate_world(config, world.root)
    bank, vendor = init_local_pair(work / f"{tag}-bank", work / f"{tag}-vendor", vendor_id="bench")
    inbox = Inbox(work / f"{tag}-bank-run").ensure()
    sealed = inbox.inbox / "batch.sealed"
    data_time = datetime.combine(config.snapshot_date, clock_time(6), tzinfo=UTC)
    pack_users(world.vendor_users, sealed, keyring=vendor, now=data_time)
    now = datetime(2026, 10, 1, tzinfo=UTC)
    epoch = bank.current_salt()
    path = work / f"{tag}.duckdb"
    with Store.open(path, key=bank.store_key()) as store:
        ingest_file(sealed, store=store, keyring=bank, inbox=inbox, now=now)
        extract = pl.read_parquet(world.customers)
        load_extract(store, extract, epoch=epoch, snapshot_date=config.snapshot_date, now=now)
        match(store, epoch_id=epoch.epoch_id, snapshot_date=config.snapshot_date, now=now)
    return config, bank, path


def bench_features(work: Path, *, customers: int = 1_000_000) -> Iterator[Figure]:
    """Feature build seconds for 1M customers (world -> pack -> ingest -> match -> features)."""
    from fusion.features import build_features
    from fusion.store import Store

    config, bank, path = _pipeline_store(work, customers, 2, "features")
    epoch = bank.current_salt()
    with Store.open(path, key=bank.store_key()) as store:
        build_s = _best_of(
            lambda: build_features(
                store, snapshot_date=config.snapshot_date, salt_epoch=epoch.epoch_id
            ),
            2,
        )

        def read_inputs() -> None:
            # The bare reads the build cannot avoid: bank features and the matched vendor lists.
            store.execute("SELECT * FROM bank_features").pl()
            store.execute(
                "SELECT m.customer_id, a.app_ids, a.app_days, a.app_sessions, t.tag_ids,"
                " t.tag_weights FROM matches m JOIN vendor_apps a USING (key, batch_id)"
                " JOIN vendor_tags t USING (key, batch_id)"
            ).pl()

        read_s = _best_of(read_inputs, 2)
    yield Figure(
        name="features.build_1m_s",
        value=build_s,
        unit="s",
        baseline=read_s,
        baseline_name="reading the same bank rows and matched vendor lists out of the store",
        ratio=read_s / build_s,
        target="reported",
        met=None,
        note=f"{customers:,} customers; 26-category usage, top apps, 10,400-column tag CSR",
    )


def bench_models(
    work: Path, *, sizes: tuple[int, ...] = (100_000, 1_000_000), singles: int = 2_000
) -> Iterator[Figure]:
    """Training seconds at 100k and 1M customers, batch scoring rows/s, single scoring p50/p99.

    Baselines, measured in the same run on the same rows: one plain xgboost fit of the fused
    design matrix with the final model's rounds (what the pruning, tag profile and evaluation
    add), and the booster's bare `inplace_predict` (what deciles, reasons and Parquet add).
    """
    import xgboost as xgb

    from fusion.features import build_features
    from fusion.models.acquisition import population
    from fusion.models.design import design_matrix
    from fusion.registry import Registry
    from fusion.store import Store
    from fusion.training import train_all
    from labs.world import WorldFiles

    for customers in sizes:
        tag = f"models-{customers // 1000}k"
        config, bank, path = _pipeline_store(work, customers, 7, tag)
        with Store.open(path, key=bank.store_key(), read_only=True) as store:
            features = build_features(
                store, snapshot_date=config.snapshot_date, salt_epoch=bank.current_salt().epoch_id
            )
        campaign = pl.read_parquet(WorldFiles(work / f"{tag}-world").campaign)
        registry = Registry(work / f"{tag}-models")
        start = time.perf_counter()
        run = train_all(features, campaign=campaign, registry=registry, now=datetime.now(UTC))
        train_s = time.perf_counter() - start
        fused = run.acquisition["fused"].model
        rows = population(features)
        x = design_matrix(features, fused.spec, np.flatnonzero(rows))
        label = features.table["opened_mb"].fill_null(0).to_numpy()[rows]
        params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 4}
        start = time.perf_counter()
        xgb.train(params, xgb.DMatrix(x, label=label), fused.booster.num_boosted_rounds())
        plain_s = time.perf_counter() - start
        label_k = f"{customers // 1000}k" if customers < 1_000_000 else f"{customers // 1_000_000}m"
        seconds = ", ".join(f"{k} {v:.0f} s" for k, v in run.seconds.items())
        yield Figure(
            name=f"models.train_{label_k}_s",
            value=train_s,
            unit="s",
            baseline=plain_s,
            baseline_name="one plain xgboost fit of the fused matrix, same rounds, no pruning",
            ratio=plain_s / train_s,
            target="reported",
            met=None,
            note=f"{customers:,} customers, {int(rows.sum()):,} in the population; {seconds}; "
            f"AUC in-bank {run.acquisition['in_bank'].evaluation.auc:.3f}, fused "
            f"{run.acquisition['fused'].evaluation.auc:.3f}",
        )
    yield from _scoring_figures(work, registry, features, rows, x, singles)


def _scoring_figures(
    work: Path,
    registry: Any,
    features: Any,
    rows: np.ndarray[Any, Any],
    x: np.ndarray[Any, Any],
    singles: int,
) -> Iterator[Figure]:
    """Batch scoring rows/s and single-customer p50/p99 of the registry's acquisition model."""
    from fusion.scoring import Scorer, score_base

    model = registry.load_score_model("acquisition")
    score_s = _best_of(
        lambda: score_base(model, features, work / "bench-scores.parquet", rows=rows), 2
    )
    bare_s = _best_of(lambda: model.booster.inplace_predict(x), 2)
    n = int(rows.sum())
    yield Figure(
        name="models.batch_scoring_rows_per_s",
        value=n / score_s,
        unit="rows/s",
        baseline=n / bare_s,
        baseline_name="bare booster.inplace_predict on the prepared matrix",
        ratio=bare_s / score_s,
        target="reported",
        met=None,
        note=f"{n:,} rows: design matrix, score, decile, exact SHAP reasons for deciles 1-3, "
        "Parquet",
    )
    scorer = Scorer(model, features, rows=rows)
    ids = features.table["customer_id"].to_numpy()[rows]
    picks = np.random.default_rng(1).choice(ids, size=singles)
    latencies = np.empty(singles)
    for i, customer in enumerate(picks):
        start = time.perf_counter()
        scorer.score([int(customer)])
        latencies[i] = time.perf_counter() - start
    bare = np.empty(singles)
    for i in range(singles):
        row = x[i : i + 1]
        start = time.perf_counter()
        model.booster.inplace_predict(row)
        bare[i] = time.perf_counter() - start
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    b50, b99 = np.percentile(bare, [50, 99]) * 1000
    for quantile, value, base in (("p50", p50, b50), ("p99", p99, b99)):
        yield Figure(
            name=f"models.single_scoring_{quantile}_ms",
            value=float(value),
            unit="ms",
            baseline=float(base),
            baseline_name="bare booster.inplace_predict of one prepared row",
            ratio=float(base / value),
            target="reported",
            met=None,
            note=f"{singles:,} in-process requests of one customer: lookup, score, decile, "
            "3 exact SHAP reason codes",
        )


def bench_api(
    work: Path,
    *,
    customers: int = 20_000,
    clients: int = 50,
    seconds: float = 20.0,
    baseline_seconds: float = 5.0,
) -> Iterator[Figure]:
    """POST /v1/scores req/s, p50/p99 latency and errors under concurrent loopback clients.

    A `fusion demo` run of `customers` (trained, scored, then published) is served as `fusion
    serve` serves it (`api.serve`: one uvicorn worker, access log on) in a process of its own,
    so the load generator does not share the server's GIL. `clients` httpx clients (one
    connection each) on one asyncio loop post one random known customer id a request for
    `seconds`; the baseline is GET /healthz under the same clients for `baseline_seconds`, in
    the same run: what the HTTP stack, the audit middleware and the clients cost without
    scoring. The target is met only when not one request failed.
    """
    import asyncio
    import socket
    import subprocess
    import sys
    from collections.abc import Awaitable
    from contextlib import AsyncExitStack

    import httpx
    from typer.testing import CliRunner

    from fusion.runfolder import RunFolder
    from fusion.store import Store
    from fusion.tokens import create_token
    from labs.cli import app as cli
    from labs.world import WorldFiles
    from matcher.keyring import Keyring

    run = work / "api-run"
    for args in (
        ["demo", "--out", str(run), "--customers", str(customers), "--seed", "5"],
        ["publish", "--run", str(run)],
    ):
        result = CliRunner().invoke(cli, args)
        if result.exit_code != 0:
            failure = f"fusion {args[0]} failed:\n{result.output[-3000:]}"
            raise RuntimeError(failure) from result.exception
    folder = RunFolder(run)
    ids = pl.read_parquet(WorldFiles(folder.world).customers, columns=["customer_id"])
    known = ids["customer_id"].to_numpy()
    keyring = Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key()) as store:  # before the server holds it
        issued = create_token(store, role="campaign_tool", label="bench", now=datetime.now(UTC))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    launch = (
        "import sys; from pathlib import Path; from api import ApiSettings, serve; "
        "serve(ApiSettings(run=Path(sys.argv[1]), port=int(sys.argv[2])))"
    )
    log = work / "api-server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(  # noqa: S603 - our own interpreter, our own arguments
            [sys.executable, "-c", launch, str(run), str(port)], stdout=sink, stderr=sink
        )
    rng = np.random.default_rng(5)

    async def healthz(client: httpx.AsyncClient) -> bool:
        return (await client.get("/healthz")).status_code == 200

    async def score(client: httpx.AsyncClient) -> bool:
        customer = int(known[rng.integers(len(known))])
        response = await client.post("/v1/scores", json={"customer_ids": [customer]})
        return response.status_code == 200 and len(response.json()["scores"]) == 1

    def load(
        send: Callable[[httpx.AsyncClient], Awaitable[bool]], duration: float
    ) -> tuple[float, np.ndarray[Any, Any], int, float]:
        """Return (requests/s, latencies in ms, errors, client CPU share) over `duration` s."""

        async def main() -> tuple[float, list[float], int]:
            latencies: list[float] = []
            errors = 0
            headers = {"Authorization": f"Bearer {issued.secret}"}

            async def one_client(client: httpx.AsyncClient, deadline: float) -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    sent = time.perf_counter()
                    try:
                        ok = await send(client)
                    except httpx.HTTPError:
                        ok = False
                    latencies.append(time.perf_counter() - sent)
                    errors += not ok

            # One client (one keep-alive connection) each: a single AsyncClient pooling 50
            # connections was the bottleneck itself (157 vs 761 /healthz req/s, measured).
            async with AsyncExitStack() as stack:
                pool = [
                    await stack.enter_async_context(
                        httpx.AsyncClient(base_url=url, headers=headers, timeout=60)
                    )
                    for _ in range(clients)
                ]
                start = time.perf_counter()
                await asyncio.gather(*(one_client(c, start + duration) for c in pool))
                elapsed = time.perf_counter() - start
            return elapsed, latencies, errors

        cpu = time.process_time()
        elapsed, latencies, errors = asyncio.run(main())
        cpu = (time.process_time() - cpu) / elapsed
        return len(latencies) / elapsed, np.asarray(latencies) * 1000, errors, cpu

    try:
        deadline = time.monotonic() + 120
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the server did not come up:\n{log.read_text()[-3000:]}")
        load(score, 2.0)  # warm-up: the first request builds the scorer's design matrix
        base_rate, base_ms, base_errors, base_cpu = load(healthz, baseline_seconds)
        rate, ms, errors, cpu = load(score, seconds)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    baseline_name = f"GET /healthz under the same {clients} clients, {baseline_seconds:g} s"
    note = (
        f"{len(ms):,} requests in {seconds:g} s from {clients} httpx clients (a connection "
        f"each) on one asyncio loop (load generator at {cpu:.2f} CPU, {base_cpu:.2f} for "
        f"/healthz); a {customers:,}-customer demo run served by api.serve (1 uvicorn worker, "
        f"own process); {_cpus()} CPUs shared by server and clients"
    )
    yield Figure(
        name="api.scores_req_per_s",
        value=rate,
        unit="req/s",
        baseline=base_rate,
        baseline_name=baseline_name,
        ratio=rate / base_rate,
        target="0 errors",
        met=errors == 0,
        note=f"one random known customer a request, {errors} errors; {note}",
    )
    for quantile in (50, 99):
        value, base = float(np.percentile(ms, quantile)), float(np.percentile(base_ms, quantile))
        yield Figure(
            name=f"api.scores_p{quantile}_ms",
            value=value,
            unit="ms",
            baseline=base,
            baseline_name=baseline_name,
            ratio=base / value,
            target="reported",
            met=None,
            note=f"latency seen by a client, queueing behind {clients - 1} others included",
        )
    yield Figure(
        name="api.scores_errors",
        value=float(errors),
        unit="errors",
        baseline=float(base_errors),
        baseline_name=baseline_name,
        ratio=None,
        target="== 0",
        met=errors == 0,
        note="non-200 answers, transport errors and known customers left unscored",
    )


SCALE_SIZES = (100_000, 1_000_000, 10_000_000)
SCALE_ENGINES = (("in_process", None), ("local2", "local:2"))
SCALE_PEAK_BUDGET_GB = 8.0
SCALE_LINEAR_SLACK = 1.2  # time(10N) <= 12x time(N): linear, with 20% slack (issue #8)


def _size_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    return f"{n // 1_000}k" if n % 1_000 == 0 else str(n)


def scale_sizes(text: str | None) -> tuple[int, ...]:
    """Return the sizes `fusion bench --scale-sizes` asks for ("100000,1000000"); empty: default."""
    from contracts.errors import ConfigError

    if not text or not text.strip():
        return SCALE_SIZES
    try:
        sizes = tuple(sorted({int(part.replace("_", "")) for part in text.split(",")}))
    except ValueError:
        sizes = ()
    if not sizes or sizes[0] < 100:
        raise ConfigError(
            f"--scale-sizes takes customer counts >= 100 separated by commas (e.g. "
            f"100000,1000000); got {text!r}",
            setting="scale_sizes",
        )
    return sizes


def bench_scale(
    work: Path,
    *,
    sizes: tuple[int, ...] | None = None,
    seed: int = 8,
    cache: Path | None = None,
    progress: bool = True,
) -> Iterator[Figure]:
    """The scale curve: seconds per stage and peak memory at 100k, 1M and 10M customers.

    For each size (vendor 3x, inputs from `labs.scale`, generated once and cached by size and
    seed under `cache`, by default `<out>/scale-inputs`, and not timed), the bank's stages run
    in a fresh process on each engine, the in-process one and a LocalCluster of two worker
    processes: bank keying (`key_customers`), vendor key partitioning (`partition_by_key`), the
    PSI join (`join_keys`) and batch scoring (`score_features`, the bank's own feature table in
    1M-row slabs: the feature build is not bucketed yet). Each run's peak is the resident memory
    of its whole process tree, sampled every 0.2 s. Figures: per run, total seconds against a
    linear extrapolation of the next smaller size on the same engine, and peak memory against
    the 8 GB budget; per size, the two engines' matches (count and digest of the rows, and of
    the scores) against each other and the generator's count; per engine and step in size,
    the time ratio against 1.2x the size ratio (12x from 1M to 10M, issue #8), and beside it the
    CPU-time ratio of the process trees, which shows the scaling itself when other work on a
    shared machine stretches the wall time of one run more than another's.

    `sizes` defaults to 100k, 1M and 10M (`fusion bench --scale-sizes 100000,1000000` for a
    quick run).
    """
    from rich.console import Console

    from labs.scale import ScaleConfig, measure_scale, scale_inputs

    chosen = sorted(sizes or scale_sizes(None))
    store = cache if cache is not None else work.parent / "scale-inputs"
    console = Console() if progress else None
    runs: dict[tuple[str, int], ScaleRun] = {}
    for at, size in enumerate(chosen):
        inputs = scale_inputs(ScaleConfig(customers=size, seed=seed), store, console=console)
        label = _size_label(size)
        for engine, spec in SCALE_ENGINES:
            folder = work / f"scale-{label}-{engine}"
            try:
                run = measure_scale(inputs, folder, cluster=spec, progress=progress)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            runs[engine, size] = run
            previous = runs.get((engine, chosen[at - 1])) if at else None
            yield from _scale_run_figures(f"scale.{engine}.{label}", run, previous)
        alone, cluster = runs["in_process", size], runs["local2", size]
        same_rows = alone.matches_digest == cluster.matches_digest
        same_scores = alone.scores_digest == cluster.scores_digest
        summary = inputs.summary
        agree = (
            alone.matches == cluster.matches == summary.expected_matches
            and alone.scored == cluster.scored == size
            and same_rows
            and same_scores
        )
        yield Figure(
            name=f"scale.{label}.matches",
            value=float(alone.matches),
            unit="matches",
            baseline=float(cluster.matches),
            baseline_name="LocalCluster(2) on the same inputs",
            ratio=alone.matches / cluster.matches if cluster.matches else None,
            target="the same rows on both engines, as many as the generator made",
            met=agree,
            note=f"generator expects {summary.expected_matches:,} ({size:,} customers, "
            f"{summary.covered:,} at the vendor, {summary.invalid_phones:,} invalid and "
            f"{summary.shared_phones:,} shared phones); match rows "
            f"{'identical' if same_rows else 'DIFFER'} and {alone.scored:,} scores "
            f"{'identical' if same_scores else 'DIFFER'} (customer_id, decile, in order); "
            f"inputs ({(summary.bank_bytes + summary.vendor_bytes) / 1e9:.2f} GB) generated in "
            f"{summary.seconds:.0f} s, not timed",
        )
    for engine, _ in SCALE_ENGINES:
        for small, large in itertools.pairwise(chosen):
            before, after = runs[engine, small], runs[engine, large]
            ratio = after.total_s / before.total_s
            budget = SCALE_LINEAR_SLACK * large / small
            pair = f"{_size_label(large)}_over_{_size_label(small)}"
            stages = ", ".join(
                f"{stage} {after.seconds[stage] / before.seconds[stage]:.1f}x"
                for stage in after.seconds
            )
            yield Figure(
                name=f"scale.{engine}.time_{pair}",
                value=ratio,
                unit="x",
                baseline=budget,
                baseline_name=f"budget: {SCALE_LINEAR_SLACK:g} x the size ratio (near linear)",
                ratio=budget / ratio,
                target=f"<= {budget:g}x",
                met=ratio <= budget,
                note=f"wall time {after.total_s:.1f} s / {before.total_s:.1f} s; by stage: "
                f"{stages}; load average {before.load:.1f} and {after.load:.1f} as the runs began",
            )
            cpu_before, cpu_after = (
                sum(before.cpu_seconds.values()),
                sum(after.cpu_seconds.values()),
            )
            cpu_stages = ", ".join(
                f"{stage} {after.cpu_seconds[stage] / before.cpu_seconds[stage]:.1f}x"
                for stage in after.cpu_seconds
            )
            yield Figure(
                name=f"scale.{engine}.cpu_{pair}",
                value=cpu_after / cpu_before,
                unit="x",
                baseline=budget,
                baseline_name=f"{SCALE_LINEAR_SLACK:g} x the size ratio (near linear)",
                ratio=budget * cpu_before / cpu_after,
                target="reported",
                met=None,
                note=f"CPU seconds of the runs' process trees (driver, nannies, workers), which "
                f"other work on a shared machine hardly moves: {cpu_after:.0f} / "
                f"{cpu_before:.0f}; by stage: {cpu_stages}",
            )


def _scale_run_figures(name: str, run: ScaleRun, previous: ScaleRun | None) -> Iterator[Figure]:
    """Total seconds (against linear growth from `previous`) and peak memory of one scale run."""
    gb = 1e9
    stages = "; ".join(
        f"{stage} {run.seconds[stage]:.1f} s ({run.cpu_seconds[stage]:.1f} s CPU, "
        f"{run.rows_per_s(stage):,.0f} rows/s, peak {run.stage_peak_rss.get(stage, 0) / gb:.2f} GB)"
        for stage in run.seconds
    )
    linear = None if previous is None else previous.total_s * run.customers / previous.customers
    yield Figure(
        name=f"{name}.total_s",
        value=run.total_s,
        unit="s",
        baseline=linear,
        baseline_name="-"
        if previous is None
        else f"linear from {previous.customers:,} customers ({previous.total_s:.1f} s)",
        ratio=None if linear is None else linear / run.total_s,
        target="reported",
        met=None,
        note=f"{run.customers:,} customers x {run.vendor_users:,} vendor users on {run.engine} "
        f"({run.workers} worker(s), started in {run.startup_s:.1f} s, not counted; load average "
        f"{run.load:.1f} as it began): {stages}; "
        f"{run.matches:,} matches, {run.invalid:,} invalid and {run.duplicated:,} shared phones",
    )
    peak = run.peak_rss / gb
    yield Figure(
        name=f"{name}.peak_rss_gb",
        value=peak,
        unit="GB",
        baseline=SCALE_PEAK_BUDGET_GB,
        baseline_name="budget (issue #8: 8 GB at 10M customers)",
        ratio=SCALE_PEAK_BUDGET_GB / peak if peak else None,
        target=f"<= {SCALE_PEAK_BUDGET_GB:g} GB",
        met=peak <= SCALE_PEAK_BUDGET_GB,
        note="largest sum of RSS over the run's process tree (driver, nannies, workers), "
        "sampled every 0.2 s; pages shared between processes count in each",
    )


BENCHMARKS: dict[str, Benchmark] = {
    "keyed_hash": bench_keyed_hash,
    "world": bench_world,
    "contracts": bench_contracts,
    "envelope": bench_envelope,
    "ingest": bench_ingest,
    "psi": bench_psi,
    "oprf": bench_oprf,
    "features": bench_features,
    "models": bench_models,
    "api": bench_api,
    "scale": bench_scale,
}


def run_benchmarks(
    out: Path,
    *,
    only: tuple[str, ...] = (),
    on_figure: Callable[[Figure], None] | None = None,
    scale: tuple[int, ...] | None = None,
) -> list[Figure]:
    """Run the benchmarks (all, or those named in `only`) and write `<out>/latest.json`.

    `scale` is the scale curve's customer counts (default: 100k, 1M, 10M).
    """
    names = only or tuple(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        from contracts.errors import ConfigError

        raise ConfigError(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
            setting="only",
        )
    figures: list[Figure] = []
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=out) as tmp:
        for name in names:
            bench = BENCHMARKS[name]
            figures_of = (
                bench_scale(Path(tmp), sizes=scale) if name == "scale" else bench(Path(tmp))
            )
            for figure in figures_of:
                figures.append(figure)
                if on_figure is not None:
                    on_figure(figure)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "at": stamp,
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "node": "local"},
        "figures": [asdict(f) for f in figures],
    }
    text = json.dumps(document, indent=2)
    (out / "latest.json").write_text(text)
    (out / f"bench-{stamp}.json").write_text(text)
    return figures


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
