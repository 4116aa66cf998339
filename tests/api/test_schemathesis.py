"""Schemathesis fuzzes every operation of the served OpenAPI schema: no answer is a 5xx.

Every operation gets requests that fit the schema and requests that break it (Schemathesis'
positive and negative modes), derandomized, once per role, so both the role checks and the code
behind them are reached: MAX_EXAMPLES for every role the operation admits, REFUSED_EXAMPLES
for a role whose every answer is the route's 403 (the refusal comes before the body is read).
POST /v1/batches is fuzzed too: a vendor's garbage must get its 202 and then be refused by the
ingest worker, never crash it; the test waits for the worker so that later tests find a quiet
service.

A schema-driven generator sends only what JSON allows, so a second pass posts every route
that takes JSON its valid body with one value replaced by a hostile one (NaN, Infinity,
1e400, huge integers, lax look-alikes, dates at the calendar's edges) or an unknown field
added, and wants no 5xx either.

Hypothesis drives the operations here: Schemathesis' own pytest loader
(`schemathesis.pytest.from_fixture`) sets `Function._nodeid`, which pytest 9.2 removed
(AttributeError with schemathesis 4.32.5).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.support.server import ServedRun, bearer

ROLES = ("admin", "campaign_tool", "analyst", "vendor")
MAX_EXAMPLES = 25  # per operation and role the operation admits
REFUSED_EXAMPLES = 4  # per operation and role it refuses (every answer a 403)


@pytest.fixture(scope="module")
def api_schema(served: ServedRun) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(served.url + "/openapi.json")


@pytest.mark.parametrize("role", ROLES)
def test_no_request_gets_a_server_error(
    served: ServedRun, api_schema: schemathesis.BaseSchema, role: str, subtests: pytest.Subtests
):
    headers = bearer(getattr(served.tokens, role))
    uploads = set(served.service.uploads.received)
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 8
    for operation in operations:
        with subtests.test(operation=operation.label):
            # A role the route refuses gets its 403 before the body is read: a few examples
            # show the refusal holds whatever is sent; the roles it admits get the full run.
            statuses = _fuzz_operation(operation, headers, REFUSED_EXAMPLES)
            if statuses != {403}:
                _fuzz_operation(operation, headers, MAX_EXAMPLES)
    assert served.service.uploads.wait_idle(timeout=60)
    outcomes = [
        u.outcome for key, u in served.service.uploads.received.items() if key not in uploads
    ]
    assert {o.status if o else None for o in outcomes} <= {"refused"}
    assert bool(outcomes) == (role == "vendor")


def _fuzz_operation(
    operation: schemathesis.APIOperation, headers: dict[str, str], examples: int
) -> set[int]:
    """Send `examples` positive and negative cases of `operation`; return the statuses seen."""
    statuses: set[int] = set()
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(cases)
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
        statuses.add(response.status_code)

    fuzz()
    return statuses


# Values a schema-driven generator does not send: JSON's missing NaN and Infinity (Python's
# parser reads them, and 1e400 as Infinity), numbers past every integer type, lax look-alikes
# ("yes", "1000000010", true for 1) and dates at the edges of the calendar.
_HUGE = "__1e400__"  # written as the bare literal 1e400 (json.dumps would say Infinity)
HOSTILE: tuple[Any, ...] = (
    float("nan"), float("inf"), float("-inf"), _HUGE, 10**30, -(10**30), 2**63, -1, 1.5,
    True, False, None, "", "yes", "1000000010", "B001\n", [], {}, [[[]]], {"a": {"b": None}},
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2099-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "2026-02-30T00:00:00",
)  # fmt: skip
MAX_HOSTILE_EXAMPLES = 40  # per route and role


def _slots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path of `value` and of every key and item inside it."""
    yield path
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, inner in items:
            yield from _slots(inner, (*path, key))


def _hostile(template: Any) -> st.SearchStrategy[str]:
    """Return JSON texts of `template` with one value replaced, or one unknown field added."""

    def build(slot: tuple[Any, ...], value: Any, add: bool) -> str:
        body = copy.deepcopy(template)
        if not slot:
            body = value
        else:
            parent = body
            for key in slot[:-1]:
                parent = parent[key]
            if add and isinstance(parent, dict):
                parent[f"unknown_{slot[-1]}"] = value
            else:
                parent[slot[-1]] = value
        return json.dumps(body).replace(f'"{_HUGE}"', "1e400")

    return st.builds(
        build, st.sampled_from(list(_slots(template))), st.sampled_from(HOSTILE), st.booleans()
    )


def _json_routes(served: ServedRun) -> list[tuple[str, Any, str]]:
    """(path, a valid body, the role posting it) of every route that takes JSON."""
    scores = pl.read_parquet(served.folder.scores / "acquisition.parquet")
    known = int(scores["customer_id"][0])
    outcome = {
        "customer_id": known,
        "treatment": True,
        "contacted": False,
        "responded": True,
        "occurred_at": "2026-10-01T17:30:00+08:00",
    }
    query = {"sql": "SELECT count(*) AS n FROM customers"}
    return [
        ("/v1/scores", {"customer_ids": [known, 1]}, "campaign_tool"),
        ("/v1/outcomes", {"campaign_id": "fuzz", "outcomes": [outcome]}, "admin"),
        ("/v1/query", query, "analyst"),
        ("/v1/query", query, "admin"),
    ]


def _fuzz(client: httpx.Client, path: str, template: Any, headers: dict[str, str]) -> None:
    """Post `path` hostile variants of `template`; fail on any 5xx or large 422."""

    @given(_hostile(template))
    @settings(
        max_examples=MAX_HOSTILE_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(text: str) -> None:
        answer = client.post(path, content=text, headers=headers)
        assert answer.status_code < 500, (text, answer.text)
        # Every answer is JSON, and a 422 is small whatever came in.
        assert answer.json() is not None
        assert answer.status_code != 422 or len(answer.content) < 4_000

    fuzz()


def test_hostile_json_values_get_no_server_error(served: ServedRun, subtests: pytest.Subtests):
    with httpx.Client(base_url=served.url, timeout=60) as client:
        for path, template, role in _json_routes(served):
            headers = {**bearer(getattr(served.tokens, role)), "Content-Type": "application/json"}
            with subtests.test(path=path, role=role):
                _fuzz(client, path, template, headers)
