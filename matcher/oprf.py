"""Oblivious PRF for the OPRF match mode: RFC 9497 (V)OPRF(ristretto255, SHA-512), modes 0x00, 0x01.

Only the vendor holds the key. The bank learns F(key, phone) for its own customers without the
vendor seeing them; the vendor learns nothing about the bank's inputs (RFC 9497, section 3.3.1):

    bank    blinds, blinded = blind(inputs)                r * H(x)             -> vendor
    vendor  evaluated = blind_evaluate(key, blinded)       k * r * H(x)         -> bank
    bank    outputs = finalize(inputs, blinds, evaluated)  SHA-512(x, k * H(x), "Finalize")
    vendor  outputs = evaluate(key, its_own_inputs)        the same PRF, computed directly

Equal outputs mean equal inputs, so the bank joins its outputs to the vendor's. `blind_with` is
`blind` with the blinds given: RFC test vectors pin them, as a clock argument pins a timestamp.

Two modes (RFC 9497 section 3.1), chosen by `OprfMode`: base (OPRF, 0x00) and verifiable
(VOPRF, 0x01). The mode enters the context string, hence every domain separation tag: the same
key gives unrelated outputs in the two modes, so both sides must agree on it. In the verifiable
mode the vendor publishes pkS = skS * G and proves each batch of evaluations with one batched
DLEQ proof (RFC 9497 section 2.2: `generate_proof`, `verify_proof`): every evaluated element is
skS times its blinded element, for the skS behind pkS. Without it (base mode) a vendor could
evaluate some blinded elements under another key and so split the bank's customers into groups.
The proof folds the batch into two composite elements, M = sum d_i C_i and Z = sum d_i D_i, with
d_i hashed from the pair (ComputeComposites); one scalar multiplication per element for the
vendor (it computes Z = skS * M, ComputeCompositesFast), two for the bank, on the same thread
pool as the OPRF itself. RFC 9497 numbers the pairs with two bytes, so a proof covers at most
65,536 elements (`PROOF_ELEMENTS`); longer batches carry one proof per block.

Group: ristretto255 (RFC 9496) from libsodium, through `rbcl`. rbcl ships libsodium inside its
wheels (manylinux, musllinux, macOS, Windows; nothing to install on the host), wraps every
`crypto_core_ristretto255_*` and `crypto_scalarmult_ristretto255*` function, and is maintained
(1.1.2, December 2025). PyNaCl 1.6 binds no ristretto255 function; pysodium needs a system
libsodium. Where rbcl 1.1.2 (it bundles libsodium 1.0.18) differs from its own docstrings or
from the RFCs, as checked here:
- `crypto_core_ristretto255_is_valid_point` accepts the identity (32 zero bytes), despite its
  docstring, and an otherwise valid encoding with bit 255 set (RFC 9496 4.3.1 rejects any
  encoding >= p; libsodium 1.0.18 masks the bit off). Both are refused here before it is asked.
- `crypto_scalarmult_ristretto255` does not clamp ristretto scalars, despite its docstring:
  libsodium only clears bit 255, which is zero in every canonical scalar. The RFC vectors pass.

Received elements (blinded elements at the vendor, evaluated elements at the bank) are checked
as RFC 9497 section 4.1 DeserializeElement asks: 32 bytes, a canonical encoding, not the
identity; blinds are canonical non-zero scalars. The first bad item stops the batch with an
`OprfError` that names its position, never its value.

Hot path: per item one to three libsodium calls, which libsodium cannot batch (`seal_rows` on
one core, 56 us a row: scalar multiplication 65%, hash-to-group 22%, HKDF 5%, AES-GCM 2.5%,
expand_message_xmd and the output hash 3%, the Python around them the rest). So
HashToGroup's expand_message_xmd starts from the hashed state of its constant first block
(`_Z_PAD`); a received element is decoded once, by the scalar multiplication (it refuses what
`is_valid_point` does), after the byte checks libsodium skips; `finalize` inverts a part's
blinds with one inversion (Montgomery's trick). A batch's parts run on worker processes or
threads (`matcher.batch_parts`: ctypes drops the GIL in each libsodium call, the Python around it
does not); the DLEQ composites run on threads. `evaluate_then` and `finalize_then` take a
`Then`: what each part does next with its outputs on the worker that computed them (the row
protocol's HKDF and AES-GCM, `matcher.oprf_match`), so that work runs in parallel too, and only
its result travels back, part by part as the parts finish.

References: RFC 9497 (OPRF), RFC 9380 section 5.3.1 (expand_message_xmd), RFC 9496
(ristretto255); P. L. Montgomery, "Speeding the Pollard and elliptic curve methods of
factorization", Math. Comp. 48 (1987), for simultaneous inversion.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from hmac import compare_digest
from typing import Any, Generic, TypeGuard, TypeVar

import rbcl

from contracts.errors import OprfError
from matcher.batch_parts import iter_parts, map_parts, run_chunks

__all__ = [
    "CONTEXT_STRING",
    "ELEMENT_BYTES",
    "OUTPUT_BYTES",
    "PROOF_BYTES",
    "PROOF_ELEMENTS",
    "SCALAR_BYTES",
    "OprfError",
    "OprfMode",
    "OprfServerKey",
    "Then",
    "blind",
    "blind_evaluate",
    "blind_with",
    "draw_blinds",
    "evaluate",
    "evaluate_then",
    "expand_message_xmd",
    "finalize",
    "finalize_then",
    "generate_proof",
    "prove_blocks",
    "verify_blocks",
    "verify_proof",
]

ELEMENT_BYTES = 32  # Ne: a serialised ristretto255 element
SCALAR_BYTES = 32  # Ns: a serialised scalar, little-endian, below the group order L
OUTPUT_BYTES = 64  # Nh: SHA-512
SEED_BYTES = 32  # DeriveKeyPair's seed is Ns bytes
PROOF_BYTES = 2 * SCALAR_BYTES  # a DLEQ proof: SerializeScalar(c) || SerializeScalar(s)
PROOF_ELEMENTS = 1 << 16  # ComputeComposites frames the index i as I2OSP(i, 2)


class OprfMode(IntEnum):
    """The RFC 9497 mode (section 3.1): base OPRF, or verifiable VOPRF with a public key."""

    OPRF = 0x00
    VOPRF = 0x01

    @property
    def context_string(self) -> bytes:
        """Return "OPRFV1-" || I2OSP(mode, 1) || "-ristretto255-SHA512" (RFC 9497 3.1)."""
        return b"OPRFV1-" + bytes([self.value]) + b"-ristretto255-SHA512"


CONTEXT_STRING = OprfMode.OPRF.context_string


@dataclass(frozen=True, slots=True)
class _Tags:
    """The domain separation tags of one mode (RFC 9497 4.1 and 3.2.1, 2.2.1)."""

    hash_to_group: bytes
    hash_to_scalar: bytes
    derive_key_pair: bytes
    seed: bytes


_TAGS = {
    mode: _Tags(
        hash_to_group=b"HashToGroup-" + mode.context_string,
        hash_to_scalar=b"HashToScalar-" + mode.context_string,
        derive_key_pair=b"DeriveKeyPair" + mode.context_string,
        seed=b"Seed-" + mode.context_string,
    )
    for mode in OprfMode
}
_DST_HASH_TO_SCALAR = _TAGS[OprfMode.OPRF].hash_to_scalar
_MAX_INPUT_BYTES = 0xFFFF  # inputs are framed with a 2-byte length (I2OSP(len(input), 2))
_UNIFORM_BYTES = 64  # hash_to_ristretto255 and HashToScalar both take 64 uniform bytes
_IDENTITY = bytes(ELEMENT_BYTES)  # the identity's only canonical encoding
_ZERO = bytes(SCALAR_BYTES)
_ONE = (1).to_bytes(SCALAR_BYTES, "little")
_FINALIZE = b"Finalize"
_COMPOSITE = b"Composite"
_CHALLENGE = b"Challenge"
_ELEMENT_FRAME = ELEMENT_BYTES.to_bytes(2, "big")

_DRAW_ITEMS = 65_536  # random bytes are drawn this many scalars at a time

RandomBytes = Callable[[int], bytes]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Then(Generic[T]):
    """What each part of `evaluate_then` or `finalize_then` does next with its 64-byte outputs,
    on the worker that computed them.

    `fn(outputs, rows, args)` gets the part's outputs, the part's rows of each of `columns`
    (aligned with the inputs, cut with them) and `args`, and returns the part's result. `fn` is
    a module-level function (a process pool pickles it by name); `args` and the result travel
    pickled.
    """

    fn: Callable[[list[bytes], tuple[Sequence[Any], ...], Any], T]
    columns: tuple[Sequence[Any], ...] = ()
    args: object = None


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class OprfServerKey:
    """The vendor's OPRF private key skS: a non-zero scalar mod L. Its repr never shows it.

    Build one with `generate()` or `derive()`; the keyring stores `scalar` (32 bytes,
    little-endian) and rebuilds the key with `OprfServerKey(scalar)`.
    """

    scalar: bytes

    def __post_init__(self) -> None:
        if not _is_nonzero_scalar(self.scalar):
            raise OprfError(
                "an OPRF key must be a non-zero ristretto255 scalar: 32 bytes, little-endian, "
                "below the group order; create one with OprfServerKey.generate() or .derive()",
                item="key",
            )

    @classmethod
    def generate(cls, *, rng: RandomBytes | None = None) -> OprfServerKey:
        """Return a new random key (RFC 9497 section 3.2, GenerateKeyPair).

        Args:
            rng: returns n random bytes; the OS's CSPRNG (`secrets.token_bytes`) by default.
        """
        return cls(_random_scalars(1, rng)[0])

    @classmethod
    def derive(
        cls, seed: bytes, info: bytes = b"", *, mode: OprfMode = OprfMode.OPRF
    ) -> OprfServerKey:
        """Return the key that RFC 9497 section 3.2.1 DeriveKeyPair gives for seed and info.

        Args:
            seed: 32 secret bytes of full entropy.
            info: public key information (at most 65535 bytes), e.g. the key's epoch id.
            mode: the mode's context string enters the derivation.
        """
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise OprfError(f"the seed must be {SEED_BYTES} bytes", item="key")
        if not isinstance(info, bytes) or len(info) > _MAX_INPUT_BYTES:
            raise OprfError(f"info must be bytes, at most {_MAX_INPUT_BYTES} long", item="key")
        derive_input = seed + _i2osp(len(info), 2) + info
        for counter in range(256):
            secret = _hash_to_scalar(derive_input + _i2osp(counter, 1), _TAGS[mode].derive_key_pair)
            if not compare_digest(secret, _ZERO):
                return cls(secret)
        raise OprfError(  # DeriveKeyPairError: 256 zero scalars in a row, never in practice
            "DeriveKeyPair found no non-zero scalar in 256 attempts; use another seed", item="key"
        )

    def public_key(self) -> bytes:
        """Return pkS = skS * G, serialised (32 bytes): what the verifiable mode publishes."""
        return bytes(rbcl.crypto_scalarmult_ristretto255_base(self.scalar))

    def __repr__(self) -> str:
        return f"OprfServerKey(scalar=<{SCALAR_BYTES} bytes hidden>)"


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """Return `len_in_bytes` uniform bytes derived from msg under dst (RFC 9380 5.3.1, SHA-512)."""
    ell = -(-len_in_bytes // 64)
    if not 0 < len_in_bytes <= 0xFFFF or ell > 255 or not 0 < len(dst) <= 255:
        raise OprfError(
            "expand_message_xmd takes 1 to 255 * 64 output bytes and a 1 to 255 byte DST",
            item="argument",
        )
    dst_prime = dst + _i2osp(len(dst), 1)
    b_0 = hashlib.sha512(
        bytes(128) + msg + _i2osp(len_in_bytes, 2) + b"\x00" + dst_prime  # Z_pad is one block
    ).digest()
    b_i = hashlib.sha512(b_0 + b"\x01" + dst_prime).digest()
    blocks = [b_i]
    for i in range(2, ell + 1):
        chained = bytes(x ^ y for x, y in zip(b_0, b_i, strict=True))
        b_i = hashlib.sha512(chained + _i2osp(i, 1) + dst_prime).digest()
        blocks.append(b_i)
    return b"".join(blocks)[:len_in_bytes]


def blind(
    inputs: Sequence[bytes],
    *,
    rng: RandomBytes | None = None,
    mode: OprfMode = OprfMode.OPRF,
    workers: int | None = None,
) -> tuple[list[bytes], list[bytes]]:
    """Return (blinds, blinded elements) for the inputs: the bank's first step (RFC 9497 Blind).

    Keep the blinds secret and in order: `finalize` needs them. Send the blinded elements.

    Args:
        inputs: the values to evaluate (normalised identifiers as bytes, at most 65535 each).
        rng: returns n random bytes; the OS's CSPRNG (`secrets.token_bytes`) by default.
        mode: the vendor's mode: its context string enters HashToGroup.
        workers: processes (or threads, see `matcher.batch_parts`); every core by default.
    """
    blinds = _random_scalars(len(inputs), rng)
    return blinds, blind_with(inputs, blinds, mode=mode, workers=workers)


def draw_blinds(n: int, *, rng: RandomBytes | None = None) -> list[bytes]:
    """Return the n blinds `blind` would draw from `rng`: to replay a request from its seed."""
    return _random_scalars(n, rng)


def blind_with(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    *,
    mode: OprfMode = OprfMode.OPRF,
    workers: int | None = None,
) -> list[bytes]:
    """Return blind_i * HashToGroup(input_i) for each input, with the blinds given (RFC 9497 Blind).

    `blind` draws the blinds and calls this; call it directly only to replay known blinds.
    """
    _check_lengths(inputs=inputs, blinds=blinds)
    return map_parts(_blind_part, (inputs, blinds), _hash_prefix(mode), workers, preload=__name__)


def blind_evaluate(
    key: OprfServerKey, blinded: Sequence[bytes], *, workers: int | None = None
) -> list[bytes]:
    """Return skS * element for each blinded element: the vendor's step (RFC 9497 BlindEvaluate).

    Each element is validated before it is used; the first invalid one refuses the batch.
    """
    return map_parts(_blind_evaluate_part, (blinded,), key.scalar, workers, preload=__name__)


def finalize(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated: Sequence[bytes],
    *,
    workers: int | None = None,
) -> list[bytes]:
    """Return the 64-byte PRF output for each input: the bank's last step (RFC 9497 Finalize).

    Args:
        inputs: the inputs given to `blind`, in the same order.
        blinds: the blinds `blind` returned.
        evaluated: the vendor's evaluated elements, in the order of the blinded elements sent.
        workers: processes (or threads, see `matcher.batch_parts`); every core by default.
    """
    parts = finalize_then(inputs, blinds, evaluated, _OUTPUTS, workers=workers)
    return [output for outputs in parts for output in outputs]


def finalize_then(
    inputs: Sequence[bytes],
    blinds: Sequence[bytes],
    evaluated: Sequence[bytes],
    then: Then[T],
    *,
    workers: int | None = None,
) -> Iterator[T]:
    """Yield what `then` makes of each part's `finalize` outputs, part by part in order (the
    caller takes a part's result while later parts still run)."""
    named = {f"then.columns[{i}]": column for i, column in enumerate(then.columns)}
    _check_lengths(inputs=inputs, blinds=blinds, evaluated=evaluated, **named)
    columns = (inputs, blinds, evaluated, *then.columns)
    args = (then.fn, then.args)
    return iter_parts(_finalize_part, columns, args, workers, preload=then.fn.__module__)


