"""POST /v1/query under its memory caps, over real HTTP: the server's resident set is measured.

uvicorn runs in a thread of this process, so this process's resident set is the server's. The
limits are lowered on the running app (routes read the settings per request) so that the bound
asserted is small beside the machine: each query may add its `QueryLimits.memory_budget`
(DuckDB's memory limit, the Arrow answer and allocator slack), and the margin below covers the
JSON answers and the request handling around them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil

from fusion.query import QueryLimits
from tests.support.polling import eventually
from tests.support.server import ServedRun, post_query, settings_changed

LIMITS = QueryLimits(memory_limit="256MB", timeout_seconds=20)
MARGIN = 256 << 20  # bytes beyond the queries' budgets: request handling, JSON, allocator

# The attack's two queries, a huge answer, and an aggregate that needs more than its limit.
HOSTILE = [
    ("analyst", "SELECT repeat('z', 1000000) AS s FROM customers", "memory"),
    ("analyst", "SELECT length(repeat('x', 2000000000)) AS n", "memory"),
    ("head_office", "SELECT repeat('z', 16000) AS s, customer_id FROM customers", "result_size"),
    (
        "head_office",
        "SELECT count(DISTINCT a.customer_id::VARCHAR || b.customer_id::VARCHAR "
        "|| repeat('z', 2000)) AS n FROM customers a, customers b",
        "memory",
    ),
]


@contextmanager
def _peak_rss() -> Iterator[list[int]]:
    """Yield [baseline, peak]: this process's resident set before and at most during the block."""
    process = psutil.Process()
    seen = [process.memory_info().rss] * 2
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            seen[1] = max(seen[1], process.memory_info().rss)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


def test_four_hostile_queries_at_once_stay_under_their_caps(served: ServedRun):
    with settings_changed(served, query_limits=LIMITS), _peak_rss() as rss:
        with ThreadPoolExecutor(len(HOSTILE)) as pool:
            answers = list(
                pool.map(
                    lambda case: post_query(served, getattr(served.tokens, case[0]), case[1]),
                    HOSTILE,
                )
            )
    grown = rss[1] - rss[0]
    print(f"resident set grew by {grown >> 20} MiB during {len(HOSTILE)} hostile queries")
    for (_, sql, rule), response in zip(HOSTILE, answers, strict=True):
        assert response.status_code == 400, (sql, response.text)
        assert response.json()["rule"] == rule, (sql, response.text)
        assert len(response.content) < 4096  # the refusal, never the rows
    assert grown < len(HOSTILE) * LIMITS.memory_budget + MARGIN


def test_the_refusals_say_how_big_a_value_and_an_answer_may_be(served: ServedRun):
    too_long = post_query(served, served.tokens.analyst, "SELECT lpad('x', 100000) AS s")
    assert too_long.status_code == 400 and too_long.json()["rule"] == "memory"
    assert f"{LIMITS.max_value_bytes:,}" in too_long.json()["detail"]
    unbounded = post_query(
        served, served.tokens.analyst, "SELECT repeat('x', age) FROM bank_features"
    )
    assert unbounded.status_code == 400 and "constant" in unbounded.json()["detail"]
    with settings_changed(served, query_limits=QueryLimits(max_result_bytes=100_000)):
        big = post_query(served, served.tokens.head_office, "SELECT * FROM bank_features")
    assert big.status_code == 400 and big.json()["rule"] == "result_size", big.text
    assert "100,000 bytes" in big.json()["detail"]


def test_a_legitimate_query_still_answers_under_the_lowered_caps(served: ServedRun):
    with settings_changed(served, query_limits=LIMITS):
        response = post_query(
            served,
            served.tokens.analyst,
            "SELECT branch_id, count(*) AS n, lpad(count(*)::VARCHAR, 8, '0') AS padded, "
            "repeat('-', 20) AS rule FROM bank_features GROUP BY branch_id",
        )
    assert response.status_code == 200, response.text
    [[branch, n, padded, rule]] = response.json()["rows"]
    assert branch == "B001" and padded == f"{n:08d}" and rule == "-" * 20


def test_one_analyst_cannot_take_every_query_slot(served: ServedRun):
    # Slow on purpose: a five-way self-join of the caller's own rows with a filter DuckDB cannot
    # count without looking at every combination, stopped at its time limit.
    slow = (
        "SELECT count(*) AS n FROM customers a, customers b, customers c, customers d, "
        "customers e WHERE a.customer_id + b.customer_id > c.customer_id + d.customer_id "
        "+ e.customer_id"
    )
    limits = QueryLimits(timeout_seconds=3)
    with settings_changed(served, max_concurrent_queries=4, query_limits=limits):
        with ThreadPoolExecutor(2) as pool:
            running = [
                pool.submit(post_query, served, served.tokens.analyst, slow) for _ in range(2)
            ]
            eventually(
                lambda: served.service.running_queries() == 2, timeout=10, what="two queries"
            )
            third = post_query(served, served.tokens.analyst, "SELECT 1 AS one")
            other = post_query(served, served.tokens.head_office, "SELECT 1 AS one")
            finished = [f.result() for f in running]
    assert third.status_code == 429, third.text
    assert "at most 2 of them from one caller" in third.json()["detail"]
    assert other.status_code == 200 and other.json()["rows"] == [[1]], other.text
    assert all(r.status_code == 422 for r in finished), [r.text for r in finished]
    assert served.service.running_queries() == 0
