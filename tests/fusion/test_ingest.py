"""Ingest end to end on real keys, real sealed files and a real encrypted DuckDB store."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl
import pytest

import fusion.ingest
import fusion.store
from contracts.suites import validate_vendor_batch
from contracts.taxonomy import load_taxonomy
from fusion.ingest import ingest_file, ingest_inbox
from fusion.retention import Retention
from fusion.store import Store
from fusion.store_migrations import MIGRATIONS, SCHEMA_VERSION
from matcher.envelope import open_sealed, seal
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import Keyring
from matcher.manifest import Manifest
from matcher.pack import PackOptions, build_batch, pack_users
from tests.support.breakages import BREAKAGES
from tests.support.factories import vendor_batch
from tests.support.forgery import rewrite_as_key_holder
from tests.support.local_pair import LocalPair

NOW = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)


class Parties(LocalPair):
    """A paired bank and vendor who seal, ingest and read back batches."""

    def seal_frame(
        self,
        frame: pl.DataFrame,
        *,
        rows: int | None = None,
        chunk_size: int = 4 << 20,
        compression: Literal["zstd", "uncompressed"] = "zstd",
        format_version: int = 2,
        raw_payload: bytes | None = None,
        **manifest: object,
    ) -> Path:
        """Seal an arbitrary batch frame as the vendor would (for contract-breaking batches).

        `raw_payload` replaces the Parquet bytes (a payload that is not Parquet at all).
        """
        payload = self.root / f"{uuid.uuid4().hex}.parquet"
        frame.write_parquet(payload, compression=compression)
        if raw_payload is not None:
            payload.write_bytes(raw_payload)
        keys, signer, recipient = self.sealing_keys(self.vendor.current_salt().epoch_id)
        fields: dict[str, object] = {
            "batch_id": str(uuid.uuid4()),
            "keys": keys,
            "created_at": NOW,
            "rows": frame.height if rows is None else rows,
            "taxonomy_version": load_taxonomy().version,
            "contract": "vendor_batch/v1",
        } | manifest
        out = self.inbox.inbox / f"{fields['batch_id']}.sealed"
        seal(
            payload,
            out,
            manifest=Manifest.new(**fields),  # type: ignore[arg-type]
            recipient=recipient,
            signer=signer,
            chunk_size=chunk_size,
            format_version=format_version,
        )
        payload.unlink()
        return out

    def ingest(self, sealed: Path, now: datetime = NOW, **kwargs: object):  # type: ignore[no-untyped-def]
        with self.store() as store:
            return ingest_file(
                sealed, store=store, keyring=self.bank, inbox=self.inbox, now=now, **kwargs
            )  # type: ignore[arg-type]

    def table(self, sql: str) -> pl.DataFrame:
        with self.store() as store:
            return store.execute(sql).pl()


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    return Parties(tmp_path)


def _users(n: int = 300, seed: int = 3) -> pl.DataFrame:
    batch = vendor_batch(n, seed=seed)
    phones = [f"+86 139 {i:04d} {seed:04d}" for i in range(n)]
    return batch.drop("key").with_columns(phone=pl.Series(phones))


@pytest.mark.slow  # over a second: out of the inner loop
def test_round_trip_loads_exactly_the_expected_rows(parties: Parties):
    users = _users()
    users_path = parties.root / "users.parquet"
    users.write_parquet(users_path)
    sealed = parties.inbox.inbox / "b1.sealed"
    packed = pack_users(users_path, sealed, keyring=parties.vendor, now=NOW)
    outcome = parties.ingest(sealed)
    assert outcome.status == "loaded" and outcome.rows == packed.rows == len(users)

    expected, _, _ = build_batch(users, parties.bank.current_salt())
    loaded = parties.table(
        "SELECT t.key, app_ids, app_days, app_sessions, tag_ids, tag_weights FROM vendor_tags t"
        " JOIN vendor_apps a USING (key, batch_id) ORDER BY t.key"
    )
    assert loaded.equals(expected.sort("key").select(loaded.columns))
    ledger = parties.table("SELECT batch_id, status, rows FROM batches")
    assert ledger.rows() == [(packed.batch_id, "loaded", len(users))]
    assert not list(parties.inbox.inbox.iterdir()) and not list(parties.inbox.work.iterdir())


@pytest.mark.slow  # ~2.4 s: two uploads of a whole batch
def test_same_batch_twice_loads_once(parties: Parties):
    sealed = parties.seal_frame(vendor_batch(50))
    copy = parties.inbox.inbox / "again.sealed"
    copy.write_bytes(sealed.read_bytes())
    assert parties.ingest(sealed).status == "loaded"
    assert parties.ingest(copy).status == "duplicate"
    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 50


def test_batch_id_replayed_with_other_content_is_refused(parties: Parties):
    batch_id = str(uuid.uuid4())
    assert (
        parties.ingest(parties.seal_frame(vendor_batch(40), batch_id=batch_id)).status == "loaded"
    )
    second = parties.ingest(parties.seal_frame(vendor_batch(40, seed=9), batch_id=batch_id))
    assert second.status == "refused" and second.reasons == ("batch_id_conflict",)
    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 40
    ledger = parties.table("SELECT status, reasons FROM batches WHERE status = 'refused'")
    assert json.loads(ledger["reasons"][0]) == ["batch_id_conflict"]


def _flip(offset_from: str):  # type: ignore[no-untyped-def]
    def edit(data: bytes) -> bytes:
        at = {"start": 2, "middle": len(data) // 2, "end": len(data) - 3}[offset_from]
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]

    return edit


TAMPERING = {
    "flip-header": _flip("start"),
    "flip-middle": _flip("middle"),
    "flip-signature": _flip("end"),
    "truncated": lambda data: data[: len(data) - 200],
    "appended": lambda data: data + b"\x00" * 16,
}


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_tampered_batch_is_refused_and_nothing_loads(parties: Parties, tamper: str, caplog):
    sealed = parties.seal_frame(vendor_batch(80))
    sealed.write_bytes(TAMPERING[tamper](sealed.read_bytes()))
    with caplog.at_level(logging.INFO):
        outcome = parties.ingest(sealed)
    assert outcome.status == "refused"
    assert parties.table("SELECT count(*) AS n FROM vendor_apps")["n"][0] == 0
    ledger = parties.table("SELECT status, reasons FROM batches")
    assert ledger["status"].to_list() == ["refused"] and json.loads(ledger["reasons"][0])
    assert "cause=" in caplog.text


def _records(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Return (end of header, [(start, end) of each chunk record]) per docs/envelope.md."""
    manifest_size = int.from_bytes(data[10:14], "big")
    offset = 14 + manifest_size + 2 + 80 + 8
    header_end, spans = offset, []
    while offset < len(data) - 64:
        length = int.from_bytes(data[offset + 1 : offset + 5], "big")
        spans.append((offset, offset + 5 + length))
        offset += 5 + length
    return header_end, spans


