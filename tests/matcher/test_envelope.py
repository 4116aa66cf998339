"""Sealed batches: round trips, a second writer built from docs/envelope.md, and every refusal.

Each test makes real keyrings in tmp_path. Refusals are checked to leave nothing at `out` (nor a
temp file beside it), to share one message, and to carry an accurate `cause`. Format versions 3
(written by default), 2 and 1 (still opened, written on request) go through the same tests; the
post-quantum hybrid suite of version 3 and the bank's suite policy have tests of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import matcher.envelope as envelope
from contracts.errors import BatchRefused, EnvelopeError, KeyringError
from matcher.envelope import open_sealed, read_manifest, seal
from matcher.keyring import Keyring
from matcher.manifest import Manifest
from tests.support.forgery import rewrite_as_key_holder
from tests.support.sealing import CHUNK, NOW, Parties, pair

VECTORS = Path(__file__).parent / "vectors"
PAYLOAD = bytes(range(256)) + b"tail of the last chunk"  # 5 chunks of 64, the last 22 bytes
LAST_CHUNK = 4
VERSIONS = (3, 2, 1)


def _layout(sealed: bytes) -> dict[str, int]:
    """Offsets of the parts of a sealed file, read the way docs/envelope.md describes them."""
    (manifest_size,) = struct.unpack_from(">I", sealed, 10)
    key_block = 14 + manifest_size + 2
    (key_block_size,) = struct.unpack_from(">H", sealed, key_block - 2)
    records, starts = key_block + key_block_size + 8, []
    at = records
    while True:
        flag, size = struct.unpack_from(">BI", sealed, at)
        starts.append(at)
        at += 5 + size
        if flag == 1:
            break
    return {
        "manifest": 14,
        "key_block": key_block,
        "nonce_prefix": key_block + key_block_size,
        "records": records,
        "signature": at,
        **{f"chunk{i}": start for i, start in enumerate(starts)},
    }


def _batch_digest(sealed: bytes) -> str:
    """The digest a ledger keeps, computed from the file as docs/envelope.md describes it."""
    if sealed[8:10] == b"\x00\x01":
        return hashlib.sha256(sealed).hexdigest()
    at = _layout(sealed)
    records = [at[f"chunk{i}"] for i in range(len(at) - 5)] + [at["signature"]]
    tags = b"".join(sealed[end - 16 : end] for end in records[1:])
    n, ciphertext = len(records) - 1, at["signature"] - at["records"] - 5 * (len(records) - 1)
    message = (
        f"bankfusion/batch/v{sealed[9]}/signature".encode()
        + hashlib.sha256(sealed[: at["records"]]).digest()
        + struct.pack(">QQ", n, ciphertext)
        + hashlib.sha256(tags).digest()
    )
    return hashlib.sha256(message + sealed[-64:]).hexdigest()


# -- the public surface and round trips --------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("size", "chunk_size"),
    [
        (0, CHUNK),
        (1, CHUNK),
        (CHUNK - 1, CHUNK),
        (CHUNK * 5, CHUNK),
        (CHUNK * 5 + 7, CHUNK),
        (envelope.DEFAULT_CHUNK_SIZE + 1, envelope.DEFAULT_CHUNK_SIZE),
    ],
    ids=["empty", "one-byte", "one-short-chunk", "exact-multiple", "multi-chunk", "default-size"],
)
def test_round_trip(parties: Parties, size: int, chunk_size: int, version: int):
    data = os.urandom(size)
    sealed = parties.seal(data, chunk_size=chunk_size, version=version)
    opened, plain = parties.open(sealed)
    raw = sealed.read_bytes()
    n_chunks = max(1, -(-size // chunk_size))
    manifest_size = len(opened.manifest.to_bytes())
    # the size formula of docs/envelope.md
    assert len(raw) == 8 + 2 + 4 + manifest_size + 2 + 80 + 8 + n_chunks * (5 + 16) + size + 64
    assert plain == data
    assert raw[8:10] == struct.pack(">H", version)
    assert opened.sealed_sha256 == _batch_digest(raw)
    assert parties.open(sealed, check=False) == (opened, plain)
    manifest = opened.manifest
    assert (manifest.format_version, manifest.payload_bytes) == (version, size)
    assert manifest.chunk_size == chunk_size
    assert manifest.payload_sha256 == hashlib.sha256(data).hexdigest()
    assert manifest.created_at == "2026-11-03T09:30:15Z"
    assert manifest.counts == {"app_entries": 7, "tag_entries": 11}
    assert read_manifest(sealed) == manifest
    assert raw[14 : 14 + manifest_size] == manifest.to_bytes()
    assert len(_layout(raw)) == 5 + n_chunks


def test_seal_reports_what_it_wrote(parties: Parties):
    payload = parties.root / "p.parquet"
    payload.write_bytes(b"x" * 300)
    out = parties.root / "p.sealed"
    manifest = parties.manifest()
    info = seal(
        payload,
        out,
        manifest=manifest,
        recipient=parties.vendor.current_recipient_public()[1],
        signer=parties.vendor.current_signer()[1],
        chunk_size=CHUNK,
    )
    assert info.bytes == out.stat().st_size
    assert info.sealed_sha256 == _batch_digest(out.read_bytes())
    assert info.manifest == replace(
        manifest,
        payload_bytes=300,
        payload_sha256=hashlib.sha256(b"x" * 300).hexdigest(),
        chunk_size=CHUNK,
    )
    assert sorted(p.name for p in parties.root.iterdir()) == [
        "keys",
        "opened",
        "p.parquet",
        "p.sealed",
    ]


def test_a_batch_sealed_before_a_rotation_still_opens(parties: Parties):
    sealed = parties.seal(b"before rotation" * 10)
    parties.bank.rotate("hpke")
    parties.bank.rotate("salt", now=NOW)
    assert parties.open(sealed)[1] == b"before rotation" * 10


def test_plaintext_is_written_only_to_a_private_temp_file_beside_out(parties: Parties):
    sealed = parties.seal(PAYLOAD)
    seen = []

    def recipient_keys(kid: str) -> X25519PrivateKey:
        seen.extend((p.name, p.stat().st_mode & 0o777) for p in (parties.root / "opened").iterdir())
        return parties.bank.recipient_private(kid)

    parties.open(sealed, recipient_keys=recipient_keys)
    assert len(seen) == 1 and seen[0][0].endswith(".tmp") and seen[0][1] == 0o600
    assert [p.name for p in (parties.root / "opened").iterdir()] == ["payload.parquet"]


def test_opening_replaces_an_existing_out_only_when_verified(parties: Parties):
    out = parties.root / "opened" / "payload.parquet"
    out.write_bytes(b"older")
    good = parties.seal(b"new payload")
    bad = good.with_suffix(".bad")
    bad.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(BatchRefused):
        parties.open(bad)
    assert out.read_bytes() == b"older"
    assert parties.open(good)[1] == b"new payload"


# -- a second writer, from docs/envelope.md alone ----------------------------------------------


def _forge(
    payload: bytes,
    manifest: Manifest,
    *,
    recipient: object,
    signer: Ed25519PrivateKey,
    chunk_size: int = CHUNK,
    version: int = 3,
    payload_bytes: int | None = None,
    payload_sha256: str | None = None,
    secrets: tuple[bytes, bytes, bytes] | None = None,
) -> bytes:
    """Return a sealed file written from the format document, with the manifest's claims given.

    `secrets` pins (data key, HPKE key block, nonce prefix); otherwise they are drawn afresh.
    """
    m = replace(
        manifest,
        format_version=version,
        payload_bytes=len(payload) if payload_bytes is None else payload_bytes,
        payload_sha256=payload_sha256 or hashlib.sha256(payload).hexdigest(),
        chunk_size=chunk_size,
        suite="X25519" if version >= 3 else None,
    ).to_bytes()
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    info = f"bankfusion/batch/v{version}/data-key".encode() + hashlib.sha256(m).digest()
    if secrets is None:
        data_key, prefix = os.urandom(32), os.urandom(8)
        key_block = suite.encrypt(data_key, recipient, info=info)  # type: ignore[arg-type]
    else:
        data_key, key_block, prefix = secrets
    body = bytearray(b"\x89BFS\r\n\x1a\n" + struct.pack(">HI", version, len(m)) + m)
    body += struct.pack(">H", len(key_block)) + key_block + prefix
    header_digest = hashlib.sha256(body).digest()
    chunks = [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)] or [b""]
    tags = b""
    for counter, chunk in enumerate(chunks):
        last = int(counter == len(chunks) - 1)
        nonce = prefix + struct.pack(">I", counter)
        aad = header_digest + struct.pack(">IB", counter, last)
        ciphertext = AESGCM(data_key).encrypt(nonce, chunk, aad)
        body += struct.pack(">BI", last, len(ciphertext)) + ciphertext
        tags += ciphertext[-16:]
    if version == 1:
        message = (
            b"bankfusion/batch/v1/signature"
            + hashlib.sha256(m).digest()
            + hashlib.sha256(body).digest()
        )
    else:
        message = (
            f"bankfusion/batch/v{version}/signature".encode()
            + header_digest
            + struct.pack(">QQ", len(chunks), len(payload) + 16 * len(chunks))
            + hashlib.sha256(tags).digest()
        )
    return bytes(body + signer.sign(message))


def _forge_as_vendor(
    parties: Parties, payload: bytes, *, version: int, **claims: str | int | None
) -> bytes:
    """Return `_forge` of `payload` under a fresh manifest, to the bank, signed by the vendor."""
    return _forge(
        payload,
        parties.manifest(),
        recipient=parties.vendor.current_recipient_public()[1],
        signer=parties.vendor.current_signer()[1],
        version=version,
        **claims,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_a_file_written_from_the_format_document_opens(parties: Parties, version: int):
    data = os.urandom(CHUNK * 3 + 5)
    sealed = parties.root / "forged.sealed"
    sealed.write_bytes(_forge_as_vendor(parties, data, version=version))
    opened, plain = parties.open(sealed)
    assert plain == data and opened.manifest.format_version == version


def _vector(version: int) -> tuple[dict, X25519PrivateKey, Ed25519PrivateKey]:
    case = json.loads((VECTORS / f"envelope_v{version}.json").read_text())
    bank_key = X25519PrivateKey.from_private_bytes(bytes.fromhex(case["bank_hpke_private"]))
    vendor_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["vendor_sign_private"]))
    assert bank_key.public_key().public_bytes_raw().hex() == case["bank_hpke_public"]
    assert vendor_key.public_key().public_bytes_raw().hex() == case["vendor_sign_public"]
    return case, bank_key, vendor_key


@pytest.mark.parametrize("version", (2, 1))  # version 3: test_envelope_reader.py
@pytest.mark.parametrize("check", [True, False], ids=["checked", "ingest"])
def test_known_answer_vector_opens(tmp_path: Path, version: int, check: bool):
    """A file sealed once by this module with fixed keys: the format must keep opening it."""
    case, bank_key, vendor_key = _vector(version)
    manifest = json.loads(case["manifest"])
    sealed = tmp_path / "vector.sealed"
    sealed.write_bytes(bytes.fromhex(case["sealed"]))
    looked_up = []

    def recipient_keys(kid: str) -> X25519PrivateKey:
        looked_up.append(kid)
        return bank_key

    def vendor_keys(vendor_id: str, kid: str):
        looked_up.append((vendor_id, kid))
        return vendor_key.public_key()

    opened = open_sealed(
        sealed,
        tmp_path / "out",
        recipient_keys=recipient_keys,
        vendor_keys=vendor_keys,
        check_payload_digest=check,
    )
    assert looked_up == [
        manifest["recipient_kid"],
        (manifest["vendor_id"], manifest["signing_kid"]),
    ]
    assert (tmp_path / "out").read_bytes() == bytes.fromhex(case["payload"])
    assert opened.manifest.to_bytes() == case["manifest"].encode()
    assert opened.manifest.format_version == manifest["format_version"] == version
    assert opened.sealed_sha256 == case["sealed_sha256"] == _batch_digest(sealed.read_bytes())


def test_known_answer_vector_v2_is_reproduced_byte_for_byte(tmp_path: Path, monkeypatch):
    """Given the vector's data key, key block and nonce prefix, the reference sealer and the
    writer built from docs/envelope.md both produce the vector's bytes, step by step."""
    case, bank_key, vendor_key = _vector(2)
    data_key, key_block = bytes.fromhex(case["data_key"]), bytes.fromhex(case["key_block"])
    prefix, expected = bytes.fromhex(case["nonce_prefix"]), bytes.fromhex(case["sealed"])
    manifest, payload = (
        Manifest.from_bytes(case["manifest"].encode()),
        bytes.fromhex(case["payload"]),
    )
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    info = b"bankfusion/batch/v2/data-key" + hashlib.sha256(case["manifest"].encode()).digest()
    assert suite.decrypt(key_block, bank_key, info=info) == data_key
    header_size = 14 + len(case["manifest"]) + 2 + 80 + 8
    assert hashlib.sha256(expected[:header_size]).hexdigest() == case["header_digest"]
    signed = bytes.fromhex(case["signed_message"])
    assert signed == (
        b"bankfusion/batch/v2/signature"
        + bytes.fromhex(case["header_digest"])
        + struct.pack(">QQ", case["chunks"], case["ciphertext_bytes"])
        + bytes.fromhex(case["tags_digest"])
    )
    assert vendor_key.sign(signed).hex() == case["signature"] == expected[-64:].hex()
    assert hashlib.sha256(signed + expected[-64:]).hexdigest() == case["sealed_sha256"]

    forged = _forge(
        payload,
        manifest,
        recipient=None,
        signer=vendor_key,
        version=2,
        secrets=(data_key, key_block, prefix),
    )
    assert forged == expected

    drawn = []

    def pinned(recipient: object, suite: object, info_arg: bytes) -> tuple[bytes, bytes, bytes]:
        drawn.append(info_arg)
        return data_key, key_block, prefix

    monkeypatch.setattr(envelope, "_fresh_secrets", pinned)
    (tmp_path / "payload").write_bytes(payload)
    info_out = seal(
        tmp_path / "payload",
        tmp_path / "sealed",
        manifest=manifest,
        recipient=bank_key.public_key(),
        signer=vendor_key,
        chunk_size=manifest.chunk_size,
        format_version=2,
    )
    assert drawn == [info]
    assert (tmp_path / "sealed").read_bytes() == expected
    assert info_out.sealed_sha256 == case["sealed_sha256"]
    assert info_out.manifest == manifest


