"""Platform errors survive pickling with their fields: a Dask task's error reaches the client so."""

from __future__ import annotations

import pickle
import re

import pytest

import contracts.errors as errors_module
from contracts.errors import (
    ConfigError,
    ContractError,
    EvaluationCapError,
    FusionError,
    IdentifierError,
    OprfError,
    QueryError,
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


def test_the_drawn_tree_holds_every_error_under_its_parent():
    drawn = (errors_module.__doc__ or "").split("\n\n")[1]  # the tree: the docstring's 2nd block
    rows = drawn.splitlines()
    column = {}  # error name -> (row number, column of its name)
    for number, line in enumerate(rows):
        found = re.search(r"[A-Z][A-Za-z]*(Error|Refused|Failed|Timeout)\b", line)
        if found and found.start() < 40:
            column[found.group(0)] = (number, found.start())
    for name in errors_module.__all__:
        assert name in column, f"{name} is missing from the tree drawn in contracts/errors.py"
        error = getattr(errors_module, name)
        if error is FusionError:
            continue
        number, depth = column[name]
        parent = max((n, other) for other, (n, d) in column.items() if n < number and d < depth)[1]
        assert parent == error.__mro__[1].__name__, f"{name} is drawn under {parent}"


@pytest.mark.parametrize("error", [ConfigError, IdentifierError, QueryError])
def test_argument_errors_are_also_value_errors(error: type[FusionError]):
    assert issubclass(error, ValueError) and issubclass(error, FusionError)
