"""Privacy primitives shared by the vendor tool and the bank.

atomic (the one atomic file write), identity (normalise phones / ID numbers), keyed_hash (match
keys), keyring (keys on disk), manifest (a sealed batch's signed header), envelope (sealed
batches), spool (buffered file I/O with digests), pack (the vendor's batch builder), oprf
(RFC 9497 OPRF on ristretto255), oprf_match (the OPRF mode's rows: labels, sealed payloads,
evaluation budget), oprf_exchange (the request and answer files, the vendor's budgeted answer).
Only this package touches `cryptography.hazmat` or key bytes.
"""

__all__ = [
    "atomic",
    "envelope",
    "identity",
    "keyed_hash",
    "keyring",
    "manifest",
    "oprf",
    "oprf_exchange",
    "oprf_match",
    "pack",
    "psi",
    "spool",
]
