"""OPRF match mode: blinds from one seed; the bank opens exactly its customers' rows, in budget."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from contracts.errors import ConfigError, EvaluationCapError, FusionError, OprfError
from matcher import batch_parts, oprf_match
from matcher.identity import normalize_phones
from matcher.keyed_hash import SaltEpoch, keyed_hash
from matcher.oprf import OprfServerKey, blind_evaluate
from matcher.oprf_match import (
    BLIND_BLOCK_ROWS,
    PAYLOAD_COLUMNS,
    EvaluationBudget,
    block_seed,
    decode_lists,
    derive_row_keys,
    encode_lists,
    open_matched,
    open_rows_by_identifier,
    oprf_input,
    replay_blinds,
    request,
    seal_rows,
    seal_rows_by_identifier,
    seeded_rng,
    unblind_labels,
)
from matcher.pack import build_batch
from tests.support.factories import vendor_batch
from tests.support.oprf_inputs import INPUTS, OprfWorld, oprf_world

BANK, VENDOR, OVERLAP = 2_000, 5_000, 1_200


@dataclass(frozen=True)
class World:
    """A vendor with 5,000 users and a bank with 2,000 customers, 1,200 of them shared."""

    users: pl.DataFrame  # phone (as the vendor's file holds it) + the VENDOR_BATCH list columns
    vendor_ids: list[bytes]  # normalised, aligned with users
    bank_phones: pl.Series  # raw, some written with a +86 prefix and spaces
    bank_ids: list[bytes]  # normalised, aligned with bank_phones
    shared: dict[int, int]  # bank index -> vendor index, for the 1,200 shared people


def _as_ids(phones: pl.Series) -> list[bytes]:
    normalised = normalize_phones(phones)
    assert normalised.n_rejected == 0
    return normalised.values.cast(pl.Binary).to_list()


@pytest.fixture(scope="module")
def world() -> World:
    rng = np.random.default_rng(7)
    numbers = np.unique(rng.integers(3, 10, 6_000) * 10**9 + rng.integers(0, 10**9, 6_000) + 10**10)
    numbers = rng.permutation(numbers)[: BANK + VENDOR - OVERLAP]
    phones = [str(n) for n in numbers]
    vendor_phones = phones[:VENDOR]
    bank_people = list(range(VENDOR - OVERLAP, VENDOR + BANK - OVERLAP))
    order = rng.permutation(len(bank_people))  # the bank's file is in its own order
    bank_raw = [
        f"+86 {phones[bank_people[j]]}" if k % 3 == 0 else phones[bank_people[j]]
        for k, j in enumerate(order)
    ]
    shared = {
        k: bank_people[j] for k, j in enumerate(order) if bank_people[j] < VENDOR
    }  # bank index -> vendor index
    users = vendor_batch(VENDOR, seed=11).drop("key").with_columns(phone=pl.Series(vendor_phones))
    bank_phones = pl.Series("phone", bank_raw)
    world = World(users, _as_ids(users["phone"]), bank_phones, _as_ids(bank_phones), shared)
    assert len(world.shared) == OVERLAP and len(set(world.vendor_ids)) == VENDOR
    return world


@pytest.fixture(scope="module")
def key() -> OprfServerKey:
    return OprfServerKey.generate(rng=random.Random(2026).randbytes)


@pytest.fixture(scope="module")
def sealed(world: World, key: OprfServerKey) -> list[tuple[bytes, bytes]]:
    return seal_rows(key, world.vendor_ids, encode_lists(world.users))


@pytest.fixture(scope="module")
def bank_keys(world: World, key: OprfServerKey) -> tuple[list[bytes], list[bytes]]:
    state, blinded = request(world.bank_ids)
    budget = EvaluationBudget("epoch-1", declared_customers=BANK)
    return unblind_labels(state, budget.answer(key, blinded))


def test_row_keys_are_the_two_parts_of_one_rfc5869_hkdf_sha256_output():
    outputs = [hashlib.sha512(bytes([i])).digest() for i in range(3)]
    labels, data_keys = derive_row_keys(outputs)
    info = b"bankfusion/oprf/row/v1"
    for out, label, data_key in zip(outputs, labels, data_keys, strict=True):
        prk = hmac.digest(bytes(32), out, "sha256")  # Extract with the default (empty) salt
        t1 = hmac.digest(prk, info + b"\x01", "sha256")  # Expand: T(1), then T(2)
        t2 = hmac.digest(prk, t1 + info + b"\x02", "sha256")
        assert label == t1[:16] and data_key == t1[16:] + t2[:16]
    assert len(set(labels)) == 3 and not {k[:16] for k in data_keys} & set(labels)
    with pytest.raises(OprfError) as caught:
        derive_row_keys([outputs[0], outputs[1][:32]])
    assert (caught.value.item, caught.value.index) == ("output", 1)


def test_lists_round_trip_through_the_fixed_layout():
    batch = vendor_batch(300, seed=3).drop("key")
    empty_row = pl.DataFrame(
        {c: [[]] for c in PAYLOAD_COLUMNS}, schema={c: batch.schema[c] for c in PAYLOAD_COLUMNS}
    )
    batch = pl.concat([batch.head(10), empty_row, batch.tail(290)])
    payloads = encode_lists(batch)
    assert decode_lists(payloads).equals(batch)
    n_apps, n_tags = batch["app_ids"].list.len(), batch["tag_ids"].list.len()
    assert [len(p) for p in payloads] == (5 + 10 * n_apps + 8 * n_tags).to_list()
    assert payloads[10] == b"\x01\x00\x00\x00\x00"
    assert encode_lists(batch.head(0)) == [] and decode_lists([]).columns == list(PAYLOAD_COLUMNS)


def test_lists_that_break_the_contract_are_not_encoded():
    batch = vendor_batch(5, seed=4).drop("key")
    misaligned = batch.with_columns(app_days=pl.col("app_days").list.head(0))
    with pytest.raises(ConfigError, match="aligned"):
        encode_lists(misaligned)
    with pytest.raises(ConfigError, match="null"):
        encode_lists(batch.with_columns(tag_ids=pl.lit(None, dtype=batch.schema["tag_ids"])))
    with pytest.raises(ConfigError, match="tag_weights"):
        encode_lists(batch.drop("tag_weights"))


@pytest.mark.parametrize("cut", [b"", b"\x01\x00", None], ids=["empty", "short", "truncated"])
def test_malformed_payloads_are_refused(cut: bytes | None):
    good = encode_lists(vendor_batch(2, seed=5).drop("key"))
    bad = good[1][:-1] if cut is None else cut
    with pytest.raises(OprfError, match="layout"):
        decode_lists([good[0], bad])
    with pytest.raises(OprfError, match="layout"):
        decode_lists([b"\x02" + good[0][1:]])


def test_the_bank_opens_exactly_the_intersection(world, sealed, bank_keys):
    labels, data_keys = bank_keys
    opened = open_matched(dict(sealed), labels, data_keys)
    assert set(opened) == set(world.shared)
    plaintext = encode_lists(world.users)
    assert all(opened[b] == plaintext[v] for b, v in world.shared.items())


def test_matched_tags_equal_the_salted_mode_run(world, sealed, bank_keys):
    epoch = SaltEpoch.generate("salt-1")
    batch, rejected, duplicates = build_batch(world.users, epoch)
    assert (rejected, duplicates) == ({}, 0)
    bank_keys_salted = keyed_hash(
        normalize_phones(world.bank_phones).values, epoch, domain="mobile"
    )
    salted = (
        pl.DataFrame({"key": bank_keys_salted})
        .with_row_index("customer")
        .join(batch, on="key")
        .sort("customer")
    )
    opened = open_matched(dict(sealed), *bank_keys)
    customers = sorted(opened)
    oprf = decode_lists([opened[i] for i in customers])
    assert salted["customer"].to_list() == customers
    assert oprf.equals(salted.select(PAYLOAD_COLUMNS))


def test_the_bank_cannot_open_a_row_it_did_not_evaluate(world, sealed, bank_keys):
    labels, data_keys = bank_keys
    bank_side = set(world.shared.values())
    outside = [sealed[v] for v in range(VENDOR) if v not in bank_side]
    assert len(outside) == VENDOR - OVERLAP
    assert not {label for label, _ in outside} & set(labels)  # no label to join on
    # Nor does any of its own keys open such a row, placed under its own label or not.
    for j in range(0, BANK, 200):
        for _, row in outside[:: len(outside) // 10]:
            with pytest.raises(OprfError):
                open_matched({labels[j]: row}, [labels[j]], [data_keys[j]])


def test_a_row_moved_under_another_label_does_not_open(world, sealed, bank_keys):
    labels, data_keys = bank_keys
    (b1, _), (_, v2) = list(world.shared.items())[:2]
    rows = dict(sealed)
    rows[labels[b1]] = sealed[v2][1]  # b2's payload under b1's label; b1's key is wrong for it
    with pytest.raises(OprfError) as caught:
        open_matched(rows, labels, data_keys)
    assert (caught.value.item, caught.value.index) == ("sealed row", b1)


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag", "truncated", "empty"])
def test_a_tampered_row_refuses_the_batch_without_values(world, sealed, bank_keys, where):
    labels, data_keys = bank_keys
    b, v = next(iter(world.shared.items()))
    label, row = sealed[v]
    flip = {"nonce": 3, "ciphertext": 20, "tag": len(row) - 1}
    if where in flip:
        i = flip[where]
        row = row[:i] + bytes([row[i] ^ 1]) + row[i + 1 :]
    else:
        row = row[:11] if where == "truncated" else b""
    with pytest.raises(OprfError) as caught:
        open_matched({**dict(sealed), label: row}, labels, data_keys)
    message = str(caught.value)
    assert caught.value.index == b
    secrets_ = [world.bank_ids[b].decode(), label.hex(), data_keys[b].hex(), row.hex()]
    assert not any(s and s in message for s in secrets_)
    assert message == oprf_match._REFUSED.format(index=b)  # the same for every cause


def test_the_evaluation_cap_is_enforced_and_refusals_count_nothing(world, key):
    budget = EvaluationBudget("epoch-1", declared_customers=BANK)
    assert budget.limit == 3_200  # 2,000 x 1.1 + 1,000
    _, blinded = request(world.bank_ids)
    assert len(budget.answer(key, blinded)) == BANK
    with pytest.raises(EvaluationCapError) as caught:
        budget.answer(key, blinded)  # 4,000 would pass 3,200
    assert isinstance(caught.value, OprfError) and isinstance(caught.value, FusionError)
    assert (caught.value.limit, caught.value.used, caught.value.requested) == (3_200, 2_000, 2_000)
    assert "3200" in str(caught.value) and "epoch-1" in str(caught.value)
    assert budget.used == 2_000
    with pytest.raises(OprfError):  # an invalid element refuses the request; nothing is counted
        budget.answer(key, [*blinded[:5], bytes(32)])
    assert budget.used == 2_000
    assert budget.answer(key, blinded[:1_200]) == blind_evaluate(key, blinded[:1_200])
    assert (budget.used, budget.remaining) == (3_200, 0)
    with pytest.raises(EvaluationCapError):
        budget.answer(key, blinded[:1])


def test_the_budget_survives_a_round_trip_to_disk(tmp_path, world, key):
    budget = EvaluationBudget("epoch-7", declared_customers=10, ratio=1.5, slack=2)
    _, blinded = request(world.bank_ids[:9])
    budget.answer(key, blinded)
    path = tmp_path / "budget.json"
    path.write_text(json.dumps(budget.to_dict()))
    again = EvaluationBudget.from_dict(json.loads(path.read_text()))
    assert again == budget and (again.limit, again.used) == (17, 9)
    with pytest.raises(EvaluationCapError):
        again.answer(key, blinded)


@pytest.mark.parametrize(
    "change",
    [
        {"used": -1},
        {"used": True},
        {"ratio": 0.5},
        {"ratio": True},
        {"epoch_id": ""},
        {"slack": "9"},
        {"x": 1},
    ],
    ids=["negative", "bool", "ratio below 1", "bool ratio", "no epoch", "text", "extra field"],
)
def test_a_corrupt_stored_budget_is_refused(change: dict):
    data = EvaluationBudget("epoch-1", declared_customers=5).to_dict() | change
    with pytest.raises(ConfigError):
        EvaluationBudget.from_dict(data)


def test_sealing_refuses_duplicate_or_misaligned_ids(key):
    ids = [b"13800138000", b"13900139000", b"13800138000"]
    with pytest.raises(OprfError) as caught:
        seal_rows(key, ids, [b"a", b"b", b"c"])
    assert (caught.value.item, caught.value.index) == ("input", 2)
    assert "13800138000" not in str(caught.value)
    with pytest.raises(OprfError, match="aligned"):
        seal_rows(key, ids[:2], [b"a"])


def test_nonces_come_from_the_rng_argument(key):
    ids, payloads = [b"13800138000", b"13900139000"], [b"one", b"two"]
    first = seal_rows(key, ids, payloads, rng=random.Random(1).randbytes)
    assert first == seal_rows(key, ids, payloads, rng=random.Random(1).randbytes)
    other = seal_rows(key, ids, payloads)
    assert [r[0] for r in other] == [r[0] for r in first]  # labels depend on the key and id only
    assert [r[1] for r in other] != [r[1] for r in first]
    with pytest.raises(OprfError, match="exactly"):
        seal_rows(key, ids, payloads, rng=lambda n: bytes(n - 1))


def test_sealing_and_unblinding_on_worker_processes_equal_the_single_thread_path(
    world: World, key: OprfServerKey, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(batch_parts, "PROCESS_ITEMS", 1_000)  # big batches only, in production
    ids, payloads = world.vendor_ids[:1_200], encode_lists(world.users.head(1_200))
    rows = seal_rows(key, ids, payloads, rng=random.Random(4).randbytes, workers=2)
    assert rows == seal_rows(key, ids, payloads, rng=random.Random(4).randbytes, workers=1)
    state, blinded = request(ids, rng=random.Random(5).randbytes, workers=2)
    labels, data_keys = unblind_labels(state, blind_evaluate(key, blinded), workers=2)
    assert (labels, data_keys) == unblind_labels(state, blind_evaluate(key, blinded), workers=1)
    assert labels == [label for label, _ in rows]
    assert open_matched(dict(rows), labels, data_keys) == dict(enumerate(payloads))


def test_the_bank_state_hides_its_ids():
    state, _ = request([b"13800138000"])
    assert "13800138000" not in repr(state) and "hidden" in repr(state)
    assert len(state) == 1


# -- blinds from one seed -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ow() -> OprfWorld:
    return oprf_world()


def test_a_seeded_request_replays_the_same_blinds():
    phones = [f"1380000{i:04d}".encode() for i in range(40)]
    seed = bytes(range(32))
    state, blinded = request(phones, rng=seeded_rng(seed))
    again_state, again = request(phones, rng=seeded_rng(seed))
    assert again_state.blinds == state.blinds and again_state.inputs == state.inputs
    assert again == blinded
    _, other = request(phones, rng=seeded_rng(bytes(32)))
    assert set(other).isdisjoint(blinded)
    with pytest.raises(OprfError, match="32 random bytes"):
        seeded_rng(b"short")


def test_each_block_is_a_request_blinded_from_its_block_seed(ow: OprfWorld):
    state = replay_blinds(ow.inputs, ow.seed)
    assert state.inputs == tuple(ow.inputs) and len(state.blinds) == INPUTS
    for block, first in enumerate(range(0, INPUTS, BLIND_BLOCK_ROWS)):
        rows = slice(first, first + BLIND_BLOCK_ROWS)
        kept, blinded = request(ow.inputs[rows], rng=seeded_rng(block_seed(ow.seed, block)))
        assert kept.blinds == state.blinds[rows]
        assert blinded == ow.blinded[rows]
    # A prefix of the request replays the prefix of its blinds: rows, not the request's length,
    # decide a blind.
    assert replay_blinds(ow.inputs[:2_100], ow.seed).blinds[:2_048] == state.blinds[:2_048]


def test_block_seeds_differ_by_block_and_seed_and_need_32_bytes(ow: OprfWorld):
    seeds = {block_seed(ow.seed, b) for b in range(64)} | {block_seed(bytes(32), 0)}
    assert len(seeds) == 65 and all(len(s) == 32 for s in seeds)
    for bad in (b"", bytes(31), "x" * 32):
        with pytest.raises(OprfError, match="32 random bytes"):
            block_seed(bad, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="block number"):
        block_seed(ow.seed, -1)


def test_a_v2_row_opens_by_any_of_its_identifiers_and_by_nothing_else(key: OprfServerKey):
    values = {
        "mobile": pl.Series(["13800000001", "13800000002", "13800000003"]),
        "id_number": pl.Series(["11010519491231002X", None, "110105194912310029"]),
        "device_id": pl.Series([None, "ab" * 16, None]),
    }
    payloads = [b"first", b"second", b"third"]
    rows = seal_rows_by_identifier(key, values, payloads)
    assert all(len(label) == 48 for label, _ in rows)
    asked = [
        ("mobile", "13800000002", 1),
        ("id_number", "110105194912310029", 2),
        ("device_id", "ab" * 16, 1),
        ("id_number", "13800000001", 0),  # a phone as an ID number: another input, no label
    ]
    state, blinded = request([oprf_input(kind, value) for kind, value, _ in asked])
    labels, keks = unblind_labels(state, blind_evaluate(key, blinded))
    slot = {"mobile": 0, "id_number": 1, "device_id": 2}
    for (kind, _, row), label in zip(asked[:3], labels, strict=False):
        assert rows[row][0][16 * slot[kind] : 16 * slot[kind] + 16] == label
    assert all(labels[3] not in composite for composite, _ in rows)
    opened = open_rows_by_identifier(
        [rows[r][1] for _, _, r in asked[:3]],
        [rows[r][0] for _, _, r in asked[:3]],
        [kind for kind, _, _ in asked[:3]],
        keks[:3],
    )
    assert opened == [b"second", b"third", b"second"]
    # Through another identifier's slot, or another row, nothing opens.
    with pytest.raises(OprfError, match="sealed row 0 could not be opened"):
        open_rows_by_identifier([rows[1][1]], [rows[1][0]], ["id_number"], keks[:1])
    with pytest.raises(OprfError, match="sealed row 0"):
        open_rows_by_identifier([rows[0][1]], [rows[0][0]], ["mobile"], keks[:1])


def test_v2_rows_show_no_one_which_identifiers_a_user_lacks(key: OprfServerKey):
    values = {
        "mobile": pl.Series(["13800000001", "13800000002"]),
        "device_id": pl.Series([None, None]),
    }
    rows = seal_rows_by_identifier(key, values, [b"a", b"b"])
    # Gaps are random, not zeros and not equal across rows; every row has the same size.
    assert all(label[16:32] != bytes(16) for label, _ in rows)
    assert rows[0][0][32:] != rows[1][0][32:] and len(rows[0][1]) == len(rows[1][1])
    with pytest.raises(OprfError, match="two users share a mobile"):
        seal_rows_by_identifier(key, {"mobile": pl.Series(["1", "1"])}, [b"a", b"b"])
    assert oprf_input("mobile", "13800000001") == b"13800000001"
    assert oprf_input("id_number", "X") == b"bankfusion/oprf/v1/id_number:X"