# -- refusals ----------------------------------------------------------------------------------


def _flip(offset: Callable[[dict[str, int]], int]) -> Callable[[bytes, dict[str, int]], bytes]:
    def tamper(raw: bytes, at: dict[str, int]) -> bytes:
        position = offset(at)
        return raw[:position] + bytes([raw[position] ^ 0x01]) + raw[position + 1 :]

    return tamper


def _cut(offset: Callable[[dict[str, int]], int]) -> Callable[[bytes, dict[str, int]], bytes]:
    return lambda raw, at: raw[: offset(at)]


def _swap(raw: bytes, at: dict[str, int]) -> bytes:
    one, two, three = at["chunk1"], at["chunk2"], at["chunk3"]
    return raw[:one] + raw[two:three] + raw[one:two] + raw[three:]


def _drop_last_chunk_keep_signature(raw: bytes, at: dict[str, int]) -> bytes:
    return raw[: at[f"chunk{LAST_CHUNK}"]] + raw[at["signature"] :]


def _edit_rows(raw: bytes, at: dict[str, int]) -> bytes:
    assert raw.count(b'"rows":1234') == 1
    return raw.replace(b'"rows":1234', b'"rows":1235')


TAMPERING = {
    "flip-magic": (_flip(lambda at: 0), "bad magic"),
    "flip-version": (
        _flip(lambda at: 9),  # 3 -> 2, 2 -> 3, 1 -> 0
        r"format version 0 is not supported \(this reader knows 1, 2, 3\)"
        r"|the header says format version (2, the manifest 3|3, the manifest 2)",
    ),
    "flip-manifest-syntax": (_flip(lambda at: at["manifest"]), "manifest rejected: .*not JSON"),
    "manifest-value-edited": (_edit_rows, "data key did not unwrap with bank key 'bank-hpke-1'"),
    "flip-hpke-enc": (_flip(lambda at: at["key_block"] + 3), "data key did not unwrap"),
    "flip-wrapped-key": (_flip(lambda at: at["key_block"] + 40), "data key did not unwrap"),
    "flip-nonce-prefix": (_flip(lambda at: at["nonce_prefix"]), "chunk 0 failed authentication"),
    "flip-first-chunk": (_flip(lambda at: at["chunk0"] + 5 + 3), "chunk 0 failed authentication"),
    "flip-middle-chunk": (_flip(lambda at: at["chunk2"] + 5), "chunk 2 failed authentication"),
    "flip-last-chunk": (_flip(lambda at: at["chunk4"] + 9), "chunk 4 failed authentication"),
    "flip-gcm-tag": (_flip(lambda at: at["chunk2"] - 1), "chunk 1 failed authentication"),
    "chunk-reflagged-as-last": (_flip(lambda at: at["chunk1"]), "chunk 1 failed authentication"),
    "flip-record-length": (
        _flip(lambda at: at["chunk1"] + 4),
        "chunk 1: 65 plaintext bytes with flag 0x00",
    ),
    "flip-signature": (_flip(lambda at: at["signature"] + 10), "signature does not verify"),
    "cut-in-magic": (_cut(lambda at: 5), "truncated: the file ends inside the magic"),
    "cut-in-manifest": (
        _cut(lambda at: at["manifest"] + 20),
        "truncated: the file ends inside the manifest",
    ),
    "cut-in-key-block": (
        _cut(lambda at: at["key_block"] + 7),
        "truncated: the file ends inside the key block",
    ),
    "cut-before-chunks": (
        _cut(lambda at: at["records"]),
        r"truncated: the file ends before chunk 0 \(no last chunk seen\)",
    ),
    "cut-in-middle-chunk": (
        _cut(lambda at: at["chunk2"] + 30),
        "truncated: the file ends inside chunk 2",
    ),
    "drop-last-chunk-and-signature": (
        _cut(lambda at: at["chunk4"]),
        r"truncated: the file ends before chunk 4 \(no last chunk seen\)",
    ),
    "drop-last-chunk-keep-signature": (_drop_last_chunk_keep_signature, r"chunk 4\b"),
    "drop-signature": (
        _cut(lambda at: at["signature"]),
        "truncated: the file ends before the signature",
    ),
    "cut-in-signature": (
        _cut(lambda at: at["signature"] + 63),
        "truncated: the file ends inside the signature",
    ),
    "swap-two-chunks": (_swap, "chunk 1 failed authentication"),
    "trailing-garbage": (lambda raw, at: raw + b"\x00junk", "5 trailing bytes after the signature"),
}


