"""Request and response bodies, named by direction (`*Create` in, `*Public` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_OUTCOMES",
    "MAX_SCORE_IDS",
    "MAX_SQL_CHARS",
    "BatchAccepted",
    "BatchPublic",
    "OutcomeCreate",
    "OutcomesAccepted",
    "OutcomesCreate",
    "QueryCreate",
    "QueryPublic",
    "ScorePublic",
    "ScoresCreate",
    "ScoresPublic",
]

# Customer ids are the bank's internal numbers (BIGINT), never phone or ID numbers; the bounds
# turn an id no BIGINT can hold into a 422, not a failed conversion (a 500) further in.
CustomerId = Annotated[int, Field(ge=0, le=2**63 - 1)]

# Hard bounds checked while the JSON is parsed, before any route runs; the service's settings
# may set lower caps (ApiSettings refuses higher ones). MAX_SQL_CHARS sits above QueryLimits'
# default (20,000) so that the query layer's refusal, which says what is allowed, answers first.
MAX_SCORE_IDS = 1_000
MAX_OUTCOMES = 10_000
MAX_SQL_CHARS = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchAccepted(_Strict):
    upload_id: str
    batch_id: str | None = Field(description="the batch id the manifest claims (checked at ingest)")
    status: str = "received"
    status_url: str | None = None


class BatchPublic(_Strict):
    batch_id: str
    status: str
    rows: int | None = None
    received_at: datetime | None = None
    finished_at: datetime | None = None
    reasons: list[str] = []
    report: dict[str, Any] | None = Field(
        default=None, description="the quarantine report: rule, rows, example row numbers"
    )


class ScoresCreate(_Strict):
    customer_ids: list[CustomerId] = Field(
        min_length=1, max_length=MAX_SCORE_IDS, description="internal customer ids to score"
    )


class ScorePublic(_Strict):
    customer_id: int
    branch_id: str
    score: float
    decile: int
    reasons: list[str]


class ScoresPublic(_Strict):
    model: str
    model_version: str
    scores: list[ScorePublic]
    unknown: list[int] = Field(description="requested ids the scored base does not hold")


class OutcomeCreate(_Strict):
    customer_id: CustomerId
    treatment: bool = Field(description="offered (true) or held out as control (false)")
    contacted: bool | None = None
    responded: bool
    occurred_at: datetime | None = None


class OutcomesCreate(_Strict):
    campaign_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    outcomes: list[OutcomeCreate] = Field(min_length=1, max_length=MAX_OUTCOMES)


class OutcomesAccepted(_Strict):
    campaign_id: str
    recorded: int = Field(description="rows stored now")
    already_recorded: int = Field(
        description="rows of known customers already stored (a retry), so not stored again"
    )
    unknown: list[int]


class QueryCreate(_Strict):
    sql: str = Field(
        min_length=1, max_length=MAX_SQL_CHARS, description="one SELECT over the granted views"
    )


class QueryPublic(_Strict):
    columns: list[str]
    rows: list[list[Any]] = Field(
        description="one list per row, in column order: numbers, text, ISO 8601 dates, times "
        "and durations (INTERVAL), DECIMAL as text, BLOB as hex, MAP as [key, value] pairs"
    )
    row_count: int
    truncated: bool
    elapsed_seconds: float