def evaluate(
    key: OprfServerKey,
    inputs: Sequence[bytes],
    *,
    mode: OprfMode = OprfMode.OPRF,
    workers: int | None = None,
) -> list[bytes]:
    """Return the 64-byte PRF output for each input, computed with the key (RFC 9497 Evaluate).

    The vendor's side of the match: for the same key and mode, `evaluate(key, [x])` equals the
    bank's `finalize` of `x` blinded in that mode.
    """
    parts = evaluate_then(key, inputs, _OUTPUTS, mode=mode, workers=workers)
    return [output for outputs in parts for output in outputs]


def evaluate_then(
    key: OprfServerKey,
    inputs: Sequence[bytes],
    then: Then[T],
    *,
    mode: OprfMode = OprfMode.OPRF,
    workers: int | None = None,
) -> Iterator[T]:
    """Yield what `then` makes of each part's `evaluate` outputs, part by part in order (the
    caller takes a part's result while later parts still run)."""
    named = {f"then.columns[{i}]": column for i, column in enumerate(then.columns)}
    _check_lengths(inputs=inputs, **named)
    args = (key.scalar, _hash_prefix(mode), then.fn, then.args)
    preload = then.fn.__module__  # it imports this module
    return iter_parts(_evaluate_part, (inputs, *then.columns), args, workers, preload=preload)


