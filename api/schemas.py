"""Request and response bodies, named by direction (`*Create` in, `*Public` out)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

__all__ = [
    "MAX_OUTCOMES",
    "MAX_SCORE_IDS",
    "MAX_SQL_CHARS",
    "BatchAccepted",
    "BatchPublic",
    "EventCreate",
    "EventRefusedPublic",
    "EventsAccepted",
    "OutcomeCreate",
    "OutcomesAccepted",
    "OutcomesCreate",
    "OutcomesReportCreate",
    "QueryCreate",
    "QueryPublic",
    "ScorePublic",
    "ScoresCreate",
    "ScoresPublic",
]

# Customer ids are the bank's internal numbers (BIGINT), never phone or ID numbers; the bounds
# turn an id no BIGINT can hold into a 422, not a failed conversion (a 500) further in. Strict:
# FastAPI validates the parsed JSON in Python mode, where a lax int takes "123", 1.0 and true.
CustomerId = Annotated[int, Field(ge=0, le=2**63 - 1, strict=True)]


def _iso_text(value: object) -> object:
    """Return `value` if it is text: a number is no date (lax mode reads it as Unix time)."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date-time string, such as 2026-10-01T17:30:00+08:00")
    return value


def _naive_utc(value: datetime) -> datetime:
    """Return `value` as naive UTC, as the store keeps every timestamp."""
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        # 9999-12-31T23:59:59-01:00 is past datetime.max once in UTC.
        raise ValueError("the time is outside the years 1..9999 once converted to UTC") from None


# An ISO 8601 date-time, with an offset or taken as UTC; given back as naive UTC.
UtcTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_naive_utc)]

# Hard bounds checked while the JSON is parsed, before any route runs; the service's settings
# may set lower caps (ApiSettings refuses higher ones). MAX_SQL_CHARS sits above QueryLimits'
# default (20,000) so that the query layer's refusal, which says what is allowed, answers first.
MAX_SCORE_IDS = 1_000
MAX_OUTCOMES = 10_000
MAX_SQL_CHARS = 100_000


class _Strict(BaseModel):
    # Unknown fields are refused, not dropped: a misspelt field must not pass unnoticed.
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
    source: Literal["batch", "live"] = Field(
        description="batch: the stored scores of the model version named (the batch scored "
        "this customer from features no newer than its own); live: scored now from the newest "
        "features (newer than the batch's, or a customer the batch did not score)"
    )
    scored_at: datetime | None = Field(
        description="when the batch scored the customer (UTC); null for a live score"
    )


class ScoresPublic(_Strict):
    model: str
    model_version: str
    scores: list[ScorePublic]
    unknown: list[int] = Field(description="requested ids the scored base does not hold")


class OutcomeCreate(_Strict):
    customer_id: CustomerId
    treatment: StrictBool = Field(description="offered (true) or held out as control (false)")
    contacted: StrictBool | None = None
    responded: StrictBool
    occurred_at: UtcTime | None = Field(
        default=None,
        description="ISO 8601; without an offset it is UTC. At most the service's clock skew "
        "into the future.",
    )


class OutcomesCreate(_Strict):
    campaign_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", strict=True)
    outcomes: list[OutcomeCreate] = Field(min_length=1, max_length=MAX_OUTCOMES)


class OutcomesAccepted(_Strict):
    campaign_id: str
    recorded: int = Field(description="rows stored now")
    already_recorded: int = Field(
        description="rows of known customers already stored (a retry), so not stored again"
    )
    unknown: list[int]


CampaignId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", strict=True)
]


class EventCreate(_Strict):
    """One funnel event; an unknown event name or a bad amount is refused by row, not by 422."""

    campaign_id: CampaignId
    customer_id: CustomerId
    event: str = Field(
        min_length=1,
        max_length=32,
        strict=True,
        description="delivered, contacted, reached, responded, converted, complained or opted_out",
    )
    occurred_at: UtcTime = Field(
        description="ISO 8601; without an offset it is UTC. At most the service's clock skew "
        "into the future."
    )
    amount: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = Field(
        default=None, description="converted events only: the amount, >= 0"
    )
    event_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        strict=True,
        description="the sender's unique id of the event (a resend with it records once); "
        "left out, one is derived from the event's fields",
    )


class OutcomesReportCreate(_Strict):
    """POST /v1/outcomes: `campaign_id` with `outcomes` (per customer), or `events` (funnel)."""

    campaign_id: CampaignId | None = Field(
        default=None, description="with outcomes: the campaign they belong to"
    )
    outcomes: list[OutcomeCreate] | None = Field(
        default=None, min_length=1, max_length=MAX_OUTCOMES
    )
    events: list[EventCreate] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_OUTCOMES,
        description="funnel events, each naming its campaign; checked row by row",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> OutcomesReportCreate:
        if self.events is not None:
            if self.outcomes is not None or self.campaign_id is not None:
                raise ValueError(
                    "send either events (each with its campaign_id) or campaign_id with "
                    "outcomes, not both"
                )
        elif self.outcomes is None or self.campaign_id is None:
            raise ValueError("send campaign_id with outcomes, or events")
        return self

    def legacy(self) -> OutcomesCreate:
        """Return the body as the per-customer report (only when `outcomes` was sent)."""
        assert self.campaign_id is not None and self.outcomes is not None
        return OutcomesCreate.model_construct(campaign_id=self.campaign_id, outcomes=self.outcomes)


class EventRefusedPublic(_Strict):
    row: int = Field(description="the event's index in the request, from 0")
    customer_id: int | None
    reason: str


class EventsAccepted(_Strict):
    recorded: int = Field(description="events stored now")
    already_recorded: int = Field(
        description="events stored before (a resend) or repeated in this request"
    )
    refused: list[EventRefusedPublic] = Field(description="events not stored, and why")


class QueryCreate(_Strict):
    sql: str = Field(
        min_length=1,
        max_length=MAX_SQL_CHARS,
        strict=True,
        description="one SELECT over the granted views",
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