def _swap_chunks(data: bytes) -> bytes:
    _, spans = _records(data)
    (a0, a1), (b0, b1) = spans[0], spans[1]
    return data[:a0] + data[b0:b1] + data[a0:a1] + data[b1:]


def _edit_manifest(data: bytes) -> bytes:
    return data.replace(b'"rows":300', b'"rows":301', 1)


def _flip_each_chunk(index: int):  # type: ignore[no-untyped-def]
    def edit(data: bytes) -> bytes:
        start, end = _records(data)[1][index]
        at = (start + end) // 2
        return data[:at] + bytes([data[at] ^ 0x80]) + data[at + 1 :]

    return edit


@pytest.mark.parametrize(
    "tamper",
    [_swap_chunks, _edit_manifest, _flip_each_chunk(0), _flip_each_chunk(1), _flip_each_chunk(-1)],
    ids=["chunks-swapped", "manifest-edited", "chunk-first", "chunk-second", "chunk-last"],
)
def test_multi_chunk_tampering_is_refused_and_the_ledger_says_why(parties: Parties, tamper):  # type: ignore[no-untyped-def]
    sealed = parties.seal_frame(vendor_batch(300), chunk_size=4096)
    data = sealed.read_bytes()
    assert len(_records(data)[1]) >= 3
    tampered = tamper(data)
    assert tampered != data
    sealed.write_bytes(tampered)
    outcome = parties.ingest(sealed)
    assert outcome.status == "refused"
    assert parties.table("SELECT count(*) AS n FROM vendor_apps")["n"][0] == 0
    reasons = json.loads(parties.table("SELECT reasons FROM batches")["reasons"][0])
    assert reasons and reasons[0]  # the precise cause, for the bank's eyes