def _outputs(outputs: list[bytes], rows: tuple[Sequence[Any], ...], args: object) -> list[bytes]:
    """Return the part's outputs as they are (the `Then` of `evaluate` and `finalize`)."""
    return outputs


_OUTPUTS: Then[list[bytes]] = Then(_outputs)


def generate_proof(
    key: OprfServerKey,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    *,
    nonce: bytes | None = None,
    rng: RandomBytes | None = None,
    workers: int | None = None,
) -> bytes:
    """Return the VOPRF proof that evaluated_i = skS * blinded_i for every i (RFC 9497 2.2.1).

    GenerateProof with A = G and B = pkS: a Chaum-Pedersen proof that log_G(pkS) = log_M(Z) for
    the batch's composites (ComputeCompositesFast, so Z = skS * M), as c || s (64 bytes).

    Args:
        key: the vendor's key skS.
        blinded, evaluated: the batch, aligned; 1 to `PROOF_ELEMENTS` pairs.
        nonce: the proof's random scalar r; RFC vectors pin it (drawn from `rng` by default).
        rng: returns n random bytes; the OS's CSPRNG by default.
        workers: threads for the composites; every core by default.
    """
    public = key.public_key()
    composite, _ = _composites(public, blinded, evaluated, verifier=False, workers=workers)
    mult = rbcl.crypto_scalarmult_ristretto255
    r = _random_scalars(1, rng)[0] if nonce is None else _checked_blind(nonce, 0)
    try:
        z = mult(key.scalar, composite)
        t2, t3 = rbcl.crypto_scalarmult_ristretto255_base(r), mult(r, composite)
    except RuntimeError:  # M is the identity: about 2^-252 for honest elements
        raise OprfError(
            "the batch's composite element is the identity; evaluate the batch again",
            item="proof",
        ) from None
    c = _challenge(public, composite, z, t2, t3)
    s = rbcl.crypto_core_ristretto255_scalar_sub(
        r, rbcl.crypto_core_ristretto255_scalar_mul(c, key.scalar)
    )
    return bytes(c) + bytes(s)


