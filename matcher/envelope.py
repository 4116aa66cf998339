"""Sealed batches: a vendor seals a payload file for the bank; the bank opens it in one pass.

    seal(payload, out, manifest=..., recipient=bank HPKE public key, signer=vendor Ed25519 key)
    open_sealed(sealed, out, recipient_keys=keyring.recipient_private,
                vendor_keys=keyring.vendor_public)  -> OpenedBatch | raises BatchRefused

A fresh 256-bit data key is wrapped with single-shot HPKE (RFC 9180, base mode, HKDF-SHA256,
AES-256-GCM, and the KEM of the bank key's suite, `matcher.kem`: DHKEM(X25519, HKDF-SHA256) or
the post-quantum hybrid MLKEM768-X25519); the payload is encrypted in AES-256-GCM chunks whose
nonce carries a chunk counter and whose associated data carries the header digest, the counter
and a last-chunk flag; an Ed25519 (RFC 8032) signature trails the file so sealing writes in one
pass. The byte layout, the verification order and what each choice defends against are in
docs/envelope.md.

Three format versions. Version 3 (written by default) is version 2 plus two manifest fields:
`suite`, the HPKE suite of the key block (whose size follows from it), and, for an OPRF batch in
the verifiable mode, `oprf_public_key`, the epoch's VOPRF public key, signed with the batch.
Versions 2 and 3 sign the header digest, the chunk count, the ciphertext length and the SHA-256
of the chunks' GCM tags, so opening never hashes the ciphertext; the plaintext is tied to the
vendor by the payload SHA-256 in the signed manifest, which `check_payload_digest` verifies.
Version 1 signs the SHA-256 of every byte of the file. Versions 1 and 2 (X25519 only) are still
opened, and written on request. The bank may accept only some suites (`accepted_suites`):
a batch of any other suite is refused before any key is used.

The manifest is bound three times: into the HPKE key schedule (`info` = label || SHA-256 of the
manifest bytes; cryptography's public single-shot HPKE takes no AAD, and RFC 9180 section 8.1 puts
such context in `info`), into every chunk (the header digest covers it), and into the signature.

Opening is the privacy boundary: every failure, whatever its cause, raises the same BatchRefused,
whose `cause` tells the bank's own log precisely what failed. Mistakes of the caller of seal()
raise EnvelopeError with a precise message instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.errors import BatchRefused, EnvelopeError, KeyringError
from matcher.atomic import atomic_path
from matcher.kem import RecipientPrivateKey, RecipientPublicKey, Suite, suite_of
from matcher.manifest import (
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    Manifest,
)
from matcher.spool import Spool, hash_file, read_into

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "OpenedBatch",
    "SealedInfo",
    "open_sealed",
    "read_manifest",
    "seal",
]

MAGIC = b"\x89BFS\r\n\x1a\n"  # PNG-style: a high byte, then CR LF, ^Z, LF catch text-mode damage
# Per version: the HPKE info label (28 bytes + 32 of manifest digest, under 64) and the
# signature label. Distinct labels keep a signature or key block of one version from ever
# verifying or unwrapping as the other.
_LABELS = {
    1: (b"bankfusion/batch/v1/data-key", b"bankfusion/batch/v1/signature"),
    2: (b"bankfusion/batch/v2/data-key", b"bankfusion/batch/v2/signature"),
    3: (b"bankfusion/batch/v3/data-key", b"bankfusion/batch/v3/signature"),
}
assert tuple(_LABELS) == FORMAT_VERSIONS
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024
MAX_CHUNKS = 2**32  # the counter is 4 bytes
DATA_KEY_BYTES = 32
NONCE_PREFIX_BYTES = 8
TAG_BYTES = 16
SIGNATURE_BYTES = 64
KEY_BLOCK_BYTES = Suite.X25519.enc_bytes + DATA_KEY_BYTES + TAG_BYTES  # 32 + 32 + 16 (X25519)
LAST, MORE = 0x01, 0x00
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
_RECORD = struct.Struct(">BI")  # flag, ciphertext length
_AAD = struct.Struct(">32sIB")  # header digest, counter, flag
_COUNTS = struct.Struct(">QQ")  # v2 signature: chunk count, ciphertext bytes (tags included)


@dataclass(frozen=True, slots=True)
class SealedInfo:
    """What seal() wrote: the manifest as sealed, the batch digest (hex), the file's size.

    `sealed_sha256` is the digest the bank's ledger keeps for the batch, the same value
    `open_sealed` returns: for version 2 the SHA-256 of the signed message and the signature
    (docs/envelope.md, "Signature and batch digest"), for version 1 the SHA-256 of the whole file.
    """

    manifest: Manifest
    sealed_sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class OpenedBatch:
    """A verified, decrypted batch: its manifest and its batch digest (hex, see SealedInfo)."""

    manifest: Manifest
    sealed_sha256: str


# -- sealing --------------------------------------------------------------------------------


def _hpke_info(version: int, manifest_bytes: bytes) -> bytes:
    return _LABELS[version][0] + hashlib.sha256(manifest_bytes).digest()


def _signed_v1(manifest_bytes: bytes, body_digest: bytes) -> bytes:
    """Return what a version-1 signature covers: its label, H(manifest), H(all bytes before)."""
    return _LABELS[1][1] + hashlib.sha256(manifest_bytes).digest() + body_digest


def _signed_v2(
    version: int, header_digest: bytes, chunks: int, ciphertext_bytes: int, tags: bytes
) -> bytes:
    """Return what a version-2 or -3 signature covers: its label, H(header), counts, H(tags)."""
    return _LABELS[version][1] + header_digest + _COUNTS.pack(chunks, ciphertext_bytes) + tags


def _suite(manifest: Manifest) -> Suite:
    """Return the manifest's HPKE suite: its `suite` field (version 3), else X25519."""
    return Suite.X25519 if manifest.suite is None else Suite(manifest.suite)


