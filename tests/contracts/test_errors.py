"""Platform errors survive pickling with their fields: a Dask task's error reaches the client so."""

from __future__ import annotations

import pickle

import pytest

from contracts.errors import (
    ConfigError,
    ContractError,
    EvaluationCapError,
    FusionError,
    OprfError,
    UnknownEpochError,
)

ERRORS = [
    OprfError("element 3 is invalid", item="blinded element", index=3),
    EvaluationCapError(epoch="o2026-11-1", limit=1_110, used=0, requested=2_954),
    ConfigError("bad setting", setting="cluster"),
    ContractError("broke", contract="vendor_batch/v1", rules=("tags_known",), batch_id="b1"),
    UnknownEpochError("o1999-01-1", known=("o2026-11-1",), kind="OPRF"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_pickles_with_its_message_and_fields(error: FusionError):
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert again.__dict__ == error.__dict__
