"""Benchmarks of the privacy primitives: keyed hashing, and opening a sealed batch."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

# The raw baselines measure the AEAD primitive itself, so this bench (alone outside matcher/)
# imports it; the sealed files' keys all come from keyrings.
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from labs.bench.figures import Figure, best_of
from labs.bench.inputs import random_mobiles
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from matcher.kem import RecipientPrivateKey

__all__ = ["bench_envelope", "bench_envelope_suites", "bench_keyed_hash"]

CHUNK = 4 << 20  # the plaintext chunk of the payload writes and the raw passes


def bench_keyed_hash(work: Path, *, n: int = 2_000_000) -> Iterator[Figure]:
    """Keyed hashing keys/s against a single-thread hashlib.sha256 loop over the same strings."""
    del work
    phones = random_mobiles(n, seed=11)
    messages = [f"mobile|{p}" for p in phones]
    series = normalize_phones(pl.Series("phone", phones)).values
    epoch = SaltEpoch.generate("bench")
    sha256 = hashlib.sha256

    def plain() -> None:
        for m in messages:
            sha256(m.encode()).digest()

    baseline = n / best_of(plain, 2)
    value = n / best_of(lambda: keyed_hash(series, epoch, domain="mobile"), 3)
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


def bench_envelope(work: Path, *, megabytes: int = 256, rounds: int = 5) -> Iterator[Figure]:
    """Sealed-batch open MB/s against raw AES-256-GCM passes over the same bytes and chunks.

    Both baselines are measured in this run, in interleaved rounds (best of each, so a busy
    machine disturbs them alike): the ciphertext decrypted in memory (the cipher alone, no I/O)
    and a raw pass disk to disk (read, decrypt, write a new file, fsync), which does the same
    I/O as opening and is the one the >= 0.7x target is judged against.
    """
    payload = work / "payload.bin"
    with payload.open("wb") as handle:
        for _ in range(megabytes // 4):
            handle.write(os.urandom(CHUNK))
    size = payload.stat().st_size
    opened = work / "opened.bin"
    sealed = _SealedPayload.make(work, payload, opened)
    raw = _RawAesPasses.make(payload, work / "raw.bin", opened)

    def fresh_disk() -> None:
        # Every disk pass writes a new file, as opening does. Freeing the previous pass's
        # output inside the timed region was costly here (ext4 mounted with discard).
        opened.unlink(missing_ok=True)
        os.sync()

    passes: dict[str, tuple[Callable[[], object], Callable[[], object] | None]] = {
        "open": (sealed.opener(2, check=False), fresh_disk),
        "checked": (sealed.opener(2, check=True), fresh_disk),
        "v1": (sealed.opener(1, check=False), fresh_disk),
        "disk": (raw.disk_pass, fresh_disk),
        "memory": (raw.memory_pass, None),
    }
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(rounds):
        for name, (run, setup) in passes.items():
            best[name] = min(best[name], best_of(run, 1, setup=setup))
    raw.blocks.clear()
    for f in (payload, *sealed.files.values(), opened, raw.sealed):
        f.unlink(missing_ok=True)
    yield from _envelope_figures(size / 1e6, best, sealed.seal_s, rounds)
    yield from bench_envelope_suites(work, megabytes=megabytes, rounds=rounds)


def bench_envelope_suites(work: Path, *, megabytes: int = 256, rounds: int = 5) -> Iterator[Figure]:
    """Seal and open MB/s and the sealed size: the MLKEM768-X25519 suite against X25519.

    One payload, one bank keyring holding a key of each suite, the vendor sealing to each in
    turn (format version 3), best of `rounds` interleaved rounds each way; the X25519 figures
    are the baselines, measured in this run.
    """
    from matcher.envelope import open_sealed, seal
    from matcher.keyring import Keyring, pair_locally
    from matcher.manifest import BatchKeys, Manifest

    payload = work / "suites.payload.bin"
    with payload.open("wb") as handle:
        for _ in range(max(1, megabytes // 4)):
            handle.write(os.urandom(CHUNK))
    size = payload.stat().st_size / 1e6
    bank = Keyring.init(work / "suites-bank", role="bank")
    vendor = Keyring.init(work / "suites-vendor", role="vendor", vendor_id="bench")
    pair_locally(bank, vendor)
    hybrid = bank.rotate("hpke", suite="MLKEM768-X25519")
    vendor.import_recipient(*bank.recipient_public_bytes(hybrid), suite="MLKEM768-X25519")
    signer_kid, signer = vendor.current_signer()
    times: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for suite in ("X25519", "MLKEM768-X25519"):
            kid, recipient = vendor.current_recipient_public(suite)
            keys = BatchKeys(
                vendor_id="bench", signing_kid=signer_kid, recipient_kid=kid,
                salt_epoch=vendor.current_salt().epoch_id,
            )  # fmt: skip
            manifest = Manifest.new(
                batch_id=str(uuid.uuid4()), keys=keys, created_at=datetime.now(UTC), rows=1,
                taxonomy_version="bench", contract="vendor_batch/v1",
            )  # fmt: skip
            sealed, opened = work / f"suites.{suite}.sealed", work / "suites.opened.bin"
            seal_s = best_of(
                partial(
                    seal, payload, sealed, manifest=manifest, recipient=recipient, signer=signer
                ),
                1,
            )
            open_s = best_of(
                partial(
                    open_sealed, sealed, opened, recipient_keys=bank.recipient_private,
                    vendor_keys=bank.vendor_public, check_payload_digest=False,
                ),
                1,
                setup=partial(opened.unlink, missing_ok=True),
            )  # fmt: skip
            best = times.setdefault(suite, {"seal": float("inf"), "open": float("inf")})
            best["seal"], best["open"] = min(best["seal"], seal_s), min(best["open"], open_s)
            sizes[suite] = sealed.stat().st_size
            sealed.unlink()
            opened.unlink(missing_ok=True)
    payload.unlink()
    for what in ("seal", "open"):
        mine, theirs = (size / times[s][what] for s in ("MLKEM768-X25519", "X25519"))
        yield Figure(
            name=f"envelope.hybrid_{what}_mb_per_s",
            value=mine,
            unit="MB/s",
            baseline=theirs,
            baseline_name=f"{what} with the X25519 suite, same payload, same run",
            ratio=mine / theirs,
            target="reported",
            met=None,
            note=f"{size:.0f} MB payload, 4 MiB chunks, format version 3, best of {rounds}",
        )
    yield Figure(
        name="envelope.hybrid_sealed_bytes",
        value=sizes["MLKEM768-X25519"],
        unit="bytes",
        baseline=sizes["X25519"],
        baseline_name="the same payload sealed with the X25519 suite",
        ratio=sizes["MLKEM768-X25519"] / sizes["X25519"],
        target="reported",
        met=None,
        note=f"+{sizes['MLKEM768-X25519'] - sizes['X25519']} bytes: HPKE enc 1,120 bytes "
        "instead of 32, and the longer suite name in the manifest",
    )


@dataclass(frozen=True, slots=True)
class _SealedPayload:
    """The payload sealed in both format versions, the seconds each seal took, and its keys."""

    files: dict[int, Path]
    seal_s: dict[int, float]
    opened: Path
    recipient: RecipientPrivateKey
    signer: Ed25519PrivateKey

    @classmethod
    def make(cls, work: Path, payload: Path, opened: Path) -> _SealedPayload:
        from matcher.envelope import seal
        from matcher.keyring import Keyring
        from matcher.manifest import BatchKeys, Manifest

        bank = Keyring.init(work / "envelope-bank", role="bank")
        vendor = Keyring.init(work / "envelope-vendor", role="vendor", vendor_id="bench")
        recipient_kid, recipient = bank.current_recipient()
        signing_kid, signer = vendor.current_signer()
        manifest = Manifest.new(
            batch_id="00000000-0000-4000-8000-000000000000",
            keys=BatchKeys(
                vendor_id="bench",
                signing_kid=signing_kid,
                recipient_kid=recipient_kid,
                salt_epoch="e1",
            ),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            rows=0,
            taxonomy_version="2026.1",
            contract="vendor_batch/v1",
        )
        files = {2: work / "payload.v2.sealed", 1: work / "payload.v1.sealed"}

        def seal_once(version: int) -> float:
            return best_of(
                lambda: seal(
                    payload,
                    files[version],
                    manifest=manifest,
                    recipient=recipient.public_key(),
                    signer=signer,
                    format_version=version,
                ),
                1,
            )

        seal_s = {version: seal_once(version) for version in files}
        return cls(files=files, seal_s=seal_s, opened=opened, recipient=recipient, signer=signer)

    def opener(self, version: int, *, check: bool) -> Callable[[], object]:
        """Return a call that opens the sealed file of `version` as ingest does."""
        from matcher.envelope import open_sealed

        return lambda: open_sealed(
            self.files[version],
            self.opened,
            recipient_keys=lambda kid: self.recipient,
            vendor_keys=lambda vendor_id, kid: self.signer.public_key(),
            check_payload_digest=check,
        )


class _RawAesPasses:
    """The payload under one AES-256-GCM key in the format's chunks, with none of its work."""

    def __init__(self, sealed: Path, opened: Path, aead: AESGCM, nonce: bytes) -> None:
        self.sealed, self.opened, self.aead, self.nonce = sealed, opened, aead, nonce
        self.step = CHUNK + 16
        self.cipher_buffer = memoryview(bytearray(self.step))
        self.plain_buffer = memoryview(bytearray(CHUNK))
        ciphertext = sealed.read_bytes()
        self.blocks = [
            ciphertext[at : at + self.step] for at in range(0, len(ciphertext), self.step)
        ]

    @classmethod
    def make(cls, payload: Path, sealed: Path, opened: Path) -> _RawAesPasses:
        """Return the passes after encrypting `payload` chunk by chunk into `sealed`."""
        aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
        with payload.open("rb") as src, sealed.open("wb") as dst:
            for block in iter(lambda: src.read(CHUNK), b""):
                dst.write(aead.encrypt(nonce, block, None))
        return cls(sealed, opened, aead, nonce)

    def disk_pass(self) -> None:
        """Read, decrypt into a preallocated buffer, write a new file, fsync."""
        with (
            self.sealed.open("rb", buffering=0) as src,
            self.opened.open("wb", buffering=0) as dst,
        ):
            while got := src.readinto(self.cipher_buffer):
                plain = self.plain_buffer[: got - 16]
                self.aead.decrypt_into(self.nonce, self.cipher_buffer[:got], None, plain)
                dst.write(plain)
            os.fsync(dst.fileno())

    def memory_pass(self) -> None:
        """Decrypt the ciphertext already in memory, block by block: the cipher alone."""
        for block in self.blocks:
            self.aead.decrypt_into(self.nonce, block, None, self.plain_buffer[: len(block) - 16])


def _envelope_figures(
    mb: float, best: dict[str, float], seal_s: dict[int, float], rounds: int
) -> Iterator[Figure]:
    """The open figure against the disk pass, against the memory pass, and the checked open."""
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