def _key_block_bytes(suite: Suite) -> int:
    return suite.enc_bytes + DATA_KEY_BYTES + TAG_BYTES


def _nonce(prefix: bytes, counter: int) -> bytes:
    return prefix + _U32.pack(counter)


def _fresh_secrets(
    recipient: RecipientPublicKey, suite: Suite, info: bytes
) -> tuple[bytes, bytes, bytes]:
    """Return (data key, HPKE key block, nonce prefix), drawn afresh for one batch.

    seal()'s only source of randomness, in one place so the known-answer test can pin it.
    """
    data_key = AESGCM.generate_key(bit_length=256)
    key_block = suite.hpke.encrypt(data_key, recipient, info=info)
    return data_key, key_block, os.urandom(NONCE_PREFIX_BYTES)


def _check_seal_arguments(
    payload: Path,
    out: Path,
    manifest: object,
    recipient: object,
    signer: object,
    chunk_size: object,
    format_version: object,
) -> None:
    if not isinstance(manifest, Manifest):
        raise EnvelopeError(
            f"manifest must be a Manifest (Manifest.new), got {type(manifest).__name__}"
        )
    suite = suite_of(recipient)
    if suite is None or isinstance(recipient, RecipientPrivateKey):
        raise EnvelopeError(
            "recipient must be the bank's HPKE public key (X25519PublicKey or "
            f"MLKEM768X25519PublicKey), got {type(recipient).__name__}; use "
            "keyring.recipient_public(kid)"
        )
    if not isinstance(signer, Ed25519PrivateKey):
        raise EnvelopeError(
            f"signer must be the vendor's Ed25519PrivateKey, got {type(signer).__name__}; "
            "use keyring.current_signer()"
        )
    if type(chunk_size) is not int or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeError(
            f"chunk_size must be an int of {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes, got "
            f"{chunk_size!r}"
        )
    if type(format_version) is not int or format_version not in _LABELS:
        raise EnvelopeError(
            f"format_version must be {FORMAT_VERSION} (current), or 2 or 1 (only for a bank "
            f"whose opener predates version 3 or 2), got {format_version!r}"
        )
    if format_version < 3 and (suite is not Suite.X25519 or manifest.oprf_public_key):
        raise EnvelopeError(
            f"format version {format_version} carries neither a {suite} key block nor an OPRF "
            "public key; seal with format version 3"
        )
    if not payload.is_file():
        raise EnvelopeError(f"payload {payload} is not a readable file")
    if not out.parent.is_dir():
        raise EnvelopeError(f"the folder of out ({out.parent}) does not exist; create it first")
    if out.exists() and out.resolve() == payload.resolve():
        raise EnvelopeError(f"out {out} is the payload itself; seal to another path")