def verify_proof(
    public_key: bytes,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    proof: bytes,
    *,
    workers: int | None = None,
) -> bool:
    """Return whether `proof` shows evaluated_i = skS * blinded_i for the skS of `public_key`.

    RFC 9497 2.2.2 VerifyProof with A = G and B = pkS, over the batch's composites
    (ComputeComposites: two scalar multiplications per pair, on the thread pool). A malformed
    proof or public key is a proof that fails; a malformed element raises `OprfError` with its
    index, as `finalize` would.
    """
    if not isinstance(proof, bytes) or len(proof) != PROOF_BYTES:
        return False
    c, s = proof[:SCALAR_BYTES], proof[SCALAR_BYTES:]
    try:
        public = _checked_element(public_key, 0, "public key")
    except OprfError:
        return False
    if not (_is_scalar(c) and _is_scalar(s)):
        return False
    composite, z = _composites(public, blinded, evaluated, verifier=True, workers=workers)
    mult = rbcl.crypto_scalarmult_ristretto255_allow_scalar_zero
    add = rbcl.crypto_core_ristretto255_add
    try:
        t2 = add(rbcl.crypto_scalarmult_ristretto255_base_allow_scalar_zero(s), mult(c, public))
        t3 = add(mult(s, composite), mult(c, z))
    except RuntimeError:  # an identity composite: no honest batch gives one
        return False
    return compare_digest(_challenge(public, composite, z, t2, t3), c)