def _assert_refused(refused: pytest.ExceptionInfo[BatchRefused], cause: str, root: Path) -> None:
    assert str(refused.value) == BatchRefused.MESSAGE
    assert re.search(cause, refused.value.cause), refused.value.cause
    assert list((root / "opened").iterdir()) == []  # nothing at out, no temp file beside it


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("check", [True, False], ids=["checked", "ingest"])
@pytest.mark.parametrize(("tamper", "cause"), TAMPERING.values(), ids=TAMPERING.keys())
def test_tampered_files_are_refused(parties: Parties, tamper, cause: str, check: bool, version):
    sealed = parties.seal(PAYLOAD, version=version)
    raw = sealed.read_bytes()
    at = _layout(raw)
    assert at["signature"] == len(raw) - 64 and f"chunk{LAST_CHUNK}" in at
    tampered = tamper(raw, at)
    assert tampered != raw
    sealed.write_bytes(tampered)
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed, check=check)
    _assert_refused(refused, cause, parties.root)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tampering_case_has_its_own_cause(parties: Parties, version: int):
    causes = {}
    for name, (tamper, _) in TAMPERING.items():
        sealed = parties.seal(PAYLOAD, name=name, version=version)
        raw = sealed.read_bytes()
        sealed.write_bytes(tamper(raw, _layout(raw)))
        with pytest.raises(BatchRefused) as refused:
            parties.open(sealed)
        causes.setdefault(refused.value.cause, []).append(name)
    shared = {cause: names for cause, names in causes.items() if len(names) > 1}
    # Cases that the cryptography cannot tell apart share a cause, and only those: any edit of
    # the manifest or key block breaks the key unwrap; an edited nonce prefix or a re-flagged
    # chunk breaks that chunk's tag like an edited byte of it does.
    assert sorted(sorted(names) for names in shared.values()) == [
        ["chunk-reflagged-as-last", "flip-gcm-tag", "swap-two-chunks"],
        ["flip-first-chunk", "flip-nonce-prefix"],
        ["flip-hpke-enc", "flip-wrapped-key", "manifest-value-edited"],
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_chunk_spliced_from_another_batch_is_refused(parties: Parties, version: int):
    first = parties.seal(PAYLOAD, name="one", version=version)
    second = parties.seal(PAYLOAD, name="two", version=version)
    raw, other = first.read_bytes(), second.read_bytes()
    at, other_at = _layout(raw), _layout(other)
    spliced = (
        raw[: at["chunk2"]] + other[other_at["chunk2"] : other_at["chunk3"]] + raw[at["chunk3"] :]
    )
    assert len(spliced) == len(raw)
    first.write_bytes(spliced)
    with pytest.raises(BatchRefused) as refused:
        parties.open(first)
    _assert_refused(refused, "chunk 2 failed authentication", parties.root)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_signature_of_another_batch_is_refused(parties: Parties, version: int):
    """An attacker who knows only public keys re-seals an edited manifest and reuses the
    vendor's signature of the original: the unwrap and chunks pass, the signature cannot."""
    original = parties.seal(PAYLOAD, name="original", version=version)
    edited = original.with_name("edited.sealed")
    forged = _forge(
        PAYLOAD,
        parties.manifest(rows=999_999),
        recipient=parties.vendor.current_recipient_public()[1],
        signer=Ed25519PrivateKey.generate(),
        version=version,
    )
    edited.write_bytes(forged[:-64] + original.read_bytes()[-64:])
    with pytest.raises(BatchRefused) as refused:
        parties.open(edited)
    _assert_refused(
        refused,
        "signature does not verify under key 'vendor-a-sign-1' of vendor 'vendor-a'",
        parties.root,
    )
    assert refused.value.vendor == "vendor-a"


def test_wrong_bank_key_is_refused(parties: Parties):
    sealed = parties.seal(PAYLOAD)
    stranger = X25519PrivateKey.generate()
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed, recipient_keys=lambda kid: stranger)
    _assert_refused(refused, "data key did not unwrap with bank key 'bank-hpke-1'", parties.root)


