"""The check-time bounds on functions that build values, and DuckDB size text."""

from __future__ import annotations

import pytest

from contracts.errors import ConfigError, QueryRefused
from fusion.query import QueryLimits, check_query
from fusion.query_grant import allowed_functions
from fusion.query_memory import SIZED_FUNCTIONS, memory_bytes


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT repeat('z', 1000000) AS s FROM customers",
        "SELECT length(repeat('x', 2000000000))",
        "SELECT lpad('x', 100000)",
        "SELECT rpad(branch_id, 20000, '*') FROM customers",
        "SELECT bar(1, 0, 10, 100000)",
        "SELECT printf('%100000d', 1)",
        "SELECT format('{:>9999999}', 1)",
        "SELECT range(10000000)",
        "SELECT generate_series(1, 10000000, 1)",
        "SELECT list_resize([1], 1000000)",
        "SELECT to_base(5, 2, 1000000)",
    ],
)
def test_a_constant_size_past_the_bound_is_refused_as_memory(sql: str):
    with pytest.raises(QueryRefused) as refused:
        check_query(sql)
    assert refused.value.rule == "memory"
    assert "16,384" in refused.value.detail


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT repeat(branch_id, 3) FROM customers",
        "SELECT lpad('x', customer_id::INT) FROM customers",
        "SELECT repeat('x', 2 * 3)",
        "SELECT printf('%*d', 100000, 1)",
        "SELECT range(customer_id) FROM customers",
    ],
)
def test_a_size_that_is_not_a_constant_is_refused_as_memory(sql: str):
    with pytest.raises(QueryRefused) as refused:
        check_query(sql)
    assert refused.value.rule == "memory" and "constant" in refused.value.detail


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT lpad(branch_id, 10, '0') FROM customers",
        "SELECT repeat('-', 80) AS rule",
        "SELECT printf('%5d|%-8s', 1, 'a'), format('{:>10}', 'x'), bar(3, 0, 10)",
        "SELECT unnest(range(12)) AS month, generate_series(1, 10, 2) AS odd",
        "SELECT string_agg(branch_id, ',') FROM customers",  # aggregates: DuckDB's own limit
    ],
)
def test_small_constant_sizes_pass(sql: str):
    check_query(sql)


def test_the_bound_is_the_limits_own():
    sql = "SELECT repeat('ab', 50000) AS s"
    with pytest.raises(QueryRefused):
        check_query(sql)
    check_query(sql, limits=QueryLimits(max_value_bytes=100_000))


def test_every_sized_function_is_allowed_to_be_called_at_all():
    assert set(SIZED_FUNCTIONS) <= allowed_functions()


@pytest.mark.parametrize(
    ("text", "size"), [("1GB", 10**9), ("512MiB", 512 << 20), ("1.5 GB", 1_500_000_000)]
)
def test_memory_bytes_reads_duckdb_size_text(text: str, size: int):
    assert memory_bytes(text) == size


def test_limits_refuse_a_zero_result_cap():
    with pytest.raises(ConfigError):
        QueryLimits(max_result_bytes=0)
