"""The OPRF exchange files and the vendor's turn: strict format, budget kept on disk."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import pytest

from contracts.errors import ConfigError, EvaluationCapError, OprfError, UnknownEpochError
from matcher.keyring import Keyring
from matcher.oprf import evaluate, finalize
from matcher.oprf_exchange import ANSWER, MAGIC, REQUEST, ElementFile, answer_request
from matcher.oprf_match import request

REQUEST_ID = "0b9c2a52-3f7e-4c1e-9d55-6f0f3f3b2a10"
PHONES = [f"1380000{i:04d}".encode() for i in range(40)]


@pytest.fixture
def vendor(tmp_path: Path) -> Keyring:
    return Keyring.init(tmp_path / "vendor", role="vendor", vendor_id="vendor-a")


def _request(vendor: Keyring, ids: list[bytes] = PHONES) -> ElementFile:
    _, blinded = request(ids)
    return ElementFile(REQUEST, REQUEST_ID, vendor.current_oprf_epoch(), tuple(blinded))


def test_a_file_round_trips_and_is_written_0600(tmp_path: Path, vendor: Keyring):
    sent = _request(vendor)
    path = tmp_path / "out" / "request.oprf"
    size = sent.write(path)
    assert size == path.stat().st_size and stat.S_IMODE(path.stat().st_mode) == 0o600
    read = ElementFile.read(path, kind=REQUEST)
    assert read == sent and len(read) == len(PHONES)
    assert repr(read).startswith("ElementFile(request") and "40 elements" in repr(read)
    assert not list(path.parent.glob(".*.tmp"))


def _damaged(data: bytes) -> dict[str, bytes]:
    hlen = int.from_bytes(data[9:13], "big")
    header = json.loads(data[13 : 13 + hlen])
    extra = json.dumps({**header, "phones": []}).encode()
    return {
        "magic": b"\x00" + data[1:],
        "kind": data[:8] + bytes([ANSWER]) + data[9:],
        "truncated": data[:-5],
        "header_length": data[:9] + (10**6).to_bytes(4, "big") + data[13:],
        "not_json": data[:13] + b"\xff" * hlen + data[13 + hlen :],
        "extra_field": data[:9] + len(extra).to_bytes(4, "big") + extra + data[13 + hlen :],
        "empty": b"",
    }


@pytest.mark.parametrize(
    "damage",
    ["magic", "kind", "truncated", "header_length", "not_json", "extra_field", "empty"],
)
def test_a_damaged_file_is_refused_with_what_to_do(tmp_path: Path, vendor: Keyring, damage: str):
    path = tmp_path / "request.oprf"
    _request(vendor).write(path)
    path.write_bytes(_damaged(path.read_bytes())[damage])
    with pytest.raises(OprfError, match="ask its sender to write it again") as refused:
        ElementFile.read(path, kind=REQUEST)
    assert refused.value.item == "request file"


def test_elements_and_ids_are_checked_when_a_file_is_built(vendor: Keyring):
    with pytest.raises(OprfError, match="element 1"):
        ElementFile(REQUEST, REQUEST_ID, "o1", (bytes(32), bytes(31)))
    with pytest.raises(ConfigError, match="UUID"):
        ElementFile(REQUEST, "not-a-uuid", "o1", ())
    with pytest.raises(ConfigError, match="kind"):
        ElementFile(3, REQUEST_ID, "o1", ())
    assert MAGIC.startswith(b"\x89")


def test_the_vendor_answers_once_declared_and_the_bank_finalises(vendor: Keyring):
    state, blinded = request(PHONES)
    sent = ElementFile(REQUEST, REQUEST_ID, vendor.current_oprf_epoch(), tuple(blinded))
    with pytest.raises(ConfigError, match="--declared-customers"):
        answer_request(vendor, sent)
    answer, budget = answer_request(vendor, sent, declared_customers=40)
    assert answer.kind == ANSWER and answer.request_id == REQUEST_ID and len(answer) == 40
    assert (budget.used, budget.limit) == (40, 1044)
    outputs = finalize(state.inputs, state.blinds, answer.elements)
    assert outputs == evaluate(vendor.oprf_key(sent.epoch_id), PHONES)
    # Later answers need no declaration; the count grows on disk.
    _, again = answer_request(vendor, sent)
    assert again.used == 80
    with pytest.raises(ConfigError, match="answer_request takes a request file"):
        answer_request(vendor, answer)


def test_a_request_past_the_cap_is_refused_and_not_counted(vendor: Keyring):
    big = _request(vendor, [f"1390000{i:04d}".encode() for i in range(1_200)])
    with pytest.raises(EvaluationCapError):
        answer_request(vendor, big, declared_customers=100)  # limit 1110
    with vendor.oprf_budget(vendor.current_oprf_epoch()) as stored:
        assert stored.read() is None
    with pytest.raises(UnknownEpochError, match="OPRF epoch 'o1999-01-1'"):
        answer_request(
            vendor, ElementFile(REQUEST, str(uuid.uuid4()), "o1999-01-1", ()), declared_customers=1
        )