def test_a_recipient_kid_the_bank_does_not_hold_is_refused(parties: Parties):
    sealed = parties.seal(PAYLOAD, recipient_kid="bank-hpke-9")
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed)
    _assert_refused(
        refused,
        "recipient key 'bank-hpke-9' is not available: HPKE key 'bank-hpke-9' is not in this",
        parties.root,
    )


def test_a_signature_by_an_unknown_vendor_key_is_refused(parties: Parties):
    stranger = Keyring.init(parties.root / "keys" / "stranger", role="vendor", vendor_id="vendor-z")
    stranger.import_recipient(*parties.bank.recipient_public_bytes())
    stranger.import_salt(parties.bank.current_salt())
    sealed = Parties(parties.bank, stranger, parties.root).seal(PAYLOAD)
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed)
    _assert_refused(
        refused,
        "signing key 'vendor-z-sign-1' of vendor 'vendor-z' is not trusted: vendor 'vendor-z' "
        "has no trusted signing key",
        parties.root,
    )
    assert (refused.value.vendor, refused.value.batch_id) == (
        "vendor-z",
        read_manifest(sealed).batch_id,
    )


def test_a_rotated_out_vendor_key_the_bank_never_trusted_is_refused(parties: Parties):
    parties.vendor.rotate("signing")  # the bank was not told
    sealed = parties.seal(PAYLOAD)
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed)
    _assert_refused(
        refused,
        "signing key 'vendor-a-sign-2' of vendor 'vendor-a' is not trusted: signing key of vendor "
        "'vendor-a' 'vendor-a-sign-2' is not in this keyring",
        parties.root,
    )


