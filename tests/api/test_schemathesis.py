"""Schemathesis fuzzes every operation of the served OpenAPI schema: no answer is a 5xx.

Every operation gets requests that fit the schema and requests that break it (Schemathesis'
positive and negative modes), derandomized and capped at MAX_EXAMPLES, once per role, so both
the role checks and the code behind them are reached. POST /v1/batches is fuzzed too: a
vendor's garbage must get its 202 and then be refused by the ingest worker, never crash it;
the test waits for the worker so that later tests find a quiet service.

Hypothesis drives the operations here: Schemathesis' own pytest loader
(`schemathesis.pytest.from_fixture`) sets `Function._nodeid`, which pytest 9.2 removed
(AttributeError with schemathesis 4.32.5).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.support.server import ServedRun, bearer

ROLES = ("admin", "campaign_tool", "analyst", "vendor")
MAX_EXAMPLES = 25  # per operation and role


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
            cases = st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE),
                operation.as_strategy(GenerationMode.NEGATIVE),
            )

            @given(cases)
            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            fuzz()
    assert served.service.uploads.wait_idle(timeout=60)
    outcomes = [
        u.outcome for key, u in served.service.uploads.received.items() if key not in uploads
    ]
    assert {o.status if o else None for o in outcomes} <= {"refused"}
    assert bool(outcomes) == (role == "vendor")