def seal(
    payload: Path,
    out: Path,
    *,
    manifest: Manifest,
    recipient: RecipientPublicKey,
    signer: Ed25519PrivateKey,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    format_version: int = FORMAT_VERSION,
) -> SealedInfo:
    """Return what was sealed after writing `payload` to `out` as a sealed batch, atomically.

    Reads the payload twice, each time streaming: once for its size and SHA-256 (which the
    manifest at the head of the file must state) and once to encrypt it; a payload that changes
    between the two reads is refused. The file appears at `out` only when complete (0600).

    Args:
        payload: the plaintext file (a Parquet batch), any size.
        out: where the sealed file goes; its folder must exist.
        manifest: from `Manifest.new`; format_version, payload_bytes, payload_sha256,
            chunk_size and suite are set here.
        recipient: the bank's HPKE public key named by manifest.recipient_kid; its type sets
            the suite (X25519 or MLKEM768-X25519).
        signer: the vendor's signing key named by manifest.signing_kid.
        chunk_size: plaintext bytes per AES-GCM chunk.
        format_version: 3; or 2 (X25519, no OPRF public key) or 1 (whose signature covers a
            SHA-256 of every byte of the file), only for a bank whose opener predates them.
    """
    payload, out = Path(payload), Path(out)
    _check_seal_arguments(payload, out, manifest, recipient, signer, chunk_size, format_version)
    plain_buffer = memoryview(bytearray(chunk_size))
    size, payload_sha256 = hash_file(payload, plain_buffer)
    n_chunks = max(1, -(-size // chunk_size))
    if n_chunks > MAX_CHUNKS:
        raise EnvelopeError(
            f"a {size}-byte payload needs {n_chunks} chunks of {chunk_size} bytes; the format "
            f"allows {MAX_CHUNKS}: use a larger chunk_size"
        )
    suite = suite_of(recipient) or Suite.X25519
    sealed = replace(
        manifest, format_version=format_version, payload_bytes=size,
        payload_sha256=payload_sha256, chunk_size=chunk_size,
        suite=suite.value if format_version >= 3 else None,
    )  # fmt: skip
    manifest_bytes = sealed.to_bytes()
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise EnvelopeError(
            f"the manifest is {len(manifest_bytes)} bytes; the format allows {MAX_MANIFEST_BYTES}:"
            " keep counts to a few summary numbers"
        )
    data_key, key_block, nonce_prefix = _fresh_secrets(
        recipient, suite, _hpke_info(format_version, manifest_bytes)
    )
    header = _header(format_version, manifest_bytes, key_block, nonce_prefix)
    header_digest = hashlib.sha256(header).digest()
    with atomic_path(out, mode=0o600) as tmp:
        with (
            tmp.open("wb", buffering=0) as sink,
            payload.open("rb", buffering=0) as source,
            Spool(sink, chunk_size + TAG_BYTES, digest=format_version == 1) as spool,
        ):
            spool.append(header)
            plain_sha256, tags = _encrypt_chunks(
                source, spool, AESGCM(data_key), plain_buffer,
                header_digest=header_digest, nonce_prefix=nonce_prefix, size=size,
            )  # fmt: skip
            if source.read(1) or plain_sha256 != payload_sha256:
                raise EnvelopeError(f"payload {payload} changed while it was being sealed")
            if format_version == 1:
                spool.append(signer.sign(_signed_v1(manifest_bytes, spool.finish())))
                sealed_sha256 = spool.finish().hex()
            else:
                message = _signed_v2(
                    format_version, header_digest, n_chunks, size + n_chunks * TAG_BYTES, tags
                )
                signature = signer.sign(message)
                spool.append(signature)
                spool.finish()
                sealed_sha256 = hashlib.sha256(message + signature).hexdigest()
            written = sink.tell()
    return SealedInfo(manifest=sealed, sealed_sha256=sealed_sha256, bytes=written)


def _header(version: int, manifest_bytes: bytes, key_block: bytes, nonce_prefix: bytes) -> bytes:
    """Return the file's header: magic, version, manifest, key block and nonce prefix."""
    return b"".join(
        (
            MAGIC,
            _U16.pack(version),
            _U32.pack(len(manifest_bytes)),
            manifest_bytes,
            _U16.pack(len(key_block)),
            key_block,
            nonce_prefix,
        )
    )


def _encrypt_chunks(
    source: io.FileIO,
    spool: Spool,
    aead: AESGCM,
    plain_buffer: memoryview,
    *,
    header_digest: bytes,
    nonce_prefix: bytes,
    size: int,
) -> tuple[str, bytes]:
    """Return (plaintext SHA-256 hex, SHA-256 of the GCM tags) after writing every chunk record.

    Reads `size` bytes from `source` in chunks of len(plain_buffer) bytes (at least one chunk,
    empty for an empty payload); a source that ends early is refused.
    """
    chunk_size = len(plain_buffer)
    n_chunks = max(1, -(-size // chunk_size))
    plain, tags, left = hashlib.sha256(), hashlib.sha256(), size
    for counter in range(n_chunks):
        want = min(chunk_size, left)
        chunk = plain_buffer[:want]
        if read_into(source, chunk) != want:
            raise EnvelopeError(f"payload {source.name} shrank while it was being sealed")
        plain.update(chunk)
        flag = LAST if counter == n_chunks - 1 else MORE
        ciphertext = spool.buffer()[: want + TAG_BYTES]
        aead.encrypt_into(
            _nonce(nonce_prefix, counter),
            chunk,
            _AAD.pack(header_digest, counter, flag),
            ciphertext,
        )
        tags.update(ciphertext[want:])
        spool.append(_RECORD.pack(flag, want + TAG_BYTES))
        spool.submit(ciphertext)
        left -= want
    return plain.hexdigest(), tags.digest()


# -- opening --------------------------------------------------------------------------------


class _Reader:
    """The sealed file being read: refusals carry the batch's claimed id and vendor."""

    def __init__(self, source: io.FileIO) -> None:
        self.source = source
        self.body = hashlib.sha256()  # of every byte read, while `hashing`
        self.hashing = True
        self.manifest: Manifest | None = None
        # While chunks stream, the running SHA-256 of the file runs on its own thread (hashlib
        # releases the GIL), in submission order, so it overlaps reading and decrypting.
        self._hasher: ThreadPoolExecutor | None = None

    def feed(self, data: bytes | memoryview) -> Future[None] | None:
        """Add `data` to the body digest (in order); returns the job when hashing in background."""
        if not self.hashing:
            return None
        if self._hasher is None:
            self.body.update(data)
            return None
        return self._hasher.submit(self.body.update, data)

    def hash_in_background(self) -> None:
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="envelope-hash")

    def stop_hashing(self) -> None:
        """Hash nothing more: a version-2 signature covers the header digest, not the body."""
        self.hashing = False

    def digest(self) -> bytes:
        """Return the body digest so far, after every queued update."""
        if self._hasher is not None:
            self._hasher.submit(lambda: None).result()
        return self.body.digest()

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True, cancel_futures=True)
            self._hasher = None

    def refuse(self, cause: str) -> NoReturn:
        claimed = self.manifest
        raise BatchRefused(
            cause,
            batch_id=claimed.batch_id if claimed else None,
            vendor=claimed.vendor_id if claimed else None,
        )

    def exact(self, size: int, what: str) -> bytes:
        data = self.source.read(size)
        while len(data) < size:
            more = self.source.read(size - len(data))
            if not more:
                where = "before" if not data else "inside"
                self.refuse(f"truncated: the file ends {where} {what}")
            data += more
        self.feed(data)
        return data

    def header(self) -> tuple[bytes, Manifest, bytes, bytes]:
        """Return (manifest bytes, manifest, key block, nonce prefix), all bytes hashed."""
        if self.exact(len(MAGIC), "the magic") != MAGIC:
            self.refuse("bad magic: not a sealed batch file")
        (version,) = _U16.unpack(self.exact(2, "the format version"))
        if version not in _LABELS:
            known = ", ".join(map(str, _LABELS))
            self.refuse(f"format version {version} is not supported (this reader knows {known})")
        (manifest_size,) = _U32.unpack(self.exact(4, "the manifest length"))
        if not 0 < manifest_size <= MAX_MANIFEST_BYTES:
            self.refuse(f"manifest length {manifest_size} is outside 1..{MAX_MANIFEST_BYTES}")
        manifest_bytes = self.exact(manifest_size, "the manifest")
        try:
            self.manifest = Manifest.from_bytes(manifest_bytes)
        except EnvelopeError as exc:
            self.refuse(f"manifest rejected: {exc}")
        if self.manifest.format_version != version:
            # The manifest is bound by the key unwrap and the signature, the header's version
            # field is not: a file relabelled as another version stops here.
            self.refuse(
                f"the header says format version {version}, the manifest "
                f"{self.manifest.format_version}"
            )
        (key_block_size,) = _U16.unpack(self.exact(2, "the key block length"))
        expected = _key_block_bytes(_suite(self.manifest))
        if key_block_size != expected:
            self.refuse(
                f"key block is {key_block_size} bytes, expected {expected} for suite "
                f"{_suite(self.manifest)}"
            )
        key_block = self.exact(key_block_size, "the key block")
        nonce_prefix = self.exact(NONCE_PREFIX_BYTES, "the nonce prefix")
        return manifest_bytes, self.manifest, key_block, nonce_prefix


def read_manifest(path: Path) -> Manifest:
    """Return the manifest of a sealed file, UNVERIFIED: for routing only, never for trust.

    Raises BatchRefused when the file does not even start like a sealed batch.
    """
    with Path(path).open("rb", buffering=0) as source:
        return _Reader(source).header()[1]


def open_sealed(
    path: Path,
    out: Path,
    *,
    recipient_keys: Callable[[str], RecipientPrivateKey],
    vendor_keys: Callable[[str, str], Ed25519PublicKey],
    check_payload_digest: bool = True,
    accepted_suites: Collection[Suite] | None = None,
) -> OpenedBatch:
    """Return the verified manifest after decrypting sealed `path` to `out`, in one pass.

    Opens format versions 1, 2 and 3. The plaintext goes to a 0600 temp file beside `out`
    (`matcher.atomic.atomic_path`) and is renamed to `out` only after the signature, every
    chunk's tag, the size and (by default) the SHA-256 have checked out; on any failure the temp
    file is deleted and BatchRefused is raised (same message for every cause; the precise reason
    is in its `cause`). An existing `out` is replaced only by a verified batch.

    Args:
        path: the sealed file.
        out: where the plaintext payload goes; its folder must exist.
        recipient_keys: kid -> the bank's HPKE private key (Keyring.recipient_private).
        vendor_keys: (vendor_id, kid) -> a trusted vendor key (Keyring.vendor_public).
        check_payload_digest: also recompute the plaintext SHA-256 (one more pass, on its own
            thread) against the payload_sha256 the vendor signed. Version 2: without it, every
            chunk is still authenticated by AES-GCM under a data key only the vendor and the
            bank hold, so no one else can alter, reorder, splice or truncate the batch; with
            it, the plaintext is also bound to the vendor's signature, which the vendor cannot
            later disown (GCM does not commit to the ciphertext for a holder of the key).
            Version 1 signs every ciphertext byte, so there the check only catches a sender
            whose own hashing was wrong. docs/envelope.md weighs both.
        accepted_suites: the HPKE suites the bank's policy accepts (None: every suite); a
            batch of another suite is refused before any key is used (versions 1 and 2 are
            X25519).
    """
    path, out = Path(path), Path(out)
    with (
        atomic_path(out, mode=0o600) as tmp,
        tmp.open("wb", buffering=0) as sink,
        path.open("rb", buffering=0) as source,
    ):
        reader = _Reader(source)
        try:
            sealed_sha256 = _open_stream(
                reader,
                sink,
                _Keys(recipient_keys, vendor_keys, accepted_suites),
                check_payload_digest,
            )
        finally:
            reader.close()
    assert reader.manifest is not None
    return OpenedBatch(manifest=reader.manifest, sealed_sha256=sealed_sha256)


@dataclass(frozen=True, slots=True)
class _Keys:
    """What an opener looks keys up with, and the suites the bank accepts."""

    recipient: Callable[[str], RecipientPrivateKey]
    vendor: Callable[[str, str], Ed25519PublicKey]
    accepted_suites: Collection[Suite] | None


def _unwrap(
    reader: _Reader, keys: _Keys, manifest_bytes: bytes, key_block: bytes
) -> tuple[bytes, Ed25519PublicKey]:
    """Return (data key, the vendor's key) for a header, after the suite policy; or refuse."""
    assert reader.manifest is not None
    manifest, suite = reader.manifest, _suite(reader.manifest)
    if keys.accepted_suites is not None and suite not in keys.accepted_suites:
        accepted = ", ".join(sorted(keys.accepted_suites)) or "none"
        reader.refuse(
            f"suite {suite} is not accepted by the bank's policy (accepted: {accepted}); ask "
            f"vendor {manifest.vendor_id!r} to seal the batch again to the bank's "
            f"{accepted.split(', ')[0]} key (fusion vendor pack --suite ...)"
        )
    try:
        private = keys.recipient(manifest.recipient_kid)
    except KeyringError as exc:
        reader.refuse(f"recipient key {manifest.recipient_kid!r} is not available: {exc}")
    if suite_of(private) is not suite:
        reader.refuse(
            f"the batch is sealed with suite {suite}, but bank key {manifest.recipient_kid!r} is "
            f"a {suite_of(private)} key"
        )
    try:
        vendor_key = keys.vendor(manifest.vendor_id, manifest.signing_kid)
    except KeyringError as exc:
        reader.refuse(
            f"signing key {manifest.signing_kid!r} of vendor {manifest.vendor_id!r} is not "
            f"trusted: {exc}"
        )
    info = _hpke_info(manifest.format_version, manifest_bytes)
    try:
        data_key = suite.hpke.decrypt(key_block, private, info=info)
    except (InvalidTag, ValueError):
        reader.refuse(
            f"data key did not unwrap with bank key {manifest.recipient_kid!r}: wrong key, or the "
            "manifest or key block was altered"
        )
    if len(data_key) != DATA_KEY_BYTES:
        reader.refuse(f"data key is {len(data_key)} bytes, expected {DATA_KEY_BYTES}")
    return data_key, vendor_key


def _open_stream(reader: _Reader, sink: io.FileIO, keys: _Keys, check_payload_digest: bool) -> str:
    """Decrypt and verify everything `reader` holds into `sink`; return the batch digest hex."""
    manifest_bytes, manifest, key_block, nonce_prefix = reader.header()
    version = manifest.format_version
    header_digest = reader.digest()
    data_key, vendor_key = _unwrap(reader, keys, manifest_bytes, key_block)

    if version == 1:
        reader.hash_in_background()
    else:
        reader.stop_hashing()
    total, chunks, tags_digest, payload_sha256 = _decrypt_chunks(
        reader, sink, AESGCM(data_key), nonce_prefix, header_digest, check_payload_digest
    )
    if version == 1:
        message = _signed_v1(manifest_bytes, reader.digest())
    else:
        message = _signed_v2(
            version, header_digest, chunks, total + chunks * TAG_BYTES, tags_digest
        )
    signature = reader.exact(SIGNATURE_BYTES, "the signature")
    trailing = len(reader.source.read(1))
    if trailing:
        trailing += os.fstat(reader.source.fileno()).st_size - reader.source.tell()
        reader.refuse(f"{trailing} trailing bytes after the signature")
    try:
        vendor_key.verify(signature, message)
    except InvalidSignature:
        reader.refuse(
            f"signature does not verify under key {manifest.signing_kid!r} of vendor "
            f"{manifest.vendor_id!r}: forged, altered after signing, or signed by another key"
        )
    if total != manifest.payload_bytes:
        reader.refuse(f"payload is {total} bytes, the manifest says {manifest.payload_bytes}")
    if check_payload_digest and payload_sha256 != manifest.payload_sha256:
        reader.refuse("payload SHA-256 differs from the manifest's payload_sha256")
    if version == 1:
        return reader.digest().hex()
    return hashlib.sha256(message + signature).hexdigest()


def _decrypt_chunks(
    reader: _Reader,
    sink: io.FileIO,
    aead: AESGCM,
    nonce_prefix: bytes,
    header_digest: bytes,
    check_payload_digest: bool,
) -> tuple[int, int, bytes, str]:
    """Return (plaintext bytes, chunks, SHA-256 of the tags, plaintext SHA-256 hex or "").

    Decrypts every chunk record into `sink`, refusing at the first one that is malformed or
    fails authentication; stops after the record flagged last.
    """
    assert reader.manifest is not None
    manifest, source = reader.manifest, reader.source
    chunk_size = manifest.chunk_size
    # Version 1 hashes each ciphertext on the reader's thread while the next one is read, so
    # two buffers alternate; version 2 hashes only the 16-byte tags, here, and needs one.
    cipher_buffers = [
        memoryview(bytearray(chunk_size + TAG_BYTES)) for _ in range(2 if reader.hashing else 1)
    ]
    hashing: list[Future[None] | None] = [None] * len(cipher_buffers)
    tags = hashlib.sha256()
    total, counter, flag = 0, 0, MORE
    with Spool(sink, chunk_size, digest=check_payload_digest) as spool:
        while flag != LAST:
            if counter >= MAX_CHUNKS:
                reader.refuse(f"more than {MAX_CHUNKS} chunks")
            what = f"chunk {counter}"
            flag, size = _RECORD.unpack(reader.exact(_RECORD.size, f"{what} (no last chunk seen)"))
            if flag not in (MORE, LAST):
                reader.refuse(f"{what}: flag 0x{flag:02x} is neither 0x00 (more) nor 0x01 (last)")
            plain_size = size - TAG_BYTES
            if flag == MORE:
                valid = plain_size == chunk_size
            else:  # the last chunk is never empty, unless it is the only one (empty payload)
                valid = 0 < plain_size <= chunk_size or (plain_size == 0 and counter == 0)
            if not valid:
                reader.refuse(
                    f"{what}: {plain_size} plaintext bytes with flag 0x{flag:02x}; chunks hold "
                    f"chunk_size ({chunk_size}) bytes, the last 1..chunk_size (0 only if alone)"
                )
            if total + plain_size > manifest.payload_bytes:
                reader.refuse(
                    f"{what} runs past the manifest's payload_bytes ({manifest.payload_bytes})"
                )
            turn = counter % len(cipher_buffers)
            pending = hashing[turn]
            if pending is not None:
                pending.result()
            ciphertext = cipher_buffers[turn][:size]
            if read_into(source, ciphertext) != size:
                reader.refuse(f"truncated: the file ends inside {what}")
            hashing[turn] = reader.feed(ciphertext)
            tags.update(ciphertext[plain_size:])
            chunk = spool.buffer()[:plain_size]
            try:
                aead.decrypt_into(
                    _nonce(nonce_prefix, counter),
                    ciphertext,
                    _AAD.pack(header_digest, counter, flag),
                    chunk,
                )
            except InvalidTag:
                reader.refuse(
                    f"{what} failed authentication: altered, reordered, spliced from another "
                    "batch, or its last-chunk flag changed"
                )
            spool.submit(chunk)
            total += plain_size
            counter += 1
        payload_sha256 = spool.finish().hex()
    return total, counter, tags.digest(), payload_sha256