@pytest.mark.parametrize(
    ("claimed_kid", "cause"),
    [
        ("own", "signing key 'vendor-b-sign-1' of vendor 'vendor-a' is not trusted"),
        ("victim", "signature does not verify under key 'vendor-a-sign-1' of vendor 'vendor-a'"),
    ],
    ids=["with-its-own-kid", "with-the-victims-kid"],
)
def test_a_trusted_vendor_cannot_seal_as_another(parties: Parties, claimed_kid: str, cause: str):
    other = Keyring.init(parties.root / "keys" / "vendor-b", role="vendor", vendor_id="vendor-b")
    pair(parties.bank, other)
    kid = other.current_signer()[0] if claimed_kid == "own" else "vendor-a-sign-1"
    sealed = Parties(parties.bank, other, parties.root).seal(
        PAYLOAD, vendor_id="vendor-a", signing_kid=kid
    )
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed)
    _assert_refused(refused, cause, parties.root)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("claims", "cause"),
    [
        (
            {"payload_bytes": len(PAYLOAD) + 1},
            f"payload is {len(PAYLOAD)} bytes, the manifest says",
        ),
        ({"payload_bytes": len(PAYLOAD) - 1}, "chunk 4 runs past the manifest's payload_bytes"),
        ({"payload_sha256": "ab" * 32}, "payload SHA-256 differs from the manifest's"),
    ],
    ids=["size-understated", "size-overstated", "digest"],
)
def test_a_signed_manifest_that_lies_about_the_payload_is_refused(
    parties: Parties, claims: dict, cause: str, version: int
):
    sealed = parties.root / "lying.sealed"
    sealed.write_bytes(_forge_as_vendor(parties, PAYLOAD, version=version, **claims))
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed)
    _assert_refused(refused, cause, parties.root)


