"""Benchmark of the analyst SQL check: `fusion.query.check_query` against DuckDB's own parse.

Every POST /v1/query is checked before a sandbox opens: DuckDB serialises the statement
(`json_serialize_sql`), the whole tree is walked in Python, and DuckDB prints the checked tree
back (`json_deserialize_sql`). The baseline is those two DuckDB calls alone on the same SQL, in
the same run: what no check of DuckDB's own tree can do without. The figure is the median of
many checks of each of a few analyst queries (a join with a CTE, a window, a set operation, a
wide projection), so that the walk's share stays visible whatever the machine's speed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from labs.bench.figures import Figure

__all__ = ["QUERIES", "bench_query"]

QUERIES = (
    "WITH m AS (SELECT customer_id FROM matches) SELECT f.branch_id, avg(f.age) AS age "
    "FROM bank_features AS f JOIN m USING (customer_id) WHERE f.age > 30 GROUP BY ALL",
    "SELECT branch_id, customer_id, row_number() OVER (PARTITION BY branch_id ORDER BY age DESC) "
    "AS r FROM bank_features QUALIFY r <= 10",
    "SELECT customer_id FROM matches UNION SELECT customer_id FROM bank_features WHERE age < 25",
    "SELECT customer_id, age, branch_id, age * 2 AS a2, CASE WHEN age > 40 THEN 'older' ELSE "
    "'younger' END AS band, coalesce(age, 0) + 1 AS a1 FROM bank_features ORDER BY age LIMIT 50",
)
_TARGET = 4.0  # the check may take at most this many times DuckDB's parse and print-back
_ROUNDS = 300  # timed calls per query and side


def bench_query(work: Path, *, rounds: int = _ROUNDS) -> Iterator[Figure]:
    """Median milliseconds of `check_query` against DuckDB's parse + print-back, same SQL."""
    import duckdb

    from fusion.query import check_query

    con = duckdb.connect(":memory:")
    try:

        def parse(sql: str) -> object:
            return con.execute(
                "SELECT json_deserialize_sql(json_serialize_sql(?))", [sql]
            ).fetchone()

        ours = _median_ms(check_query, rounds)
        theirs = _median_ms(parse, rounds)
    finally:
        con.close()
    ratio = ours / theirs
    yield Figure(
        name="query.check_ms",
        value=ours,
        unit="ms",
        baseline=theirs,
        baseline_name="DuckDB's json_serialize_sql + json_deserialize_sql of the same SQL",
        ratio=ratio,
        target=f"<= {_TARGET:g}x the baseline",
        met=ratio <= _TARGET,
        note=f"median of {rounds} calls for each of {len(QUERIES)} analyst queries (a CTE and a"
        f" join, a window with QUALIFY, a UNION, a projection of expressions); the check took"
        f" {ratio:.2f}x DuckDB's own parse and print-back, which it includes",
    )


def _median_ms(call: Callable[[str], object], rounds: int) -> float:
    """Return the median milliseconds of `call` over every query, after one untimed call each."""
    times = []
    for sql in QUERIES:
        call(sql)  # the thread's parser connection and the function allowlist are made once
        for _ in range(rounds):
            started = time.perf_counter()
            call(sql)
            times.append(time.perf_counter() - started)
    return 1_000 * statistics.median(times)