def prove_blocks(
    key: OprfServerKey,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    *,
    workers: int | None = None,
) -> list[bytes]:
    """Return one `generate_proof` per block of `PROOF_ELEMENTS` pairs, in order (none if empty)."""
    _check_lengths(blinded=blinded, evaluated=evaluated)
    return [
        generate_proof(
            key,
            blinded[i : i + PROOF_ELEMENTS],
            evaluated[i : i + PROOF_ELEMENTS],
            workers=workers,
        )
        for i in range(0, len(blinded), PROOF_ELEMENTS)
    ]


def verify_blocks(
    public_key: bytes,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    proofs: Sequence[bytes],
    *,
    workers: int | None = None,
) -> int | None:
    """Return None if every block's proof verifies (`prove_blocks`), else the first bad block.

    A missing or extra proof fails its block (the count must be ceil(n / PROOF_ELEMENTS)).
    """
    _check_lengths(blinded=blinded, evaluated=evaluated)
    starts = range(0, len(blinded), PROOF_ELEMENTS)
    if len(proofs) != len(starts):
        return min(len(proofs), len(starts))
    for block, (start, proof) in enumerate(zip(starts, proofs, strict=True)):
        stop = start + PROOF_ELEMENTS
        if not verify_proof(
            public_key, blinded[start:stop], evaluated[start:stop], proof, workers=workers
        ):
            return block
    return None