@pytest.mark.parametrize(
    ("version", "edit", "cause"),
    [
        (2, b"", "the header says format version 1, the manifest 2"),
        (1, b"", "the header says format version 2, the manifest 1"),
        (2, b"manifest too", "data key did not unwrap"),
        (3, b"", "the header says format version 2, the manifest 3"),
    ],
    ids=["v2-as-v1", "v1-as-v2", "v2-as-v1-manifest-too", "v3-as-v2"],
)
def test_a_file_relabelled_as_another_version_is_refused(
    parties: Parties, version: int, edit: bytes, cause: str
):
    sealed = parties.seal(PAYLOAD, version=version)
    raw, other = sealed.read_bytes(), {3: 2, 2: 1, 1: 2}[version]
    relabelled = raw[:8] + struct.pack(">H", other) + raw[10:]
    if edit:
        old, new = (f'"format_version":{v}'.encode() for v in (version, other))
        relabelled = relabelled.replace(old, new, 1)
    sealed.write_bytes(relabelled)
    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed, check=False)
    _assert_refused(refused, cause, parties.root)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_data_key_holder_can_rewrite_a_chunk_only_the_digest_or_v1_notices(
    parties: Parties, version: int
):
    """GCM does not commit to the ciphertext for whoever holds the key. The bank (and the vendor)
    can change chunk 1's first 16 plaintext bytes at will and fix its tag through the next block
    (GHASH is linear in the ciphertext blocks). Version 2 signs only the tags, so the ingest
    path (no payload digest) accepts the rewrite; the vendor-signed payload_sha256 refuses it,
    and so does version 1's signature over every ciphertext byte. docs/envelope.md, "Version 2"."""
    sealed = parties.seal(PAYLOAD, version=version)
    raw = sealed.read_bytes()
    wanted = b"forged by holder"
    bank_key = parties.bank.recipient_private("bank-hpke-1")
    # Chunk 1's block 0 changed to `wanted`; block 1 takes the change that keeps the tag.
    sealed.write_bytes(
        rewrite_as_key_holder(raw, bank_key, at=CHUNK, wanted=wanted, fix_at=CHUNK + 16)
    )
    if version >= 2:
        opened, plain = parties.open(sealed, check=False)
        assert plain[CHUNK : CHUNK + 16] == wanted and plain[CHUNK + 32 :] == PAYLOAD[CHUNK + 32 :]
        assert plain[:CHUNK] == PAYLOAD[:CHUNK] and plain != PAYLOAD
        assert opened.sealed_sha256 == _batch_digest(raw)  # tags unchanged: same batch digest
        (parties.root / "opened" / "payload.parquet").unlink()
        cause = "payload SHA-256 differs from the manifest's payload_sha256"
    else:
        cause = "signature does not verify under key 'vendor-a-sign-1'"
    for check in (True, False) if version == 1 else (True,):
        with pytest.raises(BatchRefused) as refused:
            parties.open(sealed, check=check)
        _assert_refused(refused, cause, parties.root)


