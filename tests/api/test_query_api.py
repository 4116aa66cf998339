"""POST /v1/query over real HTTP, as the served demo run's callers: hostile SQL, limits, roles.

Every query of the fusion layer's hostile file goes through the API as the analyst of branch
B001. Who is in B001 comes from the world's own bank extract, never from the service. A test
that needs other limits sets them on the running app (routes read the settings per request),
so the file's runaway query stops after 2 s instead of the service's 30.
"""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from fusion.query import GRANTED_VIEWS, QueryLimits
from matcher.identity import normalize_phones
from tests.support.server import ServedRun, bearer, settings_changed

HOSTILE = Path(__file__).parents[1] / "fusion" / "data" / "hostile_queries.json"
MINE = "B001"  # the analyst token's only branch (conftest.issue_tokens)


@dataclass(frozen=True)
class World:
    """The truth from the world's bank extract: who is in which branch, and raw identifiers."""

    customers: pl.DataFrame  # customer_id, branch_id, age
    other: str  # the biggest branch: never the analyst's
    identifiers: list[str] = field(repr=False)  # phones as written and normalised, IDs

    def ids_of(self, branch: str) -> set[int]:
        return set(self.customers.filter(pl.col("branch_id") == branch)["customer_id"].to_list())

    def raw_identifiers_in(self, body: bytes) -> list[str]:
        """Return the raw identifiers `body` holds as values: not inside a longer number."""
        text = body.decode()
        hits = pl.Series([text]).str.extract_many(
            self.identifiers, overlapping=True, ascii_case_insensitive=True
        )[0]
        # JSON prints floats with up to 17 digits, in which some 11-digit phone turns up by
        # chance: a leaked value stands alone, so a hit inside a longer number does not count.
        return [
            hit
            for hit in sorted(set(hits.to_list()))
            if re.search(rf"(?<![0-9]){re.escape(hit)}(?![0-9])", text, re.IGNORECASE)
        ]


@pytest.fixture(scope="module")
def world(served: ServedRun) -> World:
    extract = pl.read_parquet(served.run / "world" / "bank" / "customers.parquet")
    sizes = extract["branch_id"].value_counts(sort=True)["branch_id"].to_list()
    raw = extract["phone"].drop_nulls().to_list() + extract["id_number"].to_list()
    normal = normalize_phones(extract["phone"]).values.drop_nulls().to_list()
    identifiers = sorted({v for v in raw + normal if len(v.strip()) >= 10})
    assert len(identifiers) > 10_000
    return World(
        customers=extract.select("customer_id", "branch_id", "age"),
        other=next(b for b in sizes if b != MINE),
        identifiers=identifiers,
    )


def _query(served: ServedRun, token: str, sql: str) -> httpx.Response:
    return httpx.post(
        f"{served.url}/v1/query", json={"sql": sql}, headers=bearer(token), timeout=60
    )