def _composites(
    public: bytes,
    blinded: Sequence[bytes],
    evaluated: Sequence[bytes],
    *,
    verifier: bool,
    workers: int | None,
) -> tuple[bytes, bytes]:
    """Return (M, Z) = (sum d_i C_i, sum d_i D_i) of a batch (RFC 9497 2.2.1 ComputeComposites).

    The prover (`verifier=False`) leaves Z to be skS * M (ComputeCompositesFast) and gets the
    identity here. Per pair: one HashToScalar for d_i, one or two scalar multiplications; the
    batch runs in chunks on the thread pool, each returning its partial sums.
    """
    _check_lengths(blinded=blinded, evaluated=evaluated)
    n = len(blinded)
    if not 0 < n <= PROOF_ELEMENTS:
        raise OprfError(
            f"a proof covers 1 to {PROOF_ELEMENTS} elements (RFC 9497 numbers them with two "
            f"bytes), got {n}; prove the batch in blocks",
            item="batch",
        )
    tags = _TAGS[OprfMode.VOPRF]
    seed = hashlib.sha512(_ELEMENT_FRAME + public + _i2osp(len(tags.seed), 2) + tags.seed).digest()
    prefix = _i2osp(len(seed), 2) + seed
    mult, add = rbcl.crypto_scalarmult_ristretto255, rbcl.crypto_core_ristretto255_add

    def work(start: int, stop: int) -> list[bytes]:
        m = z = _IDENTITY
        for i in range(start, stop):
            c = _checked_element(blinded[i], i, "blinded")
            d = _checked_element(evaluated[i], i, "evaluated")
            transcript = prefix + _i2osp(i, 2) + _ELEMENT_FRAME + c + _ELEMENT_FRAME + d
            d_i = _hash_to_scalar(transcript + _COMPOSITE, tags.hash_to_scalar)
            try:
                m = add(m, mult(d_i, c))
                if verifier:
                    z = add(z, mult(d_i, d))
            except RuntimeError:  # d_i = 0: about 2^-252 per pair
                raise OprfError(
                    f"pair {i} has a zero composite weight; evaluate the batch again",
                    item="proof",
                    index=i,
                ) from None
        return [m, z]

    parts = run_chunks(work, n, workers)
    composite, z = parts[0], parts[1]
    for j in range(2, len(parts), 2):
        composite, z = add(composite, parts[j]), add(z, parts[j + 1])
    return bytes(composite), bytes(z)


def _challenge(public: bytes, m: bytes, z: bytes, t2: bytes, t3: bytes) -> bytes:
    """Return c = HashToScalar(Bm, M, Z, t2, t3 each framed, "Challenge") (RFC 9497 2.2.1)."""
    transcript = b"".join(_ELEMENT_FRAME + bytes(e) for e in (public, m, z, t2, t3))
    return _hash_to_scalar(transcript + _CHALLENGE, _TAGS[OprfMode.VOPRF].hash_to_scalar)


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _hash_to_scalar(x: bytes, dst: bytes = _DST_HASH_TO_SCALAR) -> bytes:
    """Return 64 uniform bytes of x reduced mod L, little-endian (RFC 9497 4.1 HashToScalar)."""
    return rbcl.crypto_core_ristretto255_scalar_reduce(expand_message_xmd(x, dst, _UNIFORM_BYTES))


def _output(x: bytes, unblinded: bytes) -> bytes:
    """Return SHA-512(I2OSP(len(x), 2) || x || I2OSP(Ne, 2) || element || "Finalize")."""
    return hashlib.sha512(_i2osp(len(x), 2) + x + _ELEMENT_FRAME + unblinded + _FINALIZE).digest()


def _hash_prefix(mode: OprfMode) -> tuple[bytes, bytes]:
    """Return what follows the input in expand_message_xmd's two hashes for HashToGroup (64 bytes).

    With 64 output bytes and SHA-512, ell = 1: uniform = b_1 = H(b_0 || 0x01 || DST'), where
    b_0 = H(Z_pad || msg || I2OSP(64, 2) || 0x00 || DST'). Z_pad is one whole SHA-512 block, so
    its state is hashed once (`_Z_PAD`) and copied per input; `expand_message_xmd` is the
    general function, and the RFC vectors check both.
    """
    dst = _TAGS[OprfMode(mode)].hash_to_group
    dst_prime = dst + _i2osp(len(dst), 1)
    return _i2osp(_UNIFORM_BYTES, 2) + b"\x00" + dst_prime, b"\x01" + dst_prime


