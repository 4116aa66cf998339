"""How an analyst query is held under its memory cap where DuckDB's own limit does not reach.

DuckDB's `memory_limit` governs its buffer manager: hash tables, sorts, aggregate states and
materialised results. A scalar function's output is allocated outside it: `repeat('x', n)`,
`lpad(s, n)` and their kin build each value whole, whatever the limit says, so one call with a
large constant can take gigabytes of the service's memory. Two layers here:

1. At check time (`check_sizes`): functions that build a value of a size given by an argument
   (`SIZED_FUNCTIONS`) may run only when that size is a constant no larger than
   `max_value_bytes`; anything else is refused with rule "memory".
2. While it runs (`MemoryWatch`): the process's resident set is sampled beside the time limit,
   and a query during which it grows past the query's budget is interrupted and answered as
   a "memory" failure. It catches growth the check cannot foresee (a value amplified step by
   step); it stops a query between two vectors, so it bounds growth rather than a single value.

What holds a single value built step by step is the process the query runs in: a worker whose
address space is capped (`fusion.query_worker`), so that the service's own memory never grows
with a query. `memory_failure` and `result_too_big` are the refusals every layer gives.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psutil

from contracts.errors import QueryFailed, QueryRefused

__all__ = [
    "SIZED_FUNCTIONS",
    "MemoryWatch",
    "check_sizes",
    "memory_bytes",
    "memory_failure",
    "result_too_big",
]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE_TEXT = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER"}
    | {"UBIGINT", "UHUGEINT"}
)
_ELEMENT_BYTES = 16  # a list element, counted generously: a value and its validity
_Size = Callable[[Sequence[object]], int | None]  # output bytes from a call's argument nodes


def memory_bytes(text: str) -> int:
    """Return the bytes DuckDB size text ("1GB", "512MiB") stands for."""
    match = _SIZE_TEXT.fullmatch(text.strip())
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not DuckDB size text: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _integer(node: object) -> int | None:
    """Return the integer a constant node holds, else None."""
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return None
    value = node.get("value") or {}
    kind = (value.get("type") or {}).get("id")
    number = value.get("value")
    if kind not in _INTEGER_TYPES or value.get("is_null") or isinstance(number, bool):
        return None
    return number if isinstance(number, int) else None


def _text(node: object) -> str | None:
    """Return the text a VARCHAR constant node holds, else None."""
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return None
    value = node.get("value") or {}
    if (value.get("type") or {}).get("id") != "VARCHAR" or value.get("is_null"):
        return None
    text = value.get("value")
    return text if isinstance(text, str) else None


def _repeat(args: Sequence[object]) -> int | None:
    text, times = (_text(args[0]), _integer(args[1])) if len(args) == 2 else (None, None)
    return None if text is None or times is None else len(text.encode()) * max(times, 0)


def _argument(index: int, *, scale: int = 1, default: int | None = None) -> _Size:
    def size(args: Sequence[object]) -> int | None:
        value = _integer(args[index]) if len(args) > index else default
        return None if value is None else max(value, 0) * scale

    return size


def _series(args: Sequence[object]) -> int | None:
    bounds = [_integer(a) for a in args]
    if not bounds or len(bounds) > 3 or any(b is None for b in bounds):
        return None
    start, stop, step = ([0, *bounds, 1] if len(bounds) == 1 else [*bounds, 1])[:3]
    assert start is not None and stop is not None and step is not None
    return (abs(stop - start) // max(abs(step), 1) + 1) * _ELEMENT_BYTES


def _formatted(args: Sequence[object]) -> int | None:
    """Return the widest field a printf/format pattern asks for (a `*` width is not allowed)."""
    pattern = _text(args[0]) if args else None
    if pattern is None or "*" in pattern:
        return None
    widths = [int(n) for n in re.findall(r"\d+", pattern)]
    return max([len(pattern), *widths])


# Functions whose output size an argument sets, and how big that output is (None: not a
# constant, so unbounded). Aggregates that build values (string_agg, list) are not here: their
# states live in DuckDB's buffer manager, under memory_limit.
SIZED_FUNCTIONS: Mapping[str, _Size] = {
    "repeat": _repeat,
    "lpad": _argument(1, scale=4),  # four bytes: the padding may be any UTF-8 character
    "rpad": _argument(1, scale=4),
    "bar": _argument(3, scale=3, default=80),  # block characters are three bytes each
    "to_base": _argument(2, default=0),
    "list_resize": _argument(1, scale=_ELEMENT_BYTES),
    "array_resize": _argument(1, scale=_ELEMENT_BYTES),
    "range": _series,
    "generate_series": _series,
    "printf": _formatted,
    "format": _formatted,
}


def check_sizes(function: Mapping[str, Any], *, max_value_bytes: int, allowed: str) -> None:
    """Refuse a call of a SIZED_FUNCTIONS function whose output is unbounded or too big."""
    name = str(function.get("function_name", "")).lower()
    size = SIZED_FUNCTIONS.get(name)
    if size is None:
        return
    built = size(function.get("children") or [])
    if built is None:
        raise QueryRefused(
            f"{name}() may build a value of any size here: give its size as a plain number "
            f"(a constant) so that the value stays within {max_value_bytes:,} bytes",
            rule="memory",
            allowed=allowed,
        )
    if built > max_value_bytes:
        raise QueryRefused(
            f"{name}() would build a value of about {built:,} bytes, more than the "
            f"{max_value_bytes:,} one value may take",
            rule="memory",
            allowed=allowed,
        )


class MemoryWatch:
    """The process's resident set since a query began, against the bytes that query may add."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.exceeded = False
        self._process = psutil.Process()
        self._start = self._process.memory_info().rss

    def over(self) -> bool:
        """Return whether the process grew past the budget since the start (and remember it)."""
        if not self.exceeded:
            self.exceeded = self._process.memory_info().rss - self._start > self.budget
        return self.exceeded


def memory_failure(memory_limit: str) -> QueryFailed:
    """Return the "memory" failure of a query that needed more than `memory_limit`."""
    return QueryFailed(
        f"the query needs more memory than the {memory_limit} a query may use; "
        "aggregate or filter earlier, or select fewer columns",
        rule="memory",
    )


def result_too_big(max_bytes: int, *, what: str = "the answer") -> QueryFailed:
    """Return the "result_size" failure of an answer larger than `max_bytes`."""
    return QueryFailed(
        f"{what} is larger than the {max_bytes:,} bytes one query may return; "
        "select fewer rows or columns, or aggregate",
        rule="result_size",
    )