def _rows(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 200, response.text
    rows: list[list[Any]] = response.json()["rows"]
    return rows


def _limits(served: ServedRun, **limits: Any) -> AbstractContextManager[None]:
    """Give the running app other query limits inside the block."""
    return settings_changed(served, query_limits=QueryLimits(**limits))


# -- hostile SQL -------------------------------------------------------------------------------


def _hostile() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(HOSTILE.read_text(encoding="utf-8"))
    return cases


def _sql(case: dict[str, Any], world: World) -> str:
    sql = str(case["sql"])
    if "repeat" in case:
        text, times = case["repeat"]
        sql = sql.replace("{repeat}", str(text) * int(times))
    return sql.replace("{other}", world.other).replace("{mine}", MINE)


def test_the_hostile_file_holds_at_least_20_queries():
    cases = _hostile()
    assert len(cases) >= 20 and len({c["id"] for c in cases}) == len(cases)


@pytest.mark.parametrize("case", _hostile(), ids=lambda c: str(c["id"]))
def test_a_branch_analyst_gets_a_refusal_or_its_own_rows_for_any_sql(
    served: ServedRun, world: World, case: dict[str, Any]
):
    with _limits(served, timeout_seconds=2):
        response = _query(served, served.tokens.analyst, _sql(case, world))
    assert not world.raw_identifiers_in(response.content)
    body = response.json()
    if case["expect"] == "rows":
        assert response.status_code == 200, body
        columns, rows = body["columns"], body["rows"]
        branches = {row[columns.index("branch_id")] for row in rows}
        assert branches <= {MINE}
        if "customer_id" in columns:
            ids = {row[columns.index("customer_id")] for row in rows}
            assert ids <= world.ids_of(MINE)
        # Empty only when the query asks for other branches' rows.
        assert rows or "{other}" in case["sql"] or "{mine}" in case["sql"]
        return
    assert 400 <= response.status_code < 500, body
    detail = body["detail"]
    if case["expect"] == "refused":
        assert body["rule"] == case["rule"], detail
        assert all(view in detail for view in GRANTED_VIEWS)  # it says what is allowed
        return
    # Checked but could not run (DuckDB's own message, or the time limit): whatever it
    # quotes is the caller's own.
    assert detail and body["rule"] in {"failed", "timeout", "memory"}
    assert set(re.findall(r"B\d{3}", detail)) <= {MINE}
    assert {int(n) for n in re.findall(r"(?<!\d)\d{10}(?!\d)", detail)} <= world.ids_of(MINE)


# -- legitimate work ---------------------------------------------------------------------------


def test_head_office_sees_every_branch(served: ServedRun, world: World):
    rows = _rows(
        _query(
            served,
            served.tokens.head_office,
            "SELECT branch_id, count(*) AS n FROM customers "
            "WHERE snapshot_date = (SELECT max(snapshot_date) FROM customers) "
            "GROUP BY branch_id ORDER BY branch_id",
        )
    )
    expected = world.customers.group_by("branch_id").len().sort("branch_id").rows()
    assert [tuple(row) for row in rows] == expected
    assert len(rows) > 10


def test_an_aggregate_per_branch_matches_the_world(served: ServedRun, world: World):
    response = _query(
        served,
        served.tokens.analyst,
        "SELECT branch_id, count(*) AS customers, avg(age) AS mean_age "
        "FROM bank_features GROUP BY branch_id",
    )
    mine = world.customers.filter(pl.col("branch_id") == MINE)
    assert response.json()["columns"] == ["branch_id", "customers", "mean_age"]
    [(branch, customers, mean_age)] = _rows(response)
    assert (branch, customers) == (MINE, mine.height)
    assert mean_age == pytest.approx(mine["age"].mean())


def test_the_row_cap_truncates_and_says_so(served: ServedRun, world: World):
    sql = "SELECT customer_id FROM customers ORDER BY customer_id"
    everyone = sorted(world.ids_of(MINE))
    with _limits(served, max_rows=50):
        capped = _query(served, served.tokens.analyst, sql).json()
    assert capped["truncated"] and capped["row_count"] == 50
    assert [row[0] for row in capped["rows"]] == everyone[:50]
    with _limits(served, max_rows=len(everyone)):
        whole = _query(served, served.tokens.analyst, sql).json()
    assert not whole["truncated"] and whole["row_count"] == len(everyone)


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT from_hex('ff00') AS b, 'x'::BLOB AS c", [["ff00", "78"]]),
        (
            "SELECT INTERVAL 90 MINUTE AS i, INTERVAL '1 month -2 days 1.5 seconds' AS j",
            [["PT5400S", "P1M-2DT1.5S"]],
        ),
        (
            "SELECT 170141183460469231731687303715884105727::HUGEINT AS h",
            [["170141183460469231731687303715884105727"]],
        ),
        ("SELECT union_value(k := 1) AS u, MAP {'a': 1} AS m", [[1, [["a", 1]]]]),
        ("SELECT {'i': INTERVAL 1 DAY, 'b': [from_hex('00')]} AS s", [[{"i": "P1D", "b": ["00"]}]]),
    ],
)
def test_every_duckdb_type_answers_as_json(served: ServedRun, sql: str, rows: list[list[Any]]):
    assert _rows(_query(served, served.tokens.head_office, sql)) == rows


