"""POST /v1/batches and GET /v1/batches/{id} over real HTTP, on servers of their own.

Each server serves its own copy of the demo run (the shared `served` fixture never sees these
uploads), with a 1 MiB upload cap; batches are a few hundred rows sealed with the run's vendor
keyring, as the vendor's tool seals them.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from api import ApiSettings
from api import uploads as api_uploads
from contracts.schemas import VENDOR_BATCH
from contracts.taxonomy import load_taxonomy
from fusion.retention import Retention
from fusion.runfolder import RunFolder
from fusion.store import Store
from labs.cli import app as cli
from labs.world import WorldFiles
from matcher.atomic import temp_name
from matcher.envelope import MAGIC, seal
from matcher.kem import Suite
from matcher.keyring import Keyring, pair_locally
from matcher.manifest import BatchKeys, Manifest
from matcher.pack import pack_users
from tests.support.breakages import BREAKAGES
from tests.support.factories import vendor_batch
from tests.support.polling import eventually
from tests.support.server import NOW, ServedRun, bearer, serve_copy, serve_run

CAP = 1 << 20  # max_upload_bytes of these servers; the sealed batches here are far smaller
WAIT = 60.0  # seconds an upload may take to be judged on a loaded 2-core machine


@dataclass(frozen=True)
class Bank(ServedRun):
    """A served copy of the demo run, its tokens, its in-process service and vendor keyring."""

    vendor: Keyring  # the run's vendor keyring: vendor-a

    def stop(self) -> None:
        self.running.stop()

    def ledger(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        """Return the rows of a query on the live store (a cursor of this thread)."""
        return self.service.cursor().execute(sql, params or []).fetchall()


@contextmanager
def serving(
    demo_run: Path,
    root: Path,
    *,
    before_start: Callable[[Path], None] | None = None,
    **settings: Any,
) -> Iterator[Bank]:
    """Serve a copy of the demo run; `before_start(run)` may leave files in it first; `settings`
    override ApiSettings fields."""
    settings = {"max_upload_bytes": CAP, **settings}
    with serve_copy(demo_run, root, before_start=before_start, **settings) as served:
        yield Bank(**vars(served), vendor=Keyring.open(served.folder.vendor_keys))


@pytest.fixture(scope="module")
def bank(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    with serving(demo_run, tmp_path_factory.mktemp("batches")) as served:
        yield served


@pytest.fixture
def client(bank: Bank) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bank.url, timeout=WAIT) as http:
        yield http


def sealed(
    bank: Bank,
    frame: pl.DataFrame,
    *,
    vendor_id: str = "vendor-a",
    batch_id: str | None = None,
    suite: Suite | None = None,
) -> tuple[bytes, str]:
    """Return (the sealed file's bytes, its batch id): `frame` sealed with the vendor keyring.

    Any frame, so contract-breaking batches too; `vendor_id` other than the keyring's makes a
    manifest whose signature the bank cannot verify; `suite` seals to the bank's newest key of
    that HPKE suite (default: its current key).
    """
    batch_id = batch_id or str(uuid.uuid4())
    outbox = bank.folder.outbox
    outbox.mkdir(parents=True, exist_ok=True)
    payload, out = outbox / f"{batch_id}.parquet", outbox / f"{batch_id}.sealed"
    frame.write_parquet(payload)
    signing_kid, signer = bank.vendor.current_signer()
    recipient_kid, recipient = bank.vendor.current_recipient_public(suite)
    manifest = Manifest.new(
        batch_id=batch_id,
        keys=BatchKeys(
            vendor_id=vendor_id,
            signing_kid=signing_kid,
            recipient_kid=recipient_kid,
            salt_epoch=bank.vendor.current_salt().epoch_id,
        ),
        created_at=NOW,
        rows=frame.height,
        taxonomy_version=load_taxonomy().version,
        contract=VENDOR_BATCH.contract,
    )
    seal(payload, out, manifest=manifest, recipient=recipient, signer=signer)
    payload.unlink()
    data = out.read_bytes()
    out.unlink()
    return data, batch_id


def push(client: httpx.Client, token: str, body: object) -> httpx.Response:
    return client.post("/v1/batches", content=body, headers=bearer(token))  # type: ignore[arg-type]


def judged(client: httpx.Client, token: str, batch_id: str) -> dict[str, Any]:
    """Return the batch's status once the ingest worker has judged it (polls, up to WAIT s)."""

    def verdict() -> dict[str, Any] | None:
        answer = client.get(f"/v1/batches/{batch_id}", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        status: dict[str, Any] = answer.json()
        return status if status["status"] != "received" else None

    return eventually(verdict, timeout=WAIT, interval=0.05, what=f"batch {batch_id} judged")


def _refused(batch_id: str) -> dict[str, Any]:
    """Return the whole status a vendor sees of a refused batch: nothing but the refusal."""
    return {
        "batch_id": batch_id,
        "status": "refused",
        "rows": None,
        "received_at": None,
        "finished_at": None,
        "reasons": [],
        "report": None,
    }


def not_found(client: httpx.Client, token: str, batch_id: str) -> dict[str, Any]:
    answer = client.get(f"/v1/batches/{batch_id}", headers=bearer(token))
    assert answer.status_code == 404, answer.text
    body: dict[str, Any] = answer.json()
    return body


def vendor_rows(bank: Bank, batch_id: str) -> tuple[int, int]:
    """Return how many vendor_apps and vendor_tags rows batch `batch_id` loaded."""
    apps = bank.ledger("SELECT count(*) FROM vendor_apps WHERE batch_id = ?", [batch_id])
    tags = bank.ledger("SELECT count(*) FROM vendor_tags WHERE batch_id = ?", [batch_id])
    return apps[0][0], tags[0][0]


def left_behind(bank: Bank) -> list[str]:
    """Return what the upload route or the worker left in the inbox and the work folder."""
    inbox = bank.folder.inbox
    return sorted(
        str(p.relative_to(inbox.root)) for d in (inbox.inbox, inbox.work) for p in d.iterdir()
    )


def test_a_sealed_batch_loads_once_even_when_sent_twice(bank: Bank, client: httpx.Client):
    data, batch_id = sealed(bank, vendor_batch(300, seed=101))
    first = push(client, bank.tokens.vendor, data)
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["batch_id"] == batch_id and accepted["status"] == "received"
    assert accepted["status_url"] == f"/v1/uploads/{accepted['upload_id']}"
    status = judged(client, bank.tokens.vendor, batch_id)
    assert (status["status"], status["rows"], status["reasons"]) == ("loaded", 300, [])

    again = push(client, bank.tokens.vendor, data)
    assert again.status_code == 202 and again.json()["batch_id"] == batch_id
    upload = bank.service.uploads.received[again.json()["upload_id"]]
    assert upload.done.wait(WAIT) and upload.outcome is not None
    assert upload.outcome.status == "duplicate"
    assert judged(client, bank.tokens.vendor, batch_id)["status"] == "loaded"
    assert vendor_rows(bank, batch_id) == (300, 300)
    ledger = bank.ledger("SELECT status, rows FROM batches WHERE batch_id = ?", [batch_id])
    assert ledger == [("loaded", 300)]
    assert left_behind(bank) == []


def test_a_bit_flip_in_the_ciphertext_is_refused_and_the_status_says_only_refused(
    bank: Bank, client: httpx.Client
):
    data, batch_id = sealed(bank, vendor_batch(300, seed=102))
    middle = len(data) // 2  # well inside the one ciphertext chunk
    tampered = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
    loaded_before = bank.ledger("SELECT count(*) FROM vendor_apps")
    accepted = push(client, bank.tokens.vendor, tampered)
    assert accepted.status_code == 202 and accepted.json()["batch_id"] == batch_id
    upload_id = accepted.json()["upload_id"]

    assert judged(client, bank.tokens.vendor, batch_id) == _refused(batch_id)
    digest = hashlib.sha256(tampered).hexdigest()
    ledger = bank.ledger(
        "SELECT batch_id, vendor_id, status, rows FROM batches WHERE sealed_sha256 = ?", [digest]
    )
    assert ledger == [(f"refused:{digest}", None, "refused", 0)]
    assert bank.ledger("SELECT count(*) FROM batches WHERE batch_id = ?", [batch_id]) == [(0,)]
    assert vendor_rows(bank, batch_id) == (0, 0)
    assert bank.ledger("SELECT count(*) FROM vendor_apps") == loaded_before  # nothing loaded
    # The refused file itself, byte for byte, waits in quarantine for the bank to look at.
    kept = bank.folder.inbox.quarantine / f"vendor-a-{upload_id}.sealed"
    assert kept.read_bytes() == tampered
    assert not_found(client, bank.tokens.other_vendor, batch_id) == {
        "detail": f"no batch {batch_id} of yours"
    }
    assert left_behind(bank) == []


def test_a_refused_verdict_survives_a_restart_for_its_vendor_only(demo_run: Path, tmp_path: Path):
    with (
        serving(demo_run, tmp_path) as first,
        httpx.Client(base_url=first.url, timeout=WAIT) as http,
    ):
        data, batch_id = sealed(first, vendor_batch(100, seed=109))
        middle = len(data) // 2
        tampered = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
        upload_id = push(http, first.tokens.vendor, tampered).json()["upload_id"]
        assert judged(http, first.tokens.vendor, batch_id)["status"] == "refused"
        tokens, run = first.tokens, first.run
    digest = hashlib.sha256(tampered).hexdigest()

    # The same run folder: a restart.
    with serve_run(ApiSettings(run=run, max_upload_bytes=CAP)) as restarted:
        service = restarted.service
        assert service.uploads.received == {}  # nothing in memory: the answer comes from the store
        with httpx.Client(base_url=restarted.url, timeout=WAIT) as http:
            refused = {"batch_id": batch_id, "status": "refused", "rows": None}
            for token in (tokens.vendor, tokens.admin):
                answer = http.get(f"/v1/batches/{batch_id}", headers=bearer(token))
                assert answer.status_code == 200, answer.text
                assert answer.json() | refused == answer.json()
                assert answer.json()["reasons"] == [] and answer.json()["report"] is None
            assert not_found(http, tokens.other_vendor, batch_id) == {
                "detail": f"no batch {batch_id} of yours"
            }
        row = service.cursor().execute("SELECT * FROM uploads").fetchall()
        columns = [c[0] for c in service.cursor().execute("DESCRIBE uploads").fetchall()]
    # Status and ids only: never a cause, never a row of the batch.
    assert columns == [
        "upload_id",
        "vendor_id",
        "claimed_batch_id",
        "ledger_id",
        "status",
        "received_at",
        "judged_at",
    ]
    assert [r[:5] for r in row] == [
        (upload_id, "vendor-a", batch_id, f"refused:{digest}", "refused")
    ]


@pytest.mark.parametrize("rule", ["key_unique", "tags_known"])  # duplicate keys, unknown tag ids
def test_a_batch_breaking_its_contract_is_quarantined_with_a_report_for_its_vendor(
    bank: Bank, client: httpx.Client, rule: str
):
    data, batch_id = sealed(bank, BREAKAGES[rule](vendor_batch(300, seed=103)))
    assert push(client, bank.tokens.vendor, data).status_code == 202

    status = judged(client, bank.tokens.vendor, batch_id)
    assert status["status"] == "quarantined" and status["rows"] == 0
    assert rule in status["reasons"]
    assert status["report"]["batch_id"] == batch_id and rule in status["report"]["failed"]
    failed = next(r for r in status["report"]["rules"] if r["rule"] == rule)
    assert failed["failed_rows"] >= 1 and failed["example_rows"]
    assert vendor_rows(bank, batch_id) == (0, 0)
    assert (bank.folder.inbox.quarantine / batch_id / "report.json").is_file()
    # Not even the fact that it exists reaches another vendor.
    unknown = str(uuid.uuid4())
    assert not_found(client, bank.tokens.other_vendor, batch_id) == {
        "detail": f"no batch {batch_id} of yours"
    }
    assert not_found(client, bank.tokens.other_vendor, unknown) == {
        "detail": f"no batch {unknown} of yours"
    }
    assert left_behind(bank) == []


def test_a_vendor_never_sees_another_vendors_batch(bank: Bank, client: httpx.Client):
    data, batch_id = sealed(bank, vendor_batch(200, seed=104))
    assert push(client, bank.tokens.vendor, data).status_code == 202
    assert judged(client, bank.tokens.vendor, batch_id)["status"] == "loaded"
    assert judged(client, bank.tokens.admin, batch_id)["rows"] == 200

    unknown = str(uuid.uuid4())
    theirs, nobodys = (
        not_found(client, bank.tokens.other_vendor, batch_id),
        not_found(client, bank.tokens.other_vendor, unknown),
    )
    assert theirs["detail"].replace(batch_id, "ID") == nobodys["detail"].replace(unknown, "ID")

    # vendor-b claims vendor-a's batch id in a manifest of its own (read unverified at upload):
    # it learns that its upload was refused, never the status of vendor-a's batch.
    forged, _ = sealed(bank, vendor_batch(10, seed=105), vendor_id="vendor-b", batch_id=batch_id)
    assert push(client, bank.tokens.other_vendor, forged).status_code == 202
    assert judged(client, bank.tokens.other_vendor, batch_id) == _refused(batch_id)
    assert judged(client, bank.tokens.vendor, batch_id)["status"] == "loaded"

    # Nor can vendor-b push vendor-a's own sealed file under its token.
    before = len(bank.service.uploads.received)
    answer = push(client, bank.tokens.other_vendor, data)
    assert answer.status_code == 403 and "vendor vendor-b" in answer.json()["detail"]
    assert len(bank.service.uploads.received) == before
    assert vendor_rows(bank, batch_id) == (200, 200)
    assert bank.service.uploads.wait_idle(WAIT) and left_behind(bank) == []


@pytest.mark.parametrize(
    ("who", "body", "status"),
    [
        (None, b"sealed", 401),
        ("admin", b"sealed", 403),
        ("analyst", b"sealed", 403),
        ("campaign_tool", b"sealed", 403),
        ("vendor", b"", 422),
    ],
)
def test_uploads_need_a_vendor_token_and_a_body(
    bank: Bank, client: httpx.Client, who: str | None, body: bytes, status: int
):
    before = len(bank.service.uploads.received)
    headers = bearer(getattr(bank.tokens, who)) if who else {}
    answer = client.post("/v1/batches", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert len(bank.service.uploads.received) == before and left_behind(bank) == []


def _too_large_body() -> Iterator[bytes]:
    """Yield CAP + 256 KiB in 64 KiB blocks: httpx sends it chunked, with no Content-Length."""
    for _ in range(CAP // (64 << 10) + 4):
        yield bytes(64 << 10)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_oversized_upload_gets_413_and_leaves_nothing(
    bank: Bank, client: httpx.Client, framing: str
):
    assert bank.service.uploads.wait_idle(WAIT) and left_behind(bank) == []
    batches = bank.ledger("SELECT count(*) FROM batches")
    uploads = len(bank.service.uploads.received)

    body = bytes(CAP + 1) if framing == "content-length" else _too_large_body()
    answer = push(client, bank.tokens.vendor, body)

    assert answer.status_code == 413, answer.text
    assert f"at most {CAP:,} bytes" in answer.json()["detail"]
    sent = answer.request.headers
    assert ("content-length" in sent) == (framing == "content-length")
    assert sent.get("transfer-encoding") == (None if framing == "content-length" else "chunked")
    assert left_behind(bank) == []
    assert bank.ledger("SELECT count(*) FROM batches") == batches
    assert len(bank.service.uploads.received) == uploads


def test_an_announced_oversize_gets_413_before_any_body_is_sent(bank: Bank):
    """A client that announces 1 GiB is answered at once: the route reads no body to refuse."""
    port = urlsplit(bank.url).port
    assert port is not None
    request = (
        "POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {bank.tokens.vendor}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {1 << 30}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        conn.sendall(request.encode())
        head = b""
        while b"\r\n" not in head:
            more = conn.recv(4096)
            assert more, "the server closed without answering"
            head += more
    assert head.startswith(b"HTTP/1.1 413 ")
    assert left_behind(bank) == []


async def _push_together(url: str, token: str, bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=WAIT) as http:
        return await asyncio.gather(*(http.post("/v1/batches", content=b) for b in bodies))


def test_ten_concurrent_uploads_each_load_exactly_once(demo_run: Path, tmp_path: Path):
    """Ten batches pushed at once, two of them twice more: one load each, per the ledger read
    from the store after the server stopped."""
    with serving(demo_run, tmp_path) as bank:
        batches = [sealed(bank, vendor_batch(120 + i, seed=200 + i)) for i in range(10)]
        bodies = [data for data, _ in batches] + [batches[0][0], batches[7][0]]
        answers = asyncio.run(_push_together(bank.url, bank.tokens.vendor, bodies))
        assert [a.status_code for a in answers] == [202] * 12
        ids = [batch_id for _, batch_id in batches]
        assert [a.json()["batch_id"] for a in answers] == [*ids, ids[0], ids[7]]
        with httpx.Client(base_url=bank.url, timeout=WAIT) as client:
            for batch_id in ids:
                assert judged(client, bank.tokens.vendor, batch_id)["status"] == "loaded"
        assert bank.service.uploads.wait_idle(WAIT)
        outcomes = sorted(
            u.outcome.status
            for u in bank.service.uploads.received.values()
            if u.outcome is not None
        )
        assert outcomes == ["duplicate"] * 2 + ["loaded"] * 10
        bank.stop()

        bank_keys = Keyring.open(bank.folder.bank_keys)
        with Store.open(bank.folder.store, key=bank_keys.store_key(), read_only=True) as store:
            ledger = store.execute(
                "SELECT batch_id, status, rows FROM batches WHERE batch_id IN "
                "(SELECT unnest(?::VARCHAR[])) ORDER BY rows",
                [ids],
            ).fetchall()
            loaded = dict(
                store.execute(
                    "SELECT batch_id, count(*) FROM vendor_apps WHERE batch_id IN "
                    "(SELECT unnest(?::VARCHAR[])) GROUP BY batch_id",
                    [ids],
                ).fetchall()
            )
        assert ledger == [(batch_id, "loaded", 120 + i) for i, batch_id in enumerate(ids)]
        assert loaded == {batch_id: 120 + i for i, batch_id in enumerate(ids)}
        assert left_behind(bank) == []


def test_fusion_vendor_push_uploads_a_fresh_batch_and_reports_loaded(bank: Bank, tmp_path: Path):
    users = pl.read_parquet(WorldFiles(bank.folder.world).vendor_users).slice(0, 300)
    users_path, out = tmp_path / "users.parquet", tmp_path / "fresh.sealed"
    users.write_parquet(users_path)
    packed = pack_users(users_path, out, keyring=bank.vendor, now=NOW)

    result = CliRunner().invoke(
        cli,
        ["vendor", "push", str(out), "--url", bank.url, "--wait", str(WAIT)],
        env={"BANKFUSION_TOKEN": bank.tokens.vendor},
    )

    assert result.exit_code == 0, result.output
    assert f"batch {packed.batch_id}: loaded" in result.output
    rows = bank.ledger("SELECT status, rows FROM batches WHERE batch_id = ?", [packed.batch_id])
    assert rows == [("loaded", packed.rows)] and packed.rows > 0
    assert vendor_rows(bank, packed.batch_id) == (packed.rows, packed.rows)


def test_an_ingest_crash_reports_failed_and_keeps_the_file_for_a_retry(
    bank: Bank, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(api_uploads, "ingest_file", crash)
    data, batch_id = sealed(bank, vendor_batch(300, seed=177))
    assert push(client, bank.tokens.vendor, data).status_code == 202
    state = judged(client, bank.tokens.vendor, batch_id)
    assert state["status"] == "failed" and state["reasons"] == [] and state["rows"] is None
    kept = list((bank.run / "bank" / "inbox").glob("*.sealed"))
    assert len(kept) == 1
    kept[0].unlink()  # later tests expect an empty inbox


def test_a_vendor_past_its_pending_uploads_gets_429_and_nothing_is_written(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two uploads wait for a held ingest worker; a third of the same vendor is turned away
    before its body is written, and is accepted once the first two are judged."""
    release = threading.Event()
    real_ingest = api_uploads.ingest_file

    def held(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(WAIT), "the test never released the ingest worker"
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(api_uploads, "ingest_file", held)
    with serving(demo_run, tmp_path, max_pending_uploads=2) as bank:
        batches = [sealed(bank, vendor_batch(90 + i, seed=400 + i)) for i in range(3)]
        inbox = RunFolder(bank.run).inbox
        try:
            with httpx.Client(base_url=bank.url, timeout=WAIT) as client:
                for data, _ in batches[:2]:
                    assert push(client, bank.tokens.vendor, data).status_code == 202
                held_files = sorted(inbox.inbox.glob("*.sealed"))
                refused = push(client, bank.tokens.vendor, batches[2][0])
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "30"
                assert "2 uploads waiting" in refused.json()["detail"]
                # Nothing written: no new sealed file, no partial upload.
                assert sorted(inbox.inbox.glob("*.sealed")) == held_files
                assert list(inbox.work.glob(".upload-*")) == []
                release.set()
                for _, batch_id in batches[:2]:
                    assert judged(client, bank.tokens.vendor, batch_id)["status"] == "loaded"
                assert push(client, bank.tokens.vendor, batches[2][0]).status_code == 202
                assert judged(client, bank.tokens.vendor, batches[2][1])["status"] == "loaded"
        finally:
            release.set()


def test_a_refused_file_found_in_the_inbox_at_start_points_to_its_ledger_row(
    demo_run: Path, tmp_path: Path
):
    """A file the service did not receive itself gets an `uploads` row naming the refusal's
    ledger row, as an uploaded file's would."""
    upload_id = "00112233445566778899aabb"
    garbage = b"not a sealed batch at all" * 40

    def crashed(run: Path) -> None:
        inbox = RunFolder(run).inbox.ensure()
        (inbox.inbox / f"vendor-a-{upload_id}.sealed").write_bytes(garbage)

    with serving(demo_run, tmp_path, before_start=crashed) as fresh:
        assert fresh.service.uploads.wait_idle(WAIT)
        upload = fresh.service.uploads.received[upload_id]
        assert upload.outcome is not None and upload.outcome.status == "refused"
        digest = hashlib.sha256(garbage).hexdigest()
        assert upload.outcome.ledger_id == f"refused:{digest}"
        row = (
            fresh.service.cursor()
            .execute("SELECT status, ledger_id FROM uploads WHERE upload_id = ?", [upload_id])
            .fetchall()
        )
        assert row == [("refused", f"refused:{digest}")]
        ledger = (
            fresh.service.cursor()
            .execute("SELECT status FROM batches WHERE batch_id = ?", [f"refused:{digest}"])
            .fetchall()
        )
        assert ledger == [("refused",)]


def test_a_sealed_batch_left_in_the_inbox_loads_when_the_service_starts(
    bank: Bank, demo_run: Path, tmp_path: Path
):
    """A batch a crashed service had accepted but not ingested, and half-written uploads."""
    data, batch_id = sealed(bank, vendor_batch(150, seed=301))
    upload_id = "0123456789abcdef01234567"

    def crashed(run: Path) -> None:
        inbox = RunFolder(run).inbox.ensure()
        (inbox.inbox / f"vendor-a-{upload_id}.sealed").write_bytes(data)  # as the route names it
        # Half an upload, where the route streams it (beside its final name) ...
        half = temp_name(inbox.inbox / "vendor-a-fedcba9876543210fedcba98.sealed")
        half.write_bytes(b"half a batch")
        # ... and where earlier versions of the service did.
        (inbox.work / ".upload-fedcba9876543210fedcba98.part").write_bytes(b"half a batch")

    with serving(demo_run, tmp_path, before_start=crashed) as fresh:
        upload = fresh.service.uploads.received[upload_id]
        assert (upload.vendor_id, upload.claimed_batch_id) == ("vendor-a", batch_id)
        with httpx.Client(base_url=fresh.url, timeout=WAIT) as http:
            state = judged(http, fresh.tokens.vendor, batch_id)
        assert (state["status"], state["rows"]) == ("loaded", 150)
        assert vendor_rows(fresh, batch_id) == (150, 150)
        assert fresh.service.uploads.wait_idle(WAIT) and left_behind(fresh) == []


def _push_cli(bank: Bank, path: Path, token: str, wait: float) -> tuple[int, str]:
    """Return `fusion vendor push`'s exit code and its output with line breaks undone."""
    result = CliRunner().invoke(
        cli,
        ["vendor", "push", str(path), "--url", bank.url, "--wait", str(wait)],
        env={"BANKFUSION_TOKEN": token},
    )
    return result.exit_code, " ".join(result.output.split())


def test_fusion_vendor_push_without_a_verdict_in_time_exits_non_zero(
    bank: Bank, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    gate = threading.Event()
    ingest = api_uploads.ingest_file

    def held(*args: Any, **kwargs: Any) -> Any:
        gate.wait(WAIT)  # the worker is busy until the CLI has given up waiting
        return ingest(*args, **kwargs)

    monkeypatch.setattr(api_uploads, "ingest_file", held)
    data, batch_id = sealed(bank, vendor_batch(300, seed=302))
    path = tmp_path / "slow.sealed"
    path.write_bytes(data)
    try:
        code, output = _push_cli(bank, path, bank.tokens.vendor, 0.5)
    finally:
        gate.set()
    assert code == 2, output
    assert f"no verdict on batch {batch_id} within 0.5 s" in output
    assert f"GET {bank.url}/v1/uploads/" in output
    assert bank.service.uploads.wait_idle(WAIT)
    with httpx.Client(base_url=bank.url, timeout=WAIT) as http:
        assert judged(http, bank.tokens.vendor, batch_id)["rows"] == 300
    assert left_behind(bank) == []


def test_fusion_vendor_push_exits_non_zero_on_a_refused_token_a_quarantine_or_a_bad_file(
    bank: Bank, tmp_path: Path
):
    data, _ = sealed(bank, vendor_batch(50, seed=303))
    path = tmp_path / "batch.sealed"
    path.write_bytes(data)
    code, output = _push_cli(bank, path, "bf_0123456789abcdef_" + "A" * 43, WAIT)
    assert code == 2 and "did not accept the token in BANKFUSION_TOKEN (HTTP 401)" in output

    broken, batch_id = sealed(bank, BREAKAGES["tags_known"](vendor_batch(50, seed=304)))
    path.write_bytes(broken)
    code, output = _push_cli(bank, path, bank.tokens.vendor, WAIT)
    # Delivered and judged: a finding (exit 1), not a usage error.
    assert code == 1 and f"batch {batch_id} was quarantined: it broke the data contract" in output

    garbage = tmp_path / "garbage.sealed"
    garbage.write_bytes(b"not a sealed batch at all")
    code, output = _push_cli(bank, garbage, bank.tokens.vendor, WAIT)
    assert code == 2 and "is not a sealed batch file" in output, output  # never sent
    garbage.write_bytes(MAGIC + b"\0" * 64)  # starts as one: the bank's refusal
    code, output = _push_cli(bank, garbage, bank.tokens.vendor, WAIT)
    assert code == 2 and "could not read the manifest" in output, output
    assert bank.service.uploads.wait_idle(WAIT) and left_behind(bank) == []


def upload_status(client: httpx.Client, token: str, status_url: str) -> httpx.Response:
    return client.get(status_url, headers=bearer(token))


def test_an_upload_without_a_manifest_has_a_status_url_that_says_refused(
    bank: Bank, client: httpx.Client
):
    accepted = push(client, bank.tokens.vendor, b"not a sealed batch at all" * 40)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    upload_id, status_url = body["upload_id"], body["status_url"]
    assert body["batch_id"] is None and status_url == f"/v1/uploads/{upload_id}"

    def verdict() -> dict[str, Any] | None:
        answer = upload_status(client, bank.tokens.vendor, status_url)
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        return state if state["status"] != "received" else None

    # Its own verdict, and nothing more: no cause.
    assert eventually(verdict, timeout=WAIT, what="upload judged") == {
        "upload_id": upload_id,
        "batch_id": None,
        "status": "refused",
        "status_url": status_url,
    }
    assert upload_status(client, bank.tokens.admin, status_url).json()["status"] == "refused"
    other = upload_status(client, bank.tokens.other_vendor, status_url)
    assert other.status_code == 404 and other.json() == {
        "detail": f"no upload {upload_id} of yours"
    }
    unknown = upload_status(client, bank.tokens.vendor, "/v1/uploads/" + "0" * 24)
    assert unknown.status_code == 404
    assert left_behind(bank) == []


def test_a_tampered_reupload_of_a_loaded_batch_shows_its_own_refusal(
    bank: Bank, client: httpx.Client
):
    data, batch_id = sealed(bank, vendor_batch(120, seed=501))
    first = push(client, bank.tokens.vendor, data).json()
    assert judged(client, bank.tokens.vendor, batch_id)["status"] == "loaded"
    middle = len(data) // 2
    tampered = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
    again = push(client, bank.tokens.vendor, tampered).json()
    assert again["batch_id"] == batch_id and again["upload_id"] != first["upload_id"]
    assert bank.service.uploads.wait_idle(WAIT)

    assert upload_status(client, bank.tokens.vendor, again["status_url"]).json() == {
        "upload_id": again["upload_id"],
        "batch_id": batch_id,
        "status": "refused",
        "status_url": again["status_url"],
    }
    assert upload_status(client, bank.tokens.vendor, first["status_url"]).json()["status"] == (
        "loaded"
    )
    # The batch itself is still what it was.
    assert judged(client, bank.tokens.vendor, batch_id)["status"] == "loaded"


def test_upload_verdicts_survive_a_restart(demo_run: Path, tmp_path: Path):
    with (
        serving(demo_run, tmp_path) as first,
        httpx.Client(base_url=first.url, timeout=WAIT) as http,
    ):
        body = push(http, first.tokens.vendor, b"garbage" * 100).json()
        assert first.service.uploads.wait_idle(WAIT)
        tokens, run = first.tokens, first.run
    with (
        serve_run(ApiSettings(run=run, max_upload_bytes=CAP)) as restarted,
        httpx.Client(base_url=restarted.url, timeout=WAIT) as http,
    ):
        answer = upload_status(http, tokens.vendor, body["status_url"])
        assert answer.status_code == 200 and answer.json()["status"] == "refused"
        assert upload_status(http, tokens.other_vendor, body["status_url"]).status_code == 404


def test_refused_uploads_fill_a_bounded_quarantine_shown_on_metrics(demo_run: Path, tmp_path: Path):
    """Four refused 200 kB uploads into a 500 kB quarantine: the two newest stay, 0600; a
    replay of one is not kept twice; /metrics says how full it is; the ledger keeps all."""
    with (
        serving(demo_run, tmp_path) as bank,
        httpx.Client(base_url=bank.url, timeout=WAIT) as http,
    ):
        uploads = bank.service.uploads
        uploads.inbox = replace(uploads.inbox, quarantine_retention=Retention(max_bytes=500_000))
        bodies = [bytes([n]) * 200_000 for n in range(4)]
        for body in [*bodies, bodies[3]]:  # the last one twice: a replay
            assert push(http, bank.tokens.vendor, body).status_code == 202
            assert uploads.wait_idle(WAIT)
        kept = sorted(uploads.inbox.quarantine.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        assert [p.read_bytes()[:1] for p in kept] == [b"\x02", b"\x03"]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
        assert stat.S_IMODE(uploads.inbox.quarantine.stat().st_mode) == 0o700
        assert bank.ledger("SELECT count(*) FROM batches WHERE status = 'refused'") == [(4,)]
        metrics = http.get("/metrics", headers=bearer(bank.tokens.admin)).text
        assert 'bankfusion_kept_bytes{folder="quarantine"} 400000' in metrics
        assert 'bankfusion_kept_files{folder="quarantine"} 2' in metrics
        assert 'bankfusion_kept_max_bytes{folder="quarantine"} 500000' in metrics


def _hybrid_only(run: Path) -> None:
    """Rotate the bank to a post-quantum hybrid key, pair the vendor, accept only that suite."""
    folder = RunFolder(run)
    bank = Keyring.open(folder.bank_keys)
    bank.rotate("hpke", suite=Suite.MLKEM768_X25519)
    pair_locally(bank, Keyring.open(folder.vendor_keys))
    bank.set_accepted_suites([Suite.MLKEM768_X25519])


def test_a_hybrid_batch_ships_and_loads_and_an_x25519_one_is_refused_by_policy(
    demo_run: Path, tmp_path: Path
):
    with (
        serving(demo_run, tmp_path, before_start=_hybrid_only) as hybrid_bank,
        httpx.Client(base_url=hybrid_bank.url, timeout=WAIT) as http,
    ):
        data, batch_id = sealed(hybrid_bank, vendor_batch(200, seed=7), suite=Suite.MLKEM768_X25519)
        assert push(http, hybrid_bank.tokens.vendor, data).status_code == 202
        assert judged(http, hybrid_bank.tokens.vendor, batch_id)["status"] == "loaded"
        assert hybrid_bank.ledger("SELECT suite FROM batches WHERE batch_id = ?", [batch_id]) == [
            ("MLKEM768-X25519",)
        ]
        old, old_id = sealed(hybrid_bank, vendor_batch(200, seed=8), suite=Suite.X25519)
        assert push(http, hybrid_bank.tokens.vendor, old).status_code == 202
        assert judged(http, hybrid_bank.tokens.vendor, old_id) == _refused(old_id)
        assert vendor_rows(hybrid_bank, old_id) == (0, 0)
