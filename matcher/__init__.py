"""Privacy primitives shared by the vendor tool and the bank.

atomic (the one atomic file write), batch_parts (per-item work run in parts on threads or
worker processes, in order), identity (normalise phones / ID numbers), keyed_hash (match
keys), kem (the envelope's HPKE suites: X25519 and the post-quantum hybrid MLKEM768-X25519, their
keys as bytes), keyring (keys on disk), manifest (a sealed batch's signed header), envelope (sealed
batches), spool (buffered file I/O with digests), pack (the vendor's batch builder), oprf (RFC 9497
OPRF and VOPRF on ristretto255, with batched DLEQ proofs), oprf_match (the OPRF mode's rows:
labels, sealed payloads, evaluation budget), oprf_budget (the vendor's stored evaluation count
per epoch), oprf_exchange (the request and answer files, the
vendor's budgeted answer), key_handout (a snapshot key sealed to an analyst's key), sealed_log
(append-only segments of AES-GCM frames: the service's request trail).
Only this package touches `cryptography.hazmat` or key bytes.
"""

__all__ = [
    "atomic",
    "batch_parts",
    "envelope",
    "identity",
    "kem",
    "key_handout",
    "keyed_hash",
    "keyring",
    "manifest",
    "oprf",
    "oprf_budget",
    "oprf_exchange",
    "oprf_match",
    "pack",
    "psi",
    "sealed_log",
    "spool",
]
