"""A second opener of sealed batches, written from docs/envelope.md alone, on the v3 hybrid vector.

It imports nothing of `matcher` (no envelope, no manifest): only cryptography's HPKE, AES-GCM and
Ed25519, and the layout as the document gives it. The known-answer file is a version-3 batch
sealed to a MLKEM768-X25519 key (test keys, published in the file on purpose).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CASE = json.loads((Path(__file__).parent / "vectors" / "envelope_v3_hybrid.json").read_text())
MAGIC = b"\x89BFS\r\n\x1a\n"
SUITES = {
    "X25519": hpke.KEM.X25519,
    "MLKEM768-X25519": hpke.KEM.MLKEM768_X25519,
}


def _bank_key(raw: bytes) -> hpke.MLKEM768X25519PrivateKey:
    """The stored hybrid private key: ML-KEM-768 seed d || z (64 bytes), X25519 key (32)."""
    return hpke.MLKEM768X25519PrivateKey(
        MLKEM768PrivateKey.from_seed_bytes(raw[:64]), X25519PrivateKey.from_private_bytes(raw[64:])
    )


def read(sealed: bytes, bank_key: object, vendor_key: Ed25519PublicKey) -> tuple[dict, bytes]:
    """Return (manifest, payload) of a version-3 file, verified as docs/envelope.md says."""
    assert sealed[:8] == MAGIC
    (version, m_len) = struct.unpack_from(">HI", sealed, 8)
    assert version == 3 and 1 <= m_len <= 65536
    manifest_bytes = sealed[14 : 14 + m_len]
    manifest = json.loads(manifest_bytes)
    assert json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode() == manifest_bytes
    assert manifest["format_version"] == version
    kem = SUITES[manifest["suite"]]
    (k_len,) = struct.unpack_from(">H", sealed, 14 + m_len)
    assert k_len == kem.enc_length() + 48
    at = 16 + m_len
    key_block, prefix = sealed[at : at + k_len], sealed[at + k_len : at + k_len + 8]
    header_end = at + k_len + 8
    header_digest = hashlib.sha256(sealed[:header_end]).digest()
    info = b"bankfusion/batch/v3/data-key" + hashlib.sha256(manifest_bytes).digest()
    suite = hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    data_key = suite.decrypt(key_block, bank_key, info=info)  # type: ignore[arg-type]
    plain, tags, counter, pos, flag = b"", b"", 0, header_end, 0
    while flag != 1:
        flag, size = struct.unpack_from(">BI", sealed, pos)
        body = sealed[pos + 5 : pos + 5 + size]
        nonce = prefix + struct.pack(">I", counter)
        aad = header_digest + struct.pack(">IB", counter, flag)
        plain += AESGCM(data_key).decrypt(nonce, body, aad)
        tags += body[-16:]
        pos, counter = pos + 5 + size, counter + 1
    signature = sealed[pos:]
    assert len(signature) == 64
    signed = (
        b"bankfusion/batch/v3/signature"
        + header_digest
        + struct.pack(">QQ", counter, len(plain) + 16 * counter)
        + hashlib.sha256(tags).digest()
    )
    vendor_key.verify(signature, signed)
    assert len(plain) == manifest["payload_bytes"]
    assert hashlib.sha256(plain).hexdigest() == manifest["payload_sha256"]
    assert hashlib.sha256(signed + signature).hexdigest() == CASE["sealed_sha256"]
    return manifest, plain


def test_the_hybrid_known_answer_file_opens_with_a_reader_written_from_the_document():
    bank_key = _bank_key(bytes.fromhex(CASE["bank_hpke_private_test_only"]))
    vendor_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(CASE["vendor_sign_public"]))
    manifest, payload = read(bytes.fromhex(CASE["sealed"]), bank_key, vendor_key)
    assert payload == bytes.fromhex(CASE["payload"])
    assert manifest["suite"] == CASE["bank_hpke_suite"] == "MLKEM768-X25519"
    assert len(manifest["oprf_public_key"]) == 64 and manifest["mode"] == "oprf"


def test_the_hybrid_vector_does_not_open_with_the_x25519_half_alone():
    """Both halves of the hybrid key are needed: the X25519 key alone is no key for the suite."""
    raw = bytes.fromhex(CASE["bank_hpke_private_test_only"])
    vendor_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(CASE["vendor_sign_public"]))
    with pytest.raises(Exception):  # noqa: B017 (cryptography's own type error)
        read(
            bytes.fromhex(CASE["sealed"]), X25519PrivateKey.from_private_bytes(raw[64:]), vendor_key
        )