def test_a_keyring_error_from_a_lookup_becomes_a_refusal(parties: Parties):
    sealed = parties.seal(PAYLOAD)

    def broken(kid: str) -> X25519PrivateKey:
        raise KeyringError("key file hpke.bank-hpke-1.key is readable by others; run: chmod 600")

    with pytest.raises(BatchRefused) as refused:
        parties.open(sealed, recipient_keys=broken)
    _assert_refused(refused, "recipient key 'bank-hpke-1' is not available: key file", parties.root)


def test_read_manifest_refuses_what_is_not_a_sealed_batch(parties: Parties):
    path = parties.root / "not-sealed"
    path.write_bytes(b"PAR1" + bytes(100))
    with pytest.raises(BatchRefused) as refused:
        read_manifest(path)
    assert refused.value.cause == "bad magic: not a sealed batch file"
    assert refused.value.batch_id is None


# -- mistakes of the sender --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipient": "private"}, "recipient must be the bank's HPKE public key"),
        ({"signer": "public"}, "signer must be the vendor's Ed25519PrivateKey"),
        ({"chunk_size": 16}, "chunk_size must be an int of 64"),
        ({"chunk_size": 65 * 1024 * 1024}, "chunk_size must be an int of 64"),
        ({"format_version": 4}, "format_version must be 3 \\(current\\), or 2 or 1"),
        ({"payload": "missing"}, "is not a readable file"),
        ({"out": "no-folder"}, "does not exist; create it first"),
        ({"out": "payload"}, "is the payload itself"),
        ({"manifest": "dict"}, "manifest must be a Manifest"),
    ],
)
def test_seal_explains_caller_mistakes(parties: Parties, change: dict, message: str):
    payload = parties.root / "p.parquet"
    payload.write_bytes(b"data")
    kwargs: dict[str, object] = {
        "manifest": parties.manifest(),
        "recipient": parties.vendor.current_recipient_public()[1],
        "signer": parties.vendor.current_signer()[1],
        "chunk_size": CHUNK,
    }
    out = parties.root / "p.sealed"
    substitutes: dict[str, object] = {
        "private": X25519PrivateKey.generate(),
        "public": Ed25519PrivateKey.generate().public_key(),
        "missing": parties.root / "missing.parquet",
        "no-folder": parties.root / "nowhere" / "p.sealed",
        "payload": payload,
        "dict": {"rows": 1},
    }
    for name, value in change.items():
        value = substitutes.get(value, value) if isinstance(value, str) else value
        if name == "payload":
            payload = value  # type: ignore[assignment]
        elif name == "out":
            out = value  # type: ignore[assignment]
        else:
            kwargs[name] = value
    with pytest.raises(EnvelopeError, match=message):
        seal(payload, out, **kwargs)  # type: ignore[arg-type]
    assert not (parties.root / "p.sealed").exists()