def test_wrong_bank_key_and_unknown_vendor_are_refused(parties: Parties):
    other_bank = Keyring.init(parties.root / "other-bank", role="bank")
    kid, public = other_bank.recipient_public_bytes()
    parties.vendor.import_recipient(kid, public, replace=True)  # seals to the wrong bank
    assert parties.ingest(parties.seal_frame(vendor_batch(10))).status == "refused"

    stranger = Keyring.init(parties.root / "stranger", role="vendor", vendor_id="vendor-a")
    from matcher.keyring import pair_locally

    pair_locally(Keyring.init(parties.root / "decoy", role="bank"), stranger)
    hpke_kid, hpke_public = parties.bank.recipient_public_bytes()
    stranger.import_recipient(hpke_kid, hpke_public, replace=True)
    parties.vendor = stranger  # signed by a key the bank never trusted
    assert parties.ingest(parties.seal_frame(vendor_batch(10))).status == "refused"
    assert parties.table("SELECT count(*) AS n FROM vendor_apps")["n"][0] == 0


def test_unknown_salt_epoch_is_quarantined(parties: Parties):
    parties.vendor.import_salt(SaltEpoch.generate("e-unknown"), make_current=True)
    outcome = parties.ingest(parties.seal_frame(vendor_batch(10)))
    assert outcome.status == "quarantined" and outcome.reasons == ("salt_epoch_known",)


@pytest.mark.parametrize("rule", sorted(BREAKAGES))
def test_each_contract_rule_quarantines_with_a_report(parties: Parties, rule: str):
    outcome = parties.ingest(parties.seal_frame(BREAKAGES[rule](vendor_batch(60))))
    assert outcome.status == "quarantined" and rule in outcome.reasons
    report_dir = parties.inbox.quarantine / str(outcome.batch_id)
    assert rule in (report_dir / "report.txt").read_text()
    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 0
    ledger = parties.table("SELECT status, report FROM batches")
    assert ledger["status"].to_list() == ["quarantined"]
    assert rule in json.loads(ledger["report"][0])["failed"]


def test_a_quarantined_batch_sent_again_stays_with_its_report(parties: Parties):
    sealed = parties.seal_frame(BREAKAGES["tags_known"](vendor_batch(30)))
    data = sealed.read_bytes()
    first = parties.ingest(sealed)
    home = parties.inbox.quarantine / str(first.batch_id)
    again = parties.inbox.inbox / "again.sealed"
    # As if the worker died after the verdict, before moving the file: nothing kept yet.
    (home / sealed.name).rename(again)
    assert parties.ingest(again).status == "duplicate"
    assert (home / "again.sealed").read_bytes() == data and (home / "report.json").exists()


def test_a_replayed_batch_is_not_kept_again(parties: Parties):
    sealed = parties.seal_frame(vendor_batch(50))
    data = sealed.read_bytes()
    assert parties.ingest(sealed).status == "loaded"
    for n in range(3):
        replay = parties.inbox.inbox / f"replay-{n}.sealed"
        replay.write_bytes(data)
        assert parties.ingest(replay).status == "duplicate"
    assert [p.read_bytes() for p in parties.inbox.archive.iterdir()] == [data]
    assert not list(parties.inbox.inbox.iterdir())