@pytest.mark.parametrize(
    ("sql", "column"),
    [
        ("SELECT DATE 'infinity' AS d", "d"),
        ("SELECT 'infinity'::TIMESTAMP AS t", "t"),
        ("SELECT 1::UHUGEINT AS u", "u"),
        ("SELECT 1::VARINT AS v", "v"),
    ],
)
def test_a_column_json_cannot_carry_is_a_400_naming_it(served: ServedRun, sql: str, column: str):
    response = _query(served, served.tokens.head_office, sql)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["rule"] == "result_type"
    assert f"column {column!r}" in body["detail"] and "CAST" in body["detail"]


def test_a_query_past_its_time_limit_is_a_422_saying_how_to_narrow_it(served: ServedRun):
    # 216 billion rows of a triple self-join: no machine finishes it in half a second.
    sql = (
        "SELECT count(*) AS n FROM bank_features a, bank_features b, bank_features c "
        "WHERE a.age + b.age > c.age"
    )
    with _limits(served, timeout_seconds=0.5):
        response = _query(served, served.tokens.head_office, sql)
    # Not 408, which clients and proxies send again by themselves.
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["rule"] == "timeout"
    assert "limit of 0.5 s" in body["detail"] and "filter or aggregate" in body["detail"]


# -- how many at once --------------------------------------------------------------------------


def test_a_query_past_the_concurrency_cap_gets_429_with_retry_after(served: ServedRun):
    with settings_changed(served, max_concurrent_queries=0):
        off = _query(served, served.tokens.analyst, "SELECT 1 AS one")
    assert off.status_code == 429, off.text
    with settings_changed(served, max_concurrent_queries=1):
        assert served.service.take_query_slot(1)  # a query holding the only slot
        try:
            busy = _query(served, served.tokens.analyst, "SELECT 1 AS one")
        finally:
            served.service.release_query_slot()
        assert busy.status_code == 429, busy.text
        assert int(busy.headers["retry-after"]) >= 1
        assert "again in a few seconds" in busy.json()["detail"]
        # The slot given back, and each answered query giving back its own: the next ones run.
        for _ in range(2):
            assert _rows(_query(served, served.tokens.analyst, "SELECT 1 AS one")) == [[1]]
        failed = _query(served, served.tokens.analyst, "SELECT nope FROM customers")
        assert failed.status_code == 400
        assert _rows(_query(served, served.tokens.analyst, "SELECT 1 AS one")) == [[1]]


# -- who may ask -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["campaign_tool", "vendor", "other_vendor"])
def test_tools_and_vendors_get_403(served: ServedRun, role: str):
    response = _query(served, getattr(served.tokens, role), "SELECT 1 AS one")
    assert response.status_code == 403
    assert "analyst" in response.json()["detail"]


@pytest.mark.parametrize("headers", [{}, bearer("bf_0123456789abcdef_" + "x" * 43)])
def test_no_token_or_an_unknown_one_gets_401(served: ServedRun, headers: dict[str, str]):
    response = httpx.post(f"{served.url}/v1/query", json={"sql": "SELECT 1"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# -- raw identifiers ---------------------------------------------------------------------------


def test_no_answer_holds_a_raw_phone_or_id_number(served: ServedRun, world: World):
    phone = next(p for p in world.identifiers if len(p) == 11)
    assert world.raw_identifiers_in(json.dumps({"v": [1, phone]}).encode()) == [phone]
    assert not world.raw_identifiers_in(json.dumps([float(f"0.{phone}3")]).encode())
    sizes: dict[str, int] = {}
    for token in (served.tokens.head_office, served.tokens.analyst):
        for view in GRANTED_VIEWS:
            response = _query(served, token, f"SELECT * FROM {view}")
            assert response.status_code == 200 and response.json()["row_count"] > 0, view
            assert not world.raw_identifiers_in(response.content), view
            sizes[view] = sizes.get(view, 0) + len(response.content)
    assert sizes["bank_features"] > 1_000_000  # the whole bank's features were searched
