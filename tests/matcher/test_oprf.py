"""OPRF(ristretto255, SHA-512): RFC 9497 / RFC 9380 vectors, the protocol's algebra, refusals."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import ConfigError, FusionError
from matcher import batch_parts, oprf
from matcher.oprf import (
    OUTPUT_BYTES,
    PROOF_BYTES,
    PROOF_ELEMENTS,
    OprfError,
    OprfMode,
    OprfServerKey,
    Then,
    blind,
    blind_evaluate,
    blind_with,
    evaluate,
    evaluate_then,
    expand_message_xmd,
    finalize,
    finalize_then,
    generate_proof,
    verify_proof,
)

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "oprf_ristretto255_sha512.json").read_text()
)
OPRF = VECTORS["oprf"]
VOPRF = json.loads(
    (Path(__file__).parent / "vectors" / "voprf_ristretto255_sha512.json").read_text()
)["voprf"]
XMD = VECTORS["expand_message_xmd_sha512"]

L = 2**252 + 27742317777372353535851937790883648493  # the group order (RFC 9496)
G = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")
INVALID_ELEMENTS = (
    {
        "identity": bytes(32),
        "generator with bit 255 set": G[:31] + bytes([G[31] | 0x80]),  # libsodium 1.0.18 takes it
        "31 bytes": G[:31],
        "33 bytes": G + b"\x00",
        "text, not bytes": G.hex(),
    }
    | {
        f"rfc9496-A2-{i}-{case['reason']}": bytes.fromhex(case["encoding"])
        for i, case in enumerate(VECTORS["ristretto255_invalid_encodings"]["encodings"])
    }
)


def _phones(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [f"1{rng.randrange(3, 10)}{rng.randrange(10**9):09d}".encode() for _ in range(n)]


def _rfc_key() -> OprfServerKey:
    return OprfServerKey.derive(bytes.fromhex(OPRF["Seed"]), bytes.fromhex(OPRF["KeyInfo"]))


@pytest.fixture(scope="module")
def key() -> OprfServerKey:
    return OprfServerKey.generate(rng=random.Random(2024).randbytes)


def test_context_string_is_rfc9497s():
    assert oprf.CONTEXT_STRING == b"OPRFV1-\x00-ristretto255-SHA512"


@pytest.mark.parametrize(
    "case",
    XMD["vectors"],
    ids=lambda c: f"rfc9380-K3-{c['msg'][:8] or 'empty'}-{c['len_in_bytes']}",
)
def test_rfc9380_expand_message_xmd_sha512(case: dict):
    got = expand_message_xmd(case["msg"].encode(), XMD["DST"].encode(), case["len_in_bytes"])
    assert got.hex() == case["uniform_bytes"]


def test_rfc9497_derive_key_pair():
    assert _rfc_key().scalar.hex() == OPRF["skSm"]


@pytest.mark.parametrize("case", OPRF["vectors"], ids=lambda c: c["name"])
def test_rfc9497_oprf_vectors(case: dict):
    key = _rfc_key()
    x, r = bytes.fromhex(case["Input"]), bytes.fromhex(case["Blind"])
    blinded = blind_with([x], [r])
    assert blinded[0].hex() == case["BlindedElement"]
    evaluated = blind_evaluate(key, blinded)
    assert evaluated[0].hex() == case["EvaluationElement"]
    assert finalize([x], [r], evaluated)[0].hex() == case["Output"]
    assert evaluate(key, [x])[0].hex() == case["Output"]


@settings(max_examples=40, deadline=None)
@given(inputs=st.lists(st.binary(max_size=64), max_size=6))
def test_oblivious_path_equals_direct_evaluation(key: OprfServerKey, inputs: list[bytes]):
    blinds, blinded = blind(inputs)
    outputs = finalize(inputs, blinds, blind_evaluate(key, blinded))
    assert outputs == evaluate(key, inputs)
    assert all(len(out) == OUTPUT_BYTES for out in outputs)


def test_a_different_key_gives_different_outputs(key: OprfServerKey):
    inputs = _phones(20)
    other = OprfServerKey.generate()
    blinds, blinded = blind(inputs)
    mine = finalize(inputs, blinds, blind_evaluate(key, blinded))
    theirs = finalize(inputs, blinds, blind_evaluate(other, blinded))
    assert not set(mine) & set(theirs)
    assert theirs == evaluate(other, inputs)


def test_blinding_hides_equal_inputs_and_is_pinned_by_rng(key: OprfServerKey):
    inputs = [b"13800138000"] * 3
    blinds, blinded = blind(inputs, rng=random.Random(5).randbytes)
    assert len(set(blinded)) == 3  # the vendor cannot tell the three requests are one phone
    assert blind(inputs, rng=random.Random(5).randbytes) == (blinds, blinded)
    assert len(set(finalize(inputs, blinds, blind_evaluate(key, blinded)))) == 1


def test_batch_api_equals_the_per_item_path(key: OprfServerKey):
    inputs = _phones(1_500, seed=3)  # enough for several chunks on two threads
    blinds, blinded = blind(inputs, rng=random.Random(9).randbytes, workers=2)
    evaluated = blind_evaluate(key, blinded, workers=2)
    outputs = finalize(inputs, blinds, evaluated, workers=2)
    per_item = [
        (blind_with([x], [r])[0], blind_evaluate(key, [b])[0], finalize([x], [r], [e])[0])
        for x, r, b, e in zip(inputs, blinds, blinded, evaluated, strict=True)
    ]
    assert [p[0] for p in per_item] == blinded
    assert [p[1] for p in per_item] == evaluated
    assert [p[2] for p in per_item] == outputs
    assert evaluate(key, inputs, workers=2) == outputs == evaluate(key, inputs, workers=1)


def _tagged(
    outputs: list[bytes], rows: tuple[Sequence[bytes], ...], args: object
) -> list[tuple[bytes, bytes]]:
    """A `Then` function: each output with its row of the one column, and the args once."""
    assert args == "args"
    return [(tag, out) for tag, out in zip(rows[0], outputs, strict=True)]


def test_then_runs_on_each_part_with_its_rows_in_order(key: OprfServerKey):
    inputs = _phones(1_500, seed=4)  # several parts on two threads
    tags = [b"%d" % i for i in range(len(inputs))]
    then = Then(_tagged, (tags,), "args")
    parts = list(evaluate_then(key, inputs, then, workers=2))
    tagged = list(zip(tags, evaluate(key, inputs, workers=1), strict=True))
    assert len(parts) > 2 and [row for part in parts for row in part] == tagged
    blinds, blinded = blind(inputs, workers=2)
    unblinded = finalize_then(inputs, blinds, blind_evaluate(key, blinded), then, workers=2)
    assert [row for part in unblinded for row in part] == tagged
    with pytest.raises(OprfError, match=r"then.columns\[0\]=1499"):
        evaluate_then(key, inputs, Then(_tagged, (tags[1:],), "args"))


def test_empty_batches():
    key = _rfc_key()
    assert blind([]) == ([], [])
    assert blind_evaluate(key, []) == []
    assert finalize([], [], []) == []
    assert evaluate(key, []) == []


@pytest.mark.parametrize("bad", list(INVALID_ELEMENTS.values()), ids=list(INVALID_ELEMENTS))
def test_blind_evaluate_refuses_invalid_elements(key: OprfServerKey, bad: bytes):
    _, blinded = blind(_phones(3))
    with pytest.raises(OprfError) as caught:
        blind_evaluate(key, [blinded[0], bad, blinded[2]])
    assert (caught.value.item, caught.value.index) == ("blinded element", 1)
    assert isinstance(caught.value, FusionError)


@pytest.mark.parametrize("bad", list(INVALID_ELEMENTS.values()), ids=list(INVALID_ELEMENTS))
def test_finalize_refuses_invalid_evaluated_elements(key: OprfServerKey, bad: bytes):
    inputs = _phones(3)
    blinds, blinded = blind(inputs)
    evaluated = blind_evaluate(key, blinded)
    with pytest.raises(OprfError) as caught:
        finalize(inputs, blinds, [evaluated[0], evaluated[1], bad])
    assert (caught.value.item, caught.value.index) == ("evaluated element", 2)


def test_the_first_bad_element_of_a_parallel_batch_is_named(key: OprfServerKey):
    _, blinded = blind(_phones(1_500, seed=4))
    blinded[1_300] = bytes(32)
    blinded[1_400] = b"short"
    with pytest.raises(OprfError) as caught:
        blind_evaluate(key, blinded, workers=2)
    assert caught.value.index == 1_300


@pytest.mark.parametrize(
    "bad",
    [bytes(32), L.to_bytes(32, "little"), (L + 1).to_bytes(32, "little"), b"\x01" * 31, "01" * 32],
    ids=["zero", "L", "L+1", "31 bytes", "text"],
)
def test_invalid_blinds_are_refused(key: OprfServerKey, bad: bytes):
    inputs = _phones(2)
    blinds, blinded = blind(inputs)
    evaluated = blind_evaluate(key, blinded)
    with pytest.raises(OprfError) as caught:
        finalize(inputs, [blinds[0], bad], evaluated)
    assert (caught.value.item, caught.value.index) == ("blind", 1)
    with pytest.raises(OprfError):
        blind_with(inputs, [bad, blinds[1]])


def test_inputs_must_be_bytes_of_at_most_65535(key: OprfServerKey):
    assert len(evaluate(key, [b"x" * 65_535])) == 1
    for bad in (b"x" * 65_536, "13800138000"):
        with pytest.raises(OprfError) as caught:
            evaluate(key, [b"ok", bad])
        assert (caught.value.item, caught.value.index) == ("input", 1)
        assert "13800138000" not in str(caught.value)


def test_misaligned_lists_are_refused(key: OprfServerKey):
    inputs = _phones(3)
    blinds, blinded = blind(inputs)
    with pytest.raises(OprfError, match="aligned"):
        finalize(inputs, blinds[:2], blind_evaluate(key, blinded))


def test_a_broken_rng_is_refused():
    with pytest.raises(OprfError, match="exactly"):
        blind([b"a", b"b"], rng=lambda n: bytes(n - 1))
    with pytest.raises(OprfError, match="zero"):
        blind([b"a"], rng=bytes)


def test_workers_must_be_positive(key: OprfServerKey):
    with pytest.raises(ConfigError):
        evaluate(key, [b"a"], workers=0)


def test_the_key_never_appears_in_repr_or_str():
    key = _rfc_key()
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert OPRF["skSm"] not in text
        assert repr(key.scalar) not in text
        assert "hidden" in text


@pytest.mark.parametrize(
    "scalar",
    [bytes(32), L.to_bytes(32, "little"), b"\x01" * 31, b"\x01" * 33],
    ids=["zero", "L", "31 bytes", "33 bytes"],
)
def test_keys_must_be_nonzero_canonical_scalars(scalar: bytes):
    with pytest.raises(OprfError) as caught:
        OprfServerKey(scalar)
    assert caught.value.item == "key"
    assert scalar.hex() not in str(caught.value)


def test_derive_checks_its_arguments_and_is_deterministic():
    seed = bytes(range(32))
    assert (
        OprfServerKey.derive(seed, b"epoch-1").scalar
        == OprfServerKey.derive(seed, b"epoch-1").scalar
    )
    assert (
        OprfServerKey.derive(seed, b"epoch-1").scalar
        != OprfServerKey.derive(seed, b"epoch-2").scalar
    )
    with pytest.raises(OprfError):
        OprfServerKey.derive(seed[:31])
    with pytest.raises(OprfError):
        OprfServerKey.derive(seed, b"i" * 65_536)


def test_a_key_rebuilt_from_its_scalar_evaluates_the_same(key: OprfServerKey):
    inputs = _phones(5)
    assert evaluate(OprfServerKey(key.scalar), inputs) == evaluate(key, inputs)


# -- the verifiable mode (VOPRF, RFC 9497 mode 0x01) ---------------------------------------------


def _voprf_key() -> OprfServerKey:
    seed, info = bytes.fromhex(VOPRF["Seed"]), bytes.fromhex(VOPRF["KeyInfo"])
    return OprfServerKey.derive(seed, info, mode=OprfMode.VOPRF)


def _hex_list(case: dict, name: str) -> list[bytes]:
    return [bytes.fromhex(item) for item in case[name].split(",")]


def test_rfc9497_voprf_key_pair():
    key = _voprf_key()
    assert key.scalar.hex() == VOPRF["skSm"]
    assert key.public_key().hex() == VOPRF["pkSm"]
    assert OprfMode.VOPRF.context_string == b"OPRFV1-\x01-ristretto255-SHA512"


@pytest.mark.parametrize("case", VOPRF["vectors"], ids=lambda c: c["name"])
def test_rfc9497_voprf_vectors(case: dict):
    key, public = _voprf_key(), bytes.fromhex(VOPRF["pkSm"])
    inputs, blinds = _hex_list(case, "Input"), _hex_list(case, "Blind")
    blinded = blind_with(inputs, blinds, mode=OprfMode.VOPRF)
    assert blinded == _hex_list(case, "BlindedElement")
    evaluated = blind_evaluate(key, blinded)
    assert evaluated == _hex_list(case, "EvaluationElement")
    proof = generate_proof(key, blinded, evaluated, nonce=bytes.fromhex(case["ProofRandomScalar"]))
    assert proof.hex() == case["Proof"]
    assert verify_proof(public, blinded, evaluated, proof)
    assert finalize(inputs, blinds, evaluated) == _hex_list(case, "Output")
    assert evaluate(key, inputs, mode=OprfMode.VOPRF) == _hex_list(case, "Output")


def test_the_two_modes_are_different_functions(key: OprfServerKey):
    inputs = _phones(5)
    assert not set(evaluate(key, inputs)) & set(evaluate(key, inputs, mode=OprfMode.VOPRF))


def test_a_proof_refuses_one_point_evaluated_under_another_key(key: OprfServerKey):
    inputs = _phones(1_030, seed=4)  # two chunks on two threads
    _, blinded = blind(inputs, rng=random.Random(3).randbytes, mode=OprfMode.VOPRF)
    evaluated = blind_evaluate(key, blinded, workers=2)
    proof = generate_proof(key, blinded, evaluated, workers=2)
    assert len(proof) == PROOF_BYTES
    assert verify_proof(key.public_key(), blinded, evaluated, proof, workers=2)
    # The vendor evaluates one customer under another key to single it out: refused.
    split = list(evaluated)
    split[600] = blind_evaluate(OprfServerKey.generate(), [blinded[777]])[0]
    assert not verify_proof(key.public_key(), blinded, split, proof, workers=2)
    # Nor does a proof hold for another key, other elements, or altered bytes.
    other = OprfServerKey.generate().public_key()
    assert not verify_proof(other, blinded, evaluated, proof)
    assert not verify_proof(key.public_key(), blinded[:3], evaluated[:3], proof)
    assert not verify_proof(key.public_key(), blinded, evaluated, proof[:32] + bytes(32))
    for bad in (b"", proof[:-1], b"\xff" * PROOF_BYTES):
        assert not verify_proof(key.public_key(), blinded, evaluated, bad)
    assert not verify_proof(b"\x00" * 32, blinded, evaluated, proof)


def test_a_proof_covers_at_most_65536_elements(key: OprfServerKey):
    too_many = [G] * (PROOF_ELEMENTS + 1)
    with pytest.raises(OprfError, match="in blocks"):
        generate_proof(key, too_many, too_many)
    with pytest.raises(OprfError, match="aligned"):
        verify_proof(key.public_key(), [G], [], bytes(PROOF_BYTES))
    with pytest.raises(OprfError, match="evaluated element 0"):
        verify_proof(key.public_key(), [G], [bytes(32)], bytes(PROOF_BYTES))


def test_batches_on_worker_processes_equal_the_single_thread_path(
    key: OprfServerKey, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(batch_parts, "PROCESS_ITEMS", 1_000)  # big batches only, in production
    inputs = _phones(1_200, seed=6)
    blinds, blinded = blind(inputs, rng=random.Random(3).randbytes, workers=2)
    evaluated = blind_evaluate(key, blinded, workers=2)
    assert blinded == blind_with(inputs, blinds, workers=1)
    assert evaluated == blind_evaluate(key, blinded, workers=1)
    outputs = finalize(inputs, blinds, evaluated, workers=2)
    assert outputs == finalize(inputs, blinds, evaluated, workers=1)
    assert evaluate(key, inputs, workers=2) == outputs
    evaluated[1_100] = bytes.fromhex(
        VECTORS["ristretto255_invalid_encodings"]["encodings"][0]["encoding"]
    )
    evaluated[1_150] = bytes(32)
    with pytest.raises(OprfError) as caught:  # raised in a child, named in the whole batch
        finalize(inputs, blinds, evaluated, workers=2)
    assert (caught.value.item, caught.value.index) == ("evaluated element", 1_100)