_Z_PAD = hashlib.sha512(bytes(128))  # never updated: every input hashes a copy of this state


def _hashed(x: bytes, index: int, tails: tuple[bytes, bytes]) -> bytes:
    """Return HashToGroup(x) (RFC 9497 4.1) for the tails `_hash_prefix` gave; x is checked."""
    state = _Z_PAD.copy()
    state.update(x + tails[0])
    element = rbcl.crypto_core_ristretto255_from_hash(
        hashlib.sha512(state.digest() + tails[1]).digest()
    )
    if element == _IDENTITY:  # RFC 9497 InvalidInputError; probability about 2^-252
        raise OprfError(f"input {index} hashes to the identity element", item="input", index=index)
    return element


# The batch steps, one part of a batch each (`matcher.batch_parts.Part`), as module functions so
# that a process pool can run them.


def _blind_part(offset: int, columns: tuple[Sequence[bytes], ...], tails: object) -> list[bytes]:
    inputs, blinds = columns
    assert isinstance(tails, tuple)
    mult = rbcl.crypto_scalarmult_ristretto255
    out = []
    for i, (x, r) in enumerate(zip(inputs, blinds, strict=True), offset):
        r = _checked_blind(r, i)
        out.append(mult(r, _hashed(_checked_input(x, i), i, tails)))
    return out


def _blind_evaluate_part(
    offset: int, columns: tuple[Sequence[bytes], ...], secret: object
) -> list[bytes]:
    assert isinstance(secret, bytes)
    mult = rbcl.crypto_scalarmult_ristretto255
    out = []
    for i, p in enumerate(columns[0], offset):
        try:
            out.append(mult(secret, _shaped_element(p, i, "blinded")))
        except RuntimeError:  # libsodium's decoding refused it (RFC 9496 4.3.1)
            raise _invalid_element(i, "blinded") from None
    return out


def _finalize_part(offset: int, columns: tuple[Sequence[Any], ...], args: object) -> Any:
    inputs, blinds, evaluated = columns[:3]
    assert isinstance(args, tuple)
    then, then_args = args
    inverses = _invert_all([_checked_blind(r, i) for i, r in enumerate(blinds, offset)])
    mult = rbcl.crypto_scalarmult_ristretto255
    out = []
    for i, (x, inverse, e) in enumerate(zip(inputs, inverses, evaluated, strict=True), offset):
        try:
            unblinded = mult(inverse, _shaped_element(e, i, "evaluated"))
        except RuntimeError:  # libsodium's decoding refused it (RFC 9496 4.3.1)
            raise _invalid_element(i, "evaluated") from None
        x = _checked_input(x, i)
        out.append(_output(x, unblinded))
    return then(out, columns[3:], then_args)


def _evaluate_part(offset: int, columns: tuple[Sequence[Any], ...], args: object) -> Any:
    assert isinstance(args, tuple)
    secret, tails, then, then_args = args
    mult = rbcl.crypto_scalarmult_ristretto255
    out = []
    for i, x in enumerate(columns[0], offset):
        x = _checked_input(x, i)
        element = mult(secret, _hashed(x, i, tails))
        out.append(_output(x, element))
    return then(out, columns[1:], then_args)


def _is_nonzero_scalar(s: object) -> TypeGuard[bytes]:
    """True for 32 bytes that encode an integer in [1, L - 1] (RFC 9497 DeserializeScalar)."""
    if not isinstance(s, bytes) or len(s) != SCALAR_BYTES:
        return False
    canonical = compare_digest(rbcl.crypto_core_ristretto255_scalar_reduce(s + _ZERO), s)
    return canonical and not compare_digest(s, _ZERO)


def _is_scalar(s: bytes) -> bool:
    """True for 32 bytes that encode an integer in [0, L - 1] (RFC 9497 DeserializeScalar)."""
    return compare_digest(rbcl.crypto_core_ristretto255_scalar_reduce(s + _ZERO), s)


