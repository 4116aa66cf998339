"""What a holder of a batch's data key (the bank, or the vendor) can forge in a sealed file.

GCM does not commit to the ciphertext for whoever holds the key; tests use this to show which
checks (the version 1 signature, the vendor-signed payload digest) still notice a rewrite.
"""

from __future__ import annotations

import hashlib
import json
import struct

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["rewrite_as_key_holder"]


def _gf128_mul(x: int, y: int) -> int:
    """Return x * y in GCM's field GF(2^128) (NIST SP 800-38D, algorithm 1; bits reflected)."""
    product = 0
    for bit in range(127, -1, -1):
        if (x >> bit) & 1:
            product ^= y
        y = (y >> 1) ^ (0xE1 << 120) if y & 1 else y >> 1
    return product


def rewrite_as_key_holder(
    sealed: bytes, bank_key: X25519PrivateKey, *, at: int, wanted: bytes, fix_at: int
) -> bytes:
    """Return `sealed` with payload bytes [at, at + 16) set to `wanted` and every GCM tag kept.

    What a holder of the data key (the bank, or the vendor) can do, since GCM does not commit to
    the ciphertext: GHASH is linear in the ciphertext blocks, so a change d to block a of a chunk
    is cancelled by the change d * H^(b - a) to a later block b of the same chunk, whose
    plaintext then changes to bytes nobody chose. `at` < `fix_at` are payload offsets of whole
    16-byte blocks of one chunk. Version 2 signs only the tags, so the signature still verifies;
    version 1 signs every byte, so it does not. Layout as in docs/envelope.md.
    """
    (manifest_size,) = struct.unpack_from(">I", sealed, 10)
    manifest_bytes = sealed[14 : 14 + manifest_size]
    manifest = json.loads(manifest_bytes)
    chunk_size, version = manifest["chunk_size"], manifest["format_version"]
    chunk, block = divmod(at, chunk_size)
    fix_block = fix_at - chunk * chunk_size
    assert len(wanted) == 16 and block % 16 == 0 and fix_block % 16 == 0
    assert block < fix_block <= chunk_size - 16, "both blocks must lie in one chunk, in order"

    key_block = 14 + manifest_size + 2
    header_end = key_block + 80 + 8
    info = (
        f"bankfusion/batch/v{version}/data-key".encode() + hashlib.sha256(manifest_bytes).digest()
    )
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    data_key = suite.decrypt(sealed[key_block : key_block + 80], bank_key, info=info)
    record = header_end
    for _ in range(chunk):
        record += 5 + struct.unpack_from(">I", sealed, record + 1)[0]
    flag, size = struct.unpack_from(">BI", sealed, record)
    nonce = sealed[key_block + 80 : header_end] + struct.pack(">I", chunk)
    aad = hashlib.sha256(sealed[:header_end]).digest() + struct.pack(">IB", chunk, flag)
    body = record + 5
    plain = AESGCM(data_key).decrypt(nonce, sealed[body : body + size], aad)
    assert fix_block + 16 <= len(plain), "the fix-up block must be a whole block of the chunk"

    encrypt_block = Cipher(algorithms.AES(data_key), modes.ECB()).encryptor()
    ghash_key = int.from_bytes(encrypt_block.update(bytes(16)), "big")
    change = int.from_bytes(wanted, "big") ^ int.from_bytes(plain[block : block + 16], "big")
    fix = change
    for _ in range((fix_block - block) // 16):
        fix = _gf128_mul(fix, ghash_key)
    out = bytearray(sealed)
    for offset, delta in ((block, change), (fix_block, fix)):
        start = (
            body + offset
        )  # CTR mode: a change to the ciphertext is the same change to the plaintext
        out[start : start + 16] = bytes(
            a ^ b for a, b in zip(out[start : start + 16], delta.to_bytes(16, "big"), strict=True)
        )
    return bytes(out)