def test_a_payload_that_changes_while_sealed_is_refused_by_seal(parties: Parties, monkeypatch):
    monkeypatch.setattr(envelope, "hash_file", lambda path, buffer: (len(PAYLOAD), "0" * 64))
    with pytest.raises(EnvelopeError, match="changed while it was being sealed"):
        parties.seal(PAYLOAD)
    assert not (parties.root / "batch.sealed").exists()
    assert [p.name for p in parties.root.iterdir() if p.name.endswith(".tmp")] == []


# -- the post-quantum hybrid suite and the bank's suite policy ---------------------------------


def _hybrid(parties: Parties) -> str:
    """Rotate the bank to a MLKEM768-X25519 key and give it to the vendor; return its kid."""
    kid = parties.bank.rotate("hpke", suite="MLKEM768-X25519")
    parties.vendor.import_recipient(
        *parties.bank.recipient_public_bytes(kid), suite="MLKEM768-X25519"
    )
    return kid


def test_a_hybrid_batch_seals_and_opens_and_x25519_still_opens(parties: Parties):
    x25519 = parties.seal(PAYLOAD, name="classic")
    kid = _hybrid(parties)
    hybrid = parties.seal(PAYLOAD, name="hybrid", recipient_kid=kid)
    opened, plain = parties.open(hybrid)
    assert plain == PAYLOAD and opened.manifest.suite == "MLKEM768-X25519"
    raw = hybrid.read_bytes()
    assert len(raw) == len(x25519.read_bytes()) + 1088 + len(b"MLKEM768-")  # enc 1120 vs 32
    assert opened.sealed_sha256 == _batch_digest(raw)
    (parties.root / "opened" / "payload.parquet").unlink()
    assert parties.open(x25519)[0].manifest.suite == "X25519"
    with pytest.raises(EnvelopeError, match="seal with format version 3"):
        parties.seal(PAYLOAD, name="old", version=2, recipient_kid=kid)


def test_a_policy_that_requires_the_hybrid_suite_refuses_an_x25519_batch(parties: Parties):
    classic, old = (
        parties.seal(PAYLOAD, name="classic"),
        parties.seal(PAYLOAD, name="v1", version=1),
    )
    _hybrid(parties)
    parties.bank.set_accepted_suites(["MLKEM768-X25519"])
    accepted = parties.bank.accepted_suites()
    for sealed in (classic, old):
        with pytest.raises(BatchRefused) as refused:
            open_sealed(
                sealed,
                parties.root / "opened" / "p",
                recipient_keys=parties.bank.recipient_private,
                vendor_keys=parties.bank.vendor_public,
                accepted_suites=accepted,
            )
        _assert_refused(
            refused,
            "suite X25519 is not accepted by the bank's policy \\(accepted: MLKEM768-X25519\\); "
            "ask vendor 'vendor-a' to seal the batch again",
            parties.root,
        )