def _random_scalars(n: int, rng: RandomBytes | None) -> list[bytes]:
    """Return n uniformly random non-zero scalars: 64 random bytes each, reduced mod L.

    RFC 9497 4.7.2 (extra random bits): 512 bits where the RFC asks for at least 384, so the
    bias is below 2^-259. The bytes are drawn in slices to bound memory on millions of items.
    """
    draw = secrets.token_bytes if rng is None else rng
    reduce = rbcl.crypto_core_ristretto255_scalar_reduce
    scalars: list[bytes] = []
    for start in range(0, n, _DRAW_ITEMS):
        want = _UNIFORM_BYTES * min(_DRAW_ITEMS, n - start)
        raw = draw(want)
        if not isinstance(raw, bytes) or len(raw) != want:
            raise OprfError(f"rng must return exactly the {want} bytes asked for", item="rng")
        for j in range(0, want, _UNIFORM_BYTES):
            s = reduce(raw[j : j + _UNIFORM_BYTES])
            if compare_digest(s, _ZERO):  # 2^-252 for a real CSPRNG: the source is broken
                raise OprfError("rng returned bytes that reduce to zero mod L", item="rng")
            scalars.append(s)
    return scalars


def _invert_all(scalars: list[bytes]) -> list[bytes]:
    """Return the inverse mod L of each non-zero scalar, with a single inversion (Montgomery).

    prefix[i] = s_0 * ... * s_(i-1); walking back from (s_0 * ... * s_(n-1))^-1, each step gives
    s_i^-1 = (s_0 * ... * s_i)^-1 * prefix[i]. Three constant-time multiplications per scalar
    instead of one inversion each, which costs about thirty times a multiplication here.
    """
    if not scalars:
        return []
    mul = rbcl.crypto_core_ristretto255_scalar_mul
    prefix = []
    product = _ONE
    for s in scalars:
        prefix.append(product)
        product = mul(product, s)
    inverse = rbcl.crypto_core_ristretto255_scalar_invert(product)
    out = [b""] * len(scalars)
    for i in range(len(scalars) - 1, -1, -1):
        out[i] = mul(inverse, prefix[i])
        inverse = mul(inverse, scalars[i])
    return out


def _checked_input(x: object, index: int) -> bytes:
    if not isinstance(x, bytes) or len(x) > _MAX_INPUT_BYTES:
        got = f"{len(x)} bytes" if isinstance(x, bytes) else type(x).__name__
        raise OprfError(
            f"input {index} must be bytes, at most {_MAX_INPUT_BYTES} long; got {got}",
            item="input",
            index=index,
        )
    return x


def _checked_blind(r: object, index: int) -> bytes:
    if not _is_nonzero_scalar(r):
        raise OprfError(
            f"blind {index} is not a non-zero scalar below the group order (32 bytes, "
            "little-endian); pass the blinds that blind() returned, unchanged and in order",
            item="blind",
            index=index,
        )
    return r


def _checked_element(p: object, index: int, kind: str) -> bytes:
    """Return p if it deserialises to a group element other than the identity (RFC 9497 4.1)."""
    p = _shaped_element(p, index, kind)
    if not rbcl.crypto_core_ristretto255_is_valid_point(p):
        raise _invalid_element(index, kind)
    return p


def _shaped_element(p: object, index: int, kind: str) -> bytes:
    """Return p if it is 32 bytes, not the identity, with bit 255 clear; else raise OprfError.

    The rest of RFC 9496's decoding is libsodium's: `_checked_element` asks it alone, and the
    batch steps let the scalar multiplication decode the element (it refuses what is_valid_point
    refuses, for the cost of one call fewer), raising `_invalid_element` when it fails.
    """
    if (
        not isinstance(p, bytes)
        or len(p) != ELEMENT_BYTES
        or p == _IDENTITY
        or p[-1] & 0x80  # bit 255: libsodium 1.0.18 ignores it, RFC 9496 refuses it
    ):
        raise _invalid_element(index, kind)
    return p


def _invalid_element(index: int, kind: str) -> OprfError:
    return OprfError(
        f"{kind} element {index} is not a valid ristretto255 element (expected the "
        f"{ELEMENT_BYTES}-byte canonical encoding of an element other than the identity); "
        "the batch is refused: the sender must recompute it",
        item=f"{kind} element",
        index=index,
    )


def _check_lengths(**columns: Sequence[Any]) -> None:
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise OprfError(
            f"the lists must be aligned item by item, got lengths {listed}", item="batch"
        )