def test_a_refused_file_sent_again_is_kept_once(parties: Parties):
    for n in range(3):
        garbage = parties.inbox.inbox / f"garbage-{n}.sealed"
        garbage.write_bytes(b"not a sealed batch at all" * 10)
        assert parties.ingest(garbage).status == "refused"
    assert [p.name for p in parties.inbox.quarantine.iterdir()] == ["garbage-0.sealed"]


def test_the_quarantine_is_bounded_oldest_first_and_the_ledger_keeps_every_row(
    parties: Parties,
):
    parties.inbox = replace(parties.inbox, quarantine_retention=Retention(max_bytes=1000))
    for n in range(4):
        garbage = parties.inbox.inbox / f"garbage-{n}.sealed"
        garbage.write_bytes(bytes([n]) * 400)
        assert parties.ingest(garbage, now=NOW + timedelta(seconds=n)).status == "refused"
    kept = sorted(parties.inbox.quarantine.iterdir())
    assert [p.name for p in kept] == ["garbage-2.sealed", "garbage-3.sealed"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
    assert stat.S_IMODE(parties.inbox.quarantine.stat().st_mode) == 0o700
    assert parties.table("SELECT count(*) AS n FROM batches WHERE status = 'refused'")["n"][0] == 4


def test_the_archive_drops_batches_past_its_age_bound(parties: Parties):
    parties.inbox = replace(parties.inbox, archive_retention=Retention(max_age=timedelta(days=7)))
    old = parties.seal_frame(vendor_batch(20, seed=1))
    assert parties.ingest(old, now=NOW - timedelta(days=8)).status == "loaded"
    new = parties.seal_frame(vendor_batch(20, seed=2))
    assert parties.ingest(new, now=NOW).status == "loaded"
    assert [p.name for p in parties.inbox.archive.iterdir()] == [new.name]
    assert parties.table("SELECT count(*) AS n FROM batches WHERE status = 'loaded'")["n"][0] == 2


def test_a_future_dated_batch_is_dated_at_receipt(parties: Parties):
    sealed = parties.seal_frame(vendor_batch(10), created_at=datetime(2030, 1, 1, tzinfo=UTC))
    parties.ingest(sealed)
    assert parties.table("SELECT created_at FROM batches")["created_at"][0] == NOW.replace(
        tzinfo=None
    )


def test_stale_plaintext_of_a_killed_worker_is_removed(parties: Parties):
    sealed = parties.seal_frame(vendor_batch(10))
    stale = parties.inbox.work / f"{sealed.name}.parquet"
    stale.write_bytes(b"plaintext left by a killed worker")
    (parties.inbox.work / "a-folder").mkdir()
    with parties.store() as store:
        list(
            ingest_inbox(store=store, keyring=parties.bank, inbox=parties.inbox, clock=lambda: NOW)
        )
    assert not list(parties.inbox.work.iterdir())


@pytest.mark.parametrize(
    "payload",
    [b"", b"not parquet at all\n" * 100, b"PAR1" + b"\x00" * 64 + b"PAR1"],
    ids=["empty", "text", "broken-footer"],
)
def test_a_signed_payload_that_is_not_parquet_is_quarantined_with_a_report(
    parties: Parties, payload: bytes
):
    sealed = parties.seal_frame(vendor_batch(10), raw_payload=payload)
    outcome = parties.ingest(sealed)
    assert outcome.status == "quarantined" and outcome.reasons == ("payload_readable",)
    report_dir = parties.inbox.quarantine / str(outcome.batch_id)
    assert "payload_readable" in (report_dir / "report.txt").read_text()
    assert (report_dir / sealed.name).exists() and not sealed.exists()
    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 0
    assert parties.table("SELECT status FROM batches")["status"].to_list() == ["quarantined"]
    assert not list(parties.inbox.work.iterdir())  # no plaintext left behind


def test_row_count_other_than_manifest_is_quarantined(parties: Parties):
    outcome = parties.ingest(parties.seal_frame(vendor_batch(60), rows=61))
    assert outcome.reasons == ("row_count",)


def test_newest_batch_per_key_wins_and_older_versions_stay(parties: Parties):
    first, second = vendor_batch(30, seed=1), vendor_batch(30, seed=1)
    second = second.with_columns(
        tag_ids=pl.lit([7], dtype=pl.List(pl.Int32)),
        tag_weights=pl.lit([0.5], dtype=pl.List(pl.Float32)),
    )
    parties.ingest(parties.seal_frame(first), now=NOW)
    parties.ingest(parties.seal_frame(second), now=NOW.replace(hour=11))
    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 60
    latest = parties.table("SELECT DISTINCT tag_ids FROM vendor_tags_latest")
    assert latest["tag_ids"].to_list() == [[7]]


def _block_inside(plain: bytes, key: bytes) -> int:
    """Return the payload offset of a whole 16-byte block inside the one copy of `key`."""
    assert plain.count(key) == 1
    return (plain.find(key) + 15) // 16 * 16


def _open_unchecked(parties: Parties, sealed: Path) -> bytes:
    """Return the plaintext as the bank's bulk open writes it (no payload digest check)."""
    out = parties.root / f"{uuid.uuid4().hex}.parquet"
    open_sealed(
        sealed,
        out,
        recipient_keys=parties.bank.recipient_private,
        vendor_keys=parties.bank.vendor_public,
        check_payload_digest=False,
    )
    plain = out.read_bytes()
    out.unlink()
    return plain


REWRITES = {
    # what the rewritten payload would have done without the digest check
    "v2-would-load": (2, None, "keys"),
    "v2-would-quarantine": (2, "tags_known", "keys"),
    "v2-unreadable-parquet": (2, None, "magic"),
    "v1": (1, None, "keys"),
}


@pytest.mark.parametrize("case", list(REWRITES))
def test_a_payload_rewritten_by_a_data_key_holder_is_refused_and_nothing_loads(
    parties: Parties, case: str, caplog
):
    """A vendor (a holder of the data key) sends chunks that decrypt to content other than the
    content whose SHA-256 it signed, keeping every GCM tag (docs/envelope.md, "Version 2"). The
    v2 signature covers only the tags, so the open passes; the payload digest, checked before
    COMMIT, refuses it whatever the content would have done. v1's signature refuses it at open."""
    version, breakage, where = REWRITES[case]
    frame = vendor_batch(300) if breakage is None else BREAKAGES[breakage](vendor_batch(300))
    sealed = parties.seal_frame(frame, compression="uncompressed", format_version=version)
    raw = sealed.read_bytes()
    plain = _open_unchecked(parties, sealed)
    keys = frame["key"].to_list()
    at = 0 if where == "magic" else _block_inside(plain, keys[100])  # "PAR1" at 0
    bank_key = parties.bank.recipient_private(parties.bank.recipient_public_bytes()[0])
    sealed.write_bytes(
        rewrite_as_key_holder(
            raw, bank_key, at=at, wanted=b"forged by vendor", fix_at=_block_inside(plain, keys[200])
        )
    )
    if version == 2:  # the bulk open accepts the rewrite: only the digest can tell
        forged = _open_unchecked(parties, sealed)
        assert forged[at : at + 16] == b"forged by vendor" and forged != plain
        if where == "keys":
            report = validate_vendor_batch(
                pl.read_parquet(forged), taxonomy=load_taxonomy(), expected_rows=300
            )
            assert report.passed == (breakage is None)

    with caplog.at_level(logging.INFO):
        outcome = parties.ingest(sealed)

    assert (outcome.status, outcome.rows, outcome.reasons) == ("refused", 0, ("refused",))
    assert parties.table("SELECT count(*) AS n FROM vendor_apps")["n"][0] == 0
    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 0
    ledger = parties.table("SELECT batch_id, status, rows, reasons FROM batches")
    assert ledger["status"].to_list() == ["refused"] and ledger["rows"].to_list() == [0]
    assert ledger["batch_id"][0].startswith("refused:")
    cause = json.loads(ledger["reasons"][0])[0]
    expected = "payload digest mismatch" if version == 2 else "signature does not verify"
    assert cause.startswith(expected) and f"cause={cause!r}" in caplog.text
    assert (parties.inbox.quarantine / sealed.name).exists()
    assert not (parties.inbox.quarantine / str(outcome.batch_id)).exists()  # no contract report
    assert not list(parties.inbox.inbox.iterdir()) and not list(parties.inbox.work.iterdir())


@pytest.mark.parametrize("version", [2, 1])
def test_the_payload_digest_is_checked_before_commit_and_a_normal_batch_loads(
    parties: Parties, version: int, monkeypatch
):
    """The digest runs beside validation and load; COMMIT waits for it, however slow it is."""
    events: list[str] = []
    loading = threading.Event()
    real_hash, real_load = fusion.ingest._file_sha256, fusion.ingest._load_rows

    def late_hash(path: Path, **kwargs: object) -> str:
        assert loading.wait(timeout=30)  # still hashing when the rows are already inserted
        digest = real_hash(path, **kwargs)  # type: ignore[arg-type]
        events.append("hashed")
        return digest

    def load(*args: object) -> None:
        events.append("load")
        loading.set()
        real_load(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fusion.ingest, "_file_sha256", late_hash)
    monkeypatch.setattr(fusion.ingest, "_load_rows", load)
    sealed = parties.seal_frame(vendor_batch(120), format_version=version)
    outcome = parties.ingest(sealed, before_commit=lambda: events.append("commit"))

    assert outcome.status == "loaded" and outcome.rows == 120
    assert events == ["load", "hashed", "commit"]
    assert "digest_wait" in outcome.seconds
    assert not [t for t in threading.enumerate() if t.name.startswith("ingest-payload-sha256")]
    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 120
    assert (parties.inbox.archive / sealed.name).exists()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from fusion.ingest import Inbox, ingest_file
    from fusion.store import Store
    from matcher.keyring import Keyring

    root, sealed = Path(sys.argv[1]), Path(sys.argv[2])
    bank = Keyring.open(root / "bank-keys")
    inbox = Inbox(root / "bank")
    with Store.open(root / "bank" / "fusion.duckdb", key=bank.store_key()) as store:
        ingest_file(sealed, store=store, keyring=bank, inbox=inbox,
                    now=datetime(2026, 10, 1, tzinfo=UTC),
                    before_commit=lambda: os.kill(os.getpid(), signal.SIGKILL))
    """
)


@pytest.mark.slow  # a subprocess killed mid-load, a second clean store
def test_sigkill_mid_load_leaves_the_store_as_it_was_and_a_rerun_finishes(parties: Parties):
    base = parties.seal_frame(vendor_batch(100, seed=5))
    assert parties.ingest(base).status == "loaded"
    big = parties.seal_frame(vendor_batch(20_000, seed=6))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(parties.root), str(big)], env=env, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert big.exists()  # still in the inbox: nothing was judged
    wal = parties.store_path.with_name(parties.store_path.name + ".wal")
    raw = parties.store_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    key_hex = vendor_batch(20_000, seed=6)["key"][0].hex()
    assert key_hex.encode() not in raw and b"Games > " not in raw

    assert parties.table("SELECT count(*) AS n FROM vendor_tags")["n"][0] == 100
    with parties.store() as store:
        outcomes = list(
            ingest_inbox(store=store, keyring=parties.bank, inbox=parties.inbox, clock=lambda: NOW)
        )
    assert [o.status for o in outcomes] == ["loaded"]

    clean = Parties(parties.root / "clean")
    for frame in (vendor_batch(100, seed=5), vendor_batch(20_000, seed=6)):
        clean.ingest(clean.seal_frame(frame))
    query = "SELECT key, tag_ids, tag_weights FROM vendor_tags ORDER BY key"
    assert parties.table(query).equals(clean.table(query))


def test_no_phone_key_or_tag_name_in_store_bytes_or_logs(parties: Parties, caplog):
    users = _users(200, seed=8)
    users_path = parties.root / "users.parquet"
    users.write_parquet(users_path)
    sealed = parties.inbox.inbox / "b.sealed"
    with caplog.at_level(logging.DEBUG):
        pack_users(users_path, sealed, keyring=parties.vendor, now=NOW)
        with parties.store() as store:
            store.load_taxonomy(load_taxonomy())
        parties.ingest(sealed)
        bad = parties.seal_frame(BREAKAGES["key_unique"](vendor_batch(20)))
        bad.write_bytes(_flip("middle")(bad.read_bytes()))
        parties.ingest(bad)
    expected, _, _ = build_batch(users, parties.bank.current_salt())
    phones = [p.replace("+86 ", "").replace(" ", "") for p in users["phone"].to_list()]
    secrets = [parties.bank.store_key(), parties.bank.current_salt().salt.hex()]
    blobs = {"store": parties.store_path.read_bytes(), "log": caplog.text.encode()}
    for f in parties.inbox.root.rglob("*"):
        if f.is_file() and f.suffix in {".json", ".txt"}:
            blobs[str(f)] = f.read_bytes()
    for name, blob in blobs.items():
        for phone in phones[:50]:
            assert phone.encode() not in blob, name
        for key in expected["key"].to_list()[:50]:
            assert key.hex().encode() not in blob, name
        for secret in secrets:
            assert secret.encode() not in blob, name
    assert b"Games > " not in blobs["store"] and b"vendor_tags" not in blobs["store"]


def test_a_bank_that_requires_the_hybrid_suite_refuses_an_x25519_batch_with_its_reason(
    parties: Parties,
):
    users_path = parties.root / "users.parquet"
    _users(50).write_parquet(users_path)
    classic = parties.inbox.inbox / "classic.sealed"
    pack_users(users_path, classic, keyring=parties.vendor, now=NOW)
    kid = parties.bank.rotate("hpke", suite="MLKEM768-X25519")
    parties.vendor.import_recipient(
        *parties.bank.recipient_public_bytes(kid), suite="MLKEM768-X25519"
    )
    parties.bank.set_accepted_suites(["MLKEM768-X25519"])

    refused = parties.ingest(classic)

    assert refused.status == "refused"
    (reasons,) = parties.table("SELECT reasons FROM batches WHERE status = 'refused'")["reasons"]
    assert "suite X25519 is not accepted by the bank's policy" in reasons
    assert "seal the batch again" in reasons
    hybrid = parties.inbox.inbox / "hybrid.sealed"
    options = PackOptions(suite="MLKEM768-X25519")
    pack_users(users_path, hybrid, keyring=parties.vendor, now=NOW, options=options)
    assert parties.ingest(hybrid).status == "loaded"
    loaded = parties.table("SELECT suite, rows FROM batches WHERE status = 'loaded'")
    assert loaded.rows() == [("MLKEM768-X25519", 50)]


_VENDOR_TABLES = {
    "vendor_apps": "key, salt_epoch, batch_id, app_ids, app_days, app_sessions",
    "vendor_tags": "key, salt_epoch, batch_id, tag_ids, tag_weights",
}


def _stored_compressions(store: Store, table: str, column: str) -> set[str]:
    """Return how DuckDB compressed `column` of `table` once checkpointed (validity aside)."""
    store.checkpoint()
    rows = store.execute(
        f"SELECT DISTINCT compression FROM pragma_storage_info('{table}')"
        " WHERE column_name = ? AND segment_type <> 'VALIDITY'",
        [column],
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_the_loaded_rows_are_those_of_a_plain_load_of_the_same_payload(parties: Parties):
    """What ingest commits is, row for row and value for value, what DuckDB itself reads from
    the decrypted payload; keyed hashes are stored uncompressed (migration 13), lists are not."""
    sealed = parties.seal_frame(vendor_batch(2_000, seed=11))
    plain = parties.root / "reference.parquet"
    plain.write_bytes(_open_unchecked(parties, sealed))
    outcome = parties.ingest(sealed)
    assert outcome.status == "loaded" and outcome.rows == 2_000
    assert {"read", "validate", "load", "digest_wait"} <= set(outcome.seconds)

    epoch = parties.vendor.current_salt().epoch_id
    with parties.store() as store:
        for table, columns in _VENDOR_TABLES.items():
            loaded = store.execute(f"SELECT {columns} FROM {table} ORDER BY key").pl()
            reference = store.execute(
                f"SELECT {columns} FROM (SELECT *, ? AS salt_epoch, ? AS batch_id"
                " FROM read_parquet(?)) ORDER BY key",
                [epoch, outcome.batch_id, str(plain)],
            ).pl()
            assert loaded.equals(reference), table
            assert _stored_compressions(store, table, "key") == {"Uncompressed"}
        assert _stored_compressions(store, "vendor_apps", "app_ids") != {"Uncompressed"}


@pytest.mark.slow  # over a second: out of the inner loop
def test_migration_13_keeps_every_vendor_row_of_an_existing_store(
    parties: Parties, monkeypatch: pytest.MonkeyPatch
):
    """A store written before migration 13 (keys dictionary-compressed) opens with the same
    rows in the vendor tables and their views, its keys now stored uncompressed."""
    monkeypatch.setattr(fusion.store, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version < 13))
    first, second = vendor_batch(300, seed=1), vendor_batch(200, seed=1)  # 200 keys shared
    parties.ingest(parties.seal_frame(first), now=NOW)
    parties.ingest(parties.seal_frame(second), now=NOW.replace(hour=11))
    queries = {
        **{t: f"SELECT {c} FROM {t} ORDER BY key, batch_id" for t, c in _VENDOR_TABLES.items()},
        **{
            f"{t}_latest": f"SELECT {c} FROM {t}_latest ORDER BY key"
            for t, c in _VENDOR_TABLES.items()
        },
        "vendor_oprf_rows": "SELECT * FROM vendor_oprf_rows ORDER BY label",
    }
    with parties.store() as store:
        store.execute(
            "INSERT INTO vendor_oprf_rows VALUES (?, ?, 'e1', 'b-oprf'), (?, ?, 'e1', 'b-oprf')",
            [os.urandom(16), os.urandom(90), os.urandom(16), os.urandom(90)],
        )
        assert store.schema_version == 12
        assert _stored_compressions(store, "vendor_tags", "key") == {"DICT_FSST"}
        before = {name: store.execute(sql).pl() for name, sql in queries.items()}
    monkeypatch.undo()

    with parties.store() as store:
        assert store.schema_version == SCHEMA_VERSION >= 13
        for name, sql in queries.items():
            assert store.execute(sql).pl().equals(before[name]), name
        random_bytes = (
            ("vendor_apps", "key"),
            ("vendor_tags", "key"),
            ("vendor_oprf_rows", "label"),
            ("vendor_oprf_rows", "sealed"),
        )
        for table, column in random_bytes:
            assert _stored_compressions(store, table, column) == {"Uncompressed"}, table
    assert before["vendor_tags"].height == 500 and before["vendor_tags_latest"].height == 300
